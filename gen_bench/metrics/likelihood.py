"""Bits per dimension (metric ``bpd``): the negative log-likelihood of real images under the model, in
bits per sub-pixel, the native score of likelihood models (PixelCNN), recorded beside FID.

Unlike the other metrics it reads the model, not its samples: the evaluator hands the model it
scores to the builder (``SuiteContext.model``), and models declare a likelihood through the model
contract (``likelihood_protocol`` / ``bits_per_dim``); the others, and samples scored without their
model (``gen-bench eval samples=...``), skip it with the reason. The real images are the held-out
split by default (``eval.bpd``); under DDP each process scores its share of the batches and the sums
are reduced.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from gen_bench.metrics.reference import iter_split, split_dataset, subset_indices
from gen_bench.metrics.suite import EvalBatch, NotApplicable, Score, SuiteContext, register_metric


class MeanBits(Metric):
    """The mean of per-image bits per dimension, as a float64 sum and count (DDP: summed)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, bits: Tensor) -> None:
        self.total += bits.double().sum()
        self.count += bits.numel()

    def compute(self) -> Tensor:
        return self.total / self.count


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


@register_metric("bpd")
class BitsPerDimScore(Score):
    """Mean bits per dimension of ``eval.bpd.split`` (held-out) images under the model."""

    name = "bpd"
    bounds = {"bpd": (0.0, None)}

    def __init__(self, ctx: SuiteContext) -> None:
        model = ctx.model
        if model is None:
            raise NotApplicable("bits per dimension score a model's likelihood; these samples come without "
                                "their model")
        s = ctx.settings.bpd
        model.bound_terms = s.bound_terms  # what a bound (DDPM's) evaluates, recorded in its protocol
        likelihood = model.likelihood_protocol()
        if likelihood is None:
            raise NotApplicable(f"{type(model).__name__} has no likelihood (likelihood models: pixelcnn, and "
                                "ddpm on images: a bound)")
        dm = ctx.datamodule
        n = len(split_dataset(dm, s.split))
        if n == 0:
            raise NotApplicable(f"the {s.split} split is empty: set data.heldout_fraction > 0 (or "
                                "eval.bpd.split=train)")
        self.model, self.datamodule, self.split = model, dm, s.split
        self.indices = subset_indices(n, s.num_samples, s.subset_seed)
        self.batch_size = ctx.settings.batch_size
        self.likelihood = dict(likelihood)
        self.bound_terms = s.bound_terms
        self.fields = {"split": s.split, "num_images": n if self.indices is None else len(self.indices),
                       "subset_seed": None if self.indices is None else s.subset_seed}
        self.metric = MeanBits().to(ctx.device)

    def update(self, batch: EvalBatch) -> None:
        """Nothing: the score reads the model and the real images, not the samples."""

    def compute(self) -> dict[str, float]:
        self.metric.reset()
        self.model.bound_terms = self.bound_terms  # read by a bound (DDPM's); exact likelihoods ignore it
        rank, world = _rank_world()
        self.metric.update(torch.zeros(0))  # a process without a batch still has a state to sync
        batches = iter_split(self.datamodule, self.split, self.indices, self.batch_size)
        for k, x in enumerate(batches):
            if k % world == rank:  # every process its share, reduced by the metric's sync
                self.metric.update(self.model.bits_per_dim(x).to(self.metric.device))
        return {"bpd": float(self.metric.compute())}

    def protocol(self) -> dict[str, Any]:
        return {**self.fields, "likelihood": self.likelihood,
                "unit": "bits per dimension: -log2 p(x) / (C * H * W), mean over the images"}
