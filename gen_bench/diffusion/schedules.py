"""Noise schedules: the variances beta_1..beta_T of the forward process, in float64.

Timesteps are 0-indexed everywhere in gen-bench: index ``t`` is the paper's step ``t + 1``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def linear_beta_schedule(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """Betas rising linearly from ``beta_start`` to ``beta_end`` (Ho et al. 2020, sec. 4).

    The defaults are the paper's, meant for T = 1000. Returns (T,) float64.
    """
    if not 0 < beta_start <= beta_end < 1:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
    return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)


def cosine_beta_schedule(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Betas of the cosine schedule (Nichol & Dhariwal 2021, eq. 17).

    alphas_cumprod(t) = f(t) / f(0) with f(t) = cos^2(((t / T) + s) / (1 + s) * pi / 2), and
    beta_t = 1 - alphas_cumprod(t) / alphas_cumprod(t - 1), clipped to ``max_beta`` so the last
    step is not singular. Returns (T,) float64.
    """
    steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alphas_cumprod = f / f[0]
    return (1 - alphas_cumprod[1:] / alphas_cumprod[:-1]).clamp(max=max_beta)
