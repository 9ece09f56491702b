"""Mode coverage: how many of a dataset's known modes the samples reach, and how evenly.

* 2-D mixtures (``ring8``, ``grid25``), the VEEGAN (Srivastava et al. 2017) / PacGAN (Lin et al.
  2018) protocol: a sample is *high quality* when it lies within 3 standard deviations of its
  nearest mode centre; a mode is *hit* when at least one high-quality sample is nearest to it.
  Reported: modes hit, the share of high-quality samples, and KL(p || uniform) of the histogram p
  of high-quality samples over modes.
* Labeled images (``stacked_digits``: 1000 modes, one digit class per channel, Metz et al. 2017;
  also digits, shapes): each sample's mode is the dataset classifier's prediction; reported: modes
  hit and KL(p || uniform) of the predicted-mode histogram.
"""

from __future__ import annotations

import math

import torch
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


def mode_coverage(modes: Tensor, num_modes: int, quality: Tensor | None = None) -> dict[str, float]:
    """Modes hit and KL to uniform of the samples' modes (high-quality ones only when given).

    Args:
        modes: (N,) mode index per sample.
        num_modes: K.
        quality: (N,) bool high-quality flags (2-D protocol) or ``None`` (every sample counts).
    """
    counted = modes if quality is None else modes[quality]
    hist = torch.bincount(counted.cpu(), minlength=num_modes)
    out = {"modes": int((hist > 0).sum()), "mode_kl": kl_to_uniform(hist)}
    if quality is not None:
        out["hq_fraction"] = quality.double().mean().item() if quality.numel() else math.nan
    return out


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
        out = {"modes": int((self.hist > 0).sum()), "mode_kl": kl_to_uniform(self.hist),
               "num_generated": int(self.total)}
        if self.centers is not None:
            out["hq_fraction"] = (self.high_quality / self.total).item() if self.total > 0 else math.nan
        return out
