"""Precision / recall / density / coverage on point sets with known answers, and against a brute-force
numpy implementation of Naeem et al.'s definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gen_bench.metrics.knn import knn, kth_neighbour_radii
from gen_bench.metrics.prdc import PRDC, prdc


def brute_force_prdc(real: np.ndarray, fake: np.ndarray, k_pr: int, k_dc: int) -> dict[str, float]:
    """Naeem et al.'s reference code, written out with full distance matrices."""

    def dist(a, b):
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    def radii(x, k):
        return np.sort(dist(x, x), axis=1)[:, k]  # column 0: the point itself

    d = dist(real, fake)  # (R, F)
    r_pr, f_pr, r_dc = radii(real, k_pr), radii(fake, k_pr), radii(real, k_dc)
    return {
        "precision": (d < r_pr[:, None]).any(0).mean(),
        "recall": (d < f_pr[None, :]).any(1).mean(),
        "density": (d < r_dc[:, None]).sum(0).mean() / k_dc,
        "coverage": (d.min(1) < r_dc).mean(),
    }


def test_identical_sets_score_one_everywhere():
    real = torch.randn(200, 8, generator=torch.Generator().manual_seed(0))
    assert prdc(real, real.clone()) == {"precision": 1.0, "recall": 1.0, "density": 1.0, "coverage": 1.0}


def test_disjoint_sets_score_zero_everywhere():
    g = torch.Generator().manual_seed(1)
    real = torch.randn(150, 4, generator=g)
    fake = torch.randn(120, 4, generator=g) + 100
    assert prdc(real, fake) == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_a_subset_is_precise_but_covers_only_its_part():
    g = torch.Generator().manual_seed(2)
    a = torch.randn(100, 3, generator=g)
    b = torch.randn(100, 3, generator=g) + 50
    got = prdc(torch.cat([a, b]), a.clone())  # the generator reproduces cluster A only
    assert got == {"precision": 1.0, "recall": 0.5, "density": 1.0, "coverage": 0.5}


@pytest.mark.parametrize("k_pr,k_dc", [(3, 5), (1, 2)])
def test_prdc_matches_brute_force(k_pr, k_dc):
    g = torch.Generator().manual_seed(3)
    real = torch.randn(150, 5, generator=g, dtype=torch.float64)
    fake = torch.randn(110, 5, generator=g, dtype=torch.float64) * 1.3 + 0.4
    got = prdc(real, fake, k_pr, k_dc)
    expected = brute_force_prdc(real.numpy(), fake.numpy(), k_pr, k_dc)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name


def test_knn_matches_brute_force_across_reference_chunks():
    g = torch.Generator().manual_seed(4)
    query, ref = torch.randn(37, 6, generator=g), torch.randn(53, 6, generator=g)
    d, i = knn(query, ref, 4, chunk=8, ref_chunk=10)
    full = torch.cdist(query.double(), ref.double())
    ed, ei = full.topk(4, dim=1, largest=False)
    assert torch.allclose(d, ed, atol=1e-9) and torch.equal(i, ei)
    brute = torch.cdist(ref.double(), ref.double()).sort(1).values[:, 2]
    assert torch.allclose(kth_neighbour_radii(ref, 2), brute, atol=1e-9)


def test_metric_state_keeps_the_first_samples_in_draw_order():
    g = torch.Generator().manual_seed(5)
    real = torch.randn(120, 4, generator=g)
    fake = torch.randn(100, 4, generator=g) + 0.2
    metric = PRDC(real, max_samples=60)
    order = torch.randperm(100, generator=g)
    for chunk in order.split(23):  # batches arrive in any order; the first 60 of the draw count
        metric.update(fake[chunk], chunk)
    got = metric.compute()
    assert got.pop("num_generated") == 60
    assert got == prdc(real, fake[:60])
