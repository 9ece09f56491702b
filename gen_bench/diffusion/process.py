"""The Gaussian diffusion process of Ho et al. 2020: schedule buffers, q_sample, posterior, loss.

The process knows nothing about the network (called as ``denoiser(x_t, t)``) nor about samplers,
which only read its buffers and take the noise epsilon. What the network predicts is the process's
``prediction``: epsilon (Ho et al. 2020), x_0, or v = sqrt(alpha-bar) eps - sqrt(1 - alpha-bar) x_0
(Salimans and Ho 2022); :meth:`GaussianDiffusion.loss` regresses that target and
:meth:`GaussianDiffusion.eps_denoiser` turns the network into the eps-predictor the samplers read.
Timesteps are 0-indexed: index ``t`` is the paper's step ``t + 1``, so ``alphas_cumprod[0] = 1 - beta_1``
and the "previous" cumulative product before the first step is 1.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gen_bench.diffusion.schedules import cosine_beta_schedule, linear_beta_schedule

Denoiser = Callable[[Tensor, Tensor], Tensor]

PREDICTIONS = ("eps", "x0", "v")


def randn_like(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard normal noise shaped like ``x``, drawn from ``generator`` (on its device) when given."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def extract(a: Tensor, t: Tensor, ndim: int) -> Tensor:
    """``a[t]`` for a (B,) batch of timesteps, shaped (B, 1, ..., 1) to broadcast over ``ndim`` dims."""
    return a[t].reshape(-1, *([1] * (ndim - 1)))


class GaussianDiffusion(nn.Module):
    """Forward process q(x_t | x_0) = N(sqrt(alphas_cumprod_t) x_0, (1 - alphas_cumprod_t) I).

    Every schedule-derived quantity is a buffer: computed in float64, stored in float32, moved with
    the model and saved in its state dict.

    Args:
        num_timesteps: T.
        schedule: ``linear`` (Ho et al.) or ``cosine`` (Nichol & Dhariwal 2021).
        beta_start: First beta of the linear schedule.
        beta_end: Last beta of the linear schedule.
        cosine_s: Offset s of the cosine schedule.
        prediction: What the network predicts: ``eps`` (the noise, L_simple of Ho et al.), ``x0`` (the
            clean data) or ``v`` (sqrt(alpha-bar) eps - sqrt(1 - alpha-bar) x_0, Salimans and Ho 2022).
            With eps, an error e at the last step of the linear schedule is an error of about 160 e
            in the x_0 it implies, so the loss hardly trains the image at high noise; x0 and v bound it.
    """

    betas: Tensor
    alphas_cumprod: Tensor
    alphas_cumprod_prev: Tensor
    sqrt_alphas_cumprod: Tensor
    sqrt_one_minus_alphas_cumprod: Tensor
    sqrt_recip_alphas_cumprod: Tensor
    sqrt_recipm1_alphas_cumprod: Tensor
    posterior_variance: Tensor
    posterior_mean_coef1: Tensor
    posterior_mean_coef2: Tensor

    def __init__(self, num_timesteps: int = 1000, schedule: str = "linear", beta_start: float = 1e-4,
                 beta_end: float = 0.02, cosine_s: float = 0.008, prediction: str = "eps") -> None:
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}; valid: {', '.join(map(repr, PREDICTIONS))}")
        if num_timesteps < 1:
            raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
        schedules = {
            "linear": lambda: linear_beta_schedule(num_timesteps, beta_start, beta_end),
            "cosine": lambda: cosine_beta_schedule(num_timesteps, cosine_s),
        }
        if schedule not in schedules:
            raise ValueError(f"unknown schedule {schedule!r}; valid: {', '.join(map(repr, schedules))}")
        betas = schedules[schedule]()
        self.num_timesteps = num_timesteps
        self.schedule = schedule
        self.prediction = prediction

        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, 0)
        alphas_cumprod_prev = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
        # Posterior q(x_{t-1} | x_t, x_0) = N(coef1 x_0 + coef2 x_t, beta-tilde_t): eqs. 6-7 of DDPM.
        posterior_variance = betas * (1 - alphas_cumprod_prev) / (1 - alphas_cumprod)
        buffers = {
            "betas": betas,
            "alphas_cumprod": alphas_cumprod,
            "alphas_cumprod_prev": alphas_cumprod_prev,
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1 - alphas_cumprod).sqrt(),
            "sqrt_recip_alphas_cumprod": (1 / alphas_cumprod).sqrt(),
            "sqrt_recipm1_alphas_cumprod": (1 / alphas_cumprod - 1).sqrt(),
            "posterior_variance": posterior_variance,
            "posterior_mean_coef1": betas * alphas_cumprod_prev.sqrt() / (1 - alphas_cumprod),
            "posterior_mean_coef2": (1 - alphas_cumprod_prev) * alphas.sqrt() / (1 - alphas_cumprod),
        }
        for name, value in buffers.items():
            self.register_buffer(name, value.float())

    def extra_repr(self) -> str:
        return (f"num_timesteps={self.num_timesteps}, schedule={self.schedule!r}, "
                f"prediction={self.prediction!r}")

    # --- forward process ----------------------------------------------------------------------
    def q_mean_variance(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of q(x_t | x_0) (eq. 4 of DDPM); ``t`` is (B,) long."""
        mean = extract(self.sqrt_alphas_cumprod, t, x0.ndim) * x0
        var = extract(self.sqrt_one_minus_alphas_cumprod, t, x0.ndim).square().expand_as(x0)
        return mean, var

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = sqrt(alphas_cumprod_t) x_0 + sqrt(1 - alphas_cumprod_t) noise (eq. 4 of DDPM)."""
        return (extract(self.sqrt_alphas_cumprod, t, x0.ndim) * x0
                + extract(self.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * noise)

    def q_posterior_mean_variance(self, x0: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of q(x_{t-1} | x_t, x_0) (eqs. 6-7 of DDPM); at t = 0 the variance is 0."""
        mean = (extract(self.posterior_mean_coef1, t, x_t.ndim) * x0
                + extract(self.posterior_mean_coef2, t, x_t.ndim) * x_t)
        return mean, extract(self.posterior_variance, t, x_t.ndim).expand_as(x_t)

    def predict_x0_from_eps(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x_0 = (x_t - sqrt(1 - alphas_cumprod_t) eps) / sqrt(alphas_cumprod_t): eq. 4 solved for x_0."""
        return (extract(self.sqrt_recip_alphas_cumprod, t, x_t.ndim) * x_t
                - extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.ndim) * eps)

    def predict_eps_from_x0(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """The inverse of :meth:`predict_x0_from_eps`."""
        return ((extract(self.sqrt_recip_alphas_cumprod, t, x_t.ndim) * x_t - x0)
                / extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.ndim))

    # --- the network's parameterisation -------------------------------------------------------------
    def target(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """What the network regresses at x_t = q_sample(x0, t, noise): eps, x_0 or v (``prediction``)."""
        if self.prediction == "eps":
            return noise
        if self.prediction == "x0":
            return x0
        return (extract(self.sqrt_alphas_cumprod, t, x0.ndim) * noise
                - extract(self.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * x0)

    def eps_from_output(self, output: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """The eps that the network's ``output`` at (x_t, t) stands for (the inverse of :meth:`target`):
        v -> sqrt(alpha-bar) v + sqrt(1 - alpha-bar) x_t; x_0 -> :meth:`predict_eps_from_x0`."""
        if self.prediction == "eps":
            return output
        if self.prediction == "x0":
            return self.predict_eps_from_x0(x_t, t, output)
        return (extract(self.sqrt_alphas_cumprod, t, x_t.ndim) * output
                + extract(self.sqrt_one_minus_alphas_cumprod, t, x_t.ndim) * x_t)

    def eps_denoiser(self, net: Denoiser) -> Denoiser:
        """``(x_t, t) -> eps`` from a network that predicts this process's ``prediction``: what the
        samplers and the likelihood read."""
        if self.prediction == "eps":
            return net
        return lambda x_t, t: self.eps_from_output(net(x_t, t), x_t, t)

    def one_minus_alpha_ratio(self, t: int, t_prev: int) -> Tensor:
        """1 - alphas_cumprod[t] / alphas_cumprod[t_prev] as a 0-dim tensor (``t_prev = -1``: the
        previous alpha-bar is 1).

        The ratio is the product of 1 - beta_s over t_prev < s <= t, so its complement is
        -expm1(sum log1p(-beta_s)): accurate to float32 rounding at every t. Subtracting two
        alpha-bars (or two 1 - alpha-bars, both near 1 at large t) instead loses up to 7% of the
        value at t = T - 1 of the linear schedule in float32.
        """
        if not -1 <= t_prev < t < self.num_timesteps:
            raise ValueError(f"need -1 <= t_prev < t < {self.num_timesteps}, got t={t}, t_prev={t_prev}")
        return -torch.expm1(torch.log1p(-self.betas[t_prev + 1 : t + 1]).sum())

    # --- training -----------------------------------------------------------------------------
    def loss(self, denoiser: Denoiser, x0: Tensor, t: Tensor | None = None, noise: Tensor | None = None,
             generator: torch.Generator | None = None) -> Tensor:
        """L_simple (eq. 14 of DDPM): || target - denoiser(x_t, t) ||^2, averaged over every element; the
        target is eps, x_0 or v (:meth:`target`, ``prediction``).

        Args:
            denoiser: ``(x_t, t) ->`` the network's prediction (eps, x_0 or v).
            x0: (B, ...) clean data in model space.
            t: (B,) timesteps; uniform on {0, ..., T-1} when not given.
            noise: Noise like ``x0``; standard normal when not given.
            generator: Source of ``t`` and ``noise`` when they are drawn here (else the global RNG).
        """
        if t is None:
            device = generator.device if generator is not None else x0.device
            t = torch.randint(self.num_timesteps, (x0.shape[0],), generator=generator, device=device)
            t = t.to(x0.device)
        if noise is None:
            noise = randn_like(x0, generator)
        return F.mse_loss(denoiser(self.q_sample(x0, t, noise), t), self.target(x0, t, noise))
