"""RePaint (Lugmayr et al. 2022): inpainting with an unconditional DDPM, no training.

Every reverse step denoises the whole image with the model, then replaces the known pixels by the
known image noised by the forward process to the step's new noise level (Algorithm 1 of the paper):

    x_prev = m * q_sample(x_known, t_prev) + (1 - m) * step(model(x_t, t), t, t_prev, x_t)

with m the mask (1: known); at the last step (t_prev = -1, the clean image) the known pixels are the
known image itself, exactly. Because the model only ever sees the known region through its noisy
copy, the fill and the context can disagree; RePaint resamples: after walking down to certain
levels, it goes back up ``jump_length`` levels by the forward process (fresh noise, one level at a
time, q(x_t | x_t_prev)) and walks down again, ``resamplings - 1`` times per such level (sec. 4.2,
"jumps"), so the fill is harmonised with the context at every noise level.

The walk runs on the timesteps of a (respaced) DDPM sampler (:class:`~gen_bench.diffusion.DDPMSampler`
with ``steps``): a level is one of its timesteps, a step down is its ancestral step, a step up adds the
noise between two of its timesteps. Pure functions of their arguments, as every sampler here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from gen_bench import interrupt
from gen_bench.diffusion.process import GaussianDiffusion, randn_like
from gen_bench.diffusion.samplers import DDPMSampler


def repaint_levels(levels: int, jump_length: int = 10, resamplings: int = 10) -> list[int]:
    """The noise levels RePaint's state visits, from the noisiest (``levels - 1``) to -1 (the clean image).

    The walk goes down one level at a time; whenever it arrives at a level ``l`` = 0, ``jump_length``,
    2 ``jump_length``, ... below ``levels - jump_length`` that has jumps left (``resamplings - 1`` each),
    it climbs ``jump_length`` levels, one at a time, and walks down again. ``resamplings=1``: straight
    down, ordinary ancestral sampling.

    Returns:
        The levels in order; consecutive ones differ by exactly 1 (down: a denoising step, up: noise
        added). The number of denoising steps (network passes) is ``levels + (resamplings - 1) *
        jump_length * len(range(0, levels - jump_length, jump_length))``.
    """
    if levels < 1 or jump_length < 1 or resamplings < 1:
        raise ValueError(f"RePaint needs steps >= 1, jump_length >= 1 and resamplings >= 1, got {levels}, "
                         f"{jump_length}, {resamplings}")
    jumps_left = dict.fromkeys(range(0, levels - jump_length, jump_length), resamplings - 1)
    level = levels - 1
    path = [level]
    while level >= 0:
        level -= 1
        path.append(level)
        if jumps_left.get(level, 0) > 0:
            jumps_left[level] -= 1
            path.extend(range(level + 1, level + jump_length + 1))
            level += jump_length
    return path


def renoise(diffusion: GaussianDiffusion, x: Tensor, t_from: int, t_to: int,
            generator: torch.Generator | None = None) -> Tensor:
    """A draw of q(x_{t_to} | x_{t_from}) for t_from < t_to: the forward process from one timestep to a
    later one, x sqrt(a_to / a_from) + sqrt(1 - a_to / a_from) noise (``t_from = -1``: from clean data)."""
    beta = diffusion.one_minus_alpha_ratio(t_to, t_from)
    return (1 - beta).sqrt() * x + beta.sqrt() * randn_like(x, generator)


def repaint_loop(denoiser: Callable[[Tensor, Tensor], Tensor], sampler: DDPMSampler, x_known: Tensor,
                 known: Tensor, noise: Tensor, generator: torch.Generator | None = None,
                 jump_length: int = 10, resamplings: int = 10, progress: bool = False) -> Tensor:
    """Inpaint ``x_known`` where ``known`` is 0 (see the module).

    Args:
        denoiser: ``(x_t, t) -> eps`` with ``t`` a (B,) long tensor (a guided prediction for a class).
        sampler: The ancestral sampler whose timesteps are the levels (``DDPMSampler(steps=S)``).
        x_known: (B, ...) the image in model space (its unknown pixels are never read).
        known: Mask broadcastable to ``x_known``: 1 where a pixel is known, 0 where it is to be filled.
        noise: (B, ...) the starting noise x_T.
        generator: Source of every noise drawn on the way.
        jump_length: Levels climbed by each jump.
        resamplings: Times each jump level is walked down (1: no jumps).
        progress: Show a progress bar over the moves.

    Returns:
        (B, ...) the inpainted image in model space, equal to ``x_known`` on the known pixels.
    """
    d = sampler.diffusion
    times = [t for t, _ in sampler.timesteps()][::-1]  # ascending: level k is timestep times[k]
    path = repaint_levels(len(times), jump_length, resamplings)
    keep = known.to(torch.bool).expand_as(x_known)
    x = noise
    moves = list(zip(path[:-1], path[1:], strict=True))
    desc = f"repaint ({sampler.label}, j{jump_length} r{resamplings})"
    for a, b in tqdm(moves, desc=desc, disable=not progress, leave=False, dynamic_ncols=True,
                     mininterval=1.0):
        interrupt.check()
        t_a, t_b = times[a], (times[b] if b >= 0 else -1)
        if b < a:  # one level down: denoise, then the known pixels from the forward process at t_b
            t = torch.full((x.shape[0],), t_a, dtype=torch.long, device=x.device)
            unknown = sampler.step(denoiser(x, t), t_a, t_b, x, generator)
            context = x_known if t_b < 0 else renoise(d, x_known, -1, t_b, generator)
            x = torch.where(keep, context, unknown)
        else:  # one level up: fresh noise from t_a to t_b
            x = renoise(d, x, t_a, t_b, generator)
    return x


def repaint_passes(steps: int, jump_length: int, resamplings: int) -> int:
    """Network passes (denoising steps) of one RePaint sample."""
    path = repaint_levels(steps, jump_length, resamplings)
    return sum(b < a for a, b in zip(path[:-1], path[1:], strict=True))
