"""What DDPM and flow matching share: one network trained by regression on noised data, sampled by
running a sampler chosen at sampling time from noise to data.

The subclass names its network (:attr:`sampling_network_name`, averaged by the EMA callback), binds
a sampler factory (:meth:`bind_sampler`, whose result has a ``label``) and runs it from one batch
of noise (:meth:`integrate`); this class holds the rest: 2-D data scaled to unit variance, the
optimizer with its linear warm-up, gradient clipping, optional image flips, and ``sample`` cut into
batches.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from gen_bench.data.spec import DataSpec
from gen_bench.ema import EMASampling
from gen_bench.models.base import GenerativeModule
from gen_bench.models.gan import OptimizerFactory


def default_toy_scale(spec: DataSpec) -> float:
    """RMS distance of the mode centres from the origin per coordinate (1 when the spec has none)."""
    if not spec.mode_centers:
        return 1.0
    centers = torch.tensor(spec.mode_centers, dtype=torch.float64)
    return float(centers.pow(2).mean().add((spec.mode_std or 0.0) ** 2).sqrt()) or 1.0


def random_hflip(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Each image of (B, C, H, W) ``x`` mirrored left-right with probability 1/2.

    The coin flips come from ``generator`` (else the global RNG, like the diffusion noise of a
    training step, so a resumed run draws the same flips).
    """
    device = generator.device if generator is not None else x.device
    flip = torch.rand(x.shape[0], generator=generator, device=device).to(x.device) < 0.5
    return torch.where(flip.view(-1, *[1] * (x.ndim - 1)), x.flip(-1), x)


class IterativeModule(EMASampling, GenerativeModule):
    """Base of models that sample with a many-step sampler chosen at sampling time.

    2-D toy data are divided by ``toy_scale`` on the way in (and multiplied on the way out), so the
    data have about unit variance, as the N(0, I) noise the samplers start from assumes: by default
    the RMS of the dataset's mode centres (0.71 for ring8, 2.83 for grid25, whose modes reach |x| = 4).

    Args:
        spec: The dataset's spec.
        optimizer: Factory ``params -> Optimizer`` for the sampling network (Hydra ``_partial_``).
        sampler: Factory of the model's own sampler, used by :meth:`sample` unless it is given one.
        warmup_steps: Linear learning-rate warm-up from 0 over this many steps.
        grad_clip: Max gradient norm (``None``: no clipping); a ``trainer.gradient_clip_val`` wins.
        toy_scale: Divisor of 2-D toy data in model space; ``None``: :func:`default_toy_scale`.
        sample_batch_size: Largest batch the network sees while sampling.
        progress: Show a progress bar while sampling.
        hflip: Flip each training image left-right with probability 1/2 (Ho et al.'s CIFAR-10
            training); images only.
    """

    def __init__(self, spec: DataSpec, optimizer: OptimizerFactory, sampler: Any, warmup_steps: int = 0,
                 grad_clip: float | None = 1.0, toy_scale: float | None = None, sample_batch_size: int = 1024,
                 progress: bool = True, hflip: bool = False) -> None:
        super().__init__(spec)
        if hflip and spec.kind != "image":
            raise ValueError(f"model.hflip flips images; this is {spec.kind} data: set model.hflip=false")
        self.optimizer = optimizer
        self.sampler = sampler
        self.warmup_steps = warmup_steps
        self.grad_clip = grad_clip
        self.toy_scale = (toy_scale or default_toy_scale(spec)) if spec.kind == "toy2d" else 1.0
        self.sample_batch_size = sample_batch_size
        self.progress = progress
        self.hflip = hflip

    # --- data space <-> model space ---------------------------------------------------------
    def to_model_space(self, x: Tensor) -> Tensor:
        return x / self.toy_scale if self.spec.kind == "toy2d" else super().to_model_space(x)

    def to_data_space(self, x: Tensor) -> Tensor:
        return x * self.toy_scale if self.spec.kind == "toy2d" else super().to_data_space(x)

    # --- training -----------------------------------------------------------------------------
    def training_input(self, batch: tuple[Tensor, ...]) -> Tensor:
        """The batch's samples in model space, flipped at random when ``hflip`` is on."""
        x = random_hflip(batch[0]) if self.hflip else batch[0]
        return self.to_model_space(x)

    def configure_optimizers(self):
        opt = self.optimizer(self.sampling_network().parameters())
        if self.warmup_steps <= 0:
            return opt
        warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / self.warmup_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": warmup, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        clip = gradient_clip_val if gradient_clip_val is not None else self.grad_clip  # the trainer's wins
        if clip is not None:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")

    # --- sampling -----------------------------------------------------------------------------
    def bind_sampler(self, sampler: Any = None) -> Any:
        """The sampler ``sampler`` (a factory; ``None``: the model's own) builds for this model."""
        raise NotImplementedError

    def integrate(self, sampler: Any, noise: Tensor, generator: torch.Generator | None) -> Tensor:
        """Run a bound ``sampler`` from ``noise`` (B, ...) to samples in model space."""
        raise NotImplementedError

    def sampler_label(self, sampler: Any = None) -> str:
        return self.bind_sampler(sampler).label

    def sample(self, n: int, generator: torch.Generator | None = None, *, labels: Tensor | None = None,
               sampler: Any = None) -> Tensor:
        """Draw ``n`` samples with the model's sampler (or ``sampler``), using EMA weights if any.

        All noise, the starting noise and any noise along the way, comes from ``generator`` when given.

        Returns:
            (n, C, H, W) images in [0, 1] or (n, 2) points in data units.
        """
        self.check_labels(labels, n)
        bound = self.bind_sampler(sampler)
        out = []
        with self.sampling_mode():
            for i in range(math.ceil(n / self.sample_batch_size)):
                m = min(self.sample_batch_size, n - i * self.sample_batch_size)
                noise = self.randn(m, *self.spec.shape, generator=generator)
                out.append(self.to_data_space(self.integrate(bound, noise, generator)))
        return torch.cat(out)
