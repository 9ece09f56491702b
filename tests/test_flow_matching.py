"""Flow matching: the straight path and its loss, Euler and Heun against the exact velocity field of
Gaussian data, the objective, sampling at sampling time, configs, training and exact resume."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from gen_bench.checkpoint import load_model
from gen_bench.config import config_dir
from gen_bench.data.spec import DataSpec
from gen_bench.diffusion import DDIMSampler, EulerSampler, HeunSampler, RectifiedFlow, flow_sample_loop
from gen_bench.eval import eval_command
from gen_bench.models import build_model
from gen_bench.models.flow_matching import FlowMatching
from gen_bench.models.nets import MLPDenoiser, UNet
from gen_bench.sample import sample_command
from gen_bench.train import run_training

from conftest import QUIET, compose_train

FAST = [*QUIET, "eval.enabled=false"]
TOY = DataSpec(kind="toy2d", shape=(2,))
RING = DataSpec(kind="toy2d", shape=(2,), mode_centers=((1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0)),
                mode_std=0.01)
MU = torch.tensor([0.5, -1.0], dtype=torch.float64)
S = torch.tensor([0.3, 0.8], dtype=torch.float64)


# --- the path -----------------------------------------------------------------------------------
def test_path_endpoints_target_and_loss():
    flow = RectifiedFlow()
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(6, 2, generator=g), torch.randn(6, 2, generator=g)
    ends = flow.interpolate(x0, noise, torch.tensor([0.0, 0.0, 1.0, 1.0, 0.25, 0.25]))
    assert torch.equal(ends[:2], x0[:2]) and torch.equal(ends[2:4], noise[2:4])
    assert torch.allclose(ends[4:], 0.75 * x0[4:] + 0.25 * noise[4:])
    # the target is the time derivative of the path, by finite differences
    t = torch.full((6,), 0.4)
    fd = (flow.interpolate(x0, noise, t + 1e-3) - flow.interpolate(x0, noise, t - 1e-3)) / 2e-3
    assert torch.allclose(flow.velocity_target(x0, noise), fd, atol=1e-3)
    torch.manual_seed(0)
    net = MLPDenoiser(TOY, hidden=16, depth=1)
    t = torch.rand(6, generator=g)
    expected = ((net((1 - t[:, None]) * x0 + t[:, None] * noise, t) - (noise - x0)) ** 2).mean()
    assert flow.loss(net, x0, t, noise).item() == pytest.approx(expected.item(), rel=1e-6)
    state = torch.get_rng_state()  # drawn t and noise come from the generator only
    assert flow.loss(net, x0, generator=torch.Generator().manual_seed(3)) == flow.loss(
        net, x0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.get_rng_state(), state)


def test_time_sampling_uniform_and_logit_normal():
    n = 200_000
    u = RectifiedFlow("uniform").sample_time(n, torch.Generator().manual_seed(0))
    assert u.min() >= 0 and u.max() <= 1
    assert u.mean().item() == pytest.approx(0.5, abs=0.005)
    assert u.var().item() == pytest.approx(1 / 12, rel=0.02)
    logit_normal = RectifiedFlow("logit_normal", logit_mean=0.5, logit_std=0.7)
    ln = logit_normal.sample_time(n, torch.Generator().manual_seed(1))
    logit = torch.log(ln / (1 - ln))
    assert logit.mean().item() == pytest.approx(0.5, abs=0.01)
    assert logit.std().item() == pytest.approx(0.7, rel=0.01)
    with pytest.raises(ValueError, match="valid: 'uniform', 'logit_normal'"):
        RectifiedFlow("cosine")


# --- the samplers, on the exact velocity field of Gaussian data -----------------------------------
def _exact_velocity(x, t):
    """For x ~ N(mu, diag(s^2)) and x_t = (1 - t) x + t eps: with V = (1 - t)^2 s^2 + t^2,
    E[x | x_t] = mu + (1 - t) s^2 / V (x_t - (1 - t) mu) and E[eps | x_t] = t / V (x_t - (1 - t) mu),
    so v = E[eps - x | x_t] = (t - (1 - t) s^2) / V (x_t - (1 - t) mu) - mu."""
    t = t.double()[:, None]
    v = (1 - t) ** 2 * S**2 + t**2
    return ((t - (1 - t) * S**2) / v * (x.double() - (1 - t) * MU) - MU).float()


X1 = torch.randn(20_000, 2, generator=torch.Generator().manual_seed(0))


def _map_error(sampler) -> tuple[float, torch.Tensor]:
    """RMS distance from the exact ODE map x_1 -> mu + s x_1 (the flow is affine for Gaussian data)."""
    x = flow_sample_loop(_exact_velocity, sampler, X1).double()
    return float((x - (MU + S * X1.double())).pow(2).sum(1).mean().sqrt()), x


@pytest.mark.parametrize("sampler,tol", [(EulerSampler(200), 0.01), (HeunSampler(20), 0.002)])
def test_euler_and_heun_with_the_exact_field_land_on_the_gaussian_data(sampler, tol):
    err, x = _map_error(sampler)
    assert err < tol  # measured: euler200 0.0041, heun20 0.0007
    assert torch.allclose(x.mean(0), MU, atol=0.01)
    assert torch.allclose(x.std(0), S, rtol=0.02)


@pytest.mark.parametrize("steps", [10, 20])
def test_heun_is_closer_to_the_exact_solution_than_euler(steps):
    euler, x_e = _map_error(EulerSampler(steps))
    heun, x_h = _map_error(HeunSampler(steps))
    assert heun < 0.1 * euler  # measured: 10 steps 0.0022 vs 0.079, 20 steps 0.0007 vs 0.041
    assert ((x_h.std(0) - S).abs() < (x_e.std(0) - S).abs()).all()


def test_orders_of_accuracy():
    """Doubling the steps halves Euler's error (first order) and quarters Heun's (second order)."""
    e = {n: _map_error(EulerSampler(n))[0] for n in (20, 40)}
    h = {n: _map_error(HeunSampler(n))[0] for n in (20, 40)}
    assert 1.7 < e[20] / e[40] < 2.3
    assert 3.2 < h[20] / h[40] < 4.8


def test_samplers_are_stateless_and_call_the_field_as_declared():
    calls = []

    def field(x, t):
        calls.append(float(t[0]))
        return _exact_velocity(x, t)

    for cls in (EulerSampler, HeunSampler):
        s, calls[:] = cls(4), []
        assert s.timesteps() == [(1.0, 0.75), (0.75, 0.5), (0.5, 0.25), (0.25, 0.0)]
        x = X1[:8]
        a, b = s.step(field, 0.5, 0.25, x), s.step(field, 0.5, 0.25, x)
        assert torch.equal(a, b)
        calls[:] = []
        flow_sample_loop(field, s, x)
        assert len(calls) == 4 * cls.network_calls_per_step
    assert calls[:2] == [1.0, 0.75]  # Heun: the field at t, then at t_prev (the Euler predictor)
    euler = EulerSampler(1).step(_exact_velocity, 1.0, 0.0, X1[:4])
    assert torch.allclose(euler, X1[:4] - _exact_velocity(X1[:4], torch.ones(4)))  # x - dt v
    with pytest.raises(ValueError, match="steps must be >= 1"):
        HeunSampler(0)


def test_sampling_stops_at_the_next_step_when_a_stop_was_asked_for(monkeypatch):
    """A SIGTERM during sampling (an evaluation of a run being stopped) is honoured between steps."""
    import signal

    from gen_bench import interrupt

    calls = []

    def field(x, t):
        calls.append(1)
        monkeypatch.setattr(interrupt, "_requested", signal.SIGTERM)  # the signal arrives during step 1
        return _exact_velocity(x, t)

    with pytest.raises(interrupt.Interrupted):
        flow_sample_loop(field, EulerSampler(10), X1[:4])
    assert len(calls) == 1


# --- the model ------------------------------------------------------------------------------------
def _toy_model(spec: DataSpec = RING) -> FlowMatching:
    torch.manual_seed(0)
    return FlowMatching(spec, MLPDenoiser(spec, hidden=16, depth=2), RectifiedFlow(),
                        lambda p: torch.optim.Adam(p, lr=1e-3), progress=False)


@pytest.mark.filterwarnings(r"ignore:You are trying to `self.log\(\)`")
def test_training_loss_is_the_path_loss_in_model_space_with_scaled_time():
    model = _toy_model()
    model.time_scale = 999.0
    x = torch.randn(16, 2)
    torch.manual_seed(3)
    got = model.training_step((x, torch.zeros(16)), 0)
    torch.manual_seed(3)
    t = torch.rand(16)
    noise = torch.randn(16, 2)
    x0 = x / model.toy_scale
    pred = model.velocity((1 - t[:, None]) * x0 + t[:, None] * noise, t * 999)
    assert got.item() == pytest.approx(((pred - (noise - x0)) ** 2).mean().item(), rel=1e-6)


def test_the_unet_and_mlp_take_continuous_time():
    torch.manual_seed(0)
    spec = DataSpec(kind="image", shape=(1, 8, 8))
    unet = UNet(spec, ch=8, ch_mult=(1,), attn_resolutions=(), norm_groups=4)
    with torch.no_grad():
        for p in unet.parameters():
            if p.ndim > 1 and not p.any():
                p.normal_(std=0.1)  # move the zero-initialised convs so the output depends on t
    x = torch.randn(2, 1, 8, 8)
    a, b = unet(x, torch.full((2,), 0.30 * 999)), unet(x, torch.full((2,), 0.31 * 999))
    assert not torch.allclose(a, b)  # t between DDPM's integer steps reaches the output
    mlp = MLPDenoiser(TOY, hidden=16, depth=1)
    p = x[:, 0, 0, :2]
    assert not torch.allclose(mlp(p, torch.full((2,), 299.7)), mlp(p, torch.full((2,), 309.7)))


def test_sample_contract_and_sampler_choice_at_sampling_time(capfd):
    model = _toy_model()
    rng = torch.get_rng_state()
    a = model.sample(5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, model.sample(5, generator=torch.Generator().manual_seed(1)))
    assert torch.equal(torch.get_rng_state(), rng) and a.shape == (5, 2) and model.training
    assert model.bind_sampler().label == "heun50"  # its own
    euler3 = partial(EulerSampler, steps=3)
    euler = model.sample(5, generator=torch.Generator().manual_seed(1), sampler=euler3)
    assert not torch.allclose(a, euler)
    # the same noise, integrated by hand: x(1) = noise scaled back to data units at x(0)
    noise = torch.randn(5, 2, generator=torch.Generator().manual_seed(1))
    with model.sampling_mode():
        by_hand = flow_sample_loop(model.velocity_field, EulerSampler(3), noise) * model.toy_scale
    assert torch.allclose(euler, by_hand)
    model.sample_batch_size = 2  # cut into batches without changing the noise stream's use
    assert torch.allclose(model.sample(5, generator=torch.Generator().manual_seed(1), sampler=euler3), euler,
                          atol=1e-6)
    model.progress = True
    model.sample(2, sampler=partial(EulerSampler, steps=2))
    assert "sampling (euler2)" in capfd.readouterr().err


def test_a_diffusion_sampler_is_refused_and_ddpm_refuses_flow_samplers(tmp_path):
    model = _toy_model()
    with pytest.raises(ValueError, match="use sampler=euler or sampler=heun, not DDIMSampler"):
        model.bind_sampler(partial(DDIMSampler, steps=3))
    with pytest.raises(ValueError, match="needs a FlowSampler"):
        model.bind_sampler(lambda: object())
    ddpm = build_model(compose_train(["model=ddpm", "data=ring8"], tmp_path).model, RING)
    with pytest.raises(ValueError, match="not the flow sampler HeunSampler"):
        ddpm.bind_sampler(partial(HeunSampler, steps=3))


def test_defaults_reuse_ddpms_networks_optimizer_and_ema(tmp_path):
    cfg = compose_train(["model=flow_matching"], tmp_path)
    ddpm = compose_train(["model=ddpm"], tmp_path)
    assert (OmegaConf.to_container(cfg.model.nets.image.velocity)
            == OmegaConf.to_container(ddpm.model.nets.image.denoiser))
    assert (OmegaConf.to_container(cfg.model.nets.toy2d.velocity)
            == OmegaConf.to_container(ddpm.model.nets.toy2d.denoiser))
    mine, theirs = OmegaConf.to_container(cfg.model), OmegaConf.to_container(ddpm.model)
    for key in ("optimizer", "warmup_steps", "grad_clip", "toy_scale", "sample_batch_size", "progress",
                "hflip", "ema"):
        assert mine[key] == theirs[key], key
    model = build_model(cfg.model, DataSpec(kind="image", shape=(1, 16, 16)))
    assert isinstance(model, FlowMatching) and model.time_scale == 999
    assert model.flow.time_sampling == "uniform"
    assert model.bind_sampler().label == "heun50"
    assert cfg.model.training_sampler.steps == 50
    assert cfg.model.training_sampler._target_.endswith("EulerSampler")
    toy = build_model(compose_train(["model=flow_matching", "data=ring8"], tmp_path).model, RING)
    assert toy.configure_optimizers()["optimizer"].defaults["lr"] == 1e-3
    assert toy.toy_scale == pytest.approx(math.sqrt(0.5 + 0.01**2))
    logit = compose_train(["model=flow_matching", "model.flow.time_sampling=logit_normal"], tmp_path)
    assert build_model(logit.model, RING).flow.time_sampling == "logit_normal"


FM_TOY = ["data=ring8", "model=flow_matching", "data.batch_size=32",
          "model.nets.toy2d.velocity.hidden=16",
          "model.training_sampler.steps=3", "model.warmup_steps=2", "callbacks.sample_grid.num_points=64",
          "callbacks.sample_grid.every_n_steps=0", "callbacks.checkpoint.every_n_train_steps=1",
          "callbacks.checkpoint.save_top_k=-1", *FAST]


def _ckpt(run_dir, name="last.ckpt"):
    return torch.load(run_dir / "checkpoints" / name, weights_only=False, map_location="cpu")


def test_resume_mid_run_ends_bit_identical_including_ema_and_lr_schedule(tmp_path):
    full = tmp_path / "full"
    run_training(compose_train([*FM_TOY, "trainer.max_steps=5"], full))
    resumed = tmp_path / "resumed"
    run_training(compose_train([*FM_TOY, "trainer.max_steps=5",
                                f"resume={full / 'checkpoints' / 'step0000002.ckpt'}"], resumed))
    a, b = _ckpt(full), _ckpt(resumed)
    assert a["global_step"] == b["global_step"] == 5
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    assert a["ema"]["num_updates"] == b["ema"]["num_updates"] == 5
    for k, v in a["ema"]["state_dict"].items():
        assert torch.equal(v, b["ema"]["state_dict"][k]), k
    live = a["state_dict"]
    assert not all(torch.equal(v, live[f"velocity.{k}"]) for k, v in a["ema"]["state_dict"].items())  # lags
    for oa, ob in zip(a["optimizer_states"], b["optimizer_states"], strict=True):
        for pid, sa in oa["state"].items():
            for name, va in sa.items():
                assert torch.equal(torch.as_tensor(va), torch.as_tensor(ob["state"][pid][name])), name
    assert a["lr_schedulers"] == b["lr_schedulers"]
    assert (resumed / "metrics.json").read_text().count('"batches_seen": 5') == 1


def test_trains_on_digits_with_the_unet(tmp_path):
    cfg = compose_train(["model=flow_matching", "data=digits", "data.image_size=16", "data.batch_size=8",
                         "model.nets.image.velocity.ch=8", "model.training_sampler.steps=2",
                         "trainer.max_steps=2",
                         "callbacks.sample_grid.num_samples=4", *FAST], tmp_path)
    summary = run_training(cfg)
    assert summary["status"] == "completed" and summary["steps"] == 2
    assert (tmp_path / "samples" / "final.png").is_file()


def test_training_sampler_for_scores_and_any_sampler_for_sample_and_eval(tmp_path):
    over = [*FM_TOY, "trainer.max_steps=3", "eval.enabled=true", "eval=fast", "eval.num_samples=64",
            "eval.batch_size=32", "eval.metrics=[fid]", "eval.every_n_steps=0"]
    summary = run_training(compose_train(over, tmp_path / "run"))
    assert summary["eval"]["draw"]["sampler"] == "euler3"
    model, *_ = load_model(tmp_path / "run")
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        scfg = compose("sample", overrides=[f"ckpt={tmp_path / 'run'}", "n=16", "sampler=heun",
                                            "sampler.steps=2", f"out={tmp_path / 'samples'}"])
        ecfg = compose("eval", overrides=[f"ckpt={tmp_path / 'run'}", "eval=fast", "eval.num_samples=64",
                                          "eval.batch_size=32", "eval.metrics=[fid]", "sampler=euler",
                                          "sampler.steps=3", f"out_dir={tmp_path / 'eval'}"])
    sample_command(scfg)
    expected = model.sample(16, generator=torch.Generator().manual_seed(0),
                            sampler=partial(HeunSampler, steps=2))
    assert torch.equal(torch.load(tmp_path / "samples" / "samples.pt"), expected)
    assert (tmp_path / "samples" / "scatter.png").is_file()
    evaluated = eval_command(ecfg)["eval"]
    assert evaluated["draw"]["sampler"] == "euler3"
    fid = summary["eval"]["scores"]["fid"]["value"]
    assert evaluated["scores"]["fid"]["value"] == pytest.approx(fid, rel=1e-6)
