"""Scores of image-to-image models: PSNR and SSIM equal torchmetrics' own metric classes, sharpness ranks a
blurred image below the original, consistency measures what the input fixes, and the evaluator scores
each output against the target its input was made from (checked against outputs computed
independently)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure
from torchvision.transforms.v2.functional import gaussian_blur

from gen_bench.data.paired import Inpainting, SuperResolution, downsample, upsample
from gen_bench.data.shapes import Shapes
from gen_bench.metrics.engine import Evaluator
from gen_bench.metrics.paired import (
    ConsistencyScore,
    DiversityScore,
    PSNRScore,
    SharpnessScore,
    SSIMScore,
    high_frequency_energy,
)
from gen_bench.metrics.settings import EvalSettings
from gen_bench.metrics.suite import EvalBatch, NotApplicable
from gen_bench.models import build_model

from conftest import compose_train


def _ctx(task, shape=(3, 16, 16), **settings):
    model = SimpleNamespace(image_to_image=True, task=task)
    spec = SimpleNamespace(shape=shape)
    return SimpleNamespace(model=model, device=torch.device("cpu"), spec=spec,
                           settings=EvalSettings(**settings))


def _batch(out, target, x_in=None):
    return EvalBatch(out, {}, torch.arange(out.shape[0]), inputs=x_in, targets=target)


def _shapes(n: int, size: int = 32) -> torch.Tensor:
    return Shapes(image_size=size, num_samples=n, seed=3).load().x.float() / 255


def test_psnr_and_ssim_equal_torchmetrics_metric_classes_over_several_batches():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(12, 3, 16, 16, generator=g)
    out = (target + 0.1 * torch.randn(12, 3, 16, 16, generator=g)).clamp(0, 1)
    task = SuperResolution(factor=2)
    psnr, ssim = PSNRScore(_ctx(task)), SSIMScore(_ctx(task))
    ref_psnr = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3))  # mean of per-image PSNR
    ref_ssim = StructuralSimilarityIndexMeasure(data_range=1.0)
    for lo, hi in ((0, 5), (5, 12)):
        for score in (psnr, ssim):
            score.update(_batch(out[lo:hi], target[lo:hi]))
        ref_psnr.update(out[lo:hi], target[lo:hi])
        ref_ssim.update(out[lo:hi], target[lo:hi])
    assert psnr.compute()["psnr"] == pytest.approx(float(ref_psnr.compute()), rel=1e-6)
    assert ssim.compute()["ssim"] == pytest.approx(float(ref_ssim.compute()), rel=1e-6)
    # and PSNR itself against its definition, 10 log10(1 / MSE) per image
    mse = (out - target).double().square().flatten(1).mean(1)
    assert psnr.compute()["psnr"] == pytest.approx(float((10 * torch.log10(1 / mse)).mean()), rel=1e-6)
    with pytest.raises(NotApplicable, match="11x11 window needs images of at least that size"):
        SSIMScore(_ctx(task, shape=(3, 8, 8)))


def test_sharpness_ranks_a_blurred_image_below_the_original():
    x = _shapes(16)
    blurred = gaussian_blur(x, kernel_size=5, sigma=1.0)
    cutoff = SuperResolution(factor=4).default_cutoff()  # 0.125 cycles per pixel
    assert cutoff == 0.125
    assert (high_frequency_energy(blurred, cutoff) < 0.5 * high_frequency_energy(x, cutoff)).all()
    sharp, blurry = SharpnessScore(_ctx(SuperResolution())), SharpnessScore(_ctx(SuperResolution()))
    sharp.update(_batch(x, x))
    blurry.update(_batch(blurred, x))
    assert sharp.compute()["sharpness"] == pytest.approx(1.0)
    assert blurry.compute()["sharpness"] < 0.5
    # the bicubic upsampling of a 4x smaller image is as blurry: what an L2 average looks like
    up = upsample(downsample(x, 4), 32)
    upscaled = SharpnessScore(_ctx(SuperResolution()))
    upscaled.update(_batch(up, x))
    assert upscaled.compute()["sharpness"] < 0.5
    # a constant image has no energy above any cutoff (the mean is removed)
    assert high_frequency_energy(torch.full((1, 3, 8, 8), 0.3), 0.0).item() == pytest.approx(0.0, abs=1e-20)


def test_consistency_is_the_squared_error_of_what_the_input_fixes():
    x = _shapes(4, 16)
    sr = SuperResolution(factor=2, filter="box")
    score = ConsistencyScore(_ctx(sr))
    score.update(_batch(x, x, sr.degrade(x)))
    assert score.compute()["consistency"] == pytest.approx(0.0, abs=1e-12)
    score.reset()
    score.update(_batch((x + 0.05).clamp(0, 1), x, sr.degrade(x)))
    shifted = downsample((x + 0.05).clamp(0, 1), 2, "box")
    expected = (shifted - downsample(x, 2, "box")).double().square().mean()
    assert score.compute()["consistency"] == pytest.approx(float(expected), rel=1e-6)
    inpaint = Inpainting(mask="half")
    score = ConsistencyScore(_ctx(inpaint))
    out = torch.zeros_like(x)
    score.update(_batch(out, x, inpaint.degrade(x)))
    known = x[..., :8].double().square().mean()  # the left half, against 0
    assert score.compute()["consistency"] == pytest.approx(float(known), rel=1e-6)


TINY_NET = ["model.nets.image.net.ch=8", "model.nets.image.net.ch_mult=[1,2]",
            "model.nets.image.net.num_res_blocks=1", "model.nets.image.net.attn_resolutions=[]"]
SHAPES16 = ["data=shapes", "data.image_size=16", "data.source.num_samples=200"]


def _untrained(model: str, task: list[str]):
    extra = ["model.diffusion.num_timesteps=10"] if model == "i2i_diffusion" else []
    cfg = compose_train([f"model={model}", *SHAPES16, *task, *TINY_NET, *extra], "unused")
    dm = instantiate(cfg.data)
    torch.manual_seed(0)
    model = build_model(cfg.model, dm.spec)
    model.use_data(dm)
    return model, dm


def test_the_evaluator_scores_each_output_against_the_target_its_input_came_from():
    """An untrained regression model outputs the bicubic upsampling of its input exactly (its UNet's last
    layer starts at zero): the evaluator's PSNR must be that of upsample(downsample(target)) for the
    targets the batches' generators draw, and a deterministic model's diversity is 0."""
    model, dm = _untrained("i2i_regression", ["task=superres", "data.task.factor=2"])
    metrics = ["fid", "psnr", "ssim", "consistency", "sharpness", "diversity"]
    settings = EvalSettings(num_samples=30, batch_size=20, extractor="random", metrics=metrics,
                            bootstrap={"num": 0}, paired={"diversity_inputs": 3, "diversity_samples": 2})
    result = Evaluator(settings, dm).evaluate(model)
    values = result.values()
    psnr = []
    for b, n in ((0, 20), (1, 10)):
        g = torch.Generator().manual_seed(Evaluator.batch_seed(settings.seed, b))
        _, target = model.draw_inputs(n, g)
        expected = upsample(downsample(target, 2, "bicubic"), 16, "bicubic")
        psnr.append(10 * torch.log10(1 / (expected - target).double().square().flatten(1).mean(1)))
    assert values["psnr"] == pytest.approx(float(torch.cat(psnr).mean()), rel=1e-4)
    assert values["diversity"] == 0.0 and 0 < values["sharpness"] < 1 and 0 < values["ssim"] < 1
    task = {"task": "superres", "factor": 2, "filter": "bicubic", "upsample": "bicubic"}
    for name in ("fid", "psnr"):  # outputs of a task rank only against outputs of the same task
        assert result.protocols[result.scores[name]["protocol_id"]]["task"] == task
    assert "held-out split" in result.draw["inputs"]
    # the same samples as model.sample: the FID's draws are the paired draws
    g = torch.Generator().manual_seed(Evaluator.batch_seed(settings.seed, 0))
    x_in, _ = model.draw_inputs(20, g)
    out = model.translate(x_in, g)
    same = model.sample(20, torch.Generator().manual_seed(Evaluator.batch_seed(settings.seed, 0)))
    assert torch.equal(out, same)


def test_a_stochastic_model_has_diversity_and_models_without_a_task_skip_the_paired_scores():
    from gen_bench.diffusion import DDIMSampler

    model, dm = _untrained("i2i_diffusion", ["task=inpaint"])
    settings = EvalSettings(num_samples=8, batch_size=8, extractor="random", bootstrap={"num": 0},
                            metrics=["psnr", "consistency", "diversity"],
                            paired={"diversity_inputs": 2, "diversity_samples": 2})
    sampler = {"_target_": "gen_bench.diffusion.DDIMSampler", "_partial_": True, "steps": 3, "eta": 1.0}
    result = Evaluator(settings, dm, sampler=sampler).evaluate(model)
    assert result.values()["diversity"] > 0.01
    assert result.values()["consistency"] == 0.0  # the known pixels are pasted back exactly
    assert result.draw["sampler"] == DDIMSampler(model.diffusion, steps=3, eta=1.0).label
    plain = SimpleNamespace(image_to_image=False, task=None)
    with pytest.raises(NotApplicable, match="is not an image-to-image model"):
        PSNRScore(SimpleNamespace(model=plain))
    with pytest.raises(NotApplicable, match="come without their model"):
        DiversityScore(SimpleNamespace(model=None))
