"""The diffusion process and samplers against closed forms and an independent implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gen_bench.data.spec import DataSpec
from gen_bench.diffusion import (
    DDIMSampler,
    DDPMSampler,
    GaussianDiffusion,
    cosine_beta_schedule,
    linear_beta_schedule,
    sample_loop,
)
from gen_bench.models.nets import MLPDenoiser

TOY = DataSpec(kind="toy2d", shape=(2,))


def test_linear_schedule_is_ho_et_al():
    betas = linear_beta_schedule(1000)
    assert betas.shape == (1000,) and betas.dtype == torch.float64
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)
    assert torch.allclose(betas.diff(), torch.full((999,), (0.02 - 1e-4) / 999, dtype=torch.float64))
    d = GaussianDiffusion()
    # alpha-bar_T = prod(1 - beta_t): about 4e-5, so x_T is almost pure noise (sec. 4 of DDPM)
    expected = np.prod(1 - np.linspace(1e-4, 0.02, 1000))
    assert d.alphas_cumprod[-1].item() == pytest.approx(expected, rel=1e-4)
    assert 3e-5 < expected < 5e-5


def test_cosine_schedule_follows_nichol_and_dhariwal():
    T, s = 1000, 0.008
    d = GaussianDiffusion(T, schedule="cosine", cosine_s=s)
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # eq. 17
    for t in (0, 10, 250, 500, 900):  # 0-indexed t is step t + 1
        assert d.alphas_cumprod[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-4)
    assert cosine_beta_schedule(T).max().item() == pytest.approx(0.999)  # clipped at the end
    with pytest.raises(ValueError, match="valid: 'linear', 'cosine'"):
        GaussianDiffusion(10, schedule="quadratic")


def test_q_sample_has_the_closed_form_marginals():
    d = GaussianDiffusion(1000)
    g = torch.Generator().manual_seed(0)
    x0 = torch.tensor([1.5, -0.7, 0.2])
    n = 200_000
    for t in (0, 100, 500, 999):
        tt = torch.full((n,), t)
        xt = d.q_sample(x0.expand(n, 3), tt, torch.randn(n, 3, generator=g, dtype=torch.float32))
        ab = float(np.prod(1 - np.linspace(1e-4, 0.02, 1000)[: t + 1]))
        mean, var = math.sqrt(ab) * x0, 1 - ab
        se = math.sqrt(var / n)
        assert torch.allclose(xt.mean(0), mean, atol=5 * se)
        assert torch.allclose(xt.var(0), torch.full((3,), var), rtol=0.02)
        m, v = d.q_mean_variance(x0[None], torch.tensor([t]))
        assert torch.allclose(m[0], mean, rtol=1e-5) and v[0, 0].item() == pytest.approx(var, rel=1e-4)


def test_q_sample_equals_the_chain_of_one_step_kernels():
    """q(x_t | x_0) must be what t applications of q(x_s | x_{s-1}) = N(sqrt(1-beta_s) x, beta_s) give."""
    d = GaussianDiffusion(50, beta_start=1e-3, beta_end=0.2)
    g = torch.Generator().manual_seed(1)
    n, x0 = 100_000, torch.tensor([2.0, -1.0])
    x = x0.expand(n, 2).double()
    for s in range(30):
        beta = d.betas[s].double()
        x = (1 - beta).sqrt() * x + beta.sqrt() * torch.randn(n, 2, generator=g, dtype=torch.float64)
    mean, var = d.q_mean_variance(x0[None], torch.tensor([29]))
    assert torch.allclose(x.mean(0).float(), mean[0], atol=4 * math.sqrt(var[0, 0] / n))
    assert torch.allclose(x.var(0).float(), var[0], rtol=0.02)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_posterior_matches_gaussian_conjugacy(schedule):
    """q(x_{t-1} | x_t, x_0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x_0): precision and mean by Bayes' rule."""
    d = GaussianDiffusion(1000, schedule=schedule)
    betas = d.betas.double()
    ab = torch.cumprod(1 - betas, 0)
    g = torch.Generator().manual_seed(2)
    x0, xt = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    t = torch.tensor([1, 10, 500, 999])
    mean, var = d.q_posterior_mean_variance(x0, xt, t)
    ab_prev, alpha, beta = ab[t - 1][:, None], (1 - betas[t])[:, None], betas[t][:, None]
    precision = 1 / (1 - ab_prev) + alpha / beta
    ref_var = 1 / precision
    ref_mean = ref_var * (ab_prev.sqrt() * x0.double() / (1 - ab_prev) + alpha.sqrt() * xt.double() / beta)
    assert torch.allclose(var.double(), ref_var.expand(4, 3), rtol=1e-4)
    assert torch.allclose(mean.double(), ref_mean, rtol=1e-4, atol=1e-5)
    # at the first step the posterior is a point mass at x_0
    m0, v0 = d.q_posterior_mean_variance(x0, xt, torch.zeros(4, dtype=torch.long))
    assert torch.allclose(m0, x0, atol=1e-6) and torch.all(v0 == 0)


def test_x0_and_eps_predictions_invert_q_sample():
    d = GaussianDiffusion(100)
    g = torch.Generator().manual_seed(3)
    x0, eps = torch.randn(5, 2, generator=g), torch.randn(5, 2, generator=g)
    t = torch.tensor([0, 5, 50, 90, 99])
    xt = d.q_sample(x0, t, eps)
    assert torch.allclose(d.predict_x0_from_eps(xt, t, eps), x0, atol=1e-4)
    assert torch.allclose(d.predict_eps_from_x0(xt, t, x0), eps, atol=1e-3)


def test_loss_is_the_eps_mse_and_uses_only_its_generator():
    d = GaussianDiffusion(100)
    net = MLPDenoiser(TOY, hidden=16, depth=1)
    g = torch.Generator().manual_seed(4)
    x0, t, noise = torch.randn(8, 2, generator=g), torch.randint(100, (8,), generator=g), torch.randn(8, 2)
    xt = d.sqrt_alphas_cumprod[t, None] * x0 + d.sqrt_one_minus_alphas_cumprod[t, None] * noise
    expected = ((net(xt, t) - noise) ** 2).mean()
    assert d.loss(net, x0, t, noise).item() == pytest.approx(expected.item(), rel=1e-6)
    state = torch.get_rng_state()
    a = d.loss(net, x0, generator=torch.Generator().manual_seed(9))
    b = d.loss(net, x0, generator=torch.Generator().manual_seed(9))
    assert a == b and torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_each_prediction_s_target_stands_for_the_noise_and_its_oracle_has_zero_loss(prediction):
    """target(x0, t, eps) -> eps_from_output recovers eps at every t; for one point x* the network
    that knows it (eps = (x_t - sqrt(ab) x*) / sqrt(1 - ab)) has loss 0 in every parameterisation."""
    d = GaussianDiffusion(1000, prediction=prediction)
    g = torch.Generator().manual_seed(5)
    x0, eps = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    t = torch.tensor([0, 1, 100, 500, 900, 999])
    xt = d.q_sample(x0, t, eps)
    assert torch.allclose(d.eps_from_output(d.target(x0, t, eps), xt, t), eps, rtol=1e-3, atol=2e-3)
    star = torch.tensor([0.3, -0.7, 0.1])
    ab = d.alphas_cumprod

    def oracle(x, tt):
        noise = (x - ab[tt, None].sqrt() * star) / (1 - ab[tt, None]).sqrt()
        return d.target(star.expand_as(x), tt, noise)

    assert d.loss(oracle, star.expand(64, 3), generator=g).item() < 1e-8
    assert torch.allclose(d.eps_denoiser(oracle)(xt, t), (xt - ab[t, None].sqrt() * star)
                          / (1 - ab[t, None]).sqrt(), rtol=1e-3, atol=2e-3)


def test_an_output_error_reaches_x0_scaled_by_the_parameterisation():
    """An error e in the network's output is an error in the x_0 the samplers step from of
    -sqrt(1/ab - 1) e (eps: about 160 e at the last step of the linear schedule), e (x_0) and
    -sqrt(1 - ab) e (v): why x_0 and v train the image at high noise where eps hardly does."""
    t = torch.tensor([10, 500, 999])
    ab = GaussianDiffusion(1000).alphas_cumprod[t].double()
    factors = {"eps": -(1 / ab - 1).sqrt(), "x0": torch.ones(3, dtype=torch.float64), "v": -(1 - ab).sqrt()}
    x0, eps, err = torch.zeros(3, 1) + 0.4, torch.zeros(3, 1) - 0.2, 1e-3
    for prediction, factor in factors.items():
        d = GaussianDiffusion(1000, prediction=prediction)
        xt = d.q_sample(x0, t, eps)
        out = d.target(x0, t, eps) + err
        got = d.predict_x0_from_eps(xt, t, d.eps_from_output(out, xt, t)) - x0
        assert torch.allclose(got[:, 0].double(), factor * err, rtol=2e-3, atol=2e-6)
    assert 150 < -factors["eps"][-1] < 170


def test_an_unknown_prediction_is_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match="'eps', 'x0', 'v'"):
        GaussianDiffusion(10, prediction="score")


def _net(seed: int = 0) -> MLPDenoiser:
    torch.manual_seed(seed)
    return MLPDenoiser(TOY, hidden=16, depth=2).eval()


def test_ddim_with_eta_zero_is_deterministic_given_x_T():
    d, net = GaussianDiffusion(20), _net()
    x_T = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
    run = lambda sampler, seed: sample_loop(net, sampler, x_T, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        a, b = run(DDIMSampler(d, steps=5, eta=0.0), 1), run(DDIMSampler(d, steps=5, eta=0.0), 2)
        c, e = run(DDIMSampler(d, steps=5, eta=1.0), 1), run(DDIMSampler(d, steps=5, eta=1.0), 2)
    assert torch.equal(a, b)
    assert not torch.allclose(c, e)  # with eta > 0 the generator matters


def test_ddim_timesteps_span_the_process():
    d = GaussianDiffusion(1000)
    pairs = DDIMSampler(d, steps=5).timesteps()
    assert [t for t, _ in pairs] == [999, 749, 500, 250, 0] and pairs[-1][1] == -1
    assert all(tp == pairs[i + 1][0] for i, (_, tp) in enumerate(pairs[:-1]))
    assert DDIMSampler(d, steps=1000).timesteps() == DDPMSampler(d).timesteps()
    with pytest.raises(ValueError, match="steps must be in"):
        DDIMSampler(d, steps=1001)


@pytest.mark.parametrize("clip", [None, 1.0])
def test_ddim_with_all_steps_and_eta_one_is_the_ddpm_posterior_step(clip):
    d, net = GaussianDiffusion(30), _net(1)
    ddim = DDIMSampler(d, steps=30, eta=1.0, clip_x0=clip)
    ddpm = DDPMSampler(d, variance="posterior", clip_x0=clip)
    g = torch.Generator().manual_seed(5)
    x = 2 * torch.randn(16, 2, generator=g)  # some predictions fall outside [-1, 1]: clipping matters
    with torch.no_grad():
        for t in (29, 15, 1, 0):
            eps = net(x, torch.full((16,), t))
            a = ddim.step(eps, t, t - 1, x, torch.Generator().manual_seed(t))
            b = ddpm.step(eps, t, t - 1, x, torch.Generator().manual_seed(t))
            assert torch.allclose(a, b, atol=1e-5), t
        x_T = torch.randn(16, 2, generator=g)
        a = sample_loop(net, ddim, x_T, torch.Generator().manual_seed(6))
        b = sample_loop(net, ddpm, x_T, torch.Generator().manual_seed(6))
    assert torch.allclose(a, b, atol=1e-4)


def _ddim_sigma_float64(betas: np.ndarray, t: int, t_prev: int, eta: float) -> float:
    """Eq. 16 of DDIM in float64: eta sqrt((1 - a_prev) / (1 - a_t)) sqrt(1 - a_t / a_prev)."""
    ab = np.cumprod(1 - betas)
    a, a_prev = ab[t], ab[t_prev]
    return eta * math.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("steps,eta", [(1000, 1.0), (50, 1.0), (50, 0.5)])
def test_ddim_sigma_is_eq_16_at_every_timestep(schedule, steps, eta):
    """At large t both alpha-bars are ~4e-5 (linear), so 1 - a_t / a_prev taken as a float32
    difference was off by 6.8% at t = 999; it must match float64 to float32 rounding everywhere."""
    d = GaussianDiffusion(1000, schedule=schedule)
    betas = (linear_beta_schedule(1000) if schedule == "linear" else cosine_beta_schedule(1000)).numpy()
    sampler = DDIMSampler(d, steps=steps, eta=eta)
    pairs = [(t, tp) for t, tp in sampler.timesteps() if tp >= 0]
    assert len(pairs) == steps - 1
    got = np.array([sampler.sigma(t, tp).item() for t, tp in pairs])
    expected = np.array([_ddim_sigma_float64(betas, t, tp, eta) for t, tp in pairs])
    np.testing.assert_allclose(got, expected, rtol=2e-6, atol=0)
    assert sampler.sigma(0, -1).item() == 0  # no noise on the last step
    # the step adds exactly sigma z: two generators differ by sigma (z1 - z2), here at t = 999
    t, tp = pairs[0]
    x, eps = torch.zeros(4096, 2), torch.zeros(4096, 2)
    a = sampler.step(eps, t, tp, x, torch.Generator().manual_seed(1))
    b = sampler.step(eps, t, tp, x, torch.Generator().manual_seed(2))
    z = torch.randn(4096, 2, generator=torch.Generator().manual_seed(1))
    z = z - torch.randn(4096, 2, generator=torch.Generator().manual_seed(2))
    assert ((a - b).double() / z.double()).median().item() == pytest.approx(expected[0], rel=1e-5)


def test_ddpm_sampler_rejects_steps_that_do_not_go_back_in_time():
    with pytest.raises(ValueError, match="t_prev < t"):
        DDPMSampler(GaussianDiffusion(10)).step(torch.zeros(1, 2), 5, 5, torch.zeros(1, 2))


def _gaussian_data_denoiser(d: GaussianDiffusion, mu: torch.Tensor, s: torch.Tensor):
    """For x_0 ~ N(mu, diag(s^2)) the optimal eps-prediction is known in closed form:
    E[eps | x_t] = sqrt(1 - ab) (x_t - sqrt(ab) mu) / (ab s^2 + 1 - ab)."""

    def eps(x, t):
        ab = d.alphas_cumprod[t].double()[:, None]
        return ((1 - ab).sqrt() * (x.double() - ab.sqrt() * mu) / (ab * s**2 + 1 - ab)).float()

    return eps


@pytest.mark.parametrize("steps", [1, 5, 50])
def test_ddim_eta_zero_with_the_exact_denoiser_is_the_closed_form_affine_map(steps):
    """With the exact denoiser of Gaussian data, one DDIM step (eta = 0) is affine:
    x_prev - sqrt(a_p) mu = k (sqrt(a_p a) s^2 + sqrt((1 - a_p)(1 - a))) (x_t - sqrt(a) mu),
    k = 1 / (a s^2 + 1 - a), so x_0 = mu + prod(factors) (x_T - sqrt(a_T) mu), sample by sample."""
    d = GaussianDiffusion(1000)
    mu, s = torch.tensor([0.5, -1.0], dtype=torch.float64), torch.tensor([0.3, 0.8], dtype=torch.float64)
    ab = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    sampler = DDIMSampler(d, steps=steps, eta=0.0)
    factor = torch.ones(2, dtype=torch.float64)
    for t, tp in sampler.timesteps():
        a, a_p = ab[t], (ab[tp] if tp >= 0 else torch.tensor(1.0, dtype=torch.float64))
        factor = factor * ((a_p * a).sqrt() * s**2 + ((1 - a_p) * (1 - a)).sqrt()) / (a * s**2 + 1 - a)
    x_T = torch.randn(100, 2, generator=torch.Generator().manual_seed(8))
    got = sample_loop(_gaussian_data_denoiser(d, mu, s), sampler, x_T)
    expected = mu + factor * (x_T.double() - ab[-1].sqrt() * mu)
    assert torch.allclose(got.double(), expected, atol=2e-4)


@pytest.mark.parametrize("variance", ["beta", "posterior"])
def test_ancestral_sampling_with_the_exact_denoiser_recovers_gaussian_data(variance):
    d = GaussianDiffusion(1000)
    mu, s = torch.tensor([0.5, -1.0], dtype=torch.float64), torch.tensor([0.3, 0.8], dtype=torch.float64)
    g = torch.Generator().manual_seed(7)
    x = sample_loop(_gaussian_data_denoiser(d, mu, s), DDPMSampler(d, variance=variance),
                    torch.randn(10_000, 2, generator=g), g).double()
    assert torch.allclose(x.mean(0), mu, atol=0.02)
    assert torch.allclose(x.std(0), s, rtol=0.03)


def test_respaced_ddpm_with_the_posterior_variance_is_ddim_with_eta_one():
    d, net = GaussianDiffusion(200), _net(1)
    x_T = torch.randn(32, 2, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        post = DDPMSampler(d, variance="posterior", steps=20)
        a = sample_loop(net, post, x_T, torch.Generator().manual_seed(3))
        b = sample_loop(net, DDIMSampler(d, steps=20, eta=1.0), x_T, torch.Generator().manual_seed(3))
    assert torch.allclose(a, b, atol=1e-5)
    assert DDPMSampler(d, steps=20).timesteps() == DDIMSampler(d, steps=20).timesteps()
    assert DDPMSampler(d, steps=200).timesteps() == DDPMSampler(d).timesteps()
    settings = [(None, "beta"), (20, "beta"), (20, "posterior")]
    labels = [DDPMSampler(d, steps=s, variance=v).label for s, v in settings]
    assert labels == ["ddpm", "ddpm20", "ddpm20_post"]
    with pytest.raises(ValueError, match="steps must be in"):
        DDPMSampler(d, steps=0)


@pytest.mark.parametrize("variance", ["beta", "posterior"])
@pytest.mark.parametrize("steps", [10, 50])
def test_respaced_ancestral_sampling_of_gaussian_data_has_the_closed_form_spread(variance, steps):
    """With the exact denoiser of x_0 ~ N(mu, s^2), a respaced step is x_prev = m x_t + c + sigma z:
    x0_hat = mu + k sqrt(a)(x_t - sqrt(a) mu), k = s^2 / (a s^2 + 1 - a), the posterior mean
    coef1 x0_hat + coef2 x_t of the respaced beta = 1 - a / a_prev, so the variance of x runs
    v_prev = m^2 v + sigma^2 from v_T = 1 (float64 here). Few steps widen the samples with beta and
    narrow them with the posterior variance; the sampler must land on the recursion's spread."""
    d = GaussianDiffusion(1000)
    mu, s = torch.tensor([0.5, -1.0], dtype=torch.float64), torch.tensor([0.3, 0.8], dtype=torch.float64)
    sampler = DDPMSampler(d, variance=variance, steps=steps)
    ab = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    v = torch.ones(2, dtype=torch.float64)
    for t, tp in sampler.timesteps():
        a, a_p = ab[t], (ab[tp] if tp >= 0 else torch.tensor(1.0, dtype=torch.float64))
        beta = 1 - a / a_p
        k = s**2 / (a * s**2 + 1 - a)
        m = beta * a_p.sqrt() / (1 - a) * k * a.sqrt() + (1 - a_p) * (1 - beta).sqrt() / (1 - a)
        var = (beta if variance == "beta" else beta * (1 - a_p) / (1 - a)) if tp >= 0 else 0.0
        v = m**2 * v + var
    g = torch.Generator().manual_seed(7)
    x_T = torch.randn(20_000, 2, generator=g)
    x = sample_loop(_gaussian_data_denoiser(d, mu, s), sampler, x_T, g).double()
    assert torch.allclose(x.mean(0), mu, atol=0.03)
    assert torch.allclose(x.std(0), v.sqrt(), rtol=0.02), (x.std(0) / s, v.sqrt() / s)
    if steps == 10:  # the spread is visibly off at 10 steps, in the direction the variance says
        assert ((v.sqrt() / s > 1.03) if variance == "beta" else (v.sqrt() / s < 0.97)).any()


def _reference_sampling(net, T: int, method: str, steps: int, eta: float, n: int, seed: int) -> np.ndarray:
    """Algorithm 2 of DDPM / eq. 12 of DDIM written out in float64 numpy from the papers, drawing the
    noise in the same order as gen-bench (x_T, then one draw per noisy step)."""
    g = torch.Generator().manual_seed(seed)
    betas = np.linspace(1e-4, 0.02, T)
    alphas = 1 - betas
    ab = np.cumprod(alphas)
    x = torch.randn(n, 2, generator=g).double().numpy()
    eps_of = lambda x, t: net(torch.from_numpy(x).float(), torch.full((n,), t)).double().numpy()
    if method == "ddpm":
        for t in reversed(range(T)):
            z = torch.randn(n, 2, generator=g).double().numpy() if t > 0 else 0
            mean = (x - betas[t] / np.sqrt(1 - ab[t]) * eps_of(x, t)) / np.sqrt(alphas[t])  # eq. 11
            x = mean + np.sqrt(betas[t]) * z
        return x
    ts = sorted({round(v) for v in np.linspace(0, T - 1, steps)}, reverse=True)
    for t, tp in zip(ts, [*ts[1:], -1], strict=True):
        a, a_prev = ab[t], (ab[tp] if tp >= 0 else 1.0)
        eps = eps_of(x, t)
        x0 = (x - np.sqrt(1 - a) * eps) / np.sqrt(a)
        sigma = eta * np.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
        z = torch.randn(n, 2, generator=g).double().numpy() if eta > 0 and tp >= 0 else 0
        x = np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev - sigma**2) * eps + sigma * z
    return x


@pytest.mark.parametrize("method,steps,eta", [("ddpm", 10, 0.0), ("ddim", 4, 0.5), ("ddim", 4, 0.0)])
def test_samplers_match_an_independent_float64_implementation(method, steps, eta):
    """A seeded tiny denoiser (MLPDenoiser, hidden 16, T = 10) sampled by gen-bench and by the papers'
    equations in float64 numpy with the same noise: the same samples. (No pinned output numbers:
    those would follow torch's random stream, not the maths.)"""
    d, net = GaussianDiffusion(10), _net(0)
    sampler = DDPMSampler(d, variance="beta") if method == "ddpm" else DDIMSampler(d, steps=steps, eta=eta)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        got = sample_loop(net, sampler, torch.randn(3, 2, generator=g), g)
        ref = _reference_sampling(net, 10, method, steps, eta, 3, seed=0)
    np.testing.assert_allclose(got.double().numpy(), ref, rtol=1e-4, atol=1e-5)
