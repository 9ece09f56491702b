"""The variational bound of a DDPM in bits per dimension (Ho et al. 2020, eq. 5 and section 3.3).

-log p(x_0) <= L_T + sum_{t=2..T} L_{t-1} + L_0, with

* L_T = KL(q(x_T | x_0) || N(0, I)), the prior term (no network);
* L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)), x_t ~ q(x_t | x_0): the reverse step's mean
  from the network's x_0 prediction (clipped to the data range, as the samplers do), its variance
  fixed: beta_t (``beta``) or the posterior's beta-tilde_t (``posterior``);
* L_0 = -log p(x_0 | x_1), the discretised Gaussian decoder: the probability of the quantisation bin
  of each sub-pixel, the edge bins open to -inf and +inf.

Timesteps are 0-indexed as in :mod:`gen_bench.diffusion.process`: index ``t`` is the paper's t + 1,
so index 0 is the decoder and indices 1..T-1 are the KL terms. The decoder's variance is
beta-tilde at index 1 for both choices, as in Ho et al.'s code (beta-tilde is 0 at index 0).
Summing all T - 1 KL terms costs one network pass per term; ``timesteps=K`` estimates their sum
without bias from K terms: the first few exactly, then one drawn uniformly from each of strata of
the rest equal in log t, weighted by the stratum's size (:func:`strata`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from torch.distributions import Normal, kl_divergence
from tqdm.auto import tqdm

from gen_bench.diffusion.process import GaussianDiffusion, extract

Denoiser = Callable[[Tensor, Tensor], Tensor]
VARIANCES = ("beta", "posterior")
HEAD = 10  # KL terms of the smallest t always evaluated exactly by a subset (strata)


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, std: Tensor, levels: int) -> Tensor:
    """Elementwise log-probability of the quantisation bin of ``x`` under N(mean, std^2).

    ``x`` lies on the grid of ``levels`` values spanning [-1, 1] (spacing 2 / (levels - 1)); each
    bin reaches half a spacing either side, the lowest down to -inf and the highest up to +inf.
    """
    half = 1.0 / (levels - 1)
    dist = Normal(mean.double(), std.double())
    x = x.double()
    upper = torch.where(x > 1 - half, torch.ones_like(x), dist.cdf(x + half))
    lower = torch.where(x < -1 + half, torch.zeros_like(x), dist.cdf(x - half))
    return (upper - lower).clamp_min(1e-12).log()


def exact_terms(num: int, k: int | None) -> int:
    """How many of the KL terms 1..num :func:`strata` evaluates exactly for ``k`` terms in all."""
    return num if k is None or k >= num else min(HEAD, k // 2)


def strata(num: int, k: int | None, generator: torch.Generator | None = None) -> list[tuple[int, float]]:
    """(index, weight) of the KL terms 1..num that are evaluated: all with weight 1 when ``k`` is None
    or >= num; else the first ``min(HEAD, k // 2)`` exactly, and one index drawn uniformly from each
    of the remaining strata of the rest, weighted by the stratum's size: an unbiased estimate of the
    sum. The strata are equal in log t (at least one index each): the terms fall off about as 1 / t
    (a trained DDPM on digits: 0.45 bits at t = 1, 0.05 at 10, 0.004 at 100), so each stratum then
    holds terms within a few percent of each other and the estimate varies little."""
    if k is None or k >= num:
        return [(t, 1.0) for t in range(1, num + 1)]
    if k < 1:
        raise ValueError(f"timesteps must be >= 1 or None (all), got {k}")
    head = exact_terms(num, k)
    out = [(t, 1.0) for t in range(1, head + 1)]
    n = k - head
    lo, hi = head + 1, num + 1
    edges = [round(lo * (hi / lo) ** (i / n)) for i in range(n + 1)]
    for i in range(1, n + 1):  # at least one index per stratum, the ends fixed
        edges[i] = max(edges[i], edges[i - 1] + 1)
    edges[n] = hi
    for i in range(n - 1, 0, -1):
        edges[i] = min(edges[i], edges[i + 1] - 1)
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        pick = a + int(torch.randint(b - a, (1,), generator=generator))
        out.append((pick, float(b - a)))
    return out


@torch.no_grad()
def variational_bound_bits(diffusion: GaussianDiffusion, denoiser: Denoiser, x0: Tensor, levels: int = 256,
                           timesteps: int | None = None, variance: str = "beta",
                           generator: torch.Generator | None = None, progress: bool = False) -> Tensor:
    """(B,) the bound on -log2 p(x_0) per dimension of images ``x0`` (B, ...) on the ``levels`` grid in
    [-1, 1] (model space).

    Args:
        diffusion: The process.
        denoiser: ``(x_t, t) -> eps`` (the EMA weights, guidance... already bound).
        x0: Quantised images in model space.
        levels: Quantisation levels per sub-pixel (the decoder's bins).
        timesteps: KL terms evaluated (``None``: all T - 1; see :func:`strata`).
        variance: The reverse steps' variance: ``beta`` or ``posterior``.
        generator: Source of the x_t noise and of the strata's picks (else the global RNG).
        progress: Show a progress bar over the terms.
    """
    if variance not in VARIANCES:
        raise ValueError(f"unknown variance {variance!r}; valid: {', '.join(map(repr, VARIANCES))}")
    if levels < 2:
        raise ValueError(f"levels must be >= 2, got {levels}")
    d = diffusion
    T = d.num_timesteps
    dims = math.prod(x0.shape[1:])
    device = x0.device

    def noise() -> Tensor:
        gen_device = generator.device if generator is not None else device
        return torch.randn(x0.shape, generator=generator, device=gen_device).to(device)

    def full(t: int) -> Tensor:
        return torch.full((x0.shape[0],), t, device=device, dtype=torch.long)

    def x0_hat(x_t: Tensor, t: Tensor) -> Tensor:
        return d.predict_x0_from_eps(x_t, t, denoiser(x_t, t)).clamp(-1, 1)

    # L_T: q(x_T | x_0) against the standard normal prior
    mean_T, var_T = d.q_mean_variance(x0, full(T - 1))
    prior = kl_divergence(Normal(mean_T.double(), var_T.double().sqrt()),
                          Normal(torch.zeros_like(mean_T, dtype=torch.float64), 1.0))
    nats = prior.flatten(1).sum(1)

    terms = strata(T - 1, timesteps, generator)
    for t_idx, weight in tqdm(terms, desc="variational bound", disable=not progress, leave=False):
        t = full(t_idx)
        x_t = d.q_sample(x0, t, noise())
        q_mean, q_var = d.q_posterior_mean_variance(x0, x_t, t)
        p_mean, _ = d.q_posterior_mean_variance(x0_hat(x_t, t), x_t, t)
        p_var = extract(d.betas if variance == "beta" else d.posterior_variance, t, x0.ndim)
        kl = kl_divergence(Normal(q_mean.double(), q_var.double().sqrt()),
                           Normal(p_mean.double(), p_var.double().sqrt().expand_as(p_mean)))
        nats = nats + weight * kl.flatten(1).sum(1)

    # L_0: the decoder p(x_0 | x_1), its mean the predicted x_0 (posterior mean at index 0)
    t = full(0)
    x_1 = d.q_sample(x0, t, noise())
    std = d.posterior_variance[1].sqrt() if T > 1 else d.betas[0].sqrt()
    decoder = discretized_gaussian_log_likelihood(x0, x0_hat(x_1, t), std.expand_as(x0), levels)
    nats = nats - decoder.flatten(1).sum(1)
    return (nats / (dims * math.log(2))).float()
