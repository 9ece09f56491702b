"""Mode coverage counts exactly the modes present in constructed samples."""

from __future__ import annotations

import math

import pytest
import torch

from gen_bench.data.spec import DataSpec
from gen_bench.data.toy import grid_centers, ring_centers
from gen_bench.metrics.classifier import ClassifierExtractor, SmallCNN
from gen_bench.metrics.modes import ModeCoverage, kl_to_uniform, mode_coverage, nearest_modes


def around(centers: torch.Tensor, modes: list[int], per_mode: int, std: float,
           g: torch.Generator) -> torch.Tensor:
    """``per_mode`` points within 1 std (per axis) of each listed centre."""
    pts = [centers[m] + std * (torch.rand(per_mode, 2, generator=g) * 2 - 1) * 0.7 for m in modes]
    return torch.cat(pts)


def test_ring8_modes_hit_high_quality_share_and_kl():
    g = torch.Generator().manual_seed(0)
    centers, std = ring_centers(8, 1.0), 0.01
    present = [0, 2, 3, 5, 7]
    good = around(centers, present, 100, std, g)
    junk = 0.5 * ring_centers(50, 1.0)  # radius 0.5: ~50 std from every mode
    samples = torch.cat([good, junk])
    metric = ModeCoverage(8, centers, std)
    for chunk in torch.arange(samples.shape[0]).split(64):
        metric.update(samples[chunk], chunk)
    got = metric.compute()
    assert got["modes"] == 5
    assert got["hq_fraction"] == pytest.approx(500 / 550)
    assert got["mode_kl"] == pytest.approx(math.log(8) - math.log(5))  # uniform over 5 of 8 modes
    assert got["num_generated"] == 550


@pytest.mark.parametrize("present", [list(range(25)), [0, 4, 12, 20, 24], [7]])
def test_grid25_counts_exactly_the_modes_present(present):
    g = torch.Generator().manual_seed(1)
    centers = grid_centers(5, 2.0)
    samples = around(centers, present, 30, 0.05, g)
    modes, hq = nearest_modes(samples, centers, 0.05)
    assert mode_coverage(modes, 25, hq)["modes"] == len(present)
    assert hq.all()


def test_high_quality_boundary_is_three_std():
    centers = ring_centers(8, 1.0)
    inside = centers[0] + torch.tensor([[0.029, 0.0]])
    outside = centers[0] + torch.tensor([[0.031, 0.0]])
    _, hq = nearest_modes(torch.cat([inside, outside]), centers, 0.01)
    assert hq.tolist() == [True, False]
    modes, hq = nearest_modes(outside, centers, 0.01)
    got = mode_coverage(modes, 8, hq)
    assert got["modes"] == 0 and math.isnan(got["mode_kl"])


def test_kl_to_uniform_matches_its_formula():
    hist = torch.tensor([5, 0, 3, 2])
    p = torch.tensor([0.5, 0.3, 0.2])
    assert kl_to_uniform(hist) == pytest.approx(float((p * (p * 4).log()).sum()))
    assert kl_to_uniform(torch.tensor([4, 4, 4, 4])) == pytest.approx(0)


def test_stacked_digit_modes_are_the_distinct_label_triples():
    g = torch.Generator().manual_seed(2)
    triples = torch.randint(10, (300, 3), generator=g)
    triples[:, 0] = triples[:, 0] % 4  # only 4 first digits: a partial collapse
    modes = 100 * triples[:, 0] + 10 * triples[:, 1] + triples[:, 2]
    metric = ModeCoverage(1000, max_samples=250)
    metric.update(modes, torch.arange(300))
    got = metric.compute()
    assert got["modes"] == len(set(modes[:250].tolist()))
    assert got["num_generated"] == 250


def test_stacked_classifier_joint_logits_number_modes_like_the_labels():
    spec = DataSpec(kind="image", shape=(3, 16, 16), num_classes=10, label_shape=(3,), num_modes=1000)
    torch.manual_seed(0)
    ext = ClassifierExtractor(SmallCNN(1, 10, width=8).eval(), spec, {"test_accuracy": 1.0})
    x = torch.rand(20, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    out = ext(x)
    assert out["logits"].shape == (20, 1000) and out["pool"].shape == (20, 3 * ext.net.feature_dim)
    per_channel = torch.stack([ext.net(x[:, c : c + 1])[1].argmax(1) for c in range(3)], 1)
    expected = 100 * per_channel[:, 0] + 10 * per_channel[:, 1] + per_channel[:, 2]
    assert torch.equal(out["logits"].argmax(1), expected)
    assert torch.allclose(out["logits"].exp().sum(1), torch.ones(20), atol=1e-4)  # a joint distribution
