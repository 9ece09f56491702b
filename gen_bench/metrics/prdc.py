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
        self.synced_fake: Tensor | None = None

    def update(self, features: Tensor, index: Tensor) -> None:
        """Add generated features (N, d) with their global sample indices (N,)."""
        keep = index < self.max_samples if self.max_samples is not None else slice(None)
        self.fake.append(features[keep].float())
        self.index.append(index[keep].long())

    def compute(self) -> dict[str, float]:
        fake = dim_zero_cat(self.fake)
        fake = fake[dim_zero_cat(self.index).argsort()]
        self.synced_fake = fake  # every process's rows (states are synced here): for a bootstrap
        real = self.real.to(fake.device)
        return prdc(real, fake, self.k_pr, self.k_dc, self.real_radii) | {"num_generated": fake.shape[0]}


class PRDCReplicates:
    """Precision, recall, density and coverage of reweighted generated rows (bootstrap replicates),
    the real features and their radii fixed.

    Each generated row i counts ``w_i`` times. Precision and density are weighted means over the
    generated rows. Recall and coverage depend on which rows are present (``w_i > 0``): coverage
    asks whether a real ball holds one, recall whether a real point lies within a present row's
    k-NN ball, whose radius is measured among the *other* present rows (copies of a row are not its
    neighbours, else a row drawn k + 1 times would have radius 0). Neighbours are searched among
    each row's ``neighbours`` nearest in the full set: a resample keeps about 63% of the rows, so
    with 32 candidates the k-th present one is missed with probability below 1e-10 (k = 3); the
    radius is then that of the last candidate.

    With all weights 1 every score equals :func:`prdc`'s.

    Args:
        real: (R, d) real features.
        fake: (F, d) generated features.
        k_pr, k_dc: As :func:`prdc`.
        real_radii: The real k-NN radii by k (:func:`real_knn_radii`).
        neighbours: Candidate neighbours per generated row.
    """

    def __init__(self, real: Tensor, fake: Tensor, k_pr: int = 3, k_dc: int = 5,
                 real_radii: dict[int, Tensor] | None = None, neighbours: int = 32) -> None:
        radii = dict(real_radii or real_knn_radii(real, k_pr, k_dc))
        self.k_pr, self.k_dc, self.num_real = k_pr, k_dc, real.shape[0]
        m = min(fake.shape[0] - 1, max(neighbours, k_pr))
        self.nn_dist, self.nn_idx = knn(fake, fake, m + 1)  # the row itself among them
        self.not_self = self.nn_idx != torch.arange(fake.shape[0], device=fake.device)[:, None]
        reach = self.nn_dist[:, -1] * _STRICT  # no resample's radius of a row exceeds this
        r_pr = radii[k_pr].to(real.device, torch.float64) * _STRICT
        r_dc = radii[k_dc].to(real.device, torch.float64) * _STRICT
        precise, hits, cover, recall = [], [], [], []
        for start, d in distance_chunks(fake, real):  # d: (chunk of F, R)
            precise.append((d < r_pr).any(1))
            inside = d < r_dc
            hits.append(inside.sum(1))
            f, r = inside.nonzero(as_tuple=True)
            cover.append(torch.stack([f + start, r]))
            f, r = (d < reach[start : start + d.shape[0], None]).nonzero(as_tuple=True)
            recall.append((torch.stack([f + start, r]), d[f, r]))
        self.precise = torch.cat(precise).double()
        self.hits = torch.cat(hits).double()
        self.cover = torch.cat(cover, 1)
        self.recall_pairs = torch.cat([p for p, _ in recall], 1)
        self.recall_dist = torch.cat([d for _, d in recall])

    def _present_share(self, pairs: Tensor, keep: Tensor) -> Tensor:
        hit = torch.zeros(self.num_real, dtype=torch.bool, device=pairs.device)
        hit[pairs[1, keep]] = True
        return hit.double().mean()

    def __call__(self, weights: Tensor) -> dict[str, Tensor]:
        """Scores of each replicate: ``weights`` (F, B) row counts -> name -> (B,) float64."""
        out: dict[str, list[Tensor]] = {"precision": [], "recall": [], "density": [], "coverage": []}
        for w in weights.to(self.precise.device, torch.float64).T:
            n, present = w.sum(), w > 0
            out["precision"].append((w * self.precise).sum() / n)
            out["density"].append((w * self.hits).sum() / (self.k_dc * n))
            out["coverage"].append(self._present_share(self.cover, present[self.cover[0]]))
            # k-th nearest present neighbour of each row (the last candidate if fewer are present)
            reached = (present[self.nn_idx] & self.not_self).cumsum(1) >= self.k_pr
            col = torch.where(reached.any(1), reached.float().argmax(1), self.nn_dist.shape[1] - 1)
            radius = self.nn_dist.gather(1, col[:, None])[:, 0] * _STRICT
            f = self.recall_pairs[0]
            out["recall"].append(self._present_share(self.recall_pairs,
                                                     present[f] & (self.recall_dist < radius[f])))
        return {k: torch.stack(v) for k, v in out.items()}
