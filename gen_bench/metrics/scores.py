"""The metric families of an image (or frame) evaluation, each a torchmetrics ``Metric`` behind a
:class:`~gen_bench.metrics.suite.Score` that knows which features it reads, what it reports and how
it was measured: ``fid`` (with FID_inf and the real baseline), ``kid``, ``is``, ``mifid``, ``prdc``,
``memorization``, ``modes`` and ``fwd``. Each registers itself under its ``eval.metrics`` name.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gen_bench.data.arrays import batch_at
from gen_bench.io import atomic_write_json
from gen_bench.metrics.cache import cached
from gen_bench.metrics.fid import (
    FID,
    IS,
    KID,
    FeatureBank,
    MiFID,
    fid_infinity,
    fid_replicates,
    frechet_distance,
    kid_replicates,
)
from gen_bench.metrics.fwd import PacketStats, auto_level, fwd_from_stats
from gen_bench.metrics.memorization import Memorization, memorization_reference
from gen_bench.metrics.modes import ModeCoverage, marginal_confidence, real_mode_scores
from gen_bench.metrics.prdc import PRDC, PRDCReplicates, real_knn_radii
from gen_bench.metrics.reference import (
    frames,
    iter_split,
    reference_features,
    split_dataset,
    subset_indices,
)
from gen_bench.metrics.suite import (
    EvalBatch,
    NotApplicable,
    ResampleWeights,
    Score,
    SuiteContext,
    main_pool,
    register_metric,
)


# --- FID, KID, IS, MiFID (torchmetrics) --------------------------------------------------------------
@register_metric("fid")
class FIDScore(Score):
    """FID, and beside it ``fid_real_baseline``: the FID of real data the model never saw (the other
    split: held-out when the reference is the training split) against the same reference, what a
    model that draws fresh real samples would score. It gives FID a scale whatever the features
    (random conv-net features above all); it is measured on that split's size (in the protocol), so
    a small held-out split scores higher than the same data would with ``eval.num_samples``."""

    name = "fid"
    per_feature_space = True
    bounds = {"fid": (0.0, None)}

    def __init__(self, ctx: SuiteContext) -> None:
        self.pool = main_pool(ctx)
        self.num_reference = ctx.reference.stats.n
        stats = ctx.reference.stats if ctx.is_rank_zero else None
        self.metric = FID(ctx.main.feature_dim, stats).to(ctx.device)
        self.real_mean_cov = tuple(t.to(ctx.device) for t in ctx.reference.stats.mean_cov())
        self.inf = ctx.settings.fid_inf
        self.inf_counts = self.inf.sizes(ctx.settings.num_samples)
        # FID's own state is sums: the rows are kept only when a bootstrap or FID_inf needs them
        keep = ctx.settings.bootstrap.num > 0 or bool(self.inf_counts)
        self.bank = FeatureBank().to(ctx.device) if keep else None
        self.details = {}
        ref = ctx.settings.reference
        self.baseline_split = "heldout" if ref.split == "train" else "train"
        self.real_baseline, self.baseline_samples = math.nan, 0
        if len(split_dataset(ctx.datamodule, self.baseline_split)) >= 2:
            other = reference_features(ctx.datamodule, ctx.main, self.baseline_split, ref.num_samples,
                                       ref.subset_seed, ctx.settings.cache_path, ctx.settings.batch_size)
            self.baseline_samples = other.stats.n
            real = ctx.reference.stats.mean_cov()
            self.real_baseline = float(frechet_distance(*other.stats.mean_cov(), *real))

    def update(self, batch: EvalBatch) -> None:
        features = self.pool(batch)
        self.metric.update(features, real=False)
        if self.bank is not None:
            self.bank.update(features, batch.index)

    def compute(self) -> dict[str, float]:
        out = {"fid": float(self.metric.compute()), "fid_real_baseline": self.real_baseline}
        self.fake = self.bank.compute() if self.bank is not None else None
        if self.inf_counts:
            fit = fid_infinity(self.fake, *self.real_mean_cov, self.inf_counts, self.inf.seed)
            out["fid_inf"] = fit.pop("fid_inf")
            self.details = {"fid_inf": fit}
        return out

    def bootstrap(self, weights: ResampleWeights) -> dict[str, Tensor]:
        return {"fid": fid_replicates(self.fake, *self.real_mean_cov, weights(self.fake.shape[0]))}

    def protocol(self) -> dict[str, Any]:
        return {"num_reference": self.num_reference,
                "real_baseline": {"split": self.baseline_split, "num_samples": self.baseline_samples}}

    def score_protocol(self, name: str) -> dict[str, Any]:
        if name != "fid_inf":
            return {}
        return {"fid_inf": {"counts": self.inf_counts, "subset_seed": self.inf.seed,
                            "fit": "least squares FID = a + b / N over random subsets, a reported "
                                   "(Chong and Forsyth 2020)"}}

    def reset(self) -> None:
        self.metric.reset()
        if self.bank is not None:
            self.bank.reset()


@register_metric("kid")
class KIDScore(Score):
    name = "kid"
    per_feature_space = True

    def __init__(self, ctx: SuiteContext) -> None:
        s = ctx.settings.kid
        self.pool = main_pool(ctx)
        self.settings = s
        self.num_reference = ctx.reference.features.shape[0]
        self.metric = KID(ctx.main.feature_dim, s.subsets, s.subset_size, s.degree).to(ctx.device)
        ctx.feed_reference(self.metric, ctx.reference.features)

    def update(self, batch: EvalBatch) -> None:
        self.metric.update(self.pool(batch), real=False)

    def compute(self) -> dict[str, float]:
        mean, std = self.metric.compute()
        return {"kid": float(mean), "kid_subset_std": float(std)}

    def bootstrap(self, weights: ResampleWeights) -> dict[str, Tensor]:
        """Replicates of the unbiased MMD^2 over all rows (what KID's subsets estimate)."""
        real, fake = self.metric.synced
        return {"kid": kid_replicates(real, fake, weights(fake.shape[0]), self.settings.degree)}

    def protocol(self) -> dict[str, Any]:
        s = self.settings
        return {"num_reference": self.num_reference, "subsets": s.subsets, "degree": s.degree,
                "subset_size": self.metric.used_subset_size or s.subset_size, "kernel": "polynomial"}


@register_metric("is")
class ISScore(Score):
    name = "is"
    per_feature_space = True

    def __init__(self, ctx: SuiteContext) -> None:
        if not ctx.main.num_logits:
            raise NotApplicable(f"the {ctx.main.name} extractor has no class logits "
                                "(inception and classifier have)")
        self.key = ctx.main.name
        self.splits = ctx.settings.inception_score.splits
        self.metric = IS(ctx.main.num_logits, self.splits).to(ctx.device)

    def update(self, batch: EvalBatch) -> None:
        self.metric.update(batch.features[self.key]["logits"])

    def compute(self) -> dict[str, float]:
        mean, std = self.metric.compute()
        return {"is": float(mean), "is_split_std": float(std)}

    def protocol(self) -> dict[str, Any]:
        return {"splits": self.splits, "num_reference": 0}


@register_metric("mifid")
class MiFIDScore(Score):
    name = "mifid"
    per_feature_space = True

    def __init__(self, ctx: SuiteContext) -> None:
        if ctx.spec.kind == "toy2d":
            raise NotApplicable("the cosine distance of 2-D points is their angle alone; MiFID is defined on "
                                "image features")
        self.pool = main_pool(ctx)
        self.eps = ctx.settings.mifid.cosine_eps
        self.num_reference = ctx.reference.features.shape[0]
        self.metric = MiFID(ctx.main.feature_dim, self.eps).to(ctx.device)
        ctx.feed_reference(self.metric, ctx.reference.features)

    def update(self, batch: EvalBatch) -> None:
        self.metric.update(self.pool(batch), real=False)

    def compute(self) -> dict[str, float]:
        return {"mifid": float(self.metric.compute())}

    def protocol(self) -> dict[str, Any]:
        return {"num_reference": self.num_reference, "cosine_eps": self.eps}


# --- precision / recall / density / coverage ---------------------------------------------------------
@register_metric("prdc")
class PRDCScore(Score):
    name = "prdc"
    per_feature_space = True
    bounds = {"precision": (0.0, 1.0), "recall": (0.0, 1.0), "coverage": (0.0, 1.0), "density": (0.0, None)}

    def __init__(self, ctx: SuiteContext) -> None:
        s = ctx.settings.prdc
        self.settings = s
        self.pool = main_pool(ctx)
        real = ctx.reference.features
        keep = subset_indices(real.shape[0], s.num_reference, ctx.settings.reference.subset_seed)
        real = real if keep is None else real[keep]
        self.num_reference = real.shape[0]
        fields = {"kind": "prdc-radii", "reference": ctx.reference.fields, "num_reference": real.shape[0],
                  "subset_seed": ctx.settings.reference.subset_seed, "k": sorted({s.k_pr, s.k_dc})}

        def radii_of_real() -> dict[str, Tensor]:
            return {str(k): v for k, v in real_knn_radii(real.to(ctx.device), s.k_pr, s.k_dc).items()}

        radii = cached(ctx.settings.cache_path, "prdc", ctx.datamodule.name, fields, radii_of_real)
        radii = {int(k): v.to(ctx.device) for k, v in radii.items()}
        self.real, self.radii = real.to(ctx.device), radii
        self.metric = PRDC(self.real, s.k_pr, s.k_dc, s.max_samples, radii).to(ctx.device)
        self.num_generated = min(ctx.settings.num_samples, s.max_samples or math.inf)

    def update(self, batch: EvalBatch) -> None:
        self.metric.update(self.pool(batch), batch.index)

    def compute(self) -> dict[str, float]:
        out = self.metric.compute()
        self.num_generated = out.pop("num_generated")
        return out

    def bootstrap(self, weights: ResampleWeights) -> dict[str, Tensor]:
        fake = self.metric.synced_fake
        s = self.settings
        return PRDCReplicates(self.real, fake, s.k_pr, s.k_dc, self.radii)(weights(fake.shape[0]))

    def protocol(self) -> dict[str, Any]:
        return {"num_reference": self.num_reference, "num_generated": int(self.num_generated),
                "k_precision_recall": self.settings.k_pr, "k_density_coverage": self.settings.k_dc}


# --- memorization ----------------------------------------------------------------------------------
@register_metric("memorization")
class MemorizationScore(Score):
    """Memorization against the training split, with the held-out split as fresh data."""

    name = "memorization"

    def __init__(self, ctx: SuiteContext) -> None:
        s = ctx.settings.memorization
        self.settings = s
        self.space = s.space if ctx.spec.kind != "toy2d" else "pixels"  # points are their own features
        self.key = ctx.main.name
        dm = ctx.datamodule
        self.train_set = split_dataset(dm, "train")
        seed = ctx.settings.reference.subset_seed
        self.train_index = subset_indices(len(self.train_set), s.max_train, seed)
        self.image_kind = ctx.spec.kind == "image"  # the grid shows images (not points, not video frames)
        has_heldout = len(split_dataset(dm, "heldout")) > 0
        if self.space == "pixels":
            train = self._pixels(dm, "train", self.train_index, ctx)
            heldout = self._pixels(dm, "heldout", None, ctx) if has_heldout else None
        else:
            common = {"cache_dir": ctx.settings.cache_path, "batch_size": ctx.settings.batch_size,
                      "subset_seed": ctx.settings.reference.subset_seed}
            train = reference_features(dm, ctx.main, "train", s.max_train, **common).features
            heldout = None
            if has_heldout:
                heldout = reference_features(dm, ctx.main, "heldout", None, **common).features
        self.num_train = train.shape[0]
        train = train.to(ctx.device)
        heldout = None if heldout is None else heldout.to(ctx.device)
        ext = ctx.reference.fields["extractor"] if self.space == "features" else None
        fields = {"kind": "memorization", "data": dm.name, "fingerprint": dm.fingerprint(),
                  "space": self.space, "extractor": ext, "max_train": s.max_train, "subset_seed": seed,
                  "ratio_threshold": s.ratio_threshold, "ct_cells": s.ct_cells,
                  "num_train": train.shape[0], "num_heldout": 0 if heldout is None else heldout.shape[0]}
        reference = cached(ctx.settings.cache_path, "memorization", dm.name, fields, lambda: (
            memorization_reference(train, heldout, s.ratio_threshold, s.ct_cells, seed)))
        self.metric = Memorization(train, heldout, s.ratio_threshold, s.ct_cells, s.ct_min_samples,
                                   s.max_samples, s.grid_pairs, seed=seed, reference=reference)
        self.metric = self.metric.to(ctx.device)
        self.last: dict[str, Any] = {}

    @staticmethod
    def _pixels(dm, split: str, indices: Tensor | None, ctx: SuiteContext) -> Tensor:
        parts = [frames(x).flatten(1) for x in iter_split(dm, split, indices, ctx.settings.batch_size)]
        return torch.cat(parts) if parts else torch.zeros(0, 1)

    def update(self, batch: EvalBatch) -> None:
        points = batch.samples.flatten(1) if self.space == "pixels" else batch.features[self.key]["pool"]
        self.metric.update(points, batch.index, batch.samples if self.image_kind else None)

    def compute(self) -> dict[str, float]:
        out = self.metric.compute()
        self.last = out
        names = ("nn_distance_mean", "nn_distance_median", "copy_rate", "ct")
        scores = {k: out[k] for k in names if k in out}
        self.num_generated = out["num_generated"]
        return scores

    def protocol(self) -> dict[str, Any]:
        m = self.metric
        return {"space": self.space, "ratio_threshold": self.settings.ratio_threshold,
                "num_train": self.num_train, "num_generated": int(getattr(self, "num_generated", 0)),
                "ct_cells": m.num_cells, "ct_min_samples": self.settings.ct_min_samples, **m.baseline}

    def artifacts(self, out_dir: Path, tag: str) -> dict[str, str]:
        samples = self.last.get("grid_samples")
        if not self.image_kind or samples is None or samples.numel() == 0 or self.settings.grid_pairs <= 0:
            return {}
        from gen_bench.viz import save_pairs

        nearest = self.last["grid_nearest"].cpu()
        split_idx = nearest if self.train_index is None else self.train_index[nearest]
        train_images = batch_at(self.train_set, split_idx)[0]
        path = save_pairs(samples.cpu(), train_images.float().cpu(), self.last["grid_ratio"].cpu(),
                          Path(out_dir) / f"memorization_{tag}.png")
        return {"memorization_grid": str(path)}


# --- mode coverage ---------------------------------------------------------------------------------
@register_metric("modes")
class ModeScore(Score):
    """Modes of 2-D mixtures (VEEGAN / PacGAN protocol) or, for labeled images with known modes
    (stacked digits, digits, shapes), the dataset classifier's predicted modes, with the share of
    confidently classified samples and the modes among them, beside what real held-out images score
    through the same classifier at the same count (``*_real``, cached)."""

    name = "modes"

    def __init__(self, ctx: SuiteContext) -> None:
        spec, s = ctx.spec, ctx.settings.modes
        self.settings = s
        self.real: dict[str, float] = {}
        if spec.kind == "toy2d" and spec.mode_centers is not None:
            centers = torch.tensor(spec.mode_centers, dtype=torch.float64)
            self.classifier = None
            count = s.count(ctx.settings.num_samples, len(centers))
            self.metric = ModeCoverage(len(centers), centers, spec.mode_std, s.std_threshold, count)
        elif spec.kind == "image" and spec.labeled and spec.num_modes:
            self.classifier = ctx.extractor("classifier")
            if self.classifier.num_logits != spec.num_modes:
                raise NotApplicable(f"the classifier predicts {self.classifier.num_logits} classes, the data "
                                    f"has {spec.num_modes} modes")
            # one label per channel (stacked digits) or one per image
            self.labels = spec.channels if self.classifier.per_channel else 1
            self.num_classes = spec.num_classes
            count = s.count(ctx.settings.num_samples, spec.num_modes)
            self.metric = ModeCoverage(spec.num_modes, max_samples=count, confidence=s.confidence)
            self.real = self._real_reference(ctx, count)
        else:
            raise NotApplicable("the dataset has no known modes (2-D mixtures and labeled images with "
                                "num_modes only)")
        self.num_generated = count
        self.samples_needed = count if count > ctx.settings.num_samples else None
        self.metric = self.metric.to(ctx.device)
        self.num_modes = self.metric.num_modes

    def _real_reference(self, ctx: SuiteContext, count: int) -> dict[str, float]:
        """:func:`real_mode_scores` of ``count`` images drawn from the held-out split (the training
        split when there is none), cached by data, classifier, count, threshold and seed."""
        dm, s = ctx.datamodule, self.settings
        self.real_split = "heldout" if len(split_dataset(dm, "heldout")) > 0 else "train"
        self.real_seed = ctx.settings.reference.subset_seed
        fields = {"kind": "modes_real", "data": dm.name, "fingerprint": dm.fingerprint(),
                  "split": self.real_split, "classifier": self.classifier.weights_sha256(),
                  "num_samples": count, "confidence": s.confidence, "seed": self.real_seed}

        def compute() -> dict[str, float]:
            images = dm.tensors(self.real_split)[0]
            classify = lambda x: self.classifier(x.to(ctx.device))["logits"]  # noqa: E731
            return real_mode_scores(images, classify, count, self.num_classes, self.labels, s.confidence,
                                    self.real_seed, ctx.settings.batch_size)

        return dict(cached(ctx.settings.cache_path, "modes_real", dm.name, fields, compute))

    def update(self, batch: EvalBatch) -> None:
        if self.classifier is None:
            self.metric.update(batch.samples, batch.index)
        else:
            logits = batch.features["classifier"]["logits"]
            self.metric.update(logits.argmax(1), batch.index,
                               marginal_confidence(logits, self.num_classes, self.labels))

    def compute(self) -> dict[str, float]:
        out = self.metric.compute()
        self.num_generated = out.pop("num_generated")
        self.histogram = {"hist": self.metric.hist.tolist()}
        if self.classifier is not None:
            self.histogram["confident_hist"] = self.metric.confident_hist.tolist()
        return {**out, **self.real}

    def artifacts(self, out_dir: Path, tag: str) -> dict[str, str]:
        """``modes_<tag>.json``: the samples per mode (``hist``: the high-quality ones for 2-D data;
        ``confident_hist``: the confidently classified ones for images), mode i numbered as the
        data's labels (stacked digits: 100 r + 10 g + b)."""
        path = Path(out_dir) / f"modes_{tag}.json"
        atomic_write_json(path, {"num_modes": self.num_modes, "num_generated": int(self.num_generated),
                                 **self.histogram})
        return {"mode_histogram": str(path)}

    def protocol(self) -> dict[str, Any]:
        p = {"num_modes": self.num_modes, "num_generated": int(self.num_generated)}
        if self.classifier is None:
            p["high_quality_within_std"] = self.settings.std_threshold
        else:
            info = self.classifier.describe()
            p["mode_classifier"] = {k: info[k] for k in ("name", "version", "weights_sha256")}
            p["confidence"] = self.settings.confidence
            p["real_reference"] = {"split": self.real_split, "num_samples": int(self.num_generated),
                                   "seed": self.real_seed}
        return p


# --- Frechet Wavelet Distance --------------------------------------------------------------------
@register_metric("fwd")
class FWDScore(Score):
    """The Frechet Wavelet Distance of the samples' pixels (:mod:`gen_bench.metrics.fwd`): no
    extractor, so it reads the same on every image dataset; video: per frame."""

    name = "fwd"
    bounds = {"fwd": (0.0, None)}

    def __init__(self, ctx: SuiteContext) -> None:
        if ctx.spec.kind == "toy2d":
            raise NotApplicable("FWD is a distance between images")
        c, h, w = ctx.spec.shape[0], ctx.spec.shape[-2], ctx.spec.shape[-1]
        self.level = ctx.settings.fwd.level or auto_level(min(h, w))
        self.packets, self.dim = 4**self.level, c * (h >> self.level) * (w >> self.level)
        self.distance = fwd_from_stats
        ref, dm = ctx.settings.reference, ctx.datamodule
        split = split_dataset(dm, ref.split)
        indices = subset_indices(len(split), ref.num_samples, ref.subset_seed)
        fields = {"kind": "fwd", "data": dm.name, "fingerprint": dm.fingerprint(), "split": ref.split,
                  "num_samples": len(split) if indices is None else len(indices),
                  "subset_seed": None if indices is None else ref.subset_seed, "level": self.level,
                  "wavelet": "haar"}

        def reference_stats() -> dict[str, Tensor]:
            stats = PacketStats(self.packets, self.dim, self.level).to(ctx.device)
            for x in iter_split(dm, ref.split, indices, ctx.settings.batch_size):
                stats.update(frames(x).to(ctx.device))
            return {k: v.cpu() for k, v in stats.compute().items()}

        self.real = cached(ctx.settings.cache_path, "fwd", dm.name, fields, reference_stats)
        self.num_reference = int(self.real["n"])
        self.metric = PacketStats(self.packets, self.dim, self.level).to(ctx.device)

    def update(self, batch: EvalBatch) -> None:
        self.metric.update(batch.samples)

    def compute(self) -> dict[str, float]:
        fake = self.metric.compute()
        real = {k: v.to(fake["sum"].device) for k, v in self.real.items()}
        return {"fwd": float(self.distance(real, fake))}

    def protocol(self) -> dict[str, Any]:
        return {"wavelet": "haar", "level": self.level, "packets": self.packets, "packet_dim": self.dim,
                "num_reference": self.num_reference}
