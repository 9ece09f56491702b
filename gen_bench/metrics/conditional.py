"""Scores of class-conditional generation: does a sample show the class it was asked for, and how
good is each class on its own.

An evaluation asks a class-conditional model for every class equally often: sample i of a draw gets
class ``i mod K`` (:func:`requested_labels`), so the pooled samples (scored by the unconditional
metrics as usual) hold N / K samples of each class.

* ``class_accuracy``: the share of samples that the dataset's offline classifier (the ``classifier``
  extractor, :mod:`gen_bench.metrics.classifier`; for 2-D mixtures the nearest mode centre) assigns
  to the requested class, and ``class_accuracy_worst``, that of the worst class. It is the accuracy
  of a classifier trained on real data applied to generated samples (the "classification accuracy"
  of the guidance papers), not Ravuri and Vinyals' Classification Accuracy Score (a classifier
  trained on samples, tested on real data). ``class_accuracy_real``: the classifier's accuracy on
  the held-out real data, the scale of the score (1 for 2-D mixtures, whose modes are far apart).
* ``intra_fid`` (Miyato and Koyama 2018): the FID between the samples of class k and the real
  samples of class k (the reference split), in the main extractor's feature space; its mean over the
  classes, and ``intra_fid_worst``, the largest. With N / K samples per class it is biased upwards
  more than the pooled FID: compare it only at the same ``eval.num_samples``.

Both apply only when the evaluated model is class-conditional (:attr:`SuiteContext.conditional`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.utilities import dim_zero_cat

from gen_bench.metrics.cache import cached
from gen_bench.metrics.fid import FeatureStats, frechet_distance, mean_cov
from gen_bench.metrics.reference import frames
from gen_bench.metrics.suite import EvalBatch, NotApplicable, Score, SuiteContext, register_metric

LABELS_PROTOCOL = "class i mod K for sample i of a draw (every class equally often)"


def requested_labels(index: Tensor, num_classes: int) -> Tensor:
    """The classes an evaluation asks a conditional model for: ``index mod K`` for sample indices
    ``index`` of a draw."""
    return index.long() % num_classes


def _classes(ctx: SuiteContext) -> int:
    spec = ctx.spec
    if not ctx.conditional:
        raise NotApplicable("the model is not class-conditional")
    if spec.num_classes is None or spec.label_shape != ():
        raise NotApplicable("the data has no single class label per sample")
    return int(spec.num_classes)


def nearest_centre(points: Tensor, centres: Tensor) -> Tensor:
    """(N,) index of the nearest of (K, 2) ``centres`` for each of (N, 2) ``points``."""
    return torch.cdist(points.double(), centres.double().to(points.device)).argmin(dim=1)


@register_metric("class_accuracy")
class ClassAccuracyScore(Score):
    """The share of samples classified as the class they were asked for (see the module)."""

    name = "class_accuracy"
    bounds = {"class_accuracy": (0.0, 1.0), "class_accuracy_worst": (0.0, 1.0)}

    def __init__(self, ctx: SuiteContext) -> None:
        k = _classes(ctx)
        spec = ctx.spec
        if spec.kind == "toy2d":
            if not spec.mode_centers or len(spec.mode_centers) != k:
                raise NotApplicable("2-D data without one known mode centre per class")
            self.centres = torch.tensor(spec.mode_centers, dtype=torch.float64)
            self.classifier = None
            self.classifier_info: dict[str, Any] = {"name": "nearest mode centre"}
            self.real_accuracy = 1.0 if spec.mode_std is None else self._mixture_accuracy(spec.mode_std)
        elif spec.kind == "image":
            self.classifier = ctx.extractor("classifier")
            if self.classifier.num_logits != k:
                raise NotApplicable(f"the classifier predicts {self.classifier.num_logits} classes, the data "
                                    f"has {k}")
            info = self.classifier.describe()
            self.classifier_info = {key: info.get(key) for key in ("name", "version", "weights_sha256")}
            self.real_accuracy = info.get("classifier_test_accuracy", math.nan)
        else:
            raise NotApplicable(f"no class predictor for {spec.kind} data")
        self.metric = MulticlassAccuracy(k, average="micro").to(ctx.device)
        self.per_class = MulticlassAccuracy(k, average="none").to(ctx.device)

    def _mixture_accuracy(self, std: float) -> float:
        """The nearest-centre accuracy of the mixture's own samples: 1 minus the (Monte Carlo) share
        of a component's samples nearer to another centre."""
        g = torch.Generator().manual_seed(0)
        k = self.centres.shape[0]
        labels = torch.arange(k).repeat_interleave(2000)
        points = self.centres[labels] + std * torch.randn(len(labels), 2, generator=g, dtype=torch.float64)
        return float((nearest_centre(points, self.centres) == labels).double().mean())

    def update(self, batch: EvalBatch) -> None:
        if self.classifier is None:
            predicted = nearest_centre(batch.samples, self.centres)
        else:
            predicted = batch.features["classifier"]["logits"].argmax(1)
        self.metric.update(predicted, batch.labels)
        self.per_class.update(predicted, batch.labels)

    def compute(self) -> dict[str, float]:
        return {"class_accuracy": float(self.metric.compute()),
                "class_accuracy_worst": float(self.per_class.compute().min()),
                "class_accuracy_real": float(self.real_accuracy)}

    def protocol(self) -> dict[str, Any]:
        return {"class_predictor": self.classifier_info, "labels": LABELS_PROTOCOL}

    def reset(self) -> None:
        self.metric.reset()
        self.per_class.reset()


class LabelledFeatures(Metric):
    """Generated features and their requested labels, concatenated across processes."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("features", [], dist_reduce_fx="cat")
        self.add_state("labels", [], dist_reduce_fx="cat")

    def update(self, features: Tensor, labels: Tensor) -> None:
        self.features.append(features.float())
        self.labels.append(labels.long())

    def compute(self) -> tuple[Tensor, Tensor]:
        return dim_zero_cat(self.features), dim_zero_cat(self.labels)


def per_class_stats(datamodule, extractor, split: str, num_classes: int,
                    batch_size: int) -> dict[str, Tensor]:
    """Float64 feature sums (K, d), outer-product sums (K, d, d) and counts (K,) of each class of a
    split, in ``extractor``'s space."""
    d = extractor.feature_dim
    device = extractor.device
    stats = [FeatureStats.zeros(d) for _ in range(num_classes)]
    for x, y in datamodule.reference_loader(split, batch_size=batch_size):
        f = extractor(frames(x).to(device))["pool"].cpu()
        for k in y.unique().tolist():
            stats[k].add(f[y == k])
    return {"sum": torch.stack([s.sum for s in stats]), "cov_sum": torch.stack([s.cov_sum for s in stats]),
            "n": torch.tensor([s.n for s in stats])}


@register_metric("intra_fid")
class IntraFIDScore(Score):
    """FID per class against the real samples of that class; mean and worst over classes."""

    name = "intra_fid"
    bounds = {"intra_fid": (0.0, None), "intra_fid_worst": (0.0, None)}

    def __init__(self, ctx: SuiteContext) -> None:
        self.num_classes = _classes(ctx)
        self.key = ctx.main.name
        dm, ref = ctx.datamodule, ctx.settings.reference
        ext = ctx.reference.fields["extractor"]
        fields = {"kind": "intra_fid", "data": dm.name, "fingerprint": dm.fingerprint(), "split": ref.split,
                  "extractor": ext, "num_classes": self.num_classes}
        real = cached(ctx.settings.cache_path, "intra_fid", f"{dm.name}-{ref.split}-{self.key}", fields,
                      lambda: per_class_stats(dm, ctx.main, ref.split, self.num_classes,
                                              ctx.settings.batch_size))
        if int(real["n"].min()) < 2:
            raise NotApplicable(f"a class has fewer than 2 real samples in the {ref.split} split")
        self.real = [mean_cov(real["sum"][k], real["cov_sum"][k], real["n"][k])
                     for k in range(self.num_classes)]
        self.num_reference = [int(n) for n in real["n"]]
        self.split = ref.split
        self.metric = LabelledFeatures().to(ctx.device)

    def update(self, batch: EvalBatch) -> None:
        self.metric.update(batch.features[self.key]["pool"], batch.labels)

    def compute(self) -> dict[str, float]:
        features, labels = self.metric.compute()
        values = []
        for k, (mu, cov) in enumerate(self.real):
            mine = features[labels == k]
            if mine.shape[0] < 2:
                values.append(math.nan)
                continue
            values.append(float(frechet_distance(*FeatureStats.of(mine).mean_cov(), mu.to(mine.device),
                                                 cov.to(mine.device))))
        worst = math.nan if any(math.isnan(v) for v in values) else max(values)
        return {"intra_fid": sum(values) / len(values), "intra_fid_worst": worst}

    def protocol(self) -> dict[str, Any]:
        return {"reference_split": self.split, "num_reference_per_class": self.num_reference,
                "labels": LABELS_PROTOCOL}
