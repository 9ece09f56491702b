"""The Frechet Wavelet Distance: the Haar packet transform against separable Haar matrices, FWD
against a numpy / scipy re-implementation, 0 for identical sets, growing with blur; in the suite."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg
from torchvision.transforms.v2.functional import gaussian_blur

from gen_bench.data.digits import load_sklearn_digits
from gen_bench.metrics.fwd import auto_level, fwd, haar_packets


def haar_matrix(n: int) -> np.ndarray:
    """One level of the orthonormal 1-D Haar transform of length n: n/2 averages, then n/2 details."""
    m = np.zeros((n, n))
    for i in range(n // 2):
        m[i, 2 * i : 2 * i + 2] = [1, 1]
        m[n // 2 + i, 2 * i : 2 * i + 2] = [1, -1]
    return m / np.sqrt(2)


def packets_numpy(x: np.ndarray, level: int) -> list[np.ndarray]:
    """Packets of (N, C, H, W) images by separable matrix products, level after level."""
    packets = [x]
    for _ in range(level):
        out = []
        for p in packets:
            h, w = p.shape[-2:]
            y = haar_matrix(h) @ p @ haar_matrix(w).T  # rows then columns
            out += [y[..., :h // 2, :w // 2], y[..., :h // 2, w // 2:], y[..., h // 2:, :w // 2],
                    y[..., h // 2:, w // 2:]]
        packets = out
    return packets


def fwd_numpy(real: np.ndarray, fake: np.ndarray, level: int) -> float:
    dists = []
    for pr, pf in zip(packets_numpy(real, level), packets_numpy(fake, level), strict=True):
        a, b = pr.reshape(len(pr), -1), pf.reshape(len(pf), -1)
        s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        d = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
        dists.append(d)
    return float(np.mean(dists))


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return load_sklearn_digits(16)[0].float() / 255  # (1797, 1, 16, 16)


def test_packets_are_an_orthonormal_haar_tree():
    x = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    p = haar_packets(x, 2)
    assert p.shape == (5, 16, 3, 4, 4)
    assert torch.allclose(p.square().sum((1, 2, 3, 4)), x.square().sum((1, 2, 3)))  # energy kept
    ref = packets_numpy(x.numpy(), 2)  # the same bands, up to order and sign
    ours = sorted(p.abs().flatten(2).sum((0, 2)).tolist())
    assert np.allclose(ours, sorted(np.abs(r).sum() for r in ref))
    const = haar_packets(torch.full((1, 1, 8, 8), 0.5), 3)
    assert const[0, 0].item() == pytest.approx(0.5 * 8) and const[0, 1:].abs().max() < 1e-12  # DC only
    with pytest.raises(ValueError, match="divisible by 8.*eval.fwd.level"):
        haar_packets(torch.zeros(1, 1, 12, 12), 3)
    assert [auto_level(s) for s in (16, 32, 64, 128, 256)] == [1, 1, 2, 3, 4]


def test_fwd_matches_a_numpy_implementation_and_is_zero_for_identical_sets(digits):
    real, fake = digits[:600], (digits[600:1200] + 0.05).clamp(0, 1)
    assert fwd(real, fake, 2) == pytest.approx(fwd_numpy(real.double().numpy(), fake.double().numpy(), 2),
                                               rel=1e-6)
    assert abs(fwd(real, real, 2)) < 1e-8 * fwd(real, fake, 2)


def test_fwd_grows_with_blur(digits):
    real, held = digits[:900], digits[900:]
    values = [fwd(real, gaussian_blur(held, [7, 7], [s, s]) if s else held, 1) for s in (0, 0.5, 1.0, 2.0)]
    assert values == sorted(values) and values[-1] > 5 * values[0], values
