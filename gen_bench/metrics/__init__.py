"""The evaluation's building blocks: feature extractors (a registry), FID / KID / IS / MiFID on
torchmetrics, precision / recall / density / coverage, memorization, mode coverage, FWD, video
metrics, bits per dimension, scores of image-to-image models against their targets, and the
reference-statistics cache. :mod:`gen_bench.metrics.engine` puts them together.

Importing the package registers every built-in extractor and metric family: each registers itself
in the module that defines it, and the imports below load those modules (the registries themselves
live in :mod:`gen_bench.metrics.registry`, which imports nothing, so no module here imports back).
"""

# Registration order is the order of ``EvalSettings.metrics``'s default: image scores, then video, then
# the class-conditional scores, the likelihood models' bits per dimension and the image-to-image scores.
from gen_bench.metrics import classifier, dinov2, inception, scores, video  # noqa: F401  (registers)

# isort: split
from gen_bench.metrics import conditional, likelihood, paired  # noqa: F401  (after the scores of samples)
from gen_bench.metrics.extractors import FeatureExtractor, build_extractor, register_extractor
from gen_bench.metrics.fid import FeatureStats, frechet_distance
from gen_bench.metrics.registry import EXTRACTORS, METRICS, VIDEO_EXTRACTORS
from gen_bench.metrics.settings import EvalSettings
from gen_bench.metrics.suite import register_metric

__all__ = [
    "EXTRACTORS",
    "METRICS",
    "VIDEO_EXTRACTORS",
    "EvalSettings",
    "FeatureExtractor",
    "FeatureStats",
    "build_extractor",
    "frechet_distance",
    "register_extractor",
    "register_metric",
]
