"""Scores of image-to-image models (a paired task: ``task=superres`` / ``inpaint``): each output against
its own target and input, beside the distribution scores every model gets (FID of the outputs against
the real images is ``fid``).

An evaluation of an image-to-image model draws every batch as (input, output, target): inputs made
from held-out images (:meth:`~gen_bench.models.base.GenerativeModule.draw_inputs`), translated by the
model, the same outputs every other metric scores (:attr:`EvalBatch.inputs`, :attr:`EvalBatch.targets`).

* ``psnr``: peak signal-to-noise ratio of each output against its target (data range 1), mean over
  the images, by torchmetrics (``peak_signal_noise_ratio`` per image).
* ``ssim``: structural similarity (torchmetrics, Gaussian window 11, sigma 1.5), mean over the images.
* ``consistency``: how far the output strays from what the input fixes, mean squared error per value:
  super-resolution, the output downsampled with the task's filter against the low-resolution input
  (SR3's consistency); inpainting, the known region against the input's (0 for gen-bench's models,
  which paste it back). Lower is better.
* ``sharpness``: the outputs' spectral energy above a cutoff frequency over the targets' (sums over
  the images; mean removed per channel). 1: as much fine detail as the real images; a blurry average
  (L2 regression) scores well below 1; above 1: more high-frequency energy than real (noise,
  artefacts). The cutoff defaults to what the input cannot carry (super-resolution: its Nyquist
  frequency, 0.5 / factor cycles per pixel; inpainting: 0.25).
* ``diversity``: the per-pixel standard deviation over ``eval.paired.diversity_samples`` outputs of one
  input, averaged over pixels and ``eval.paired.diversity_inputs`` inputs: 0 for a deterministic model
  (regression, a GAN without noise input), above 0 for a stochastic one (diffusion). It draws its own
  outputs (inputs and noise from ``eval.paired.seed``) with the evaluation's sampler.

They apply only when the evaluator scores an image-to-image model (:attr:`SuiteContext.model`); samples
without their model (``gen-bench eval samples=...``) skip them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torchmetrics.aggregation import MeanMetric, SumMetric
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from gen_bench.metrics.suite import EvalBatch, NotApplicable, Score, SuiteContext, register_metric

SSIM_KERNEL, SSIM_SIGMA = 11, 1.5  # Wang et al. 2004's Gaussian window (torchmetrics' default)
TARGETS = "the held-out images the inputs were made from (drawn uniformly with replacement per batch)"


def high_frequency_energy(x: Tensor, cutoff: float) -> Tensor:
    """(N,) spectral energy of (N, C, H, W) images at radial spatial frequencies above ``cutoff``
    (cycles per pixel; Nyquist is 0.5), each channel's mean removed first: sum of |FFT|^2, float64."""
    x = x.double()
    x = x - x.mean((-2, -1), keepdim=True)
    power = torch.fft.fft2(x).abs().square()  # (N, C, H, W)
    fy = torch.fft.fftfreq(x.shape[-2], device=x.device, dtype=torch.float64)
    fx = torch.fft.fftfreq(x.shape[-1], device=x.device, dtype=torch.float64)
    high = (fy[:, None].square() + fx[None, :].square()).sqrt() > cutoff  # (H, W)
    return (power * high).sum((1, 2, 3))


def _model(ctx: SuiteContext, metric: str) -> Any:
    model = ctx.model
    if model is None:
        raise NotApplicable(f"{metric} compares an image-to-image model's outputs with their targets; these "
                            "samples come without their model")
    if not model.image_to_image:
        raise NotApplicable(f"{type(model).__name__} is not an image-to-image model (task=superres | "
                            "inpaint)")
    return model


def _float64(metric):
    return metric.set_dtype(torch.float64)


class _PairedScore(Score):
    """A score of (output, target, input) batches: one float64 mean over images (DDP: summed states)."""

    def __init__(self, ctx: SuiteContext) -> None:
        self.model = _model(ctx, self.name)
        self.task = self.model.task
        self.metric = _float64(MeanMetric()).to(ctx.device)

    def values(self, batch: EvalBatch) -> tuple[Tensor, Tensor | float]:
        """(N,) per-image values of the batch and their weights."""
        raise NotImplementedError

    def update(self, batch: EvalBatch) -> None:
        if batch.targets is None or batch.samples.shape[0] == 0:
            return  # a process without a batch: the state keeps its shape
        values, weight = self.values(batch)
        self.metric.update(values.double(), weight)

    def compute(self) -> dict[str, float]:
        return {self.name: float(self.metric.compute())}

    def protocol(self) -> dict[str, Any]:
        return {"task": self.task.describe(), "targets": TARGETS}


@register_metric("psnr")
class PSNRScore(_PairedScore):
    """Mean PSNR (dB) of outputs against their targets, data range 1."""

    name = "psnr"

    def values(self, batch: EvalBatch) -> tuple[Tensor, float]:
        psnr = peak_signal_noise_ratio(batch.samples, batch.targets.to(batch.samples), data_range=1.0,
                                       dim=(1, 2, 3), reduction="none")
        return psnr, 1.0

    def protocol(self) -> dict[str, Any]:
        return {**super().protocol(), "data_range": 1.0, "reduction": "mean of per-image PSNR"}


@register_metric("ssim")
class SSIMScore(_PairedScore):
    """Mean SSIM of outputs against their targets (Gaussian window 11, sigma 1.5, data range 1)."""

    name = "ssim"
    bounds = {"ssim": (-1.0, 1.0)}

    def __init__(self, ctx: SuiteContext) -> None:
        super().__init__(ctx)
        if min(ctx.spec.shape[-2:]) < SSIM_KERNEL:
            raise NotApplicable(f"SSIM's {SSIM_KERNEL}x{SSIM_KERNEL} window needs images of at least that "
                                f"size, these are {ctx.spec.shape[-2]}x{ctx.spec.shape[-1]}")

    def values(self, batch: EvalBatch) -> tuple[Tensor, float]:
        ssim = structural_similarity_index_measure(batch.samples, batch.targets.to(batch.samples),
                                                   data_range=1.0, kernel_size=SSIM_KERNEL, sigma=SSIM_SIGMA,
                                                   reduction="none")
        return ssim, 1.0

    def protocol(self) -> dict[str, Any]:
        window = f"gaussian {SSIM_KERNEL}, sigma {SSIM_SIGMA}"
        return {**super().protocol(), "data_range": 1.0, "window": window}


@register_metric("consistency")
class ConsistencyScore(_PairedScore):
    """Mean squared error between what the task measures of an output and the input (see the module)."""

    name = "consistency"
    bounds = {"consistency": (0.0, None)}

    def values(self, batch: EvalBatch) -> tuple[Tensor, Tensor]:
        squared, count = self.task.consistency(batch.samples, batch.inputs.to(batch.samples))
        return squared / count.clamp_min(1), count

    def protocol(self) -> dict[str, Any]:
        what = ("output downsampled with the task's filter vs the input" if self.task.name == "superres"
                else "output vs input on the known pixels")
        return {**super().protocol(), "measure": f"mean squared error per value, {what}"}


@register_metric("sharpness")
class SharpnessScore(_PairedScore):
    """The outputs' high-frequency spectral energy over their targets' (see the module)."""

    name = "sharpness"
    bounds = {"sharpness": (0.0, None)}

    def __init__(self, ctx: SuiteContext) -> None:
        super().__init__(ctx)
        given = ctx.settings.paired.sharpness_cutoff
        self.cutoff = float(given) if given is not None else self.task.default_cutoff()
        self.metric = _float64(SumMetric()).to(ctx.device)  # the outputs' energy
        self.real = _float64(SumMetric()).to(ctx.device)  # the targets'

    def update(self, batch: EvalBatch) -> None:
        if batch.targets is None or batch.samples.shape[0] == 0:
            return
        self.metric.update(high_frequency_energy(batch.samples, self.cutoff))
        self.real.update(high_frequency_energy(batch.targets.to(batch.samples), self.cutoff))

    def compute(self) -> dict[str, float]:
        real = float(self.real.compute())
        return {"sharpness": float(self.metric.compute()) / real if real > 0 else math.nan}

    def protocol(self) -> dict[str, Any]:
        return {**super().protocol(), "cutoff_cycles_per_pixel": self.cutoff,
                "measure": "sum over images of |FFT|^2 above the cutoff (channel means removed), outputs / "
                           "targets"}

    def reset(self) -> None:
        self.metric.reset()
        self.real.reset()


@register_metric("diversity")
class DiversityScore(Score):
    """Per-pixel standard deviation over several outputs of one input (see the module)."""

    name = "diversity"
    bounds = {"diversity": (0.0, None)}

    def __init__(self, ctx: SuiteContext) -> None:
        self.model = _model(ctx, self.name)
        s = ctx.settings.paired
        self.inputs, self.samples, self.seed = s.diversity_inputs, s.diversity_samples, s.seed
        self.sampler = ctx.sampler
        self.metric = _float64(MeanMetric()).to(ctx.device)

    def update(self, batch: EvalBatch) -> None:
        """Nothing: the score draws its own outputs."""

    def compute(self) -> dict[str, float]:
        """Every process computes the same number (same seeds), so nothing is synced."""
        x_in, _ = self.model.draw_inputs(self.inputs, torch.Generator().manual_seed(self.seed))
        kw = {"sampler": self.sampler} if self.sampler is not None else {}
        outs = torch.stack([self.model.translate(x_in, torch.Generator().manual_seed(self.seed + 1 + k), **kw)
                            for k in range(self.samples)])  # (K, M, C, H, W)
        return {"diversity": float(outs.double().std(0, correction=1).mean())}

    def protocol(self) -> dict[str, Any]:
        return {"task": self.model.task.describe(), "inputs": self.inputs, "samples_per_input": self.samples,
                "seed": self.seed, "measure": "std over the samples of one input (correction 1), mean over "
                                              "pixels, channels and inputs"}
