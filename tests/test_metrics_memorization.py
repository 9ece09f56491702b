"""Memorization: copies of training images are flagged, fresh images are not; C_T (Meehan et al.
2020) is strongly negative for copies and near 0 for fresh data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from gen_bench.data.digits import load_sklearn_digits
from gen_bench.metrics.memorization import (
    Memorization,
    assign_cells,
    copy_mask,
    data_copying_ct,
    fit_cells,
    nearest_training_neighbours,
    z_u,
)


@pytest.fixture(scope="module")
def digits_split():
    """8x8 digits as 64-d pixel vectors: 1000 training, 300 held-out, 497 fresh."""
    x, _ = load_sklearn_digits(8)
    x = x.float().div(255).flatten(1)
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
    return x[perm[:1000]], x[perm[1000:1300]], x[perm[1300:]]


def score(train, heldout, samples, **kwargs) -> dict:
    metric = Memorization(train, heldout, num_cells=kwargs.pop("num_cells", 3), min_cell_samples=20, **kwargs)
    for chunk in torch.arange(samples.shape[0]).split(128):
        metric.update(samples[chunk], chunk)
    return metric.compute()


def test_copies_of_training_images_are_flagged(digits_split):
    train, heldout, fresh = digits_split
    copies = train[:400] + 0.01 * torch.randn(400, 64, generator=torch.Generator().manual_seed(1))
    got = score(train, heldout, copies)
    assert got["copy_rate"] > 0.95
    assert got["ct"] < -8  # strongly negative: samples sit much closer to the training set than fresh data
    assert got["nn_distance_mean"] < 0.15 < score(train, heldout, fresh)["nn_distance_mean"]


def test_fresh_images_are_not(digits_split):
    train, heldout, fresh = digits_split
    got = score(train, heldout, fresh)
    assert got["copy_rate"] < 0.02
    assert abs(got["ct"]) < 2  # like held-out data
    half = score(train, heldout, torch.cat([train[:200] + 0.01, fresh[:200]]))
    assert half["copy_rate"] == pytest.approx(0.5, abs=0.03)
    assert half["ct"] < -3


def test_nearest_neighbours_and_copy_rule_match_brute_force(digits_split):
    train, _, fresh = digits_split
    d1, d2, idx = nearest_training_neighbours(fresh[:50], train)
    full = np.linalg.norm(fresh[:50, None, :].double().numpy() - train[None].double().numpy(), axis=-1)
    order = np.sort(full, axis=1)
    assert np.allclose(d1.numpy(), order[:, 0], atol=1e-9) and np.allclose(d2.numpy(), order[:, 1], atol=1e-9)
    assert np.array_equal(idx.numpy(), full.argmin(1))
    flags = copy_mask(torch.tensor([0.0, 1.0, 1.0]), torch.tensor([0.0, 3.0, 2.9]), 1 / 3)
    assert flags.tolist() == [True, True, False]


def test_z_u_is_the_standardised_mann_whitney_statistic():
    rng = np.random.default_rng(0)
    gen, test = rng.normal(0, 1, 40), rng.normal(0.3, 1, 55)
    u = sum((g > t) + 0.5 * (g == t) for g in gen for t in test)  # pairs where the sample is farther
    m, n = len(gen), len(test)
    expected = (u - (m * n / 2 - 0.5)) / math.sqrt(m * n * (m + n + 1) / 12)
    assert z_u(gen, test) == pytest.approx(expected, rel=1e-12)
    assert norm.cdf(z_u(gen, test)) < 0.5  # generated distances smaller: negative Z


def test_ct_weights_cells_by_held_out_share_and_skips_sparse_cells():
    rng = np.random.default_rng(1)
    gen = torch.tensor(rng.normal(0, 1, 90))
    test = torch.tensor(rng.normal(0, 1, 60))
    gen_cells = torch.tensor([0] * 50 + [1] * 30 + [2] * 10)
    test_cells = torch.tensor([0] * 20 + [1] * 40)
    got = data_copying_ct(gen, gen_cells, test, test_cells, num_cells=3, min_samples=20)
    z0 = z_u(gen[:50].numpy(), test[:20].numpy())
    z1 = z_u(gen[50:80].numpy(), test[20:].numpy())
    # cell 2 has too few generated samples; weights: the held-out shares of cells 0 and 1
    assert got == pytest.approx((20 / 60 * z0 + 40 / 60 * z1) / (60 / 60), rel=1e-12)
    assert math.isnan(data_copying_ct(gen, gen_cells, test, test_cells, num_cells=3, min_samples=100))


def test_kmeans_cells_separate_clusters_and_are_seeded():
    g = torch.Generator().manual_seed(2)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.1 * torch.randn(100, 2, generator=g) for c in centers])
    cells = assign_cells(x, fit_cells(x, 3, seed=0))
    assert all(len(cells[i * 100 : (i + 1) * 100].unique()) == 1 for i in range(3))
    assert len(cells.unique()) == 3
    assert torch.equal(fit_cells(x, 3, seed=5), fit_cells(x, 3, seed=5))


def test_grid_candidates_are_the_most_copied_samples(digits_split):
    train, heldout, fresh = digits_split
    samples = torch.cat([fresh[:100], train[:5] + 0.001])  # five near-exact copies at the end
    images = samples.reshape(-1, 1, 8, 8)
    metric = Memorization(train, heldout, num_cells=0, grid_pairs=5)
    for chunk in torch.arange(105).split(50):
        metric.update(samples[chunk], chunk, images[chunk])
    out = metric.compute()
    assert sorted(out["grid_nearest"].tolist()) == [0, 1, 2, 3, 4]
    assert out["grid_samples"].shape == (5, 1, 8, 8) and "ct" not in out
