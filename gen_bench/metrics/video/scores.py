"""The video metric families: ``fvd`` (Frechet video distance with ``eval.video.extractor``) and
``physics`` (bouncing balls); frame FID is the image suite's ``fid`` on the frames."""

from __future__ import annotations

from typing import Any

import torch

from gen_bench.data.video import BouncingBalls
from gen_bench.metrics.extractors import ExtractorRequest
from gen_bench.metrics.fid import FID
from gen_bench.metrics.reference import iter_split, reference_features, split_dataset, subset_indices
from gen_bench.metrics.suite import EvalBatch, NotApplicable, Score, SuiteContext, register_metric
from gen_bench.metrics.video.extractors import build_video_extractor
from gen_bench.metrics.video.physics import PhysicsCheck


@register_metric("fvd")
class FVDScore(Score):
    """Frechet video distance with ``eval.video.extractor``, against cached reference statistics."""

    name = "fvd"

    def __init__(self, ctx: SuiteContext) -> None:
        if ctx.spec.kind != "video":
            raise NotApplicable("FVD is for video data")
        s = ctx.settings
        request = ExtractorRequest(ctx.spec, ctx.datamodule, s, ctx.device)
        self.extractor = build_video_extractor(s.video.extractor, request)
        ref = s.reference
        reference = reference_features(ctx.datamodule, self.extractor, ref.split, ref.num_samples,
                                       ref.subset_seed, s.cache_path, s.batch_size, clips=True)
        self.num_reference = reference.stats.n
        stats = reference.stats if ctx.is_rank_zero else None
        self.metric = FID(self.extractor.feature_dim, stats).to(ctx.device)

    def update(self, batch: EvalBatch) -> None:
        if batch.clips is None:
            feats = torch.zeros(0, self.extractor.feature_dim, device=self.metric.device)
        else:
            feats = self.extractor(batch.clips)["pool"]
        self.metric.update(feats, real=False)

    def compute(self) -> dict[str, float]:
        return {"fvd": float(self.metric.compute())}

    def protocol(self) -> dict[str, Any]:
        ext = self.extractor.describe()
        keys = ("name", "version", "weights_sha256", "feature_dim", "preprocessing")
        return {"num_reference": self.num_reference, "video_extractor": {k: ext[k] for k in keys}}


@register_metric("physics")
class PhysicsScore(Score):
    """The physics check of generated bouncing-ball clips, beside the same statistics of real ones."""

    name = "physics"

    def __init__(self, ctx: SuiteContext) -> None:
        source = getattr(ctx.datamodule, "source", None)
        if ctx.spec.kind != "video" or not isinstance(source, BouncingBalls):
            raise NotApplicable("the physics check is for bouncing_balls clips")
        opts = ctx.settings.video.physics
        self.threshold, self.num_balls = opts.threshold, source.num_balls
        split, seed = ctx.settings.reference.split, ctx.settings.reference.subset_seed
        index = subset_indices(len(split_dataset(ctx.datamodule, split)), opts.num_reference, seed)
        real = PhysicsCheck(self.num_balls, self.threshold)
        for x in iter_split(ctx.datamodule, split, index, ctx.settings.batch_size):
            real.update(x)
        self.num_reference = int(real.clips)
        self.real = real.compute()
        self.metric = PhysicsCheck(self.num_balls, self.threshold).to(ctx.device)

    def update(self, batch: EvalBatch) -> None:
        if batch.clips is not None:
            self.metric.update(batch.clips)

    def compute(self) -> dict[str, float]:
        out = {f"physics_{k}": v for k, v in self.metric.compute().items()}
        out.update({f"physics_{k}_real": v for k, v in self.real.items()})
        return out

    def protocol(self) -> dict[str, Any]:
        return {"num_reference": self.num_reference, "threshold": self.threshold, "num_balls": self.num_balls,
                "matching": "hungarian on centre distances between frames with equal counts"}
