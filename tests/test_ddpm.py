"""DDPM: networks (UNet, MLP denoiser), the objective, sampling at sampling time, configs, resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from gen_bench.checkpoint import load_model
from gen_bench.config import config_dir
from gen_bench.data.spec import DataSpec
from gen_bench.diffusion import DDIMSampler, DDPMSampler, GaussianDiffusion
from gen_bench.eval import eval_command
from gen_bench.models import build_model
from gen_bench.models.ddpm import DDPM, default_toy_scale, random_hflip
from gen_bench.models.nets import MLPDenoiser, UNet
from gen_bench.models.nets.unet import AttnBlock, timestep_embedding
from gen_bench.train import run_training
from gen_bench.viz import save_scatter

from conftest import QUIET, compose_train

# Training runs here check models, not the evaluation suite (tests/test_evaluation.py does).
FAST = [*QUIET, "eval.enabled=false"]

TOY = DataSpec(kind="toy2d", shape=(2,))
RING = DataSpec(kind="toy2d", shape=(2,), mode_centers=((1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0)),
                mode_std=0.01)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_timestep_embedding_is_the_sinusoidal_closed_form():
    t = torch.tensor([0, 3, 999])
    emb = timestep_embedding(t, 8)  # half = 4 frequencies 10000^(-i/3)
    for row, tv in zip(emb, t.tolist(), strict=True):
        for i in range(4):
            w = 10_000 ** (-i / 3)
            assert row[i].item() == pytest.approx(math.sin(tv * w), abs=1e-4)
            assert row[4 + i].item() == pytest.approx(math.cos(tv * w), abs=1e-4)


@pytest.mark.parametrize("size,channels,mult", [(8, 1, (1, 2)), (16, 3, (1, 2, 2)), (32, 1, (1, 2, 2))])
def test_unet_maps_images_to_same_shape_eps_and_depends_on_t(size, channels, mult):
    torch.manual_seed(0)
    spec = DataSpec(kind="image", shape=(channels, size, size))
    net = UNet(spec, ch=8, ch_mult=mult, num_res_blocks=1, attn_resolutions=(size // 2,), norm_groups=4)
    x = torch.randn(3, channels, size, size)
    t = torch.tensor([0, 10, 500])
    out = net(x, t)
    assert out.shape == x.shape
    assert torch.all(out == 0)  # the output conv starts at zero (init_scale=0 in Ho et al.)
    with torch.no_grad():  # so do the last conv of every block: move every zero-initialised weight
        for p in net.parameters():
            if p.ndim > 1 and not p.any():
                p.normal_(std=0.1)
    a, b = net(x, t), net(x, t.flip(0))
    assert not torch.allclose(a, b)  # the timestep reaches the output


def test_unet_attention_sits_at_the_configured_resolution_and_dropout_is_configurable():
    spec = DataSpec(kind="image", shape=(1, 32, 32))
    count = lambda **kw: sum(isinstance(m, AttnBlock) for m in UNet(spec, ch=8, **kw).modules())  # noqa: E731
    # (1, 2, 2) on 32 px: levels at 32, 16, 8. Down: 2 blocks per level, up: 3, plus the middle.
    assert count(attn_resolutions=()) == 1
    assert count(attn_resolutions=(8,)) == 1 + 2 + 3
    assert count(attn_resolutions=(16, 8)) == 1 + 2 * (2 + 3)
    drops = {m.p for m in UNet(spec, ch=8, dropout=0.3).modules() if isinstance(m, torch.nn.Dropout)}
    assert drops == {0.3}
    with pytest.raises(ValueError, match="divisible by 8"):
        UNet(DataSpec(kind="image", shape=(1, 12, 12)), ch_mult=(1, 2, 2, 2))


def test_default_unet_is_cpu_sized_and_unet_cifar_is_ho_et_als_35_7m_model(tmp_path):
    default = build_model(compose_train(["model=ddpm", "data=digits"], tmp_path).model,
                          DataSpec(kind="image", shape=(1, 32, 32)))
    assert 0.9e6 <= n_params(default.denoiser) <= 2e6
    cfg = compose_train(["model=ddpm_cifar", "data=cifar10"], tmp_path)
    model = build_model(cfg.model, DataSpec(kind="image", shape=(3, 32, 32)))
    n = n_params(model.denoiser)
    print(f"unet_cifar parameters: {n:,}")
    assert abs(n - 35.7e6) <= 0.1e6
    assert cfg.model.ema.decay == 0.9999 and cfg.model.warmup_steps == 5000
    assert {m.p for m in model.denoiser.modules() if isinstance(m, torch.nn.Dropout)} == {0.1}


def test_defaults_follow_ho_et_al(tmp_path):
    cfg = compose_train(["model=ddpm"], tmp_path)
    model = build_model(cfg.model, DataSpec(kind="image", shape=(1, 16, 16)))
    d = model.diffusion
    assert d.num_timesteps == 1000 and d.schedule == "linear"
    assert d.betas[0].item() == pytest.approx(1e-4) and d.betas[-1].item() == pytest.approx(0.02)
    assert isinstance(model.bind_sampler(), DDPMSampler)  # ancestral by default
    assert model.grad_clip == 1.0
    lr = lambda m: m.configure_optimizers()["optimizer"].defaults["lr"]  # noqa: E731
    toy = build_model(compose_train(["model=ddpm", "data=ring8"], tmp_path).model, TOY)
    assert lr(model) == 2e-4 and lr(toy) == 1e-3  # the MLP on 2-D data: 1e-3
    assert cfg.model.ema.decay == 0.999 and cfg.model.ema.warmup > 0
    assert cfg.model.progress is True  # the sampling bar follows the trainer's
    quiet = compose_train(["model=ddpm", "trainer.enable_progress_bar=false"], tmp_path)
    assert quiet.model.progress is False
    cosine = build_model(compose_train(["model=ddpm", "model.diffusion.schedule=cosine"], tmp_path).model,
                         DataSpec(kind="image", shape=(1, 16, 16)))
    assert cosine.diffusion.schedule == "cosine"
    ddim = compose_train(["model=ddpm", "sampler@model.sampler=ddim", "model.sampler.steps=20"], tmp_path)
    sampler = build_model(ddim.model, TOY).bind_sampler()
    assert isinstance(sampler, DDIMSampler) and sampler.steps == 20


def _toy_ddpm(spec: DataSpec = RING, timesteps: int = 10) -> DDPM:
    torch.manual_seed(0)
    return DDPM(spec, MLPDenoiser(spec, hidden=16, depth=2), GaussianDiffusion(timesteps),
                lambda p: torch.optim.Adam(p, lr=1e-3), progress=False)


def test_toy_data_are_scaled_to_unit_variance_in_model_space():
    assert default_toy_scale(RING) == pytest.approx(math.sqrt(0.5 + 0.01**2))
    grid = DataSpec(kind="toy2d", shape=(2,), mode_centers=tuple((a, b) for a in (-4, -2, 0, 2, 4)
                                                                 for b in (-4, -2, 0, 2, 4)), mode_std=0.05)
    assert default_toy_scale(grid) == pytest.approx(math.sqrt(8 + 0.05**2))
    assert default_toy_scale(TOY) == 1.0
    model = _toy_ddpm()
    x = torch.tensor([[1.0, 0.0], [0.0, -1.0]])
    assert torch.allclose(model.to_model_space(x) * model.toy_scale, x)
    assert torch.allclose(model.to_data_space(model.to_model_space(x)), x)
    img = DDPM(DataSpec(kind="image", shape=(1, 8, 8)), UNet(DataSpec(kind="image", shape=(1, 8, 8)), ch=8,
               ch_mult=(1,), attn_resolutions=()), GaussianDiffusion(5), torch.optim.Adam)
    assert img.to_model_space(torch.ones(1, 1, 8, 8)).max() == 1.0  # images: [0, 1] -> [-1, 1]


@pytest.mark.filterwarnings(r"ignore:You are trying to `self.log\(\)`")
def test_training_loss_is_the_process_loss_in_model_space():
    model = _toy_ddpm()
    x = torch.randn(16, 2)
    torch.manual_seed(3)
    got = model.training_step((x, torch.zeros(16)), 0)
    torch.manual_seed(3)
    expected = model.diffusion.loss(model.denoiser, x / model.toy_scale)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_random_hflip_mirrors_about_half_the_images_and_nothing_else():
    x = torch.rand(400, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    y = random_hflip(x, torch.Generator().manual_seed(1))
    same = (y == x).flatten(1).all(1)
    mirrored = (y == x.flip(-1)).flatten(1).all(1)
    assert torch.all(same ^ mirrored)  # each image is itself or its mirror image (never both: random pixels)
    assert 160 < int(mirrored.sum()) < 240  # p = 1/2: 200 +- 10
    assert torch.equal(y, random_hflip(x, torch.Generator().manual_seed(1)))


@pytest.mark.filterwarnings(r"ignore:You are trying to `self.log\(\)`")
def test_hflip_reaches_the_training_batch_and_ddpm_cifar_turns_it_on(tmp_path, monkeypatch):
    spec = DataSpec(kind="image", shape=(1, 8, 8))
    seen = []
    net = UNet(spec, ch=8, ch_mult=(1,), attn_resolutions=(), norm_groups=4)
    model = DDPM(spec, net, GaussianDiffusion(4), torch.optim.Adam, hflip=True)
    monkeypatch.setattr(model.diffusion, "loss", lambda net, x0: seen.append(x0) or x0.sum())
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(3)
    model.training_step((x, torch.zeros(64)), 0)
    torch.manual_seed(3)
    assert torch.equal(seen[0], model.to_model_space(random_hflip(x)))  # from the global RNG, like the noise
    assert 0 < int((seen[0] != model.to_model_space(x)).flatten(1).any(1).sum()) < 64
    cifar = compose_train(["model=ddpm_cifar", "data=cifar10"], tmp_path)
    assert cifar.model.hflip is True
    assert compose_train(["model=ddpm_cifar", "data=ring8"], tmp_path).model.hflip is False
    assert compose_train(["model=ddpm", "data=cifar10"], tmp_path).model.hflip is False
    with pytest.raises(ValueError, match="model.hflip flips images; this is toy2d data"):
        DDPM(TOY, MLPDenoiser(TOY, hidden=8, depth=1), GaussianDiffusion(4), torch.optim.Adam, hflip=True)


def test_sample_contract_and_sampler_choice_at_sampling_time(capfd):
    model = _toy_ddpm()
    rng = torch.get_rng_state()
    a = model.sample(5, generator=torch.Generator().manual_seed(1))
    b = model.sample(5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(torch.get_rng_state(), rng)  # every draw came from the generator
    assert torch.equal(a, b) and a.shape == (5, 2) and model.training
    ddim = model.sample(5, generator=torch.Generator().manual_seed(1),
                        sampler=lambda d, **kw: DDIMSampler(d, steps=2, **kw))
    assert not torch.allclose(a, ddim)
    model.sampler = lambda d, **kw: DDIMSampler(d, steps=2, **kw)  # or switch the model's own sampler
    assert torch.equal(model.sample(5, generator=torch.Generator().manual_seed(1)), ddim)
    # larger requests are cut into batches without changing the noise stream's use
    model.sample_batch_size = 2
    assert model.sample(5, generator=torch.Generator().manual_seed(1)).shape == (5, 2)

    spec = DataSpec(kind="image", shape=(1, 8, 8))
    img = DDPM(spec, UNet(spec, ch=8, ch_mult=(1,), attn_resolutions=(), norm_groups=4), GaussianDiffusion(4),
               torch.optim.Adam, progress=True)
    torch.nn.init.normal_(img.denoiser.conv_out.weight, std=1.0)
    x = img.sample(3, generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, 1, 8, 8) and x.min() >= 0 and x.max() <= 1
    assert "sampling (ddpm)" in capfd.readouterr().err  # the progress bar


def test_gradient_clipping_and_lr_warmup_are_configured():
    model = _toy_ddpm()
    model.warmup_steps, model.grad_clip = 4, 0.5
    conf = model.configure_optimizers()
    sched = conf["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(6):
        lrs.append(sched.get_last_lr()[0])
        conf["optimizer"].step()
        sched.step()
    assert lrs == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])


DDPM_TOY = ["data=ring8", "model=ddpm", "data.batch_size=32", "model.nets.toy2d.denoiser.hidden=16",
            "model.diffusion.num_timesteps=10", "model.training_sampler.steps=3", "model.warmup_steps=2",
            "callbacks.sample_grid.num_points=64",
            "callbacks.sample_grid.every_n_steps=0", "callbacks.checkpoint.every_n_train_steps=1",
            "callbacks.checkpoint.save_top_k=-1", *FAST]


def _ckpt(run_dir, name="last.ckpt"):
    return torch.load(run_dir / "checkpoints" / name, weights_only=False, map_location="cpu")


def test_resume_mid_run_ends_bit_identical_including_ema_and_lr_schedule(tmp_path):
    full = tmp_path / "full"
    run_training(compose_train([*DDPM_TOY, "trainer.max_steps=5"], full))
    resumed = tmp_path / "resumed"
    run_training(compose_train([*DDPM_TOY, "trainer.max_steps=5",
                                f"resume={full / 'checkpoints' / 'step0000002.ckpt'}"], resumed))
    a, b = _ckpt(full), _ckpt(resumed)
    assert a["global_step"] == b["global_step"] == 5
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    assert a["ema"]["num_updates"] == b["ema"]["num_updates"] == 5
    for k, v in a["ema"]["state_dict"].items():
        assert torch.equal(v, b["ema"]["state_dict"][k]), k
    ema, live = a["ema"]["state_dict"], a["state_dict"]
    assert not all(torch.equal(v, live[f"denoiser.{k}"]) for k, v in ema.items())  # the EMA lags
    for oa, ob in zip(a["optimizer_states"], b["optimizer_states"], strict=True):
        for pid, sa in oa["state"].items():
            for name, va in sa.items():
                assert torch.equal(torch.as_tensor(va), torch.as_tensor(ob["state"][pid][name])), name
    assert a["lr_schedulers"] == b["lr_schedulers"]


def test_ddpm_trains_on_digits_with_the_unet(tmp_path):
    cfg = compose_train(["model=ddpm", "data=digits", "data.image_size=16", "data.batch_size=8",
                         "model.nets.image.denoiser.ch=8", "model.diffusion.num_timesteps=4",
                         "model.training_sampler.steps=2", "trainer.max_steps=2",
                         "callbacks.sample_grid.num_samples=4", *FAST], tmp_path)
    summary = run_training(cfg)
    assert summary["status"] == "completed" and summary["steps"] == 2
    assert "train/loss" in summary["final"] and (tmp_path / "samples" / "final.png").is_file()


def test_previews_and_training_time_scores_use_the_training_sampler(tmp_path):
    """model.training_sampler (DDIM) draws the preview scatter and the evaluation callback's samples;
    the model's own sampler (ancestral) stays the default of gen-bench sample / eval."""
    over = [*DDPM_TOY, "trainer.max_steps=3", "eval.enabled=true", "eval=fast", "eval.num_samples=64",
            "eval.batch_size=32", "eval.metrics=[fid,modes]", "eval.every_n_steps=0",
            "eval.modes.num_samples=64"]
    summary = run_training(compose_train(over, tmp_path / "ddim"))
    assert summary["eval"]["draw"]["sampler"] == "ddim3_eta1"  # stochastic DDIM: test_training_sampler.py
    assert summary["eval"]["draw"]["sampler_config"]["steps"] == 3
    model, dm, cfg, _ = load_model(tmp_path / "ddim")
    assert model.bind_sampler().label == "ddpm"  # its own sampler is still ancestral
    grid = cfg.callbacks.sample_grid
    pts = model.sample(grid.num_points, generator=torch.Generator().manual_seed(grid.seed),
                       sampler=lambda d, **kw: DDIMSampler(d, steps=3, eta=1.0, **kw))
    expected = save_scatter(pts, tmp_path / "expected.png", centers=dm.spec.mode_centers, title="DDPM step 3")
    with Image.open(expected) as a, Image.open(tmp_path / "ddim" / "samples" / "scatter_final.png") as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))

    # gen-bench eval: the model's own sampler unless told; told DDIM-3 it reproduces the training scores
    evals = {}
    for name, extra in (("own", []), ("ddim", ["sampler=ddim", "sampler.steps=3", "sampler.eta=1"])):
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            ecfg = compose("eval", overrides=[f"ckpt={tmp_path / 'ddim'}", "eval=fast", "eval.num_samples=64",
                                              "eval.batch_size=32", "eval.metrics=[fid,modes]",
                                              "eval.modes.num_samples=64", f"out_dir={tmp_path / name}",
                                              *extra])
        evals[name] = eval_command(ecfg)["eval"]
    assert evals["own"]["draw"]["sampler"] == "ddpm" and evals["ddim"]["draw"]["sampler"] == "ddim3_eta1"
    fid = summary["eval"]["scores"]["fid"]["value"]
    assert evals["ddim"]["scores"]["fid"]["value"] == pytest.approx(fid, rel=1e-6)
    assert evals["own"]["scores"]["fid"]["value"] != pytest.approx(fid, rel=1e-3)

    summary = run_training(compose_train([*over, "model.training_sampler=null"], tmp_path / "own"))
    assert summary["eval"]["draw"]["sampler"] == "ddpm" and summary["eval"]["draw"]["sampler_config"] is None


def test_a_training_sampler_that_cannot_work_fails_before_training(tmp_path):
    summary = None
    with pytest.raises(ValueError, match=r"model.training_sampler: DDIM steps must be in \[1, 10\], got 50"):
        summary = run_training(compose_train([*DDPM_TOY, "trainer.max_steps=3",
                                              "model.training_sampler.steps=50"], tmp_path))
    assert summary is None and not (tmp_path / "checkpoints" / "last.ckpt").exists()


@pytest.mark.parametrize("prediction", ["x0", "v"])
def test_sampling_repaint_and_the_bound_read_an_x0_or_v_denoiser_as_eps(prediction):
    """``DDPM.prediction`` (what sampling, RePaint and the variational bound call) turns a denoiser of
    x_0 or v into the eps the samplers step with: with the exact denoiser of one point x*, the eps of
    q_sample itself."""
    diffusion = GaussianDiffusion(50, prediction=prediction)
    star = torch.tensor([0.4, -0.3])

    class Exact(torch.nn.Module):
        def forward(self, x, t, y=None):
            ab = diffusion.alphas_cumprod[t, None]
            return diffusion.target(star.expand_as(x), t, (x - ab.sqrt() * star) / (1 - ab).sqrt())

    model = DDPM(TOY, Exact(), diffusion, torch.optim.Adam, progress=False)
    g = torch.Generator().manual_seed(2)
    eps, t = torch.randn(8, 2, generator=g), torch.randint(50, (8,), generator=g)
    x_t = diffusion.q_sample(star.expand(8, 2), t, eps)
    assert torch.allclose(model.prediction(None)(x_t, t), eps, rtol=1e-3, atol=1e-3)
