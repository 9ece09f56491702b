"""Bootstrap intervals of scores from the features already extracted (no extra sampling).

A replicate reweights the generated rows: row i counts ``w_i`` times, with ``w`` the counts of n
draws with replacement from a seeded ``torch.Generator`` (:func:`resample_weights`); the reference
side stays fixed. Each metric recomputes its statistic from the weights (FID from the weighted
mean and covariance, KID and PRDC from weighted sums, see :mod:`gen_bench.metrics.fid` and
:mod:`gen_bench.metrics.prdc`).

A resample holds only ~63% of the rows, each about 1.6 times, and the scores are not plain means:
FID grows as samples get fewer, coverage counts distinct points. So the replicates sit off the
estimate (FID: by about its own small-sample bias), while their spread matches the spread of the
score over independent draws. :func:`interval` therefore reports the estimate plus the replicates'
quantiles around their mean: the bias-corrected percentile interval of Efron and Tibshirani (1993,
sections 10.2 and 13.3) for the score at this sample count. It is conservative where FID's bias
dominates (features of dimension comparable to the sample count: up to twice as wide in
``tests/test_metrics_bootstrap.py``'s 64-d check).
"""

from __future__ import annotations

import torch
from torch import Tensor


def resample_weights(n: int, num: int, seed: int, device: torch.device | str = "cpu") -> Tensor:
    """``num`` bootstrap resamples of ``n`` rows as an (n, num) float64 matrix of counts (each
    column sums to n: row i drawn ``W[i, b]`` times in resample b).

    The indices come from a CPU ``torch.Generator`` seeded with ``seed``, so every device and
    every process draws the same resamples.
    """
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(n, (num, n), generator=g)
    counts = torch.stack([torch.bincount(row, minlength=n) for row in idx], 1)  # (n, num)
    return counts.to(device, torch.float64)


def interval(reps: Tensor, estimate: float, level: float = 0.95, lower: float | None = None,
             upper: float | None = None) -> tuple[float, float]:
    """Bias-corrected percentile interval: ``estimate + quantiles(reps) - mean(reps)``.

    Args:
        reps: (B,) replicates of the statistic (a constant offset, such as a term that depends on
            the fixed reference side only, cancels).
        estimate: The reported score.
        level: Coverage (0.95: the 2.5% and 97.5% quantiles).
        lower, upper: The score's range (precision in [0, 1], FID >= 0): bounds are clipped to it.

    Returns:
        (low, high).
    """
    reps = reps.detach().cpu().to(torch.float64)
    alpha = (1 - level) / 2
    q = torch.quantile(reps, torch.tensor([alpha, 1 - alpha], dtype=torch.float64))
    lo, hi = (estimate + q - reps.mean()).tolist()
    if lower is not None:
        lo, hi = max(lo, lower), max(hi, lower)
    if upper is not None:
        lo, hi = min(lo, upper), min(hi, upper)
    return lo, hi
