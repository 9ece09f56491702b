"""DPM-Solver++(2M): against the exact ODE map of Gaussian data, an independent float64 implementation
of the paper's Algorithm 2, DDIM where they coincide, and the model / CLI plumbing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from gen_bench.checkpoint import load_model
from gen_bench.config import config_dir
from gen_bench.data.spec import DataSpec
from gen_bench.diffusion import DDIMSampler, DPMSolverPP, GaussianDiffusion, sample_loop
from gen_bench.eval import eval_command
from gen_bench.models.nets import MLPDenoiser
from gen_bench.sample import sample_command
from gen_bench.train import run_training

from conftest import QUIET, compose_train

TOY = DataSpec(kind="toy2d", shape=(2,))
MU = torch.tensor([0.5, -1.0], dtype=torch.float64)
S = torch.tensor([0.3, 0.8], dtype=torch.float64)


def _exact_eps(d: GaussianDiffusion, mu: torch.Tensor, s: torch.Tensor):
    """For x_0 ~ N(mu, diag(s^2)): E[eps | x_t] = sqrt(1 - ab) (x_t - sqrt(ab) mu) / (ab s^2 + 1 - ab)."""

    def eps(x, t):
        ab = d.alphas_cumprod[t].double()[:, None]
        return ((1 - ab).sqrt() * (x.double() - ab.sqrt() * mu) / (ab * s**2 + 1 - ab)).float()

    return eps


def _exact_map(d: GaussianDiffusion, x_T: torch.Tensor) -> torch.Tensor:
    """The probability-flow ODE maps the marginal at T-1, N(sqrt(ab) mu, ab s^2 + 1 - ab), affinely
    onto the data N(mu, s^2): x_0 = mu + s (x_T - sqrt(ab) mu) / sqrt(ab s^2 + 1 - ab)."""
    ab = d.alphas_cumprod[-1].double()
    return MU + S * (x_T.double() - ab.sqrt() * MU) / (ab * S**2 + 1 - ab).sqrt()


def _map_error(sampler, d: GaussianDiffusion, x_T: torch.Tensor) -> tuple[float, torch.Tensor]:
    """RMS distance of the sampler's deterministic map from the exact one (a W2 bound), and the samples."""
    x = sample_loop(_exact_eps(d, MU, S), sampler, x_T).double()
    return float((x - _exact_map(d, x_T)).pow(2).sum(1).mean().sqrt()), x


X_T = torch.randn(20_000, 2, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name,steps", [("dpmpp", 50), ("ddim", 500)])
def test_with_the_exact_denoiser_it_and_ddim_land_on_the_gaussian_data(name, steps):
    d = GaussianDiffusion(1000)
    sampler = DPMSolverPP(d, steps=steps) if name == "dpmpp" else DDIMSampler(d, steps=steps)
    err, x = _map_error(sampler, d, X_T)
    assert err < 0.01  # measured: dpmpp2m50 0.0063, ddim500 0.0043
    assert torch.allclose(x.mean(0), MU, atol=0.01)  # within 0.01 of mu (standard error 0.002-0.006)
    assert torch.allclose(x.std(0), S, rtol=0.02)


@pytest.mark.parametrize("steps", [10, 20])
def test_it_is_closer_to_the_exact_ode_solution_than_ddim_at_the_same_number_of_calls(steps):
    d = GaussianDiffusion(1000)
    dpm, x_dpm = _map_error(DPMSolverPP(d, steps=steps), d, X_T)
    ddim, x_ddim = _map_error(DDIMSampler(d, steps=steps), d, X_T)
    # measured: 10 steps 0.128 vs 0.204, 20 steps 0.043 vs 0.103
    assert dpm < 0.75 * ddim
    assert ((x_dpm.std(0) - S).abs() < (x_ddim.std(0) - S).abs()).all()  # and so is the spread


def test_it_is_second_order():
    """Doubling the steps divides DPM-Solver++'s error by about 4 (DDIM's, first order, by about 2)."""
    d = GaussianDiffusion(1000)
    err = {n: _map_error(DPMSolverPP(d, steps=n), d, X_T)[0] for n in (80, 160)}
    ddim = {n: _map_error(DDIMSampler(d, steps=n), d, X_T)[0] for n in (80, 160)}
    assert 3.3 < err[80] / err[160] < 5  # measured 3.96 (DDIM 1.98)
    assert 1.7 < ddim[80] / ddim[160] < 2.3


def test_timesteps_end_with_a_jump_to_x0_and_the_network_is_called_steps_times():
    d = GaussianDiffusion(1000)
    pairs = DPMSolverPP(d, steps=5).timesteps()
    assert pairs == [(999, 799), (799, 599), (599, 400), (400, 200), (200, -1)]
    assert len(DPMSolverPP(d, steps=999).timesteps()) == 999
    for bad in (0, 1000):
        with pytest.raises(ValueError, match=r"DPM-Solver\+\+ steps must be in \[1, 999\]"):
            DPMSolverPP(d, steps=bad)


def _net(seed: int = 0) -> MLPDenoiser:
    torch.manual_seed(seed)
    return MLPDenoiser(TOY, hidden=16, depth=2).eval()


def test_first_order_steps_are_ddim_steps():
    """Without a previous prediction a step is DPM-Solver++(1), which is DDIM with eta = 0; one step
    is DDIM with one step."""
    d, net = GaussianDiffusion(50), _net(1)
    x = 2 * torch.randn(8, 2, generator=torch.Generator().manual_seed(1))
    dpm, ddim = DPMSolverPP(d, steps=5, clip_x0=1.0), DDIMSampler(d, steps=5, clip_x0=1.0)
    with torch.no_grad():
        for t, tp in ((49, 30), (20, 3), (3, -1)):
            eps = net(x, torch.full((8,), t))
            assert torch.allclose(dpm.step(eps, t, tp, x), ddim.step(eps, t, tp, x), atol=1e-5), t
        x_T = torch.randn(8, 2, generator=torch.Generator().manual_seed(2))
        one = sample_loop(net, DPMSolverPP(d, steps=1), x_T)
        assert torch.allclose(one, sample_loop(net, DDIMSampler(d, steps=1), x_T), atol=1e-5)


def test_step_is_pure_and_checks_the_previous_prediction():
    d, net = GaussianDiffusion(20), _net(2)
    s = DPMSolverPP(d, steps=4)
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        eps = net(x, torch.full((4,), 9))
    prev = (14, torch.randn(4, 2, generator=torch.Generator().manual_seed(4)))
    a, b = s.step(eps, 9, 4, x, previous=prev), s.step(eps, 9, 4, x, previous=prev)
    assert torch.equal(a, b)
    assert not torch.allclose(a, s.step(eps, 9, 4, x))  # the previous prediction is used
    with pytest.raises(ValueError, match="larger timestep"):
        s.step(eps, 9, 4, x, previous=(9, prev[1]))


def _reference_dpmpp_2m(net, T: int, steps: int, x_T: np.ndarray) -> np.ndarray:
    """Algorithm 2 of Lu et al. (DPM-Solver++(2M)) in float64 numpy, written from the paper, on the
    time-uniform grid (steps + 1 points over [T-1, 0], the last one replaced by the data, sigma = 0)."""
    ab = np.cumprod(1 - np.linspace(1e-4, 0.02, T))
    ts = list(np.round(np.linspace(T - 1, 0, steps + 1)).astype(int)[:-1])
    alpha, sigma = np.sqrt(ab), np.sqrt(1 - ab)
    lam = np.log(alpha) - np.log(sigma)

    def x0_of(x, t):
        eps = net(torch.from_numpy(x).float(), torch.full((len(x),), t)).double().numpy()
        return (x - sigma[t] * eps) / alpha[t]

    x, history = x_T, []
    for i, t in enumerate(ts):
        history.append((t, x0_of(x, t)))
        if i == len(ts) - 1:  # lower-order final step into sigma = 0: x_0 = the data prediction
            return history[-1][1]
        tn = ts[i + 1]
        h = lam[tn] - lam[t]
        if i == 0:
            d = history[-1][1]
        else:
            r = (lam[t] - lam[history[-2][0]]) / h
            d = (1 + 1 / (2 * r)) * history[-1][1] - 1 / (2 * r) * history[-2][1]
        x = sigma[tn] / sigma[t] * x - alpha[tn] * (np.exp(-h) - 1) * d
    raise AssertionError("unreachable")


@pytest.mark.parametrize("steps", [2, 4, 7])
def test_matches_an_independent_float64_implementation_of_algorithm_2(steps):
    net = _net(0)
    x_T = torch.randn(5, 2, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        got = sample_loop(net, DPMSolverPP(GaussianDiffusion(10), steps=steps), x_T)
        ref = _reference_dpmpp_2m(net, 10, steps, x_T.double().numpy())
    np.testing.assert_allclose(got.double().numpy(), ref, rtol=1e-4, atol=1e-5)


FAST = [*QUIET, "eval.enabled=false"]
DDPM_TOY = ["data=ring8", "model=ddpm", "data.batch_size=32", "model.nets.toy2d.denoiser.hidden=16",
            "model.diffusion.num_timesteps=10", "model.warmup_steps=2", "callbacks.sample_grid.num_points=64",
            "callbacks.sample_grid.every_n_steps=0", "trainer.max_steps=3"]


def test_ddpm_previews_scores_sample_and_eval_with_dpmpp(tmp_path):
    """sampler=dpmpp works wherever a sampler is chosen: model.training_sampler (previews and
    training-time scores), gen-bench sample and gen-bench eval, with the same samples everywhere."""
    over = [*DDPM_TOY, "sampler@model.training_sampler=dpmpp", "model.training_sampler.steps=3", *QUIET,
            "eval=fast", "eval.num_samples=64", "eval.batch_size=32", "eval.metrics=[fid]",
            "eval.every_n_steps=0"]
    summary = run_training(compose_train(over, tmp_path / "run"))
    assert summary["eval"]["draw"]["sampler"] == "dpmpp2m3"
    model, *_ = load_model(tmp_path / "run")

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        scfg = compose("sample", overrides=[f"ckpt={tmp_path / 'run'}", "n=16", "sampler=dpmpp",
                                            "sampler.steps=3", f"out={tmp_path / 'samples'}"])
        ecfg = compose("eval", overrides=[f"ckpt={tmp_path / 'run'}", "eval=fast", "eval.num_samples=64",
                                          "eval.batch_size=32", "eval.metrics=[fid]", "sampler=dpmpp",
                                          "sampler.steps=3", f"out_dir={tmp_path / 'eval'}"])
    sample_command(scfg)
    expected = model.sample(16, generator=torch.Generator().manual_seed(0),
                            sampler=lambda d, **kw: DPMSolverPP(d, steps=3, **kw))
    assert torch.equal(torch.load(tmp_path / "samples" / "samples.pt"), expected)
    evaluated = eval_command(ecfg)["eval"]
    assert evaluated["draw"]["sampler"] == "dpmpp2m3"
    assert evaluated["scores"]["fid"]["value"] == pytest.approx(summary["eval"]["scores"]["fid"]["value"],
                                                                rel=1e-6)


def test_a_dpmpp_training_sampler_with_too_many_steps_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"model.training_sampler: DPM-Solver\+\+ steps must be in \[1, 9\]"):
        run_training(compose_train([*DDPM_TOY, *FAST, "sampler@model.training_sampler=dpmpp",
                                    "model.training_sampler.steps=10"], tmp_path))
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_ddpm_on_images_binds_it_with_clipped_data_predictions(tmp_path):
    """DDPM binds DPM-Solver++ like DDIM: x_0 predictions clipped to [-1, 1] for images, not for 2-D
    data; the clipped prediction is what the next step extrapolates from."""
    from functools import partial

    from gen_bench.models import build_model

    image = build_model(compose_train(["model=ddpm", "model.diffusion.num_timesteps=10"], tmp_path).model,
                        DataSpec(kind="image", shape=(1, 8, 8)))
    toy = build_model(compose_train(["model=ddpm", "data=ring8", "model.diffusion.num_timesteps=10"],
                                    tmp_path).model, TOY)
    bound = image.bind_sampler(partial(DPMSolverPP, steps=3))
    assert bound.clip_x0 == 1.0 and toy.bind_sampler(partial(DPMSolverPP, steps=3)).clip_x0 is None
    x, eps = torch.full((2, 1, 8, 8), 3.0), torch.full((2, 1, 8, 8), -5.0)  # predicts x_0 far above 1
    assert torch.all(bound.carry(eps, 5, x) == 1.0)
