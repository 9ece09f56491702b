"""Samplers: pure maths on the process's buffers, so DDPM and DDIM sampling swap without retraining.

A sampler is bound to a :class:`GaussianDiffusion` and a few settings when it is built and never
changes afterwards: ``step(model_output, t, t_prev, x_t, generator) -> x_prev`` is a function of
its arguments alone, so steps may be called in any order (and tested one at a time).
``timesteps()`` lists the ``(t, t_prev)`` pairs of a full trajectory, ``t_prev = -1`` meaning x_0.
``model_output`` is the network's epsilon prediction at ``(x_t, t)``. A multistep sampler
(:class:`MultistepSampler`, e.g. DPM-Solver++(2M)) also reads the previous step's prediction, which
the caller passes in (``previous``), so its step stays a function of its arguments too.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Literal, Protocol

import torch
from torch import Tensor
from tqdm.auto import tqdm

from gen_bench import interrupt
from gen_bench.diffusion.process import Denoiser, GaussianDiffusion, randn_like


class Sampler(Protocol):
    label: str
    deterministic: bool  # the samples are a function of the starting noise alone (no noise added on the way)

    def timesteps(self) -> list[tuple[int, int]]: ...

    def step(self, model_output: Tensor, t: int, t_prev: int, x_t: Tensor,
             generator: torch.Generator | None = None) -> Tensor: ...


def _full(t: int, x: Tensor) -> Tensor:
    return torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)


def predict_x0_and_eps(diffusion: GaussianDiffusion, x_t: Tensor, t: int, eps: Tensor,
                       clip_x0: float | None) -> tuple[Tensor, Tensor]:
    """The x_0 that ``eps`` implies (clipped to [-clip_x0, clip_x0] when set) and the eps consistent
    with that x_0 and x_t, so both samplers step from the same pair."""
    tt = _full(t, x_t)
    x0 = diffusion.predict_x0_from_eps(x_t, tt, eps)
    if clip_x0 is not None:
        x0 = x0.clamp(-clip_x0, clip_x0)
        eps = diffusion.predict_eps_from_x0(x_t, tt, x0)
    return x0, eps


class DDPMSampler:
    """Ancestral sampling (Ho et al. 2020, Algorithm 2), through all T steps or a respaced subset.

    x_{t-1} = mu~_t(x_t, x0_hat) + sigma_t z, with the posterior mean of eq. 7 and x0_hat from eq. 15
    (clipped to the data range, as in Ho et al.'s code); no noise at the last step.

    With ``steps < T`` the sampler walks ``steps`` timesteps evenly spaced over [T-1, 0] (the same
    ones as :class:`DDIMSampler`) and is the ancestral sampler of the respaced process (Nichol and
    Dhariwal 2021, sec. 4): the step from t to t_prev uses beta = 1 - alpha-bar_t / alpha-bar_prev
    in place of beta_t, and its posterior. With ``variance="posterior"`` that is DDIM with eta = 1;
    ``variance="beta"`` keeps the same mean and adds the larger noise beta.

    Args:
        diffusion: The process.
        variance: sigma_t^2 = ``beta`` (beta_t; Ho et al.'s CIFAR-10 setting) or ``posterior``
            (beta-tilde_t of eq. 7). Sec. 3.2: "both had similar results".
        clip_x0: Clip x0_hat to [-clip_x0, clip_x0] (1 for images, ``None`` for unbounded data).
        steps: Number of timesteps, 1..T; ``None``: all T.
    """

    def __init__(self, diffusion: GaussianDiffusion, variance: Literal["beta", "posterior"] = "beta",
                 clip_x0: float | None = None, steps: int | None = None) -> None:
        if variance not in ("beta", "posterior"):
            raise ValueError(f"unknown variance {variance!r}; valid: 'beta', 'posterior'")
        if steps is not None and not 1 <= steps <= diffusion.num_timesteps:
            raise ValueError(f"DDPM steps must be in [1, {diffusion.num_timesteps}] (or null for all), "
                             f"got {steps}")
        self.diffusion = diffusion
        self.variance = variance
        self.clip_x0 = clip_x0
        self.steps = diffusion.num_timesteps if steps is None else steps
        respaced = self.steps < diffusion.num_timesteps
        post = "_post" if variance == "posterior" else ""
        self.label = "ddpm" + (f"{self.steps}" if respaced else "") + post
        self.deterministic = False

    def timesteps(self) -> list[tuple[int, int]]:
        return evenly_spaced_pairs(self.diffusion.num_timesteps, self.steps)

    def step(self, model_output: Tensor, t: int, t_prev: int, x_t: Tensor,
             generator: torch.Generator | None = None) -> Tensor:
        if not -1 <= t_prev < t:
            raise ValueError(f"need -1 <= t_prev < t, got t={t}, t_prev={t_prev}")
        d = self.diffusion
        x0, _ = predict_x0_and_eps(d, x_t, t, model_output, self.clip_x0)
        if t_prev == t - 1:  # the process's own step: its float64-derived buffers (eq. 7)
            mean, posterior_var = d.q_posterior_mean_variance(x0, x_t, _full(t, x_t))
            beta = d.betas[t]
        else:  # the respaced process's step: beta = 1 - a_t / a_prev and its posterior
            beta = d.one_minus_alpha_ratio(t, t_prev)
            one_minus = d.sqrt_one_minus_alphas_cumprod[t].square()
            one_minus_prev = d.sqrt_one_minus_alphas_cumprod[t_prev].square()
            ac_prev = d.alphas_cumprod[t_prev]
            mean = (beta * ac_prev.sqrt() / one_minus * x0
                    + one_minus_prev * (1 - beta).sqrt() / one_minus * x_t)
            posterior_var = beta * one_minus_prev / one_minus
        if t_prev < 0:
            return mean  # Algorithm 2: z = 0 at the last step
        var = posterior_var if self.variance == "posterior" else beta
        return mean + var.sqrt() * randn_like(x_t, generator)


def evenly_spaced_pairs(num_timesteps: int, steps: int) -> list[tuple[int, int]]:
    """``(t, t_prev)`` pairs of ``steps`` timesteps evenly spaced over [T-1, 0], rounded, ``t_prev = -1``
    after the last: the trajectory starts at the last training timestep whatever ``steps`` is (with
    ``steps = T`` it visits every timestep)."""
    ts = torch.linspace(num_timesteps - 1, 0, steps).round().long().tolist()
    ts = sorted(set(ts), reverse=True)
    return list(zip(ts, [*ts[1:], -1], strict=True))


class DDIMSampler:
    """DDIM (Song et al. 2021): ``steps`` timesteps, eta = 0 deterministic, eta = 1 ancestral.

    The timesteps are ``steps`` points evenly spaced over [T-1, 0], rounded, so the trajectory starts
    at the last training timestep whatever the number of steps (with ``steps = T`` it visits all).

    Args:
        diffusion: The process.
        steps: Number of denoising steps, 1..T.
        eta: Scale of the noise, eq. 16: 0 gives the deterministic DDIM, 1 the DDPM posterior.
        clip_x0: Clip x0_hat to [-clip_x0, clip_x0] (``None``: no clipping).
    """

    def __init__(self, diffusion: GaussianDiffusion, steps: int = 50, eta: float = 0.0,
                 clip_x0: float | None = None) -> None:
        if not 1 <= steps <= diffusion.num_timesteps:
            raise ValueError(f"DDIM steps must be in [1, {diffusion.num_timesteps}], got {steps}")
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        self.diffusion = diffusion
        self.steps = steps
        self.eta = eta
        self.clip_x0 = clip_x0
        self.label = f"ddim{steps}" + (f"_eta{eta:g}" if eta else "")
        self.deterministic = eta == 0

    def timesteps(self) -> list[tuple[int, int]]:
        return evenly_spaced_pairs(self.diffusion.num_timesteps, self.steps)

    def sigma(self, t: int, t_prev: int) -> Tensor:
        """The noise scale of the step from ``t`` to ``t_prev`` (a 0-dim tensor), eq. 16 of DDIM:
        sigma = eta sqrt((1 - a_prev) / (1 - a_t)) sqrt(1 - a_t / a_prev); 0 when ``t_prev = -1``."""
        d = self.diffusion
        if t_prev < 0:
            return torch.zeros_like(d.betas[t])
        one_minus = d.sqrt_one_minus_alphas_cumprod[t].square()
        one_minus_prev = d.sqrt_one_minus_alphas_cumprod[t_prev].square()
        # 1 - a_t / a_prev from the betas in log space: both alpha-bars are tiny at large t, and
        # their difference in float32 is off by up to 7% there
        return self.eta * (one_minus_prev / one_minus * d.one_minus_alpha_ratio(t, t_prev)).sqrt()

    def step(self, model_output: Tensor, t: int, t_prev: int, x_t: Tensor,
             generator: torch.Generator | None = None) -> Tensor:
        if not -1 <= t_prev < t:
            raise ValueError(f"need -1 <= t_prev < t, got t={t}, t_prev={t_prev}")
        d = self.diffusion
        # 1 - alpha-bar from its own float64-derived buffer: 1 - a_t in float32 loses digits at small t
        if t_prev >= 0:
            ac_prev = d.alphas_cumprod[t_prev]
            one_minus_prev = d.sqrt_one_minus_alphas_cumprod[t_prev].square()
        else:
            ac_prev, one_minus_prev = torch.ones_like(d.betas[t]), torch.zeros_like(d.betas[t])
        x0, eps = predict_x0_and_eps(d, x_t, t, model_output, self.clip_x0)  # eq. 12, "predicted x_0"
        sigma = self.sigma(t, t_prev)
        # eq. 12 of DDIM: x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps + sigma z
        x_prev = ac_prev.sqrt() * x0 + (one_minus_prev - sigma**2).clamp_min(0).sqrt() * eps
        if self.eta > 0 and t_prev >= 0:
            x_prev = x_prev + sigma * randn_like(x_t, generator)
        return x_prev


SamplerFactory = Callable[..., Sampler]


def sampler_class(factory: Callable) -> type | None:
    """The class a sampler factory builds: the factory itself when it is a class, the wrapped class of
    a ``functools.partial`` (Hydra's ``_partial_: true``); ``None`` for other callables (a lambda)."""
    while isinstance(factory, functools.partial):
        factory = factory.func
    return factory if isinstance(factory, type) else None


class MultistepSampler(ABC):
    """A sampler whose step also reads the model's prediction at the previous (larger) timestep.

    The caller keeps that prediction, ``carry(...)`` of the previous step, and passes it back as
    ``previous=(t_last, prediction)`` (``None`` at the first step), so ``step`` stays pure.
    """

    label: str
    deterministic: bool = True

    @abstractmethod
    def timesteps(self) -> list[tuple[int, int]]: ...

    @abstractmethod
    def step(self, model_output: Tensor, t: int, t_prev: int, x_t: Tensor,
             generator: torch.Generator | None = None, previous: tuple[int, Tensor] | None = None) -> Tensor:
        """x_{t_prev} from x_t, the model output at (x_t, t) and, when given, the previous step's carry."""

    @abstractmethod
    def carry(self, model_output: Tensor, t: int, x_t: Tensor) -> Tensor:
        """What the next step needs of this one (its ``previous``), e.g. the predicted x_0."""


def sample_loop(denoiser: Denoiser, sampler: Sampler | MultistepSampler, x_T: Tensor,
                generator: torch.Generator | None = None, progress: bool = False) -> Tensor:
    """Run ``sampler`` from x_T to x_0, calling ``denoiser(x_t, t)`` once per step.

    Args:
        denoiser: ``(x_t, t) -> eps`` with ``t`` a (B,) long tensor.
        sampler: A bound sampler; a :class:`MultistepSampler` gets the previous step's carry.
        x_T: (B, ...) starting noise in model space.
        generator: Source of the noise added along the way.
        progress: Show a progress bar over the steps.
    """
    x = x_T
    pairs = sampler.timesteps()
    previous = None
    # mininterval: at most one refresh a second, so logs of non-interactive runs stay readable
    for t, t_prev in tqdm(pairs, desc=f"sampling ({sampler.label})", disable=not progress, leave=False,
                          dynamic_ncols=True, mininterval=1.0):
        interrupt.check()  # a run asked to stop (SIGTERM) does not wait for hundreds of steps
        out = denoiser(x, _full(t, x))
        if isinstance(sampler, MultistepSampler):
            x_prev = sampler.step(out, t, t_prev, x, generator, previous=previous)
            previous = (t, sampler.carry(out, t, x))
            x = x_prev
        else:
            x = sampler.step(out, t, t_prev, x, generator)
    return x
