"""FID, KID, IS and MiFID against closed forms and independent (numpy / scipy) implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from torchmetrics.image.fid import _compute_fid

from gen_bench.data.digits import load_sklearn_digits
from gen_bench.metrics.extractors import RandomConvNet
from gen_bench.metrics.fid import FID, IS, KID, FeatureStats, MiFID, frechet_distance


def scipy_fid(mu1, s1, mu2, s2) -> float:
    """pytorch-fid's reference computation, in numpy / scipy."""
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def random_spd(d: int, g: torch.Generator) -> torch.Tensor:
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def test_frechet_distance_equals_closed_forms():
    g = torch.Generator().manual_seed(0)
    f64 = {"generator": g, "dtype": torch.float64}
    mu1, mu2 = torch.randn(6, **f64), torch.randn(6, **f64)
    # commuting (diagonal) covariances: |dmu|^2 + sum (sqrt a - sqrt b)^2
    a, b = torch.rand(6, **f64) + 0.1, torch.rand(6, **f64)
    expected = (mu1 - mu2).square().sum() + (a.sqrt() - b.sqrt()).square().sum()
    assert torch.allclose(frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)), expected, rtol=1e-10)
    # S1 = c I: tr sqrt(S1 S2) = sqrt(c) tr sqrt(S2)
    s2 = random_spd(6, g)
    c = 2.5
    expected = ((mu1 - mu2).square().sum() + 6 * c + s2.trace()
                - 2 * math.sqrt(c) * torch.linalg.eigvalsh(s2).sqrt().sum())
    s1 = c * torch.eye(6, dtype=torch.float64)
    assert torch.allclose(frechet_distance(mu1, s1, mu2, s2), expected, rtol=1e-10)
    # 2-D, non-commuting: tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)) for M = S1 S2 with positive eigenvalues
    s1, s2 = random_spd(2, g), random_spd(2, g)
    m = s1 @ s2
    tr_sqrt = torch.sqrt(m.trace() + 2 * torch.sqrt(torch.linalg.det(m)))
    expected = (mu1[:2] - mu2[:2]).square().sum() + s1.trace() + s2.trace() - 2 * tr_sqrt
    assert torch.allclose(frechet_distance(mu1[:2], s1, mu2[:2], s2), expected, rtol=1e-10)


def test_fid_from_samples_approaches_the_gaussians_closed_form():
    g = torch.Generator().manual_seed(1)
    d, n = 3, 40_000
    s1, s2 = random_spd(d, g), random_spd(d, g)
    mu1, mu2 = torch.zeros(d, dtype=torch.float64), torch.full((d,), 0.5, dtype=torch.float64)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(s1).T + mu1
    y = torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(s2).T + mu2
    metric = FID(d)
    metric.update(x, real=True)
    for chunk in y.split(7000):
        metric.update(chunk, real=False)
    assert float(metric.compute()) == pytest.approx(float(frechet_distance(mu1, s1, mu2, s2)), rel=0.03)


def test_fid_of_a_set_with_itself_is_zero():
    x = torch.randn(500, 32, generator=torch.Generator().manual_seed(2))
    metric = FID(32, FeatureStats.of(x))
    metric.update(x, real=False)
    assert abs(float(metric.compute())) < 1e-8 * float(torch.cov(x.T.double()).trace())


@pytest.mark.parametrize("n,d", [(400, 64), (40, 64)])  # full-rank, and rank-deficient covariances
def test_fid_agrees_with_scipy_on_random_features(n, d):
    g = torch.Generator().manual_seed(3)
    mix = torch.randn(d, d, generator=g) / d**0.5
    real = torch.randn(n, d, generator=g) @ mix
    fake = torch.randn(n, d, generator=g) @ mix * 1.1 + 0.2
    metric = FID(d, FeatureStats.of(real))
    metric.update(fake, real=False)
    ours = float(metric.compute())
    ref = scipy_fid(real.double().mean(0).numpy(), np.cov(real.double().numpy().T),
                    fake.double().mean(0).numpy(), np.cov(fake.double().numpy().T))
    assert ours == pytest.approx(ref, rel=1e-4)
    mu_r, cov_r = FeatureStats.of(real).mean_cov()
    mu_f, cov_f = FeatureStats.of(fake).mean_cov()
    assert float(_compute_fid(mu_r, cov_r, mu_f, cov_f)) == pytest.approx(ours, rel=1e-4)  # torchmetrics' own


def test_fid_does_not_depend_on_the_extraction_batch_size():
    x, _ = load_sklearn_digits(16)
    images = x.float() / 255
    real, fake = images[:300], images[300:600].flip(-1)
    values = []
    for max_batch in (7, 300):
        net = RandomConvNet(1, width=8, seed=0)
        net.max_batch = max_batch
        metric = FID(net.feature_dim, FeatureStats.of(net(real)["pool"]))
        for chunk in fake.split(max_batch):  # the metric's updates follow the batches too
            metric.update(net(chunk)["pool"], real=False)
        values.append(float(metric.compute()))
    assert values[0] == pytest.approx(values[1], rel=1e-4)


def poly_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a @ b.T / a.shape[1] + 1) ** 3


def test_kid_is_the_unbiased_polynomial_mmd():
    g = torch.Generator().manual_seed(4)
    real, fake = torch.randn(80, 6, generator=g, dtype=torch.float64), torch.randn(80, 6, generator=g) + 0.3
    metric = KID(6, subsets=3, subset_size=80)  # subsets of the whole sets: every subset is the same
    metric.update(real, real=True)
    metric.update(fake.double(), real=False)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        kid, std = metric.compute()
    x, y = real.numpy(), fake.double().numpy()
    m = len(x)
    kxx, kyy, kxy = poly_kernel(x, x), poly_kernel(y, y), poly_kernel(x, y)
    within = (kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))
    expected = within / (m * (m - 1)) - 2 * kxy.sum() / m**2
    assert float(kid) == pytest.approx(expected, rel=1e-6)
    assert float(std) == pytest.approx(0, abs=1e-9)
    small = KID(6, subset_size=1000)  # more than there are: shrinks to the smaller set
    small.update(real, real=True)
    small.update(fake[:50].double(), real=False)
    small.compute()
    assert small.used_subset_size == 50


@pytest.mark.filterwarnings(r"ignore:std\(\)")  # one split has no spread
def test_inception_score_matches_its_formula():
    logits = torch.randn(300, 7, generator=torch.Generator().manual_seed(5)) * 2
    metric = IS(7, splits=1)
    metric.update(logits)
    score, _ = metric.compute()
    p = torch.softmax(logits.double(), 1).numpy()
    marginal = p.mean(0)
    expected = math.exp(float((p * (np.log(p) - np.log(marginal))).sum(1).mean()))
    assert float(score) == pytest.approx(expected, rel=1e-5)


def test_mifid_divides_fid_by_the_memorization_distance_when_it_is_small():
    g = torch.Generator().manual_seed(6)
    real = torch.rand(200, 16, generator=g, dtype=torch.float64) + 0.5
    copies = real[:150] + 0.02 * torch.randn(150, 16, generator=g, dtype=torch.float64)
    metric = MiFID(16, cosine_distance_eps=0.1)
    metric.update(real, real=True)
    metric.update(copies, real=False)
    fid = float(frechet_distance(*FeatureStats.of(real).mean_cov(), *FeatureStats.of(copies).mean_cov()))
    nr = (real / real.norm(dim=1, keepdim=True)).numpy()
    nc = (copies / copies.norm(dim=1, keepdim=True)).numpy()
    distance = float((1 - np.abs(nc @ nr.T)).min(1).mean())  # per generated sample, to its nearest real
    assert 0 < distance < 0.1
    assert float(metric.compute()) == pytest.approx(fid / distance, rel=1e-6)

    far = torch.randn(200, 16, generator=g, dtype=torch.float64)  # nearest cosine distance > eps
    metric = MiFID(16, cosine_distance_eps=0.1)
    metric.update(real - 1, real=True)
    metric.update(far, real=False)
    fid = float(frechet_distance(*FeatureStats.of(real - 1).mean_cov(), *FeatureStats.of(far).mean_cov()))
    assert float(metric.compute()) == pytest.approx(fid, rel=1e-9)


def test_fid_inf_recovers_the_closed_form_distance_better_than_finite_n_fid():
    """Two Gaussians with a known Frechet distance: FID of N samples is biased upwards by about
    c / N; FID_inf's intercept at 1/N = 0 removes that bias (Chong and Forsyth 2020)."""
    from scipy import linalg

    from gen_bench.metrics.fid import fid_infinity
    from gen_bench.metrics.settings import FIDInfSettings

    d, n = 64, 1000
    g = torch.Generator().manual_seed(0)
    a = torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5
    mu_r, cov_r = torch.zeros(d, dtype=torch.float64), torch.eye(d, dtype=torch.float64)
    mu_f = torch.full((d,), 0.1, dtype=torch.float64)
    cov_f = a @ a.T + 0.5 * torch.eye(d, dtype=torch.float64)
    s1, s2 = cov_r.numpy(), cov_f.numpy()
    exact = float(((mu_f - mu_r) ** 2).sum()) + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    counts = FIDInfSettings(points=5).sizes(n)
    assert counts == [200, 400, 600, 800, 1000]
    errors_n, errors_inf = [], []
    for seed in range(3):
        fake = torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov_f).T + mu_f
        fit = fid_infinity(fake, mu_r, cov_r, counts, seed=seed)
        assert fit["fid"][-1] == pytest.approx(float(frechet_distance(mu_r, cov_r, *FeatureStats.of(fake)
                                                                      .mean_cov())), rel=1e-9)  # N: all rows
        assert fit["fid"][0] > fit["fid"][-1] and fit["slope"] > 0  # fewer samples, higher FID
        errors_n.append(abs(fit["fid"][-1] - exact))
        errors_inf.append(abs(fit["fid_inf"] - exact))
    assert np.mean(errors_inf) < np.mean(errors_n) / 3, (errors_inf, errors_n)
