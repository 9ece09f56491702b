"""FID, KID, IS and MiFID on precomputed features: torchmetrics' metrics, fed by our extractors.

torchmetrics' image metrics accept a ``feature`` module; :class:`FeatureInput` hands them the
features an extractor already computed, so one extractor pass per batch feeds every metric.
Their states stay torchmetrics' (FID: float64 sums with ``dist_reduce_fx="sum"``), with two
changes, both for the evaluation loop:

* list states (KID, IS, MiFID) reduce by concatenation, so processes that drew different numbers
  of batches still sync;
* FID and MiFID compute the Frechet distance with :func:`frechet_distance` (a Cholesky factor and
  a symmetric eigensolver), several times faster than torchmetrics' general eigensolver at 2048-d
  and as accurate (see ``benchmarks/fid_speed.py``).

The real side lives on one process only: every process feeds ``real=True`` once, process 0 with the
reference features and the others with an empty (0, d) tensor, so a sum or a concatenation over
processes counts it exactly once.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance
from torchmetrics.image.mifid import MemorizationInformedFrechetInceptionDistance
from torchmetrics.utilities.data import dim_zero_cat

from gen_bench.metrics.knn import QUERY_CHUNK


class FeatureInput(nn.Module):
    """The ``feature`` module of a torchmetrics image metric whose inputs are already features.

    Args:
        num_features: Feature dimension d; ``update`` then takes (N, d) tensors.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: Tensor) -> Tensor:
        return x


# --- features -> statistics -> distance --------------------------------------------------------
@dataclass
class FeatureStats:
    """Sufficient statistics of a feature set, in float64 as torchmetrics keeps them.

    Attributes:
        sum: (d,) sum of the features.
        cov_sum: (d, d) sum of outer products x x^T.
        n: Number of features.
    """

    sum: Tensor
    cov_sum: Tensor
    n: int

    @classmethod
    def zeros(cls, d: int) -> FeatureStats:
        return cls(torch.zeros(d, dtype=torch.float64), torch.zeros(d, d, dtype=torch.float64), 0)

    @classmethod
    def of(cls, features: Tensor) -> FeatureStats:
        f = features.to(torch.float64)
        return cls(f.sum(0), f.T @ f, f.shape[0])

    def add(self, features: Tensor) -> None:
        f = features.to(self.sum.device, torch.float64)
        self.sum += f.sum(0)
        self.cov_sum += f.T @ f
        self.n += f.shape[0]

    def mean_cov(self) -> tuple[Tensor, Tensor]:
        """Mean (d,) and unbiased covariance (d, d), as torchmetrics computes them."""
        return mean_cov(self.sum, self.cov_sum, self.n)

    def state_dict(self) -> dict[str, Tensor | int]:
        return {"sum": self.sum, "cov_sum": self.cov_sum, "n": self.n}


def mean_cov(feature_sum: Tensor, cov_sum: Tensor, n: int | Tensor) -> tuple[Tensor, Tensor]:
    """Mean and unbiased covariance from float64 sums (torchmetrics' formula)."""
    n = int(n)
    if n < 2:
        raise ValueError(f"the Frechet distance needs at least 2 samples per side, got {n}")
    mu = feature_sum / n
    cov = (cov_sum - n * torch.outer(mu, mu)) / (n - 1)
    return mu, cov


def _trace_sqrt_product(sigma1: Tensor, sigma2: Tensor) -> Tensor:
    """tr sqrt(S1 S2) for symmetric PSD S1, S2.

    The eigenvalues of S1 S2 are those of the symmetric L^T S1 L when S2 = L L^T (similar
    matrices), so a Cholesky factor and ``eigvalsh`` replace a general eigensolver or
    ``scipy.linalg.sqrtm``. When neither matrix is positive definite (fewer samples than
    dimensions), S1^(1/2) from ``eigh`` plays the part of L.
    """
    for a, b in ((sigma1, sigma2), (sigma2, sigma1)):
        chol, info = torch.linalg.cholesky_ex(b)
        if int(info) == 0:
            m = chol.T @ a @ chol
            break
    else:
        w, v = torch.linalg.eigh(sigma1)
        root = (v * w.clamp_min(0).sqrt()) @ v.T
        m = root @ sigma2 @ root
    eig = torch.linalg.eigvalsh((m + m.T) / 2)
    return eig.clamp_min(0).sqrt().sum()


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> Tensor:
    """Frechet distance between N(mu1, S1) and N(mu2, S2) (Heusel et al. 2017, eq. 6).

    ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``, computed in float64.

    Args:
        mu1, mu2: (d,) means.
        sigma1, sigma2: (d, d) symmetric positive semi-definite covariances.

    Returns:
        A float64 scalar >= 0 (up to rounding).
    """
    mu1, mu2, sigma1, sigma2 = (t.to(torch.float64) for t in (mu1, mu2, sigma1, sigma2))
    diff = (mu1 - mu2).square().sum()
    return diff + sigma1.trace() + sigma2.trace() - 2 * _trace_sqrt_product(sigma1, sigma2)


def fid_replicates(fake: Tensor, mu_real: Tensor, cov_real: Tensor, weights: Tensor) -> Tensor:
    """FID of reweighted generated features against fixed real statistics (bootstrap replicates).

    Args:
        fake: (n, d) generated features.
        mu_real, cov_real: The real side's mean (d,) and covariance (d, d).
        weights: (n, B) row counts, one column per replicate (:func:`~gen_bench.metrics.bootstrap.
            resample_weights`); a column of ones gives the FID of ``fake``.

    Returns:
        (B,) float64 FIDs: each from the weighted mean and unbiased covariance of its column.
    """
    f = fake.to(torch.float64)
    out = []
    for w in weights.to(f.device, torch.float64).T:
        mu, cov = mean_cov(w @ f, (f * w[:, None]).T @ f, int(w.sum().round()))
        out.append(frechet_distance(mu_real, cov_real, mu, cov))
    return torch.stack(out)


def fid_infinity(fake: Tensor, mu_real: Tensor, cov_real: Tensor, counts: list[int],
                 seed: int = 0) -> dict[str, Any]:
    """FID_inf (Chong and Forsyth 2020): FID of a random subset of each size in ``counts``, a
    least-squares line ``FID = a + b / N`` through them, and its intercept ``a``, the FID of
    infinitely many samples (FID's bias is linear in 1/N to first order).

    Args:
        fake: (n, d) generated features; every count is at most n.
        mu_real, cov_real: The real side's statistics (fixed).
        counts: Subset sizes.
        seed: Seed of the subsets (each drawn without replacement by a ``torch.Generator``).

    Returns:
        ``{"fid_inf": a, "slope": b, "intercept_stderr", "counts", "fid"}`` (``fid``: one per count).
    """
    from scipy.stats import linregress

    g = torch.Generator().manual_seed(seed)
    fids = []
    for c in counts:
        rows = torch.randperm(fake.shape[0], generator=g)[:c].to(fake.device)
        stats = FeatureStats.of(fake[rows])
        fids.append(float(frechet_distance(mu_real, cov_real, *stats.mean_cov())))
    fit = linregress([1 / c for c in counts], fids)
    return {"fid_inf": float(fit.intercept), "slope": float(fit.slope),
            "intercept_stderr": float(fit.intercept_stderr), "counts": list(counts), "fid": fids}


def kid_replicates(real: Tensor, fake: Tensor, weights: Tensor, degree: int = 3,
                   chunk: int = QUERY_CHUNK) -> Tensor:
    """Unbiased MMD^2 of KID's polynomial kernel between reweighted generated features and the real
    ones, less the real-real term (a constant that cancels in a bootstrap interval).

    ``k(x, y) = (x.y / d + 1)^degree``. Pairs of copies of one generated row are left out of the
    generated-generated mean (``sum_{i != j} w_i w_j k_ij / sum_{i != j} w_i w_j``): a copy is not
    an independent sample, and ``k(x, x)`` would bias a resample upwards. The kernel matrices are
    never stored: one pass over row chunks serves every replicate.

    Args:
        real: (R, d) real features.
        fake: (n, d) generated features.
        weights: (n, B) row counts, one column per replicate.
        degree: The kernel's degree.

    Returns:
        (B,) float64: ``mean_ff - 2 mean_fr`` of each replicate.
    """
    d = fake.shape[1]
    f = fake.to(torch.float64)
    r = real.to(f.device, torch.float64)
    w = weights.to(f.device, torch.float64)
    ff = torch.zeros(w.shape[1], dtype=torch.float64, device=f.device)
    fr = torch.zeros_like(ff)
    for s in range(0, f.shape[0], chunk):
        block, wb = f[s : s + chunk], w[s : s + chunk]
        k_ff = (block @ f.T / d + 1) ** degree  # (c, n)
        ff += ((k_ff @ w) * wb).sum(0)
        ff -= (wb.square() * ((block.square().sum(1) / d + 1) ** degree)[:, None]).sum(0)
        k_fr_rows = ((block @ r.T / d + 1) ** degree).sum(1)  # (c,)
        fr += (k_fr_rows[:, None] * wb).sum(0)
    n = w.sum(0)
    return ff / (n.square() - w.square().sum(0)) - 2 * fr / (n * r.shape[0])


def cosine_memorization_distance(fake: Tensor, real: Tensor, chunk: int = QUERY_CHUNK) -> Tensor:
    """MiFID's memorization distance (Bai et al. 2021): the mean over generated samples of
    ``min_j (1 - |cos(fake_i, real_j)|)``, in chunks (torchmetrics builds the whole matrix).

    Rows summing to 0 are left out, as torchmetrics does.
    """
    fake = fake[fake.sum(1) != 0].to(torch.float64)
    real = real[real.sum(1) != 0].to(torch.float64)
    fake = fake / fake.norm(dim=1, keepdim=True)
    real = real / real.norm(dim=1, keepdim=True)
    mins = [1 - (fake[s : s + chunk] @ real.T).abs().max(1).values for s in range(0, fake.shape[0], chunk)]
    return torch.cat(mins).mean()


def mifid_from(fid_value: Tensor, memorization_distance: Tensor, eps: float) -> Tensor:
    """FID / d, where d is the memorization distance if it is below ``eps``, else 1."""
    d = memorization_distance if memorization_distance < eps else torch.ones_like(memorization_distance)
    if fid_value <= 1e-8:  # as torchmetrics: no blow-up at FID ~ 0
        return torch.zeros_like(fid_value)
    return fid_value / (d + 1e-14)


# --- torchmetrics metrics on features -----------------------------------------------------------
@contextmanager
def _quiet() -> Iterator[None]:
    """Silence torchmetrics' "will save all extracted features" warning: we know, and cap the counts."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        yield


def _concatenate_list_states(metric, *names: str) -> None:
    """Re-register list states to sync by concatenation (torchmetrics leaves them unreduced, which
    needs the same number of updates on every process)."""
    for name in names:
        metric.add_state(name, [], dist_reduce_fx="cat")


class FID(FrechetInceptionDistance):
    """torchmetrics' FID on (N, d) features, with the real statistics loaded once and kept.

    Args:
        num_features: d.
        reference: Statistics of the real features (``None`` on processes other than 0).
    """

    def __init__(self, num_features: int, reference: FeatureStats | None = None) -> None:
        super().__init__(feature=FeatureInput(num_features), reset_real_features=False)
        if reference is not None:
            self.set_reference(reference)

    def set_reference(self, stats: FeatureStats) -> None:
        """Load the real side from cached statistics (no pass over the reference features)."""
        self.real_features_sum = stats.sum.to(self.real_features_sum)
        self.real_features_cov_sum = stats.cov_sum.to(self.real_features_cov_sum)
        self.real_features_num_samples = torch.tensor(stats.n, device=self.real_features_sum.device)

    def compute(self) -> Tensor:
        mu_r, cov_r = mean_cov(self.real_features_sum, self.real_features_cov_sum,
                               self.real_features_num_samples)
        mu_f, cov_f = mean_cov(self.fake_features_sum, self.fake_features_cov_sum,
                               self.fake_features_num_samples)
        return frechet_distance(mu_r, cov_r, mu_f, cov_f)


class KID(KernelInceptionDistance):
    """torchmetrics' KID (polynomial-kernel MMD^2 over random subsets) on features.

    ``subset_size`` shrinks to the smaller set when either has fewer samples; the size used is
    :attr:`used_subset_size` after ``compute``. Subsets are drawn from the global torch RNG, so call
    ``compute`` under a seeded ``torch.random.fork_rng`` (the evaluator does).
    """

    def __init__(self, num_features: int, subsets: int = 100, subset_size: int = 1000,
                 degree: int = 3) -> None:
        with _quiet():
            super().__init__(feature=FeatureInput(num_features), subsets=subsets, subset_size=subset_size,
                             degree=degree, reset_real_features=False)
        _concatenate_list_states(self, "real_features", "fake_features")
        self.requested_subset_size = subset_size
        self.used_subset_size: int | None = None
        self.synced: tuple[Tensor, Tensor] | None = None  # (real, fake) features of the last compute

    def compute(self) -> tuple[Tensor, Tensor]:
        # states are synced across processes here: keep them for a bootstrap after compute
        self.synced = (dim_zero_cat(self.real_features), dim_zero_cat(self.fake_features))
        n_real, n_fake = self.synced[0].shape[0], self.synced[1].shape[0]
        self.subset_size = self.used_subset_size = min(self.requested_subset_size, n_real, n_fake)
        return super().compute()


class FeatureBank(Metric):
    """Generated features in draw order, concatenated across processes: kept beside a metric whose
    own state is summary statistics (FID's sums) when a bootstrap or FID_inf needs the rows."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("features", [], dist_reduce_fx="cat")
        self.add_state("index", [], dist_reduce_fx="cat")

    def update(self, features: Tensor, index: Tensor) -> None:
        """Add (N, d) features with their (N,) global sample indices."""
        self.features.append(features.float())
        self.index.append(index.long())

    def compute(self) -> Tensor:
        """(n, d) features of every process, ordered by sample index."""
        return dim_zero_cat(self.features)[dim_zero_cat(self.index).argsort()]


class IS(InceptionScore):
    """torchmetrics' Inception Score on (N, k) logits of any classifier.

    Splits are drawn from the global torch RNG (see :class:`KID`).
    """

    def __init__(self, num_logits: int, splits: int = 10) -> None:
        with _quiet():
            super().__init__(feature=FeatureInput(num_logits), splits=splits)
        _concatenate_list_states(self, "features")


class MiFID(MemorizationInformedFrechetInceptionDistance):
    """torchmetrics' MiFID state on features; FID over the memorization distance.

    The memorization distance follows Bai et al. 2021 (for each generated sample, the cosine
    distance to its nearest real one), computed in chunks; the Frechet part uses
    :func:`frechet_distance`.
    """

    def __init__(self, num_features: int, cosine_distance_eps: float = 0.1) -> None:
        super().__init__(feature=FeatureInput(num_features), reset_real_features=False,
                         cosine_distance_eps=float(cosine_distance_eps))
        _concatenate_list_states(self, "real_features", "fake_features")

    def compute(self) -> Tensor:
        real = dim_zero_cat(self.real_features).to(torch.float64)
        fake = dim_zero_cat(self.fake_features).to(torch.float64)
        stats_r, stats_f = FeatureStats.of(real), FeatureStats.of(fake)
        fid = frechet_distance(*stats_r.mean_cov(), *stats_f.mean_cov())
        return mifid_from(fid, cosine_memorization_distance(fake, real), self.cosine_distance_eps)
