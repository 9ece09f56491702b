"""DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling ...", Algorithm 2).

A second-order multistep solver of the diffusion ODE in its data-prediction form, for an
epsilon-prediction model: with alpha_t = sqrt(alphas_cumprod_t), sigma_t = sqrt(1 - alphas_cumprod_t),
lambda_t = log(alpha_t / sigma_t) and h = lambda_{t_prev} - lambda_t, one step is

    x_{t_prev} = (sigma_{t_prev} / sigma_t) x_t - alpha_{t_prev} (exp(-h) - 1) D,
    D = (1 + 1/(2r)) x0(t) - 1/(2r) x0(t_last),   r = (lambda_t - lambda_{t_last}) / h,

where x0(t) is the x_0 the model predicts at (x_t, t) and x0(t_last) the one of the previous step.
The first step has no previous prediction and is first order (D = x0(t), which is DDIM with eta = 0),
and so is the last, to x_0 itself (sigma = 0, h infinite: the reference's ``lower_order_final``),
which returns x0(t).

Timesteps: ``steps + 1`` points evenly spaced over [T-1, 0], rounded; the network is called at all
but the last, and the final step jumps from about T/steps straight to x_0 (as the reference
implementations' time-uniform "linspace" grid with a zero final sigma). DDIM's grid instead calls
the network at t = 0 too; there the step from about T/steps to 0 spans most of the log-SNR range
after a short previous step, and the 2M extrapolation with that ratio (r << 1) is worse than DDIM
(measured with the exact denoiser of Gaussian data: tests/test_dpm_solver.py).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gen_bench.diffusion.process import GaussianDiffusion
from gen_bench.diffusion.samplers import MultistepSampler, predict_x0_and_eps


class DPMSolverPP(MultistepSampler):
    """DPM-Solver++(2M): ``steps`` network calls, second order in lambda between the first and last.

    Args:
        diffusion: The process.
        steps: Number of denoising steps (network calls), 1..T-1.
        clip_x0: Clip the predicted x_0 to [-clip_x0, clip_x0] (``None``: no clipping); the solver
            extrapolates the clipped predictions, as the paper's thresholding does.
    """

    def __init__(self, diffusion: GaussianDiffusion, steps: int = 20, clip_x0: float | None = None) -> None:
        if not 1 <= steps < diffusion.num_timesteps:
            raise ValueError(f"DPM-Solver++ steps must be in [1, {diffusion.num_timesteps - 1}], got {steps}")
        self.diffusion = diffusion
        self.steps = steps
        self.clip_x0 = clip_x0
        self.label = f"dpmpp2m{steps}"

    def timesteps(self) -> list[tuple[int, int]]:
        grid = torch.linspace(self.diffusion.num_timesteps - 1, 0, self.steps + 1).round().long().tolist()
        ts = sorted(set(grid[:-1]), reverse=True)  # the network is not called at the last point
        return list(zip(ts, [*ts[1:], -1], strict=True))

    def _alpha_sigma(self, t: int) -> tuple[float, float]:
        """(alpha_t, sigma_t) as Python floats; t = -1 is x_0 itself: (1, 0)."""
        if t < 0:
            return 1.0, 0.0
        d = self.diffusion
        return float(d.sqrt_alphas_cumprod[t]), float(d.sqrt_one_minus_alphas_cumprod[t])

    def _lambda(self, t: int) -> float:
        alpha, sigma = self._alpha_sigma(t)
        return math.log(alpha) - math.log(sigma)

    def carry(self, model_output: Tensor, t: int, x_t: Tensor) -> Tensor:
        """The (clipped) x_0 predicted at (x_t, t): the data prediction the next step extrapolates with."""
        return predict_x0_and_eps(self.diffusion, x_t, t, model_output, self.clip_x0)[0]

    def step(self, model_output: Tensor, t: int, t_prev: int, x_t: Tensor,
             generator: torch.Generator | None = None, previous: tuple[int, Tensor] | None = None) -> Tensor:
        if not -1 <= t_prev < t:
            raise ValueError(f"need -1 <= t_prev < t, got t={t}, t_prev={t_prev}")
        x0 = self.carry(model_output, t, x_t)
        if t_prev < 0:
            return x0  # first order into sigma = 0: alpha = 1, exp(-h) = 0
        (_, sigma), (alpha_prev, sigma_prev) = self._alpha_sigma(t), self._alpha_sigma(t_prev)
        lam = self._lambda(t)
        h = self._lambda(t_prev) - lam
        if previous is None:
            d = x0  # first order: DPM-Solver++(1), i.e. DDIM
        else:
            t_last, x0_last = previous
            if t_last <= t:
                raise ValueError(f"the previous prediction must come from a larger timestep than t={t}, "
                                 f"got {t_last}")
            r = (lam - self._lambda(t_last)) / h
            d = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * x0_last
        return (sigma_prev / sigma) * x_t - alpha_prev * math.expm1(-h) * d
