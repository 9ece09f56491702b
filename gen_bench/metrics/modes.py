"""Mode coverage: how many of a dataset's known modes the samples reach, and how evenly.

* 2-D mixtures (``ring8``, ``grid25``), the VEEGAN (Srivastava et al. 2017) / PacGAN (Lin et al.
  2018) protocol: a sample is *high quality* when it lies within 3 standard deviations of its
  nearest mode centre; a mode is *hit* when at least one high-quality sample is nearest to it.
  Reported: modes hit, the share of high-quality samples, and KL(p || uniform) of the histogram p
  of high-quality samples over modes.
* Labeled images (``stacked_digits``: 1000 modes, one digit class per channel, Metz et al. 2017;
  also digits, shapes): each sample's mode is the dataset classifier's prediction; reported: modes
  hit and KL(p || uniform) of the predicted-mode histogram. A blurry sample still gets a predicted
  mode, so a count of noise could read as coverage: beside it come the share of *confidently
  classified* samples (every channel's top class probability at least a threshold, the images'
  analogue of the high-quality share) and the modes hit by those alone (``confident_fraction``,
  ``modes_confident``).

Both counts depend on the number of samples: 2,500 samples of a perfect generator hit only about
918 of 1,000 equally likely modes, with KL 0.22. So every mode score comes with what a perfect
generator (the data itself: equally likely modes, and for 2-D mixtures isotropic Gaussian modes of
the given std) scores in expectation at the same count: ``modes_perfect`` (closed form),
``mode_kl_perfect`` (exact, by linearity of expectation over the binomial count of each mode) and,
for 2-D mixtures, ``hq_fraction_perfect``. For images these assume an exact classifier; what real
images score through the same classifier at the same count is measured beside them (``*_real``, see
:func:`real_mode_scores`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

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


def marginal_confidence(logits: Tensor, num_classes: int, labels: int = 1) -> Tensor:
    """The smallest of the per-label top probabilities of a joint classifier output.

    Args:
        logits: (N, K^L) joint logits over ``labels`` labels of ``num_classes`` (K) classes each, the
            first label most significant (stacked digits: mode ``100 r + 10 g + b``); L = 1 is a
            plain K-way classifier.
        num_classes: K.
        labels: L.

    Returns:
        (N,) min over labels l of max_k P(label l = k): at least t exactly when every label's top
        class has probability >= t. Each label's distribution is the marginal of the joint
        softmax (summed over the other labels), so it holds for any joint, product or not.
    """
    p = logits.double().softmax(1).reshape(-1, *[num_classes] * labels)  # (N, K, ..., K)
    tops = [p.sum(dim=[d for d in range(1, labels + 1) if d != axis]).amax(1) if labels > 1 else p.amax(1)
            for axis in range(1, labels + 1)]
    return torch.stack(tops, 1).amin(1).float()


def real_mode_scores(images: Tensor, classify: Callable[[Tensor], Tensor], num_samples: int,
                     num_classes: int, labels: int, confidence: float, seed: int = 0,
                     batch_size: int = 1000) -> dict[str, float]:
    """Modes, KL and the confident share of ``num_samples`` real images through a classifier: what a
    generator of real images scores at the same count, classifier errors and doubts included.

    Real images are drawn with replacement from ``images`` (a held-out split), so any count can be
    scored; with ``labels`` > 1 (one label per channel: stacked digits) each channel is drawn
    independently from all the channels of ``images``, which makes fresh stacks of real digits with
    independent, near-uniform labels, as the data's own stacks are built.

    Args:
        images: (M, C, H, W) real images in [0, 1].
        classify: (B, C, H, W) -> (B, K^L) joint logits (the dataset classifier's ``logits``).
        num_samples: Images scored (the count the generated samples are scored on).
        num_classes: K.
        labels: L: 1, or C for one label per channel.
        confidence: The confidence threshold (see :class:`ModeCoverage`).
        seed: Seed of the draw.
        batch_size: Images per classifier call.

    Returns:
        ``modes_real``, ``mode_kl_real``, ``confident_fraction_real``, ``modes_confident_real``.
    """
    g = torch.Generator().manual_seed(seed)
    if labels > 1:
        if labels != images.shape[1]:
            raise ValueError(f"one label per channel needs {labels} channels, got images "
                             f"{tuple(images.shape)}")
        pool = images.reshape(-1, 1, *images.shape[2:])  # (M * C, 1, H, W): every real channel
    else:
        pool = images
    index = torch.randint(pool.shape[0], (num_samples, labels), generator=g)  # (N, L) draws
    metric = ModeCoverage(num_classes**labels, confidence=confidence)
    for rows in index.split(batch_size):
        batch = pool[rows].flatten(1, 2)  # (B, L, c, H, W) -> (B, C, H, W)
        logits = classify(batch)
        metric.update(logits.argmax(1).cpu(), torch.arange(batch.shape[0]),
                      marginal_confidence(logits, num_classes, labels).cpu())
    out = metric.compute()
    return {f"{k}_real": out[k] for k in ("modes", "mode_kl", "confident_fraction", "modes_confident")}


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
        confidence: Mode indices only: a sample is confidently classified when its confidence
            (:func:`marginal_confidence`) is at least this; ``None``: not counted.
    """

    full_state_update = False

    def __init__(self, num_modes: int, centers: Tensor | None = None, std: float | None = None,
                 threshold: float = 3.0, max_samples: int | None = None,
                 confidence: float | None = None) -> None:
        super().__init__()
        if centers is not None and std is None:
            raise ValueError("2-D mode coverage needs the modes' std")
        if confidence is not None and (centers is not None or not 0 <= confidence <= 1):
            raise ValueError(f"confidence is a probability threshold in [0, 1] for classified modes, got "
                             f"{confidence!r}")
        self.num_modes = num_modes
        self.centers = centers
        self.std = std
        self.threshold = threshold
        self.max_samples = max_samples
        self.confidence = confidence
        self.add_state("hist", torch.zeros(num_modes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("confident_hist", torch.zeros(num_modes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("high_quality", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, x: Tensor, index: Tensor, confidence: Tensor | None = None) -> None:
        """Add samples: (N, 2) points for 2-D mixtures, else (N,) mode indices with, when the metric
        counts confident samples, their (N,) confidences; (N,) global indices."""
        if (confidence is None) != (self.confidence is None):
            raise ValueError("pass each sample's confidence exactly when the metric was built with a "
                             "confidence threshold")
        if self.max_samples is not None:
            keep = index < self.max_samples
            x = x[keep]
            confidence = None if confidence is None else confidence[keep]
        if self.centers is not None:
            modes, hq = nearest_modes(x, self.centers, self.std, self.threshold)
        else:
            modes, hq = x.long(), torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        self.hist += torch.bincount(modes[hq], minlength=self.num_modes)
        if confidence is not None:
            sure = confidence >= self.confidence
            self.confident_hist += torch.bincount(modes[sure], minlength=self.num_modes)
        self.high_quality += hq.sum()
        self.total += x.shape[0]

    def compute(self) -> dict[str, float]:
        """``modes``, ``mode_kl`` (and ``hq_fraction`` for 2-D; ``confident_fraction`` and
        ``modes_confident`` with a confidence threshold), each beside what a perfect generator scores
        with as many samples (``*_perfect``, see :func:`perfect_mode_scores`)."""
        total = int(self.total)
        out = {"modes": int((self.hist > 0).sum()), "mode_kl": kl_to_uniform(self.hist),
               "num_generated": total}
        if self.centers is not None:
            out["hq_fraction"] = (self.high_quality / self.total).item() if self.total > 0 else math.nan
        if self.confidence is not None:
            confident = int(self.confident_hist.sum())
            out["confident_fraction"] = confident / total if total > 0 else math.nan
            out["modes_confident"] = int((self.confident_hist > 0).sum())
        hq = high_quality_probability(self.threshold) if self.centers is not None else None
        out.update(perfect_mode_scores(self.num_modes, total, hq))
        return out
