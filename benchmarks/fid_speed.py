"""FID from 2048-d statistics: gen-bench's ``frechet_distance`` vs ``scipy.linalg.sqrtm`` (the
pytorch-fid / TTUR reference) and torchmetrics' general eigensolver, for accuracy and speed.

Statistics come from random correlated features (n samples per side, d dimensions, float64), the
shape of Inception pool statistics. Each method runs ``--repeats`` times; the best time is kept.

    .venv/bin/python benchmarks/fid_speed.py
    .venv/bin/python benchmarks/fid_speed.py --dim 512 --samples 2000
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import scipy.linalg
import torch
from torchmetrics.image.fid import _compute_fid

from gen_bench.metrics.fid import FeatureStats, frechet_distance


def scipy_fid(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """The reference: pytorch-fid's ``calculate_frechet_distance`` (sqrtm of the product)."""
    covmean = scipy.linalg.sqrtm(s1.dot(s2))
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * 1e-6
        covmean = scipy.linalg.sqrtm((s1 + offset).dot(s2 + offset))
    covmean = covmean.real
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def statistics(n: int, d: int, shift: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5
    x = torch.randn(n, d, generator=g, dtype=torch.float64) @ mix + shift
    return FeatureStats.of(x).mean_cov()


def best_time(fn, repeats: int) -> tuple[float, float]:
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return float(value), min(times)


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-torchmetrics", action="store_true", help="skip the slowest method")
    args = parser.parse_args()
    mu1, s1 = statistics(args.samples, args.dim, 0.0, 0)
    mu2, s2 = statistics(args.samples, args.dim, 0.05, 1)
    np_args = [t.numpy() for t in (mu1, s1, mu2, s2)]

    ours, t_ours = best_time(lambda: frechet_distance(mu1, s1, mu2, s2), args.repeats)
    ref, t_ref = best_time(lambda: scipy_fid(*np_args), args.repeats)
    report = {
        "dim": args.dim, "samples_per_side": args.samples, "threads": torch.get_num_threads(),
        "scipy_sqrtm": {"fid": ref, "seconds": round(t_ref, 3)},
        "gen_bench": {"fid": ours, "seconds": round(t_ours, 3),
                      "rel_error_vs_scipy": abs(ours - ref) / abs(ref),
                      "speedup_vs_scipy": round(t_ref / t_ours, 2)},
    }
    if not args.skip_torchmetrics:
        tm, t_tm = best_time(lambda: _compute_fid(mu1, s1, mu2, s2), args.repeats)
        report["torchmetrics_eigvals"] = {"fid": tm, "seconds": round(t_tm, 3),
                                          "rel_error_vs_scipy": abs(tm - ref) / abs(ref)}
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
