"""Mode coverage counts exactly the modes present in constructed samples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from gen_bench.data.spec import DataSpec
from gen_bench.data.toy import GaussianMixture2D, grid_centers, ring_centers
from gen_bench.metrics.classifier import ClassifierExtractor, SmallCNN
from gen_bench.metrics.modes import (
    ModeCoverage,
    high_quality_probability,
    kl_to_uniform,
    marginal_confidence,
    nearest_modes,
    perfect_mode_scores,
    real_mode_scores,
)
from gen_bench.metrics.settings import EvalSettings

from conftest import compose_train


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
    _, hq = nearest_modes(samples, centers, 0.05)
    assert hq.all()
    metric = ModeCoverage(25, centers, 0.05)
    metric.update(samples, torch.arange(samples.shape[0]))
    got = metric.compute()
    assert got["modes"] == len(present) and got["hq_fraction"] == 1.0


def test_high_quality_boundary_is_three_std():
    centers = ring_centers(8, 1.0)
    inside = centers[0] + torch.tensor([[0.029, 0.0]])
    outside = centers[0] + torch.tensor([[0.031, 0.0]])
    _, hq = nearest_modes(torch.cat([inside, outside]), centers, 0.01)
    assert hq.tolist() == [True, False]
    metric = ModeCoverage(8, centers, 0.01)
    metric.update(outside, torch.arange(1))
    got = metric.compute()
    assert got["modes"] == 0 and math.isnan(got["mode_kl"]) and got["hq_fraction"] == 0.0


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


@pytest.mark.parametrize("k,n", [(1000, 2500), (1000, 26_000), (8, 5), (25, 60)])
def test_perfect_generator_scores_match_the_closed_form_and_a_monte_carlo(k, n):
    """A perfect generator draws the K modes uniformly: E[modes] = K (1 - (1 - 1/K)^N) in closed form,
    and E[KL] of its histogram, checked against 4000 seeded multinomial draws."""
    got = perfect_mode_scores(k, n)
    assert got["modes_perfect"] == pytest.approx(k * (1 - (1 - 1 / k) ** n), rel=1e-9)
    counts = np.random.default_rng(0).multinomial(n, [1 / k] * k, size=4000)  # (4000, K)
    p = counts / n
    kl = math.log(k) + np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0).sum(1)
    assert got["mode_kl_perfect"] == pytest.approx(kl.mean(), abs=4 * kl.std() / math.sqrt(len(kl)) + 1e-12)
    hit = (counts > 0).sum(1)
    assert got["modes_perfect"] == pytest.approx(hit.mean(), abs=4 * hit.std() / math.sqrt(len(hit)) + 1e-6)
    if (k, n) == (1000, 2500):  # 2,500 samples: a perfect generator misses 8% of stacked digits' modes
        assert round(got["modes_perfect"]) == 918 and got["mode_kl_perfect"] == pytest.approx(0.223, abs=1e-3)


def test_perfect_2d_generator_is_the_data_itself():
    """Samples of the ring8 data (std 0.01) scored like a model: mean modes, high-quality share and KL
    over 400 draws of 16 samples match the *_perfect expectations, which count only the samples
    within 3 std (1 - exp(-9/2) of them)."""
    q = high_quality_probability(3.0)
    assert q == pytest.approx(1 - math.exp(-4.5))
    scores = []
    for seed in range(400):
        source = GaussianMixture2D("ring8", num_samples=16, std=0.01, seed=seed)
        metric = ModeCoverage(8, torch.tensor(source.spec.mode_centers), 0.01)
        metric.update(source.load().x, torch.arange(16))
        scores.append(metric.compute())
    expected = scores[0]
    assert expected["modes_perfect"] == pytest.approx(8 * (1 - (1 - q / 8) ** 16))  # ~6.9 of 8
    assert expected["hq_fraction_perfect"] == q
    for name in ("modes", "hq_fraction", "mode_kl"):
        values = np.array([s[name] for s in scores])
        se = values.std() / math.sqrt(len(values))
        assert values.mean() == pytest.approx(expected[f"{name}_perfect"], abs=4 * se), name


def test_stacked_digit_modes_are_counted_on_pacgans_26000_samples(tmp_path):
    """The mode count of each preset, and what a perfect generator scores there, beside the score."""
    def count(data: str, preset: str) -> int:
        cfg = compose_train([f"data={data}", f"eval={preset}"], tmp_path)
        s = EvalSettings(**{k: v for k, v in OmegaConf.to_container(cfg.eval, resolve=True).items()})
        s = s.for_data("image" if data == "stacked_digits" else "toy2d")
        return s.modes.count(s.num_samples, 1000 if data == "stacked_digits" else 8)

    assert count("stacked_digits", "default") == 26_000 and count("stacked_digits", "paper") == 26_000
    assert count("ring8", "default") == 2500 and count("ring8", "paper") == 2500  # VEEGAN / PacGAN 2-D
    assert count("stacked_digits", "fast") == 256
    metric = ModeCoverage(1000, max_samples=26_000)
    metric.update(torch.arange(30_000) % 1000, torch.arange(30_000))
    got = metric.compute()
    assert got["num_generated"] == 26_000 and got["modes"] == 1000
    assert got["modes_perfect"] == pytest.approx(1000 * (1 - (1 - 1 / 1000) ** 26_000))


def test_confidence_is_the_smallest_per_channel_top_probability():
    """From the joint logits of the stacked classifier, each channel's top probability equals that of
    the single-channel net run on the channel alone; the confidence is their minimum. The marginals
    also hold for a joint that is not a product (a hand-made 2 x 2 table)."""
    spec = DataSpec(kind="image", shape=(3, 16, 16), num_classes=10, label_shape=(3,), num_modes=1000)
    torch.manual_seed(0)
    ext = ClassifierExtractor(SmallCNN(1, 10, width=8).eval(), spec, {"test_accuracy": 1.0})
    x = torch.rand(12, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        tops = torch.stack([ext.net(x[:, c : c + 1])[1].softmax(1).amax(1) for c in range(3)], 1)  # (12, 3)
    got = marginal_confidence(ext(x)["logits"], 10, 3)
    assert torch.allclose(got, tops.amin(1), atol=1e-5)
    one = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.3, 0.3, 0.4]]))
    assert torch.allclose(marginal_confidence(one, 3), torch.tensor([0.7, 0.4]))
    joint = torch.log(torch.tensor([[0.5, 1e-12, 0.1, 0.4]]))  # P(a, b): a marginal (0.5, 0.5), b (0.6, 0.4)
    assert marginal_confidence(joint, 2, 2).item() == pytest.approx(0.5, abs=1e-6)


def test_confident_share_and_modes_count_only_confident_samples():
    """Six samples, three above the threshold; the max_samples cut applies to confidences too."""
    modes = torch.tensor([3, 3, 7, 9, 9, 12, 500])
    conf = torch.tensor([0.95, 0.2, 0.9, 0.89, 0.99, 0.5, 1.0])
    metric = ModeCoverage(1000, max_samples=6, confidence=0.9)
    metric.update(modes[:4], torch.arange(4), conf[:4])
    metric.update(modes[4:], torch.arange(4, 7), conf[4:])
    got = metric.compute()
    assert got["modes"] == 4 and got["num_generated"] == 6  # 3, 7, 9, 12 (500 is past the cut)
    assert got["confident_fraction"] == pytest.approx(3 / 6)  # 3 (0.95), 7 (0.9), 9 (0.99)
    assert got["modes_confident"] == 3
    with pytest.raises(ValueError, match="confidence exactly when"):
        metric.update(modes, torch.arange(7))
    plain = ModeCoverage(10)
    plain.update(modes[:1] % 10, torch.arange(1))
    assert "confident_fraction" not in plain.compute()


def _channel_digits(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 3, 4, 4) stacks whose channel c is the constant (digit + 0.5) / 10, and the digits."""
    digits = torch.randint(10, (n, 3), generator=g)
    return ((digits.float() + 0.5) / 10)[:, :, None, None].expand(n, 3, 4, 4).clone(), digits


def _read_digits(x: torch.Tensor, doubtful: int | None = None) -> torch.Tensor:
    """An exact classifier of those stacks: joint log-probabilities, one-hot per channel; a channel
    showing ``doubtful`` gets probability 0.6 on it and 0.4 on the next digit."""
    d = (x.mean((2, 3)) * 10).floor().long().clamp(0, 9)  # (B, 3)
    p = torch.nn.functional.one_hot(d, 10).double()
    if doubtful is not None:
        hit = d == doubtful
        p[hit] = 0.6 * p[hit] + 0.4 * torch.nn.functional.one_hot((d[hit] + 1) % 10, 10).double()
    joint = p[:, 0, :, None, None] * p[:, 1, None, :, None] * p[:, 2, None, None, :]
    return joint.reshape(-1, 1000).clamp_min(1e-30).log()


def test_real_reference_draws_fresh_stacks_channel_by_channel():
    """Only 20 real stacks, yet the reference at PacGAN's 26,000 samples hits as many of the 1000 modes
    as a perfect generator (it draws every channel on its own, as the data builds its stacks; whole
    stacks could reach 20); with an exact classifier every sample is confident, and a digit the
    classifier doubts (0.6) removes the samples showing it from the confident share."""
    images, digits = _channel_digits(20, torch.Generator().manual_seed(5))
    real = real_mode_scores(images, _read_digits, 26_000, 10, 3, confidence=0.9, seed=0, batch_size=4096)
    perfect = perfect_mode_scores(1000, 26_000)
    # the pool's digit frequencies are not exactly uniform: modes close to, KL above the perfect ones
    assert real["modes_real"] >= 990 and real["modes_real"] == real["modes_confident_real"]
    assert real["confident_fraction_real"] == 1.0 and real["mode_kl_real"] >= perfect["mode_kl_perfect"]
    freq = torch.bincount(digits.flatten(), minlength=10).double() / digits.numel()
    doubt = real_mode_scores(images, lambda x: _read_digits(x, doubtful=3), 26_000, 10, 3, 0.9, seed=0)
    expected = float((1 - freq[3]) ** 3)  # no channel shows a 3
    assert doubt["confident_fraction_real"] == pytest.approx(expected, abs=4 * math.sqrt(expected / 26_000))
    assert doubt["modes_confident_real"] == 729 and doubt["modes_real"] == real["modes_real"]  # 9^3
