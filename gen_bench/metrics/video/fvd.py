"""FVD (Unterthiner et al. 2018) and frame FID as pure functions of two sets of clips."""

from __future__ import annotations

from torch import Tensor

from gen_bench.metrics.extractors import FeatureExtractor
from gen_bench.metrics.fid import FeatureStats, frechet_distance
from gen_bench.metrics.reference import frames


def _stats(extractor: FeatureExtractor, x: Tensor, batch: int = 256) -> FeatureStats:
    stats = FeatureStats.zeros(extractor.feature_dim)
    for chunk in x.split(batch):
        stats.add(extractor(chunk.to(extractor.device))["pool"])
    return stats


def fvd(real: Tensor, fake: Tensor, extractor: FeatureExtractor) -> float:
    """Frechet video distance between two sets of (N, C, T, H, W) clips in [0, 1] (a video extractor)."""
    return float(frechet_distance(*_stats(extractor, real).mean_cov(), *_stats(extractor, fake).mean_cov()))


def frame_fid(real: Tensor, fake: Tensor, extractor: FeatureExtractor) -> float:
    """FID between the frames of two sets of clips (an image extractor; every frame is a sample)."""
    return float(frechet_distance(*_stats(extractor, frames(real)).mean_cov(),
                                  *_stats(extractor, frames(fake)).mean_cov()))
