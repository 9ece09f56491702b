"""Memorization: how close generated samples sit to the training set, compared with held-out data.

* Nearest-neighbour distances from each sample to the training set.
* Copy rate: the share of samples whose nearest training neighbour is much closer than the second
  one, ``d1 <= threshold * d2`` (threshold 1/3 as in Yoon et al. 2023 and Gu et al. 2023): a copy
  of one training image, not a typical point between several.
* C_T, the data-copying test of Meehan, Chaudhuri and Dasgupta (AISTATS 2020): the space is cut
  into cells by k-means on the training set; in each cell a Mann-Whitney U test compares the
  distances to the training set of generated samples with those of held-out samples; the
  Z-scores are averaged with the held-out share of each cell as weight. ``C_T << 0``: samples sit
  closer to the training set than fresh data does (copying); ~0: like fresh data; ``>> 0``:
  underfitting.

Distances are Euclidean in the chosen space (pixels or an extractor's features).

Controls (:func:`control_samples`): "generators" of known copying, exact training copies, the same
copies with pixel noise, and held-out data, scored like a model so a table shows what each metric
says about them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy.stats import mannwhitneyu
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from gen_bench.metrics.knn import knn

DEFAULT_RATIO_THRESHOLD = 1 / 3


# --- pure functions ----------------------------------------------------------------------------
def nearest_training_neighbours(samples: Tensor, train: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Distances to the nearest and second-nearest training points, and the nearest's index.

    Args:
        samples: (N, D) points.
        train: (M, D) training points, M >= 2.

    Returns:
        d1 (N,), d2 (N,) float64 and idx (N,) int64.
    """
    d, i = knn(samples, train, 2)
    return d[:, 0], d[:, 1], i[:, 0]


def copy_mask(d1: Tensor, d2: Tensor, threshold: float = DEFAULT_RATIO_THRESHOLD) -> Tensor:
    """True where the nearest training point is at most ``threshold`` times as far as the second."""
    return d1 <= threshold * d2


def copy_ratio(d1: Tensor, d2: Tensor) -> Tensor:
    """d1 / d2 (0 for a sample on two identical training points)."""
    return torch.where(d2 > 0, d1 / d2.clamp_min(1e-300), torch.zeros_like(d1))


def fit_cells(train: Tensor, num_cells: int, seed: int = 0, max_fit: int = 20_000,
              iters: int = 100) -> Tensor:
    """k-means centroids (num_cells, D) of the training points: the partition of the C_T test.

    k-means++ seeding and Lloyd iterations from a seeded generator (fitted on at most ``max_fit``
    points, a seeded subset), in float64 on the points' device.
    """
    g = torch.Generator().manual_seed(seed)
    x = train
    if x.shape[0] > max_fit:
        x = x[torch.randperm(x.shape[0], generator=g)[:max_fit].to(x.device)]
    x = x.to(torch.float64)
    n = x.shape[0]
    first = int(torch.randint(n, (1,), generator=g))
    centers = [first]
    d2 = (x - x[first]).square().sum(1)
    for _ in range(1, num_cells):  # k-means++: the next centre with probability ~ squared distance
        p = d2.cpu() / d2.sum().cpu() if d2.sum() > 0 else torch.full((n,), 1 / n, dtype=torch.float64)
        i = int(torch.multinomial(p, 1, generator=g))
        centers.append(i)
        d2 = torch.minimum(d2, (x - x[i]).square().sum(1))
    c = x[centers].clone()
    for _ in range(iters):
        assign = knn(x, c, 1)[1][:, 0]
        counts = torch.bincount(assign, minlength=num_cells).to(x.dtype)
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        new = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], c)  # empty: keep
        if torch.allclose(new, c, rtol=0, atol=1e-12):
            break
        c = new
    return c


def assign_cells(x: Tensor, centroids: Tensor) -> Tensor:
    """(N,) index of the nearest centroid."""
    return knn(x, centroids.to(x.device), 1)[1][:, 0]


def within_cell_distances(x: Tensor, cells: Tensor, train: Tensor, train_cells: Tensor) -> Tensor:
    """(N,) distance from each point to the nearest training point of its own cell (Meehan et al.
    restrict the training set to the cell; inf where the cell has no training point)."""
    out = torch.full((x.shape[0],), math.inf, dtype=torch.float64, device=x.device)
    for c in cells.unique().tolist():
        rows = cells == c
        ref = train[train_cells.to(train.device) == c]
        if ref.shape[0] > 0:
            out[rows] = knn(x[rows], ref.to(x.device), 1)[0][:, 0]
    return out


def z_u(gen_dist: np.ndarray, test_dist: np.ndarray) -> float:
    """Z-scored Mann-Whitney U of generated vs held-out distances (Meehan et al.'s ``Zu``).

    U counts pairs where the generated sample is farther from the training set than the held-out
    one; under H0 it has mean mn/2 (minus their 0.5 continuity correction) and variance
    mn(m + n + 1)/12.
    """
    m, n = len(gen_dist), len(test_dist)
    u = mannwhitneyu(gen_dist, test_dist, alternative="less", method="asymptotic").statistic
    return float((u - (m * n / 2 - 0.5)) / math.sqrt(m * n * (m + n + 1) / 12))


def data_copying_ct(gen_dist: Tensor, gen_cells: Tensor, test_dist: Tensor, test_cells: Tensor,
                    num_cells: int, min_samples: int = 20) -> float:
    """The C_T statistic (Meehan et al. 2020, eq. 4).

    Args:
        gen_dist: (m,) within-cell distances of the generated samples to the training set.
        gen_cells: (m,) their cells.
        test_dist: (n,) the same for held-out samples.
        test_cells: (n,) their cells.
        num_cells: Number of cells.
        min_samples: A cell enters the average when it holds at least this many generated samples
            (their tau = min_samples / m) and at least one held-out sample.

    Returns:
        The held-out-weighted mean of the per-cell Z_U; NaN when no cell qualifies.
    """
    gen_counts = torch.bincount(gen_cells.cpu(), minlength=num_cells)
    test_counts = torch.bincount(test_cells.cpu(), minlength=num_cells)
    g, t = gen_dist.cpu().numpy(), test_dist.cpu().numpy()
    gc, tc = gen_cells.cpu().numpy(), test_cells.cpu().numpy()
    total, weight = 0.0, 0.0
    for c in range(num_cells):
        if gen_counts[c] < max(min_samples, 1) or test_counts[c] == 0:
            continue
        w = float(test_counts[c]) / len(t)
        total += w * z_u(g[gc == c], t[tc == c])
        weight += w
    return total / weight if weight > 0 else math.nan


def memorization_reference(train: Tensor, heldout: Tensor | None,
                           ratio_threshold: float = DEFAULT_RATIO_THRESHOLD, num_cells: int = 10,
                           seed: int = 0) -> dict[str, Any]:
    """Everything the metric needs from the real data alone (cacheable): the held-out split's own
    copy rate and distances (what a model that generalises perfectly scores), and the C_T cells
    with the held-out samples' within-cell distances."""
    out: dict[str, Any] = {"baseline": {}, "num_cells": 0}
    if heldout is None or heldout.shape[0] == 0:
        return out
    heldout = heldout.to(train.device, torch.float32)
    h1, h2, _ = nearest_training_neighbours(heldout, train)
    out["baseline"] = {"heldout_copy_rate": copy_mask(h1, h2, ratio_threshold).double().mean().item(),
                       "heldout_nn_distance_mean": h1.mean().item(), "num_heldout": int(heldout.shape[0])}
    cells = min(num_cells, train.shape[0])
    if cells > 0:
        centroids = fit_cells(train, cells, seed)
        train_cells = assign_cells(train, centroids)
        heldout_cells = assign_cells(heldout, centroids)
        out.update(num_cells=cells, centroids=centroids.cpu(), train_cells=train_cells.cpu(),
                   heldout_cells=heldout_cells.cpu(),
                   heldout_dist=within_cell_distances(heldout, heldout_cells, train, train_cells).cpu())
    return out


# --- metric ------------------------------------------------------------------------------------
class Memorization(Metric):
    """Nearest-neighbour distances, copy rate and C_T of generated samples against the training
    set, with the held-out split as the reference of what fresh data looks like.

    The state is per-sample numbers (concatenated across processes), plus the images of each
    batch's most copy-like samples for the grid; the training and held-out sets, the cells and the
    held-out distances are fixed at construction, the same on every process.

    Args:
        train: (M, D) training points in the comparison space.
        heldout: (H, D) held-out points (``None``: no C_T).
        ratio_threshold: Copy when ``d1 <= ratio_threshold * d2``.
        num_cells: k-means cells of the C_T test (0: no C_T).
        min_cell_samples: Generated samples a cell needs to enter C_T.
        max_samples: Use the generated samples with global index below this (``None``: all).
        grid_pairs: Samples kept for the grid of most-copied samples.
        seed: Seed of k-means.
        reference: :func:`memorization_reference` of ``train`` and ``heldout``, when cached.
    """

    full_state_update = False

    def __init__(self, train: Tensor, heldout: Tensor | None,
                 ratio_threshold: float = DEFAULT_RATIO_THRESHOLD, num_cells: int = 10,
                 min_cell_samples: int = 20, max_samples: int | None = None, grid_pairs: int = 16,
                 seed: int = 0, reference: dict[str, Any] | None = None) -> None:
        super().__init__()
        if train.shape[0] < 2:
            raise ValueError(f"memorization needs at least 2 training samples, got {train.shape[0]}")
        self.train = train.float()
        self.ratio_threshold = ratio_threshold
        self.max_samples = max_samples
        self.grid_pairs = grid_pairs
        self.min_cell_samples = min_cell_samples
        if reference is None:
            reference = memorization_reference(self.train, heldout, ratio_threshold, num_cells, seed)
        device = self.train.device
        self.baseline: dict[str, float] = dict(reference["baseline"])
        self.num_cells = int(reference["num_cells"])
        if self.num_cells > 0:
            self.centroids = reference["centroids"].to(device)
            self.train_cells = reference["train_cells"].to(device)
            self.heldout_cells = reference["heldout_cells"].to(device)
            self.heldout_dist = reference["heldout_dist"].to(device)
        for name in ("d1", "d2", "nn_index", "cell", "cell_dist", "index",
                     "cand_images", "cand_ratio", "cand_nn"):
            self.add_state(name, [], dist_reduce_fx="cat")

    def update(self, points: Tensor, index: Tensor, images: Tensor | None = None) -> None:
        """Add generated samples.

        Args:
            points: (N, D) samples in the comparison space.
            index: (N,) their global sample indices.
            images: (N, C, H, W) the samples as images, for the grid (``None``: no grid).
        """
        keep = index < (self.max_samples if self.max_samples is not None else math.inf)
        points, index = points[keep], index[keep]
        train = self.train.to(points.device)
        d1, d2, nn = nearest_training_neighbours(points, train)
        if self.num_cells > 0:
            cells = assign_cells(points, self.centroids)
            cell_dist = within_cell_distances(points, cells, train, self.train_cells)
        else:
            cells = torch.zeros_like(index)
            cell_dist = torch.zeros_like(d1)
        for name, value in (("d1", d1), ("d2", d2), ("nn_index", nn), ("cell", cells),
                            ("cell_dist", cell_dist), ("index", index.long())):
            getattr(self, name).append(value)
        ratio = copy_ratio(d1, d2)
        top = ratio.argsort()[: self.grid_pairs]
        if images is not None:
            self.cand_images.append(images[keep][top].float())
        else:
            self.cand_images.append(torch.zeros(len(top), 0, device=points.device))
        self.cand_ratio.append(ratio[top])
        self.cand_nn.append(nn[top])

    def compute(self) -> dict[str, float | Tensor]:
        """Scores, plus ``grid_samples`` / ``grid_nearest`` / ``grid_ratio``: the most copy-like
        samples, the indices of their nearest training samples and their ratios, best first."""
        d1, d2 = dim_zero_cat(self.d1), dim_zero_cat(self.d2)
        out: dict[str, float | Tensor] = {
            "nn_distance_mean": d1.mean().item() if d1.numel() else math.nan,
            "nn_distance_median": d1.median().item() if d1.numel() else math.nan,
            "copy_rate": (copy_mask(d1, d2, self.ratio_threshold).double().mean().item()
                          if d1.numel() else math.nan),
            "num_generated": int(d1.numel()),
        }
        if self.num_cells > 0:
            out["ct"] = data_copying_ct(dim_zero_cat(self.cell_dist), dim_zero_cat(self.cell),
                                        self.heldout_dist, self.heldout_cells, self.num_cells,
                                        self.min_cell_samples)
        ratio = dim_zero_cat(self.cand_ratio)
        best = ratio.argsort()[: self.grid_pairs]
        out["grid_samples"] = dim_zero_cat(self.cand_images)[best]
        out["grid_nearest"] = dim_zero_cat(self.cand_nn)[best]
        out["grid_ratio"] = ratio[best]
        return out


# --- controls ----------------------------------------------------------------------------------
CONTROL_NOISE_STD = 0.05
CONTROL_PREFIX = "control:"  # the model name a control's results carry: control:copies


def cycled(x: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """``n`` rows of ``x``: seeded permutations of all its rows one after another, so every row is
    used equally often (to within one)."""
    reps = -(-n // x.shape[0])
    order = torch.cat([torch.randperm(x.shape[0], generator=generator) for _ in range(reps)])[:n]
    return x[order]


def _copies(train: Tensor, heldout: Tensor, n: int, g: torch.Generator, noise_std: float) -> Tensor:
    return cycled(train, n, g)


def _noisy_copies(train: Tensor, heldout: Tensor, n: int, g: torch.Generator, noise_std: float) -> Tensor:
    copies = cycled(train, n, g)
    return (copies + noise_std * torch.randn(copies.shape, generator=g)).clamp(0, 1)


def _heldout(train: Tensor, heldout: Tensor, n: int, g: torch.Generator, noise_std: float) -> Tensor:
    return cycled(heldout, n, g)


#: name -> ``builder(train, heldout, n, generator, noise_std) -> (n, ...)`` samples
CONTROLS: dict[str, Callable[[Tensor, Tensor, int, torch.Generator, float], Tensor]] = {
    "copies": _copies, "noisy_copies": _noisy_copies, "heldout": _heldout}


def control_samples(name: str, train: Tensor, heldout: Tensor, n: int, seed: int,
                    noise_std: float = CONTROL_NOISE_STD) -> Tensor:
    """``n`` samples of a control "generator" of known copying.

    * ``copies``: the training images themselves, drawn in seeded permutations one after another;
    * ``noisy_copies``: those copies plus Gaussian noise of std ``noise_std`` per pixel, clipped to
      [0, 1] (near copies that no pixel-exact test calls copies);
    * ``heldout``: the held-out images drawn the same way (fresh data: a model that generalises).

    Args:
        name: One of :data:`CONTROLS`.
        train: (N, C, H, W) training images in [0, 1].
        heldout: (M, C, H, W) held-out images in [0, 1].
        n: Samples to return.
        seed: Seed of the draw (the order of the rows and the noise).
        noise_std: Pixel noise of ``noisy_copies``.

    Returns:
        (n, C, H, W) samples in [0, 1].
    """
    if name not in CONTROLS:
        raise ValueError(f"unknown control {name!r}; valid: {', '.join(CONTROLS)}")
    return CONTROLS[name](train, heldout, n, torch.Generator().manual_seed(seed), noise_std)
