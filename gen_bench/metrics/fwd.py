"""The Frechet Wavelet Distance (Veeramacheneni et al., ICLR 2025): a weight-free image distance.

Each image goes through the full Haar wavelet packet decomposition to level L: 4^L packets, each
the (C, H / 2^L, W / 2^L) coefficients of one frequency band. Per packet, the coefficient vectors of
the real and of the generated images get a mean and covariance; FWD is the Frechet distance of the
two Gaussians, averaged over the packets. No network, no download, no training: it applies to every
image dataset as it is (the authors' ``pytorchfwd`` pins old scipy and ptwt, so the transform is
written here with torch ops; the Haar packet tree is a sequence of 2 x 2 block transforms).

The paper uses level 4 at 256 px (level 3 at 128 px): packets of 16 x 16 pixels, which is what
``eval.fwd.level=null`` picks at every size (at least level 1).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric

from gen_bench.metrics.fid import frechet_distance, mean_cov

PACKET_SIZE = 16  # pixels per packet side of the automatic level (the paper's 256 px / 2^4)


def auto_level(image_size: int) -> int:
    """The level whose packets are :data:`PACKET_SIZE` pixels wide (at least 1)."""
    return max(1, round(math.log2(image_size / PACKET_SIZE)))


def haar_packets(x: Tensor, level: int) -> Tensor:
    """Full orthonormal Haar wavelet packet decomposition of images.

    Each level splits every packet's 2 x 2 pixel blocks ``[[a, b], [c, d]]`` into the four bands
    ``(a + b + c + d) / 2``, ``(a - b + c - d) / 2``, ``(a + b - c - d) / 2``, ``(a - b - c + d) / 2``
    (an orthonormal transform: the sum of squares is kept).

    Args:
        x: (N, C, H, W) images, H and W divisible by 2^level.
        level: Decomposition level L >= 0.

    Returns:
        (N, 4^L, C, H / 2^L, W / 2^L) packet coefficients, in float64.
    """
    h, w = x.shape[-2:]
    if h % 2**level or w % 2**level:
        raise ValueError(f"a level-{level} wavelet packet transform needs sides divisible by {2**level}, got "
                         f"{h}x{w}: pass eval.fwd.level=L with 2^L dividing the image size")
    p = x.to(torch.float64)[:, None]  # (N, 1, C, H, W)
    for _ in range(level):
        a, b = p[..., 0::2, 0::2], p[..., 0::2, 1::2]
        c, d = p[..., 1::2, 0::2], p[..., 1::2, 1::2]
        bands = torch.stack([a + b + c + d, a - b + c - d, a + b - c - d, a - b - c + d], 2) / 2
        p = bands.flatten(1, 2)  # (N, 4P, C, h / 2, w / 2)
    return p


class PacketStats(Metric):
    """Per-packet float64 sums of the packet coefficient vectors and their outer products (summed
    across processes, like torchmetrics' FID state).

    Args:
        packets: 4^L.
        dim: Coefficients per packet, C (H / 2^L) (W / 2^L).
        level: L.
    """

    full_state_update = False

    def __init__(self, packets: int, dim: int, level: int) -> None:
        super().__init__()
        self.level = level
        self.add_state("sum", torch.zeros(packets, dim, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("cov_sum", torch.zeros(packets, dim, dim, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, images: Tensor) -> None:
        """Add (N, C, H, W) images in [0, 1]."""
        p = haar_packets(images, self.level).flatten(2)  # (N, P, D)
        self.sum += p.sum(0)
        self.cov_sum += torch.einsum("npd,npe->pde", p, p)
        self.n += p.shape[0]

    def compute(self) -> dict[str, Tensor]:
        return {"sum": self.sum, "cov_sum": self.cov_sum, "n": self.n}


def fwd_from_stats(real: dict[str, Tensor], fake: dict[str, Tensor]) -> Tensor:
    """Mean over packets of the Frechet distance of the packets' Gaussians (float64 scalar)."""
    dists = []
    for p in range(real["sum"].shape[0]):
        mu_r, cov_r = mean_cov(real["sum"][p], real["cov_sum"][p], real["n"])
        mu_f, cov_f = mean_cov(fake["sum"][p], fake["cov_sum"][p].to(cov_r), fake["n"])
        dists.append(frechet_distance(mu_r, cov_r, mu_f.to(mu_r), cov_f))
    return torch.stack(dists).mean()


def fwd(real: Tensor, fake: Tensor, level: int) -> float:
    """FWD between two image sets (N, C, H, W) in [0, 1]."""
    stats = []
    for x in (real, fake):
        m = PacketStats(4**level, x.shape[1] * (x.shape[2] >> level) * (x.shape[3] >> level), level)
        m.update(x)
        stats.append(m.compute())
    return float(fwd_from_stats(*stats))
