"""The scoring side of an evaluation: the :class:`Score` adapter every metric family implements, the
batch it reads (:class:`EvalBatch`), what its builder gets (:class:`SuiteContext`), and the metric
registry.

A builder is registered under its ``eval.metrics`` name with :func:`register_metric` where it is
defined (:mod:`gen_bench.metrics.scores`, :mod:`gen_bench.metrics.video.scores`); it raises
:class:`NotApplicable` when its metric does not apply to the data or extractor (IS without logits,
mode counting without known modes), and the evaluator records the reason instead of a score.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor
from torchmetrics import Metric

from gen_bench.data.spec import DataSpec
from gen_bench.metrics.extractors import ExtractorRequest, FeatureExtractor, build_extractor
from gen_bench.metrics.reference import Reference
from gen_bench.metrics.registry import METRICS
from gen_bench.metrics.settings import EvalSettings


class NotApplicable(Exception):
    """A metric that does not apply here; the message says why."""


@dataclass
class EvalBatch:
    """One batch of generated samples and every extractor's features of it.

    Attributes:
        samples: (B, C, H, W) images in [0, 1] (video: frames) or (B, 2) points.
        features: Extractor name -> ``{"pool": (B, d)[, "logits": (B, k)]}``.
        index: (B,) global indices of the samples in the draw.
        clips: Video only: the (N, C, T, H, W) clips whose frames are ``samples`` (video metrics).
        labels: (B,) the classes the samples were asked for (class-conditional models), else ``None``.
        inputs: Image-to-image models: the (B, ...) inputs the samples were translated from, in the
            task's input format (:mod:`gen_bench.data.paired`), else ``None``.
        targets: Image-to-image models: the (B, C, H, W) real images those inputs were made from.
    """

    samples: Tensor
    features: dict[str, dict[str, Tensor]]
    index: Tensor
    clips: Tensor | None = None
    labels: Tensor | None = None
    inputs: Tensor | None = None
    targets: Tensor | None = None


@dataclass
class SuiteContext:
    """What builders need: settings, data, the main extractor and its reference features, and the model
    scored (``None`` when the samples come without it; read by scores of the model itself, ``bpd``).

    ``extractor(name)`` returns another extractor (built once and then run on every batch too).
    ``conditional``: the samples come from a class-conditional model, with the labels they were asked
    for (:attr:`EvalBatch.labels`). ``sampler``: the sampler factory the evaluation draws with
    (``None``: the model's own), for scores that draw more samples themselves (``diversity``).
    """

    settings: EvalSettings
    spec: DataSpec
    datamodule: Any
    main: FeatureExtractor
    reference: Reference
    device: torch.device
    is_rank_zero: bool
    extractors: dict[str, FeatureExtractor] = field(default_factory=dict)
    conditional: bool = False
    model: Any = None
    sampler: Any = None

    def extractor(self, name: str) -> FeatureExtractor:
        if name not in self.extractors:
            request = ExtractorRequest(self.spec, self.datamodule, self.settings, self.device)
            self.extractors[name] = build_extractor(name, request)
        return self.extractors[name]

    def feed_reference(self, metric: Metric, features: Tensor) -> None:
        """Give a metric its real side once across processes: process 0 the features, others none."""
        real = features if self.is_rank_zero else features[:0]
        metric.update(real.to(self.device), real=True)


#: ``weights(n)``: the (n, B) row counts of the evaluation's B bootstrap resamples of n rows.
ResampleWeights = Callable[[int], Tensor]


class Score:
    """Adapter between an :class:`EvalBatch` and one metric family.

    Attributes:
        name: The family (``fid``, ``prdc``...).
        metric: Its torchmetrics state.
        samples_needed: Samples this score is computed on when that is more than ``eval.num_samples``
            (the evaluator then draws that many; every other score still sees the first
            ``eval.num_samples``). ``None``: ``eval.num_samples``.
        per_feature_space: Scored in every feature space of ``eval.extractors`` (keys
            ``<score>@<extractor>``), not only in the main one.
        bounds: Score name -> (lower, upper) range, for clipping bootstrap intervals.
        details: Score name -> further fields of the last :meth:`compute` (FID_inf's fit), recorded
            beside the value.
    """

    name: str = ""
    metric: Metric
    samples_needed: int | None = None
    per_feature_space: ClassVar[bool] = False
    bounds: ClassVar[dict[str, tuple[float | None, float | None]]] = {}
    details: dict[str, dict[str, Any]] = {}  # replaced (never mutated) by compute
    feature_space: str = ""  # the feature space of eval.extractors it is scored in ("": the main one)

    def update(self, batch: EvalBatch) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        """Scalar scores by name (``fid``, ``precision``...)."""
        raise NotImplementedError

    def protocol(self) -> dict[str, Any]:
        """How the scores were measured, beyond the evaluation's common protocol."""
        return {}

    def score_protocol(self, name: str) -> dict[str, Any]:
        """Further protocol fields of score ``name`` alone (its own protocol id when not empty)."""
        return {}

    def bootstrap(self, weights: ResampleWeights) -> dict[str, Tensor]:
        """After :meth:`compute`: score name -> (B,) replicates on the generated rows reweighted by
        ``weights(n)`` (n: the rows this score was computed on), the real side fixed; ``{}`` for
        scores without intervals. A replicate may be off by a constant (it cancels in the interval,
        see :func:`gen_bench.metrics.bootstrap.interval`)."""
        return {}

    def artifacts(self, out_dir: Path, tag: str) -> dict[str, str]:
        """Write pictures after :meth:`compute` (process 0 only); name -> path."""
        return {}

    def reset(self) -> None:
        self.metric.reset()


#: Decorator: register ``builder(ctx: SuiteContext) -> Score`` (a :class:`Score` subclass) as
#: ``eval.metrics`` name ``name``.
register_metric = METRICS.register


def build_score(name: str, ctx: SuiteContext) -> Score:
    """Build metric family ``name``; :class:`NotApplicable` when it does not apply.

    Raises:
        ValueError: For an unknown name, listing the registered ones.
    """
    return METRICS.lookup(name)(ctx)


def main_pool(ctx: SuiteContext) -> Callable[[EvalBatch], Tensor]:
    """``batch -> (B, d)`` pool features of ``ctx``'s main extractor."""
    key = ctx.main.name
    return lambda batch: batch.features[key]["pool"]
