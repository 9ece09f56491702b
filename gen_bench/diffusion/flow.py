"""Flow matching on the straight path from data to noise, and its ODE samplers (pure maths).

The path of rectified flow (Liu et al. 2023) and conditional flow matching with the optimal-transport
path (Lipman et al. 2023): x_t = (1 - t) x + t eps, t in [0, 1], x ~ data, eps ~ N(0, I), whose
velocity dx_t/dt = eps - x is the regression target of the network v(x_t, t). Sampling integrates
dx/dt = v(x, t) from t = 1 (noise) to t = 0 (data).

A flow sampler is stateless like the diffusion samplers (``samplers.py``): ``timesteps()`` lists
the (t, t_prev) pairs of a trajectory, and ``step(velocity, t, t_prev, x_t) -> x_{t_prev}`` is a
function of its arguments alone. It takes the velocity field itself (``velocity(x, t)``, ``t`` a (B,)
float tensor) rather than one network output, because a Runge-Kutta step such as Heun's evaluates
the field again at a point it computes itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from gen_bench import interrupt
from gen_bench.diffusion.process import randn_like

Velocity = Callable[[Tensor, Tensor], Tensor]
TimeSampling = Literal["uniform", "logit_normal"]


def _broadcast(t: Tensor, x: Tensor) -> Tensor:
    return t.reshape(-1, *([1] * (x.ndim - 1)))


class RectifiedFlow:
    """The straight path x_t = (1 - t) x + t eps, its velocity target and the training loss.

    Args:
        time_sampling: How training draws t: ``uniform`` on [0, 1] (Liu et al., Lipman et al.) or
            ``logit_normal``, t = sigmoid(m + s n) with n ~ N(0, 1) (Esser et al. 2024, SD3), which
            spends more of training on the middle of the path.
        logit_mean: m of the logit-normal.
        logit_std: s of the logit-normal.
    """

    def __init__(self, time_sampling: TimeSampling = "uniform", logit_mean: float = 0.0,
                 logit_std: float = 1.0) -> None:
        if time_sampling not in ("uniform", "logit_normal"):
            raise ValueError(f"unknown time_sampling {time_sampling!r}; valid: 'uniform', 'logit_normal'")
        if logit_std <= 0:
            raise ValueError(f"logit_std must be > 0, got {logit_std}")
        self.time_sampling = time_sampling
        self.logit_mean = logit_mean
        self.logit_std = logit_std

    def __repr__(self) -> str:
        return f"RectifiedFlow(time_sampling={self.time_sampling!r})"

    def sample_time(self, n: int, generator: torch.Generator | None = None,
                    device: torch.device | str | None = None) -> Tensor:
        """(n,) training times in [0, 1], drawn from ``generator`` (on its device) when given."""
        gen_device = generator.device if generator is not None else device
        if self.time_sampling == "uniform":
            t = torch.rand(n, generator=generator, device=gen_device)
        else:
            t = torch.sigmoid(self.logit_mean + self.logit_std * torch.randn(n, generator=generator,
                                                                             device=gen_device))
        return t.to(device) if device is not None else t

    @staticmethod
    def interpolate(x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """x_t = (1 - t) x0 + t noise, for (B,) times ``t``."""
        t = _broadcast(t, x0)
        return (1 - t) * x0 + t * noise

    @staticmethod
    def velocity_target(x0: Tensor, noise: Tensor) -> Tensor:
        """d x_t / dt = noise - x0, the same at every t of a path."""
        return noise - x0

    def loss(self, velocity: Velocity, x0: Tensor, t: Tensor | None = None, noise: Tensor | None = None,
             generator: torch.Generator | None = None) -> Tensor:
        """|| v(x_t, t) - (noise - x0) ||^2, averaged over every element.

        Args:
            velocity: ``(x_t, t) -> v`` with ``t`` a (B,) float tensor in [0, 1].
            x0: (B, ...) data in model space.
            t: (B,) times; drawn by ``time_sampling`` when not given.
            noise: Noise like ``x0``; standard normal when not given.
            generator: Source of ``t`` and ``noise`` when they are drawn here (else the global RNG).
        """
        if t is None:
            t = self.sample_time(x0.shape[0], generator, device=x0.device)
        if noise is None:
            noise = randn_like(x0, generator)
        return F.mse_loss(velocity(self.interpolate(x0, noise, t), t), self.velocity_target(x0, noise))


class FlowSampler(ABC):
    """An ODE solver from t = 1 to t = 0 on ``steps`` equal intervals.

    Args:
        steps: Number of intervals (>= 1).
    """

    name: str
    network_calls_per_step: int
    deterministic = True  # an ODE solver: the samples are a function of the starting noise

    def __init__(self, steps: int = 50) -> None:
        if steps < 1:
            raise ValueError(f"{type(self).__name__} steps must be >= 1, got {steps}")
        self.steps = steps
        self.label = f"{self.name}{steps}"

    def timesteps(self) -> list[tuple[float, float]]:
        ts = torch.linspace(1.0, 0.0, self.steps + 1, dtype=torch.float64).tolist()
        return list(zip(ts[:-1], ts[1:], strict=True))

    @abstractmethod
    def step(self, velocity: Velocity, t: float, t_prev: float, x_t: Tensor) -> Tensor:
        """x at ``t_prev`` from x at ``t``, evaluating ``velocity`` as the method needs."""


def _at(t: float, x: Tensor) -> Tensor:
    return torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)


class EulerSampler(FlowSampler):
    """Euler's method: x_{t_prev} = x_t + (t_prev - t) v(x_t, t). First order; one network call a step."""

    name = "euler"
    network_calls_per_step = 1

    def step(self, velocity: Velocity, t: float, t_prev: float, x_t: Tensor) -> Tensor:
        return x_t + (t_prev - t) * velocity(x_t, _at(t, x_t))


class HeunSampler(FlowSampler):
    """Heun's method (explicit trapezoidal rule): an Euler predictor, then the average of the
    velocities at both ends. Second order; two network calls a step (the last step included: the
    velocity at t = 0 is defined, unlike a diffusion model's at sigma = 0)."""

    name = "heun"
    network_calls_per_step = 2

    def step(self, velocity: Velocity, t: float, t_prev: float, x_t: Tensor) -> Tensor:
        dt = t_prev - t
        v = velocity(x_t, _at(t, x_t))
        x_euler = x_t + dt * v
        return x_t + dt * 0.5 * (v + velocity(x_euler, _at(t_prev, x_t)))


def flow_sample_loop(velocity: Velocity, sampler: FlowSampler, noise: Tensor,
                     progress: bool = False) -> Tensor:
    """Integrate dx/dt = velocity(x, t) from x(1) = ``noise`` to x(0) with ``sampler``'s steps.

    Args:
        velocity: ``(x, t) -> v`` with ``t`` a (B,) float tensor.
        sampler: A flow sampler.
        noise: (B, ...) the state at t = 1 (standard normal noise) in model space.
        progress: Show a progress bar over the steps.
    """
    x = noise
    for t, t_prev in tqdm(sampler.timesteps(), desc=f"sampling ({sampler.label})", disable=not progress,
                          leave=False, dynamic_ncols=True, mininterval=1.0):
        interrupt.check()  # a run asked to stop (SIGTERM) does not wait for the remaining steps
        x = sampler.step(velocity, t, t_prev, x)
    return x
