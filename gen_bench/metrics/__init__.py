"""The evaluation's building blocks: feature extractors (a registry), FID / KID / IS / MiFID on
torchmetrics, precision / recall / density / coverage, memorization, mode coverage, and the
reference-statistics cache. :mod:`gen_bench.evaluation` puts them together."""

from gen_bench.metrics.extractors import EXTRACTORS, FeatureExtractor, build_extractor, register_extractor
from gen_bench.metrics.fid import FeatureStats, frechet_distance
from gen_bench.metrics.settings import METRIC_NAMES, EvalSettings

__all__ = [
    "EXTRACTORS",
    "METRIC_NAMES",
    "EvalSettings",
    "FeatureExtractor",
    "FeatureStats",
    "build_extractor",
    "frechet_distance",
    "register_extractor",
]
