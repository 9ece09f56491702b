"""Improved precision and recall (Kynkaanniemi et al. 2019) and density and coverage (Naeem et al.
2020), from k-nearest-neighbour balls around real and generated features.

With R real and F generated features, B_k(x) the ball around x reaching its k-th nearest neighbour
in its own set, and strict inequalities as in Naeem et al.'s reference code:

* precision = share of generated points inside some real ball B_k(r)       (k = 3)
* recall    = share of real points inside some generated ball B_k(f)       (k = 3)
* density   = (1 / kF) * sum over generated f of #{r : f in B_k(r)}        (k = 5)
* coverage  = share of real points whose ball B_k(r) holds a generated one  (k = 5)

Identical sets give (1, 1, 1, 1); disjoint distant sets (0, 0, 0, 0).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from gen_bench.metrics.knn import distance_chunks, knn, kth_neighbour_radii

# A point exactly on a ball's boundary (the k-th neighbour itself) is outside, as with Naeem et al.'s
# strict "<"; the margin keeps that true when the same distance is computed twice with rounding.
_STRICT = 1 - 1e-9


def real_knn_radii(real: Tensor, k_pr: int = 3, k_dc: int = 5) -> dict[int, Tensor]:
    """k-NN radii of the real features for both k, from one neighbour search."""
    k_max = max(k_pr, k_dc)
    d = knn(real, real, k_max + 1)[0]  # column 0: the point itself
    return {k: d[:, k] for k in {k_pr, k_dc}}


def prdc(real: Tensor, fake: Tensor, k_pr: int = 3, k_dc: int = 5,
         real_radii: dict[int, Tensor] | None = None) -> dict[str, float]:
    """Precision, recall, density and coverage of ``fake`` against ``real``.

    Args:
        real: (R, d) real features.
        fake: (F, d) generated features.
        k_pr: k of the precision / recall balls.
        k_dc: k of the density / coverage balls.
        real_radii: Precomputed k-NN radii of ``real`` by k (:func:`real_knn_radii`).

    Returns:
        ``{"precision", "recall", "density", "coverage"}`` as floats.
    """
    for name, x in (("real", real), ("fake", fake)):
        if x.shape[0] <= max(k_pr, k_dc):
            raise ValueError(f"PRDC needs more than {max(k_pr, k_dc)} {name} samples, got {x.shape[0]}")
    radii = dict(real_radii or {})
    for k in {k_pr, k_dc} - set(radii):
        radii[k] = kth_neighbour_radii(real, k)
    r_pr = radii[k_pr].to(real.device, torch.float64) * _STRICT  # (R,)
    r_dc = radii[k_dc].to(real.device, torch.float64) * _STRICT
    f_pr = kth_neighbour_radii(fake, k_pr) * _STRICT  # (F,)

    precise = torch.zeros(fake.shape[0], dtype=torch.bool, device=real.device)
    density_hits = torch.zeros((), dtype=torch.float64, device=real.device)
    recalled = torch.zeros(real.shape[0], dtype=torch.bool, device=real.device)
    nearest_fake = torch.full((real.shape[0],), float("inf"), dtype=torch.float64, device=real.device)
    for start, d in distance_chunks(fake, real):  # d: (chunk of F, R)
        stop = start + d.shape[0]
        precise[start:stop] = (d < r_pr).any(1)
        density_hits += (d < r_dc).sum()
        recalled |= (d < f_pr[start:stop, None]).any(0)
        nearest_fake = torch.minimum(nearest_fake, d.min(0).values)
    return {
        "precision": precise.double().mean().item(),
        "recall": recalled.double().mean().item(),
        "density": (density_hits / (k_dc * fake.shape[0])).item(),
        "coverage": (nearest_fake < r_dc).double().mean().item(),
    }


class PRDC(Metric):
    """Precision / recall / density / coverage against a fixed real feature set.

    The state is the generated features (concatenated across processes); the real features and
    their k-NN radii are computed once at construction and are the same on every process.

    Args:
        real: (R, d) real features.
        k_pr: k of precision / recall.
        k_dc: k of density / coverage.
        max_samples: Use the generated samples with global index below this (``None``: all).
        real_radii: Precomputed radii (:func:`real_knn_radii`; they depend on ``real`` only).
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, real: Tensor, k_pr: int = 3, k_dc: int = 5, max_samples: int | None = None,
                 real_radii: dict[int, Tensor] | None = None) -> None:
        super().__init__()
        self.real = real.float()
        self.k_pr, self.k_dc = k_pr, k_dc
        self.max_samples = max_samples
        self.real_radii = real_radii if real_radii is not None else real_knn_radii(self.real, k_pr, k_dc)
        self.add_state("fake", [], dist_reduce_fx="cat")
        self.add_state("index", [], dist_reduce_fx="cat")

    def update(self, features: Tensor, index: Tensor) -> None:
        """Add generated features (N, d) with their global sample indices (N,)."""
        keep = index < self.max_samples if self.max_samples is not None else slice(None)
        self.fake.append(features[keep].float())
        self.index.append(index[keep].long())

    def compute(self) -> dict[str, float]:
        fake = dim_zero_cat(self.fake)
        fake = fake[dim_zero_cat(self.index).argsort()]
        real = self.real.to(fake.device)
        return prdc(real, fake, self.k_pr, self.k_dc, self.real_radii) | {"num_generated": fake.shape[0]}
