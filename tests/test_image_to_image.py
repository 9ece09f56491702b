"""Image-to-image models end to end: every model of the loss ladder and the conditional DDPM resumes
bit for bit (random inpainting masks included: they are a function of the batch number), samples
through ``gen-bench sample`` what ``model.sample`` draws, ``gen-bench inpaint`` fills a DDPM's holes
(with a class for a conditional one) and ``gen-bench sample upscale=`` runs a super-resolution model
on another model's samples."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from gen_bench.checkpoint import load_model
from gen_bench.config import config_dir
from gen_bench.data.paired import SuperResolution
from gen_bench.data.spec import DataSpec
from gen_bench.diffusion import DDIMSampler, GaussianDiffusion, repaint_passes
from gen_bench.inpaint import inpaint_command
from gen_bench.models.conditional_ddpm import ConditionalDDPM
from gen_bench.models.image_to_image import ImageTranslator
from gen_bench.sample import sample_command
from gen_bench.train import run_training

from conftest import QUIET, compose_train

UNET = ["ch=8", "ch_mult=[1,2]", "num_res_blocks=1", "attn_resolutions=[]"]  # a tiny UNet
NET = [f"model.nets.image.net.{k}" for k in UNET]
DDPM = ["model=ddpm", *(f"model.nets.image.denoiser.{k}" for k in UNET), "model.diffusion.num_timesteps=10",
        "model.training_sampler.steps=2", "data=shapes", "data.batch_size=4", "data.source.num_samples=120",
        "callbacks.sample_grid.every_n_steps=0", "eval.enabled=false", *QUIET]
TINY = ["data=shapes", "data.image_size=16", "data.batch_size=4", "data.source.num_samples=120", *NET,
        "callbacks.sample_grid.num_samples=4", "callbacks.checkpoint.every_n_train_steps=2",
        "callbacks.checkpoint.save_top_k=-1", "eval.enabled=false", "eval.classifier.steps=20",
        "eval.classifier.width=8", *QUIET]
CASES = {
    "i2i_regression": ["task=superres", "data.task.factor=2", "data.task.filter=box"],
    "i2i_perceptual": ["task=inpaint", "data.task.mask=random", "data.task.boxes=2"],
    "i2i_gan": ["task=superres", "model.nets.image.discriminator.base_channels=8",
                "model.nets.image.discriminator.layers=1"],
    "i2i_diffusion": ["task=inpaint", "model.diffusion.num_timesteps=10", "model.training_sampler.steps=2"],
}


def _overrides(name: str) -> list[str]:
    return [f"model={name}", *TINY, *CASES[name], "trainer.max_steps=4"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One 4-step run of every image-to-image model, trained on first use."""
    root = tmp_path_factory.mktemp("i2i")

    class Runs(dict):
        def __missing__(self, name: str) -> Path:
            run = root / name
            summary = run_training(compose_train(_overrides(name), run))
            assert summary["status"] == "completed" and summary["steps"] == 4
            self[name] = run
            return run

    return Runs()


def _ckpt(run: Path, name: str = "last.ckpt") -> dict:
    return torch.load(run / "checkpoints" / name, weights_only=False, map_location="cpu")


def _compose(config: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config, overrides=overrides)


@pytest.mark.parametrize("name", list(CASES))
def test_a_resume_ends_bit_identical_and_gen_bench_sample_draws_what_the_model_samples(name, runs, tmp_path):
    full = runs[name]
    resumed = tmp_path / "resumed"
    run_training(compose_train([*_overrides(name), f"resume={full / 'checkpoints' / 'step0000002.ckpt'}"],
                               resumed))
    a, b = _ckpt(full), _ckpt(resumed)
    assert a["global_step"] == b["global_step"] == 4
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert not any("perceptual" in k for k in a["state_dict"])  # the loss's feature network is not saved
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    for oa, ob in zip(a["optimizer_states"], b["optimizer_states"], strict=True):
        for pid, sa in oa["state"].items():
            for key, va in sa.items():
                assert torch.equal(torch.as_tensor(va), torch.as_tensor(ob["state"][pid][key])), key
    if "ema" in a:
        for k, v in a["ema"]["state_dict"].items():
            assert torch.equal(v, b["ema"]["state_dict"][k]), k
    assert (full / "samples" / "pairs_final.png").is_file()

    out = tmp_path / "samples"
    sample_command(_compose("sample", [f"ckpt={full}", "n=3", "seed=5", f"out={out}"]))
    model, *_ = load_model(full)
    assert isinstance(model, ConditionalDDPM if name == "i2i_diffusion" else ImageTranslator)
    expected = model.sample(3, torch.Generator().manual_seed(5))
    assert expected.shape == (3, 3, 16, 16)
    assert torch.equal(torch.load(out / "samples.pt"), expected)
    x_in, target = model.draw_inputs(3, torch.Generator().manual_seed(5))
    if model.task.name == "inpaint":  # the known pixels are the input's, exactly
        known = x_in[:, -1:].bool().expand_as(expected)
        assert torch.equal(expected[known], target[known])


def test_gen_bench_inpaint_fills_a_ddpm_s_holes_with_the_class_asked_for(runs, tmp_path):
    run = tmp_path / "ddpm"
    run_training(compose_train([*DDPM, "model.conditional=true", "data.image_size=16", "trainer.max_steps=2"],
                               run))
    out = tmp_path / "fill"
    record = inpaint_command(_compose("inpaint", [f"ckpt={run}", "mask=center", "n=3", "steps=6",
                                                  "jump_length=2", "resamplings=2", "labels=7", "guidance=1",
                                                  f"out={out}"]))
    saved = torch.load(out / "inpaint.pt")
    known = saved["inputs"][:, -1:].bool().expand_as(saved["targets"])
    assert torch.equal(saved["outputs"][known], saved["targets"][known])  # the known pixels exactly
    assert not torch.equal(saved["outputs"][~known], saved["targets"][~known])
    assert saved["labels"].tolist() == [7, 7, 7] and record["knobs"] == {"guidance": 1.0}
    assert record["network_passes_per_image"] == repaint_passes(6, 2, 2) == 10
    with Image.open(out / "inpaint.png") as im:  # 3 rows of masked input | fill | original
        assert im.size == (3 * 18 + 2, 3 * 18 + 2)
    with pytest.raises(ValueError, match="runs RePaint on a DDPM"):
        inpaint_command(_compose("inpaint", [f"ckpt={runs['i2i_regression']}", f"out={tmp_path / 'x'}"]))


def test_gen_bench_sample_upscales_another_model_s_samples(runs, tmp_path):
    base = tmp_path / "base"  # a generator of 8 px images; the regression run upscales 8 -> 16 px
    run_training(compose_train([*DDPM, "data.image_size=8", "trainer.max_steps=1"], base))
    sr = runs["i2i_regression"]
    out = tmp_path / "up"
    sample_command(_compose("sample", [f"ckpt={base}", f"upscale={sr}", "n=4", "seed=3", f"out={out}",
                                       "sampler=ddim", "sampler.steps=2"]))
    samples, big = torch.load(out / "samples.pt"), torch.load(out / "upscaled.pt")
    assert samples.shape == (4, 3, 8, 8) and big.shape == (4, 3, 16, 16)
    upscaler, *_ = load_model(sr)
    assert torch.equal(big, upscaler.translate(samples, torch.Generator().manual_seed(3)))
    for picture in ("samples.png", "upscaled.png", "upscaled_pairs.png"):
        assert (out / picture).is_file()
    wrong_size = r"upscales 3x4x4 images \(C x H x W\) to 3x16x16, the samples are 3x8x8"
    with pytest.raises(ValueError, match=wrong_size):
        sample_command(_compose("sample", [f"ckpt={base}", f"upscale={runs['i2i_gan']}", f"out={out}"]))
    with pytest.raises(ValueError, match="is not a super-resolution model .*task=inpaint"):
        sample_command(_compose("sample", [f"ckpt={base}", f"upscale={runs['i2i_perceptual']}",
                                           f"out={out}"]))


class _Exact(torch.nn.Module):
    """The exact network, in the process's parameterisation, of a diffused variable that is ``k`` times
    the condition c: at (cat[x_t, c], t) the noise is (x_t - sqrt(ab) k c) / sqrt(1 - ab)."""

    def __init__(self, diffusion: GaussianDiffusion, k: float) -> None:
        super().__init__()
        self.diffusion, self.k, self.scale = diffusion, k, torch.nn.Parameter(torch.ones(()))

    def forward(self, xc: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x, c = xc.chunk(2, dim=1)
        ab = self.diffusion.alphas_cumprod[t].view(-1, 1, 1, 1)
        x0 = self.k * c
        return self.diffusion.target(x0, t, (x - ab.sqrt() * x0) / (1 - ab).sqrt()) * self.scale


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
@pytest.mark.parametrize("residual", [False, True], ids=["image", "residual"])
@pytest.mark.parametrize("sampler", [None, partial(DDIMSampler, steps=1, eta=0.0)],
                         ids=["ancestral", "ddim1"])
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_conditional_diffusion_samples_through_its_parameterisation(prediction, sampler, residual):
    """Targets 1.1 x the upsampled input c (model space): the exact network of the image (1.1 c), or of
    its residual to the estimate c (0.1 c), has zero loss, and every step's x_0 is that, so the
    ancestral sampler and one DDIM step from x_T end on 1.1 c: only if the sampler reads the network's
    x_0 or v as what it is and adds the estimate back to a residual."""
    diffusion = GaussianDiffusion(20, prediction=prediction)
    spec = DataSpec(kind="image", shape=(3, 8, 8), task=SuperResolution(factor=2))
    net = _Exact(diffusion, 0.1 if residual else 1.1)
    model = ConditionalDDPM(spec, net, diffusion, torch.optim.Adam, residual=residual, progress=False)
    x_in = 0.3 + 0.3 * torch.rand(4, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    target = model.to_data_space(1.1 * model.condition(x_in))  # inside (0, 1): nothing clamped
    assert 0 < target.min() and target.max() < 1
    assert model.training_step((x_in, target, None), 0).item() < 1e-8
    out = model.translate(x_in, torch.Generator().manual_seed(1), sampler)
    assert torch.allclose(out, target.clamp(0, 1), atol=1e-4)
