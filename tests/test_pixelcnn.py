"""PixelCNN: the masks (each output sees only earlier sub-pixels, and all of them: no blind spot), the
sampling order, cached against uncached sampling, its FLOPs, bits per dimension (uniform at the start,
towards 0 on a constant image), the bpd metric, and the model end to end: training, exact resume, EMA,
``gen-bench sample`` and ``eval``."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from gen_bench.checkpoint import load_model
from gen_bench.compute import count_flops
from gen_bench.config import config_dir
from gen_bench.data.spec import DataSpec
from gen_bench.diffusion import DDIMSampler
from gen_bench.eval import eval_command
from gen_bench.io import read_json
from gen_bench.leaderboard import default_direction
from gen_bench.metrics.engine import Evaluator, settings_from
from gen_bench.models import GenerativeModule, build_model
from gen_bench.models.nets.pixelcnn import GatedPixelCNN, inverse_cdf
from gen_bench.models.pixelcnn import PixelCNN
from gen_bench.sample import sample_command
from gen_bench.train import run_training

from conftest import QUIET, compose_train, run_cli


def _net(shape: tuple[int, int, int], levels: int = 5, hidden: int | None = None, layers: int = 3,
         kernel: int = 3, seed: int = 0) -> GatedPixelCNN:
    """A tiny network with every weight random (the head's last layer too, which starts at zero); with
    RGB its feature channels split unevenly among the channel groups (13 = 5 + 4 + 4)."""
    torch.manual_seed(seed)
    c = shape[0]
    net = GatedPixelCNN(DataSpec(kind="image", shape=shape), levels=levels, hidden=hidden or 4 * c + 1,
                        layers=layers, kernel=kernel, head=4 * c + 2)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.5)
    return net.eval()


def _order(shape: tuple[int, int, int]) -> torch.Tensor:
    """(C*H*W,) the sampling step of each sub-pixel, indexed as (C, H, W) flattened: raster order over
    pixels, channels in order within a pixel."""
    c, h, w = shape
    return (torch.arange(h * w).view(1, h, w) * c + torch.arange(c).view(c, 1, 1)).flatten()


def _dependencies(net: GatedPixelCNN, shape: tuple[int, int, int]) -> torch.Tensor:
    """(D, D) bool: entry (t, s) true when the logits of sub-pixel t have a non-zero gradient with
    respect to input sub-pixel s at one of 4 random inputs (both indexed as (C, H, W) flattened)."""
    x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(1), requires_grad=True)
    logits = net(x)                                                    # (4, levels, C, H, W)
    rows = []
    for t in range(math.prod(shape)):
        c, i, j = (int(v) for v in torch.unravel_index(torch.tensor(t), shape))
        (g,) = torch.autograd.grad(logits[:, :, c, i, j].sum(), x, retain_graph=True)
        rows.append((g != 0).flatten(1).any(0))
    return torch.stack(rows)


# --- the masks and the sampling order ---------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 4, 4), (3, 4, 4)])
def test_each_output_depends_on_exactly_the_earlier_subpixels(shape):
    """The gradient of every output with respect to every input: sub-pixel t depends on input s only
    when s comes before t in raster order (channels R -> G -> B within a pixel), and, with the receptive
    field covering the image, on every such s (the vertical stack leaves no blind spot)."""
    order = _order(shape)
    earlier = order[None, :] < order[:, None]
    deps = _dependencies(_net(shape, layers=4), shape)
    assert torch.equal(deps, earlier)
    # a shallow network sees less, never more
    shallow = _dependencies(_net((1, 6, 6), layers=2), (1, 6, 6))
    o6 = _order((1, 6, 6))
    earlier6 = o6[None, :] < o6[:, None]
    assert not (shallow & ~earlier6).any() and shallow.sum() < earlier6.sum()


@pytest.mark.parametrize(("shape", "temperature"), [((1, 5, 6), 1.0), ((3, 4, 5), 0.7)])
def test_the_sampled_order_is_the_training_order(shape, temperature):
    """Each sub-pixel of a sample is the inverse-CDF draw, at its own uniform, from the logits the
    network gives it when the finished sample is fed back with teacher forcing: so every sub-pixel was
    drawn after all the sub-pixels its logits read, in the order the masks train."""
    net = _net(shape, levels=7)
    u = torch.rand(64, math.prod(shape), generator=torch.Generator().manual_seed(2))
    c, h, w = shape
    with torch.no_grad():
        for cached in (True, False):
            q = net.generate(u, temperature, cached=cached)
            logits = net(net.to_input(q))                              # (B, levels, C, H, W)
            per_step = logits.permute(0, 3, 4, 2, 1).reshape(64, -1, 7)  # (B, steps in raster order, levels)
            redrawn = torch.stack([inverse_cdf(per_step[:, t] / temperature, u[:, t])
                                   for t in range(u.shape[1])], 1)
            assert torch.equal(redrawn, q.permute(0, 2, 3, 1).reshape(64, -1))
            assert q.unique().numel() == 7  # a varied sample: the check is not about a constant image


@pytest.mark.parametrize("shape", [(1, 6, 6), (3, 4, 4)])
def test_cached_and_uncached_sampling_give_identical_samples(shape):
    model = PixelCNN(DataSpec(kind="image", shape=shape), _net(shape, levels=6, layers=3, kernel=5),
                     partial(torch.optim.Adam), levels=6, progress=False)
    cached = model.sample(40, torch.Generator().manual_seed(5))
    model.cached = False
    uncached = model.sample(40, torch.Generator().manual_seed(5))
    assert torch.equal(cached, uncached) and cached.unique().numel() == 6
    model.cached, model.sample_batch_size = True, 7  # cut into batches: the same images
    assert torch.equal(model.sample(40, torch.Generator().manual_seed(5)), cached)
    assert cached.shape == (40, *shape) and set((cached * 5).round().unique().tolist()) <= set(range(6))
    assert model.sampler_label() == "ancestral" and model.training  # the mode it had, restored


def test_sampling_costs_one_network_pass_per_sample_and_uncached_one_per_subpixel():
    """FLOPs of a cached sample = one forward pass less the vertical stack of the last row (it feeds
    nothing); uncached = one forward pass per sub-pixel."""
    for shape in [(3, 4, 4), (1, 7, 7)]:
        c, h, w = shape
        net = _net(shape, levels=6, layers=3, kernel=3)
        model = PixelCNN(DataSpec(kind="image", shape=shape), net, partial(torch.optim.Adam), levels=6,
                         progress=False)
        forward, _ = count_flops(lambda: net(torch.zeros(1, *shape)))  # noqa: B023
        p = net.p
        last_row = sum(2 * layer.v_conv.in_channels * layer.v_conv.out_channels * (p + 1) * (2 * p + 1) * w
                       for layer in net.layers)
        cached, _ = count_flops(lambda: model.sample(2))  # noqa: B023
        assert cached / 2 == forward - last_row
        model.cached = False
        uncached, _ = count_flops(lambda: model.sample(2))  # noqa: B023
        assert uncached / 2 == c * h * w * forward


# --- bits per dimension -------------------------------------------------------------------------
def _model(tmp_path, *over: str, shape=(1, 8, 8)) -> PixelCNN:
    """A tiny PixelCNN as the config builds it, seeded."""
    torch.manual_seed(0)
    cfg = compose_train(["model=pixelcnn", f"model.nets.image.net.hidden={4 * shape[0]}",
                         "model.nets.image.net.layers=2", "model.nets.image.net.head=8",
                         "model.progress=false", *over], tmp_path)
    return build_model(cfg.model, DataSpec(kind="image", shape=shape))


def test_an_untrained_model_scores_log2_levels_and_one_trained_on_a_constant_image_nearly_zero(tmp_path):
    for levels in (16, 256):
        model = _model(tmp_path, f"model.levels={levels}", shape=(3, 8, 8))
        bits = model.bits_per_dim(torch.rand(5, 3, 8, 8))
        assert bits.shape == (5,) and torch.allclose(bits, torch.full((5,), math.log2(levels)))
    model = _model(tmp_path, "model.levels=16")
    constant = torch.full((8, 1, 8, 8), 0.6)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    curve = [float(model.bits_per_dim(constant).mean())]
    for step in range(1, 151):
        loss = model.nll_bits(model.quantise(constant)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0:
            curve.append(float(model.bits_per_dim(constant).mean()))
    after = model.bits_per_dim(constant)
    assert curve[0] == pytest.approx(4.0) and curve == sorted(curve, reverse=True) and curve[-1] < 0.02
    # the training loss is the same quantity, in bits per dimension, on the batch
    with pytest.warns(UserWarning, match="self.log"):  # no trainer here to log to
        loss = float(model.training_step((constant,), 0).detach())
    assert loss == pytest.approx(float(after.mean()), rel=1e-4)
    # ... and samples from it, sharpened, are that image
    model.temperature = 0.1
    assert torch.equal(model.sample(4, torch.Generator().manual_seed(0)), torch.full((4, 1, 8, 8), 9 / 15))


class Noise(GenerativeModule):
    """Uniform noise images: a model without a likelihood (the contract's default)."""

    def sample(self, n, generator=None, *, labels=None, sampler=None):
        return torch.rand(n, *self.spec.shape, generator=generator)


def test_bpd_is_scored_on_the_heldout_split_for_likelihood_models_only(tmp_path):
    cfg = compose_train(["data.image_size=8", "eval=fast", "eval.metrics=[bpd]", "eval.num_samples=4",
                         "eval.batch_size=64", "eval.extractor=random"], tmp_path)
    digits = instantiate(cfg.data)
    digits.setup()
    model = _model(tmp_path, "model.levels=32")
    evaluator = Evaluator(cfg.eval, digits)
    result = evaluator.evaluate(model)
    assert result.scores["bpd"]["value"] == pytest.approx(5.0)  # untrained: log2(32)
    proto = result.protocols[result.scores["bpd"]["protocol_id"]]
    assert proto["split"] == "heldout" and proto["num_images"] == len(digits.heldout_set) == 180
    assert proto["likelihood"]["kind"] == "exact" and proto["likelihood"]["levels"] == 32

    def by_hand(x: torch.Tensor) -> float:
        """Mean -log2 p over the sub-pixels of [0, 1] images x at 32 levels."""
        q = (x * 31).round().long()
        with torch.no_grad():
            logp = torch.log_softmax(model.net(q.float() / 31 * 2 - 1), dim=1).gather(1, q[:, None])
        return float(-logp.mean() / math.log(2))

    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    batches = iter(digits.train_dataloader())  # endless: training counts steps, not epochs
    for _ in range(5):
        loss = model.nll_bits(model.quantise(next(batches)[0])).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    trained = evaluator.evaluate(model).scores["bpd"]["value"]  # the same evaluator scores the new weights
    everything = digits.heldout_set[torch.arange(180)][0]
    assert trained == pytest.approx(by_hand(everything), rel=1e-5) and trained < 5.0
    settings = settings_from({**cfg.eval, "bpd": {"num_samples": 50, "subset_seed": 3}})
    subset = Evaluator(settings, digits).evaluate(model).scores["bpd"]["value"]
    pick = torch.randperm(180, generator=torch.Generator().manual_seed(3))[:50].sort().values
    assert subset == pytest.approx(by_hand(digits.heldout_set[pick][0]), rel=1e-5) and subset != trained

    # a model without a likelihood (scored by the same evaluator), and samples without their model,
    # skip it with the reason
    noise = Noise(digits.spec)
    assert noise.likelihood_protocol() is None
    with pytest.raises(NotImplementedError, match="Noise has no likelihood"):
        noise.bits_per_dim(torch.rand(2, 1, 8, 8))
    skipped = evaluator.evaluate(noise).skipped["bpd"]
    assert skipped == "Noise has no likelihood (likelihood models: pixelcnn, and ddpm on images: a bound)"
    samples_only = Evaluator(cfg.eval, digits)
    samples_only.setup("cpu")
    assert "without their model" in samples_only.skipped["bpd"]
    assert default_direction("bpd") == "min"


def test_settings_of_bpd_are_checked():
    with pytest.raises(ValueError, match="eval.bpd.split must be 'train' or 'heldout'"):
        settings_from({"bpd": {"split": "test"}})
    with pytest.raises(ValueError, match="eval.bpd.num_samples must be >= 1"):
        settings_from({"bpd": {"num_samples": 0}})


# --- the model --------------------------------------------------------------------------------------
def test_images_only_one_level_count_and_no_sampler(tmp_path, capfd):
    with pytest.raises(ValueError, match="'pixelcnn' has no networks for toy2d data; it supports: image"):
        build_model(compose_train(["model=pixelcnn", "data=ring8"], tmp_path).model,
                    DataSpec(kind="toy2d", shape=(2,)))
    net = _net((1, 4, 4), levels=4)
    with pytest.raises(ValueError, match="video data are not supported"):
        PixelCNN(DataSpec(kind="video", shape=(1, 2, 4, 4)), net, partial(torch.optim.Adam), levels=4)
    with pytest.raises(ValueError, match="the network predicts 4 levels, the model quantises to 8"):
        PixelCNN(DataSpec(kind="image", shape=(1, 4, 4)), net, partial(torch.optim.Adam), levels=8)
    model = PixelCNN(DataSpec(kind="image", shape=(1, 4, 4)), net, partial(torch.optim.Adam), levels=4,
                     temperature=0.5, progress=False)
    assert model.sampler_label() == "ancestral_t0.5"
    with pytest.raises(ValueError, match="pixelcnn samples pixel by pixel .* takes no sampler="):
        model.sample(2, sampler=partial(DDIMSampler, steps=2))
    with pytest.raises(ValueError, match="not class-conditional"):
        model.sample(2, labels=torch.zeros(2, dtype=torch.long))
    model.progress = True
    model.sample(1)
    assert "sampling (pixel by pixel)" in capfd.readouterr().err
    with pytest.raises(ValueError, match="2 feature channels cannot serve 3 image channels"):
        GatedPixelCNN(DataSpec(kind="image", shape=(3, 4, 4)), levels=4, hidden=2)


def test_a_lower_temperature_sharpens_the_draws():
    """At temperature T the draw is the softmax of logits / T: T -> 0 takes the most likely level."""
    net = _net((1, 4, 4), levels=9)
    u = torch.rand(300, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cold = net.generate(u, temperature=1e-4)
        greedy = torch.zeros_like(cold)
        for t in range(16):  # greedy decoding by hand, in raster order
            i, j = divmod(t, 4)
            greedy[:, 0, i, j] = net(net.to_input(greedy))[:, :, 0, i, j].argmax(1)
    assert torch.equal(cold, greedy)


PC_RUN = ["model=pixelcnn", "data=digits", "data.image_size=8", "data.batch_size=16", "model.levels=8",
          "model.nets.image.net.hidden=8", "model.nets.image.net.layers=2", "model.nets.image.net.head=8",
          "callbacks.sample_grid.every_n_steps=0", "callbacks.sample_grid.num_samples=4",
          "callbacks.checkpoint.every_n_train_steps=1", "callbacks.checkpoint.save_top_k=-1", *QUIET]


def _ckpt(run_dir, name="last.ckpt"):
    return torch.load(run_dir / "checkpoints" / name, weights_only=False, map_location="cpu")


def test_resume_mid_run_ends_bit_identical_including_ema(tmp_path):
    over = [*PC_RUN, "eval.enabled=false", "trainer.max_steps=5"]
    full = tmp_path / "full"
    summary = run_training(compose_train(over, full))
    assert summary["status"] == "completed" and "train/bpd" in summary["final"]
    resumed = tmp_path / "resumed"
    run_training(compose_train([*over, f"resume={full / 'checkpoints' / 'step0000002.ckpt'}"], resumed))
    a, b = _ckpt(full), _ckpt(resumed)
    assert a["global_step"] == b["global_step"] == 5
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    assert a["ema"]["network"] == "net" and a["ema"]["num_updates"] == b["ema"]["num_updates"] == 5
    for k, v in a["ema"]["state_dict"].items():
        assert torch.equal(v, b["ema"]["state_dict"][k]), k
    assert not all(torch.equal(v, a["state_dict"][f"net.{k}"]) for k, v in a["ema"]["state_dict"].items())
    for oa, ob in zip(a["optimizer_states"], b["optimizer_states"], strict=True):
        for pid, sa in oa["state"].items():
            for name, va in sa.items():
                assert torch.equal(torch.as_tensor(va), torch.as_tensor(ob["state"][pid][name])), name


def test_trains_samples_and_scores_bpd_beside_fid_from_the_command_line(tmp_path):
    """A budgeted run (the steps from the measured FLOPs), scored with bpd and FID during training;
    then ``gen-bench sample`` (with the EMA weights) and ``gen-bench eval`` from the checkpoint."""
    ev = ["eval=fast", "eval.num_samples=32", "eval.batch_size=32", "eval.metrics=[fid,bpd]"]
    probe = run_training(compose_train([*PC_RUN, *ev, "eval.enabled=false", "trainer.max_steps=1"],
                                       tmp_path / "probe"))
    step_flops = probe["compute"]["flops_per_step"]
    run = tmp_path / "run"
    summary = run_training(compose_train([*PC_RUN, *ev, f"budget.train_flops={3.5 * step_flops}",
                                          "budget.points=1"], run))
    assert summary["steps"] == 3 and summary["compute"]["train_flops"] == 3 * step_flops
    scores, draw = summary["eval"]["scores"], summary["eval"]["draw"]
    assert {"fid", "bpd"} <= set(scores)
    assert summary["final"]["val/bpd"] == pytest.approx(scores["bpd"]["value"])
    assert draw["sampler"] == "ancestral" and draw["ema"] is True
    model, *_ = load_model(run)
    net = model.net
    forward, _ = count_flops(lambda: net(torch.zeros(1, 1, 8, 8)))
    assert 0.9 * forward < draw["sampling_flops_per_sample"] < forward  # one pass per sample, cached
    assert summary["final"]["compute/sampling_flops_per_sample"] == draw["sampling_flops_per_sample"]

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        scfg = compose("sample", overrides=[f"ckpt={run}", "n=9", "seed=4", f"out={tmp_path / 'samples'}"])
        ecfg = compose("eval", overrides=[f"ckpt={run}", *ev, f"out_dir={tmp_path / 'eval'}"])
        bad = compose("sample", overrides=[f"ckpt={run}", "sampler=ddim", f"out={tmp_path / 'x'}"])
    sample_command(scfg)
    assert torch.equal(torch.load(tmp_path / "samples" / "samples.pt"),
                       model.sample(9, generator=torch.Generator().manual_seed(4)))
    assert (tmp_path / "samples" / "samples.png").is_file()
    with pytest.raises(ValueError, match="takes no sampler="):
        sample_command(bad)
    evaluated = eval_command(ecfg)["eval"]
    for name in ("fid", "bpd"):
        assert evaluated["scores"][name]["protocol_id"] == scores[name]["protocol_id"]
        assert evaluated["scores"][name]["value"] == pytest.approx(scores[name]["value"], rel=1e-6)


def test_two_process_ddp_training_scores_what_one_process_scores(tmp_path):
    """Lightning DDP on CPU (2 processes, gloo): each process scores its share of the held-out batches
    for bpd (summed across processes) and of the samples for FID; one process evaluating the same
    checkpoint gets the same numbers."""
    run = tmp_path / "ddp"
    ev = ["eval=fast", "eval.num_samples=32", "eval.batch_size=16", "eval.metrics=[fid,bpd]",
          "eval.extractor=random"]
    r = run_cli(["train", *PC_RUN, *ev, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                 "trainer.max_steps=2", f"hydra.run.dir={run}"], cwd=tmp_path, timeout=170)
    assert r.returncode == 0, r.stderr[-4000:]
    summary = read_json(run / "metrics.json")
    assert summary["status"] == "completed" and summary["compute"]["world_size"] == 2
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("eval", overrides=[f"ckpt={run}", *ev, "device=cpu", f"out_dir={tmp_path / 'single'}"])
    single = eval_command(cfg)["eval"]["scores"]
    for name in ("bpd", "fid"):
        assert single[name]["protocol_id"] == summary["eval"]["scores"][name]["protocol_id"]
        assert single[name]["value"] == pytest.approx(summary["eval"]["scores"][name]["value"], rel=1e-6)
