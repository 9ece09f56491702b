"""Bootstrap intervals on synthetic Gaussians: replicates reproduce each score with unit weights
(checked against independent implementations), intervals hold the estimate, shrink as the sample
count grows, and their width matches the spread of the score over independent draws."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import linalg

from gen_bench.metrics.bootstrap import interval, resample_weights
from gen_bench.metrics.fid import FeatureStats, fid_replicates, kid_replicates
from gen_bench.metrics.prdc import PRDCReplicates, prdc, real_knn_radii

D = 8
NAMES = ("fid", "kid", "precision", "recall", "density", "coverage")


def gaussians(n_real: int, n_fake: int, seed: int = 0, d: int = D) -> tuple[torch.Tensor, torch.Tensor]:
    """Real N(0, I), generated N(0.3, 1.2^2 I): a model that is close but clearly off."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_real, d, generator=g), torch.randn(n_fake, d, generator=g) * 1.2 + 0.3


def kid_terms(real: torch.Tensor, fake: torch.Tensor, degree: int = 3) -> tuple[float, float, float]:
    """The three means of the unbiased MMD^2 of KID's polynomial kernel, written out with numpy:
    generated pairs, real pairs (both off the diagonal), generated x real."""
    a, b = fake.double().numpy(), real.double().numpy()
    k = lambda x, y: (x @ y.T / x.shape[1] + 1) ** degree

    def mean_off_diagonal(m: np.ndarray) -> float:
        return (m.sum() - np.trace(m)) / (m.shape[0] * (m.shape[0] - 1))

    return mean_off_diagonal(k(a, a)), mean_off_diagonal(k(b, b)), k(a, b).mean()


class Scores:
    """Every bootstrapped score of one generated set: estimates and replicates."""

    def __init__(self, real: torch.Tensor, fake: torch.Tensor) -> None:
        self.real, self.fake = real, fake
        self.mu, self.cov = FeatureStats.of(real).mean_cov()
        self.radii = real_knn_radii(real)

    def replicates(self, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"fid": fid_replicates(self.fake, self.mu, self.cov, weights),
                "kid": kid_replicates(self.real, self.fake, weights),
                **PRDCReplicates(self.real, self.fake, real_radii=self.radii)(weights)}

    def estimates(self) -> dict[str, float]:
        ones = torch.ones(self.fake.shape[0], 1, dtype=torch.float64)
        return {k: float(v[0]) for k, v in self.replicates(ones).items()}

    def intervals(self, num: int, seed: int = 0) -> dict[str, tuple[float, float]]:
        est = self.estimates()
        reps = self.replicates(resample_weights(self.fake.shape[0], num, seed))
        return {k: interval(reps[k], est[k]) for k in NAMES}


def test_resamples_are_seeded_counts_of_draws_with_replacement():
    w = resample_weights(1000, 50, seed=3)
    assert w.shape == (1000, 50) and w.dtype == torch.float64
    assert torch.equal(w.sum(0), torch.full((50,), 1000.0))
    assert torch.equal(w, resample_weights(1000, 50, seed=3))
    assert not torch.equal(w, resample_weights(1000, 50, seed=4))
    distinct = (w > 0).double().mean(0)  # 1 - (1 - 1/n)^n of the rows appear in a resample
    assert distinct.mean().item() == pytest.approx(1 - (1 - 1 / 1000) ** 1000, abs=0.01)


def test_unit_weights_reproduce_every_score_and_copies_are_handled():
    real, fake = gaussians(300, 200)
    s = Scores(real, fake)
    est = s.estimates()
    mu_f, cov_f = fake.double().mean(0).numpy(), np.cov(fake.double().numpy(), rowvar=False)
    mu_r, cov_r = s.mu.numpy(), s.cov.numpy()
    fid = ((mu_f - mu_r) ** 2).sum() + np.trace(cov_f + cov_r - 2 * linalg.sqrtm(cov_f @ cov_r).real)
    assert est["fid"] == pytest.approx(fid, rel=1e-9)
    ff, _, fr = kid_terms(real, fake)  # the real-real term is left out of the replicates
    assert est["kid"] == pytest.approx(ff - 2 * fr, rel=1e-9)
    ref = prdc(real, fake, real_radii=s.radii)
    for k in ("precision", "recall", "density", "coverage"):
        assert est[k] == pytest.approx(ref[k], abs=1e-12), k
    # a resample that draws rows 0..99 twice each is the set of those rows for every score but density
    # and precision (weighted means: the same too) and FID (weighted covariance, n counted twice)
    w = torch.zeros(200, 1, dtype=torch.float64)
    w[:100] = 2
    sub = Scores(real, fake[:100]).estimates()
    twice = s.replicates(w)
    for k in ("precision", "recall", "density", "coverage"):
        assert twice[k].item() == pytest.approx(sub[k], abs=1e-12), k
    ff, _, fr = kid_terms(real, fake[:100])
    assert twice["kid"].item() == pytest.approx(ff - 2 * fr, rel=1e-9)  # copies are not pairs of samples


def test_intervals_contain_the_estimate_and_shrink_as_samples_grow():
    widths = {}
    for n in (200, 1600):  # as many real samples as generated ones (PRDC's protocol, Naeem et al.)
        real, fake = gaussians(n, n, seed=n)
        s = Scores(real, fake)
        est, ci = s.estimates(), s.intervals(100)
        for k in NAMES:
            lo, hi = ci[k]
            assert lo <= est[k] <= hi, (k, n, lo, est[k], hi)
        widths[n] = {k: ci[k][1] - ci[k][0] for k in NAMES}
    for k in NAMES:  # 8x the samples: about a third of the width (a 1/sqrt(n) spread)
        assert widths[1600][k] < 0.6 * widths[200][k], (k, widths[200][k], widths[1600][k])


def test_interval_width_matches_the_spread_over_independent_draws():
    """The 95% interval of one draw is about 2 x 1.96 x the score's standard deviation over fresh
    draws of the same size: what it claims to measure."""
    n, draws = 400, 60
    real = gaussians(600, 0, seed=1, d=16)[0]
    g = torch.Generator().manual_seed(7)
    values = {k: [] for k in NAMES}
    for _ in range(draws):
        fake = torch.randn(n, 16, generator=g) * 1.15 + 0.15
        for k, v in Scores(real, fake).estimates().items():
            values[k].append(v)
    fake = torch.randn(n, 16, generator=torch.Generator().manual_seed(99)) * 1.15 + 0.15
    ci = Scores(real, fake).intervals(150)
    for k in NAMES:
        expected = 2 * 1.96 * float(np.std(values[k], ddof=1))
        ratio = (ci[k][1] - ci[k][0]) / expected
        assert 0.6 < ratio < 1.7, (k, ratio)


def test_interval_is_the_estimate_plus_the_spread_around_the_replicates_mean():
    reps = torch.arange(1.0, 101.0, dtype=torch.float64)  # mean 50.5
    q = torch.quantile(reps, torch.tensor([0.025, 0.975], dtype=torch.float64))
    lo, hi = interval(reps, 10.0)
    assert (lo, hi) == pytest.approx((10 + q[0].item() - 50.5, 10 + q[1].item() - 50.5))
    assert interval(reps, 10.0, lower=0.0)[0] == 0.0 and interval(reps, 0.5, upper=1.0)[1] == 1.0
    assert math.isclose(interval(reps + 7, 10.0)[0], lo)  # a constant offset of the replicates cancels
