"""Mode coverage: how many of a dataset's known modes the samples reach, and how evenly.

* 2-D mixtures (``ring8``, ``grid25``), the VEEGAN (Srivastava et al. 2017) / PacGAN (Lin et al.
  2018) protocol: a sample is *high quality* when it lies within 3 standard deviations of its
  nearest mode centre; a mode is *hit* when at least one high-quality sample is nearest to it.
  Reported: modes hit, the share of high-quality samples, and KL(p || uniform) of the histogram p
  of high-quality samples over modes.
* Labeled images (``stacked_digits``: 1000 modes, one digit class per channel, Metz et al. 2017;
  also digits, shapes): each sample's mode is the dataset classifier's prediction; reported: modes
  hit and KL(p || uniform) of the predicted-mode histogram.

Both counts depend on the number of samples: 2,500 samples of a perfect generator hit only about
918 of 1,000 equally likely modes, with KL 0.22. So every mode score comes with what a perfect
generator (the data itself: equally likely modes, and for 2-D mixtures isotropic Gaussian modes of
the given std) scores in expectation at the same count: ``modes_perfect`` (closed form),
``mode_kl_perfect`` (exact, by linearity of expectation over the binomial count of each mode) and,
for 2-D mixtures, ``hq_fraction_perfect``. For images they assume an exact classifier.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import binom
from torch import Tensor
from torchmetrics import Metric

from gen_bench.metrics.knn import knn


def kl_to_uniform(hist: Tensor) -> float:
    """KL(p || uniform) = log K - H(p) of the histogram ``hist`` over K modes (NaN when empty)."""
    total = hist.sum()
    if total == 0:
        return math.nan
    p = hist.double() / total
    nz = p[p > 0]
    return float((nz * (nz * hist.numel()).log()).sum())


def high_quality_probability(threshold: float) -> float:
    """P(|x - mu| <= threshold * std) for x ~ N(mu, std^2 I) in 2-D: 1 - exp(-threshold^2 / 2).

    (|x - mu| / std is chi-distributed with 2 degrees of freedom.) 0.98889 for 3 std.
    """
    return -math.expm1(-(threshold**2) / 2)


def expected_modes_hit(num_modes: int, num_samples: int, p_counted: float = 1.0) -> float:
    """Expected number of distinct modes among ``num_samples`` draws from ``num_modes`` equally likely
    modes, each draw counted with probability ``p_counted``: K (1 - (1 - p / K)^N)."""
    return -num_modes * math.expm1(num_samples * math.log1p(-p_counted / num_modes))


def expected_kl_of_uniform_sample(num_modes: int, num_samples: int, tail: float = 1e-15) -> float:
    """E[KL(p || uniform)] of the histogram p of ``num_samples`` draws from ``num_modes`` equally
    likely modes: KL = log K + sum_i (c_i / N) log(c_i / N) with each count c_i ~ Binomial(N, 1/K),
    so E[KL] = log K + K sum_c P(c) (c / N) log(c / N), summed over all c but tails of mass ``tail``.
    NaN for no samples (an empty histogram)."""
    if num_samples <= 0:
        return math.nan
    p = 1 / num_modes
    lo = max(1, int(binom.ppf(tail, num_samples, p)))
    c = np.arange(lo, int(binom.isf(tail, num_samples, p)) + 1, dtype=np.float64)
    f = c / num_samples
    return float(math.log(num_modes) + num_modes * np.sum(binom.pmf(c, num_samples, p) * f * np.log(f)))


def expected_kl_perfect(num_modes: int, num_samples: int, p_counted: float = 1.0,
                        tail: float = 1e-12) -> float:
    """:func:`expected_kl_of_uniform_sample` when each of the ``num_samples`` draws is counted with
    probability ``p_counted`` (2-D: the high-quality ones): averaged over the number counted,
    M ~ Binomial(N, p), over all M but tails of mass ``tail`` (and M = 0, whose KL is undefined)."""
    if p_counted >= 1.0 or num_samples <= 0:
        return expected_kl_of_uniform_sample(num_modes, num_samples)
    lo = max(1, int(binom.ppf(tail, num_samples, p_counted)))
    ms = np.arange(lo, int(binom.isf(tail, num_samples, p_counted)) + 1)
    w = binom.pmf(ms, num_samples, p_counted)
    kls = np.array([expected_kl_of_uniform_sample(num_modes, int(m)) for m in ms])
    return float(np.sum(w * kls) / np.sum(w))


def perfect_mode_scores(num_modes: int, num_samples: int,
                        hq_probability: float | None = None) -> dict[str, float]:
    """What a perfect generator scores in expectation with ``num_samples`` samples: ``modes_perfect``,
    ``mode_kl_perfect`` and, for 2-D mixtures (``hq_probability``: the chance that one of its samples
    is high quality), ``hq_fraction_perfect``."""
    q = 1.0 if hq_probability is None else hq_probability
    out = {"modes_perfect": expected_modes_hit(num_modes, num_samples, q),
           "mode_kl_perfect": expected_kl_perfect(num_modes, num_samples, q)}
    if hq_probability is not None:
        out["hq_fraction_perfect"] = q
    return out


def nearest_modes(points: Tensor, centers: Tensor, std: float,
                  threshold: float = 3.0) -> tuple[Tensor, Tensor]:
    """Nearest mode of each point and whether it is high quality.

    Args:
        points: (N, 2) samples.
        centers: (K, 2) mode centres.
        std: Standard deviation of each mode.
        threshold: High quality within ``threshold * std`` of the nearest centre.

    Returns:
        (N,) int64 mode indices and (N,) bool high-quality flags.
    """
    d, i = knn(points, centers.to(points.device), 1)
    return i[:, 0], d[:, 0] <= threshold * std


class ModeCoverage(Metric):
    """Mode histogram as a summed state (a DDP sync is a sum, memory does not grow with samples).

    Args:
        num_modes: K.
        centers: (K, 2) mode centres for 2-D mixtures (``None``: update takes mode indices).
        std: Mode standard deviation (2-D mixtures).
        threshold: High quality within ``threshold * std`` (2-D mixtures).
        max_samples: Use the samples with global index below this (``None``: all).
    """

    full_state_update = False

    def __init__(self, num_modes: int, centers: Tensor | None = None, std: float | None = None,
                 threshold: float = 3.0, max_samples: int | None = None) -> None:
        super().__init__()
        if centers is not None and std is None:
            raise ValueError("2-D mode coverage needs the modes' std")
        self.num_modes = num_modes
        self.centers = centers
        self.std = std
        self.threshold = threshold
        self.max_samples = max_samples
        self.add_state("hist", torch.zeros(num_modes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("high_quality", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, x: Tensor, index: Tensor) -> None:
        """Add samples: (N, 2) points for 2-D mixtures, else (N,) mode indices; (N,) global indices."""
        if self.max_samples is not None:
            x = x[index < self.max_samples]
        if self.centers is not None:
            modes, hq = nearest_modes(x, self.centers, self.std, self.threshold)
        else:
            modes, hq = x.long(), torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        self.hist += torch.bincount(modes[hq], minlength=self.num_modes)
        self.high_quality += hq.sum()
        self.total += x.shape[0]

    def compute(self) -> dict[str, float]:
        """``modes``, ``mode_kl`` (and ``hq_fraction`` for 2-D), each beside what a perfect generator
        scores with as many samples (``*_perfect``, see :func:`perfect_mode_scores`)."""
        total = int(self.total)
        out = {"modes": int((self.hist > 0).sum()), "mode_kl": kl_to_uniform(self.hist),
               "num_generated": total}
        if self.centers is not None:
            out["hq_fraction"] = (self.high_quality / self.total).item() if self.total > 0 else math.nan
        hq = high_quality_probability(self.threshold) if self.centers is not None else None
        out.update(perfect_mode_scores(self.num_modes, total, hq))
        return out
