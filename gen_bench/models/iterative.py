"""What DDPM and flow matching share: one network trained by regression on noised data, sampled by
running a sampler chosen at sampling time from noise to data.

The subclass names its network (:attr:`sampling_network_name`, averaged by the EMA callback), binds
a sampler factory (:meth:`bind_sampler`, whose result has a ``label``) and runs it from one batch
of noise (:meth:`integrate`); this class holds the rest: 2-D data scaled to unit variance, the
optimizer with its linear warm-up, gradient clipping, optional image flips, ``sample`` cut into
batches, and class conditioning with classifier-free guidance (Ho and Salimans 2022).

Classifier-free guidance: the network takes a class label, or the "no class" label K, which
replaces the true label with probability ``p_uncond`` in training, so one network learns both the
conditional and the unconditional prediction. At sampling time, with guidance scale w,

    out = (1 + w) out(x, t, y) - w out(x, t, no class) = out_c + w (out_c - out_u)

(eq. 6 of the paper, for eps; the same extrapolation of the velocity for flow matching): w = 0 is
the conditional model's own prediction, w > 0 moves away from the unconditional one. Every sampler
calls the guided prediction as it would the network, so w is chosen at sampling time, with any
sampler, without retraining.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from gen_bench.data.spec import DataSpec
from gen_bench.ema import EMASampling
from gen_bench.models.base import GenerativeModule
from gen_bench.models.gan import OptimizerFactory
from gen_bench.models.nets.embedding import conditional_classes


def default_toy_scale(spec: DataSpec) -> float:
    """RMS distance of the mode centres from the origin per coordinate (1 when the spec has none)."""
    if not spec.mode_centers:
        return 1.0
    centers = torch.tensor(spec.mode_centers, dtype=torch.float64)
    return float(centers.pow(2).mean().add((spec.mode_std or 0.0) ** 2).sqrt()) or 1.0


#: ``net(x, t, y)``: the network's output at (x_t, t) for labels y (``None``: unconditional).
LabelledNet = Callable[[Tensor, Tensor, Tensor | None], Tensor]


def drop_labels(labels: Tensor, p: float, null_index: int,
                generator: torch.Generator | None = None) -> Tensor:
    """``labels`` with each replaced by ``null_index`` ("no class") with probability ``p``.

    The coin flips come from ``generator`` (else the global RNG, like the rest of a training step).
    """
    if p <= 0:
        return labels
    device = generator.device if generator is not None else labels.device
    drop = torch.rand(labels.shape[0], generator=generator, device=device).to(labels.device) < p
    return torch.where(drop, torch.full_like(labels, null_index), labels)


def null_labels_like(labels: Tensor, null_index: int) -> Tensor:
    """The "no class" input shaped like ``labels``: indices (B,), or one-hot weights (B, K + 1) for
    weights over the classes."""
    if not labels.dtype.is_floating_point:
        return torch.full_like(labels, null_index)
    null = torch.zeros(labels.shape[0], null_index + 1, dtype=labels.dtype, device=labels.device)
    null[:, null_index] = 1
    return null


def guided(net: LabelledNet, labels: Tensor, w: float, null_index: int) -> Callable[[Tensor, Tensor], Tensor]:
    """Classifier-free guidance: ``(x, t) -> (1 + w) net(x, t, y) - w net(x, t, no class)``.

    At w = 0 the network runs once, on the labels alone; otherwise once on the conditional and the
    unconditional halves of one doubled batch.

    Args:
        net: The labelled network.
        labels: (B,) class indices or (B, K) weights.
        w: Guidance scale (0: the conditional prediction).
        null_index: The "no class" label, K.
    """
    if w == 0:
        return lambda x, t: net(x, t, labels)
    null = null_labels_like(labels, null_index)
    if labels.dtype.is_floating_point and labels.shape[1] < null.shape[1]:
        labels = torch.nn.functional.pad(labels, (0, null.shape[1] - labels.shape[1]))

    def prediction(x: Tensor, t: Tensor) -> Tensor:
        out = net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null]))
        cond, uncond = out.chunk(2)
        return cond + w * (cond - uncond)

    return prediction


def random_hflip(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Each image of (B, C, H, W) ``x`` mirrored left-right with probability 1/2.

    The coin flips come from ``generator`` (else the global RNG, like the diffusion noise of a
    training step, so a resumed run draws the same flips).
    """
    device = generator.device if generator is not None else x.device
    flip = torch.rand(x.shape[0], generator=generator, device=device).to(x.device) < 0.5
    return torch.where(flip.view(-1, *[1] * (x.ndim - 1)), x.flip(-1), x)


class WarmupOptimization:
    """Mixin of a model trained with automatic optimization of its sampling network alone: one optimizer
    (``self.optimizer``, a factory) with a linear learning-rate warm-up over ``self.warmup_steps``, and
    gradient-norm clipping at ``self.grad_clip`` (``None``: none; a ``trainer.gradient_clip_val`` wins).
    Put it before the model's other bases."""

    optimizer: OptimizerFactory
    warmup_steps: int
    grad_clip: float | None

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


class IterativeModule(WarmupOptimization, EMASampling, GenerativeModule):
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
        conditional: Condition on the class labels (the network must be built ``conditional``).
        p_uncond: Probability that a training label is replaced by "no class" (conditional only).
        guidance: Guidance scale w of :meth:`sample` (a knob: changed at sampling time, no retraining);
            0: the conditional prediction, -1: the unconditional one.
    """

    def __init__(self, spec: DataSpec, optimizer: OptimizerFactory, sampler: Any, warmup_steps: int = 0,
                 grad_clip: float | None = 1.0, toy_scale: float | None = None, sample_batch_size: int = 1024,
                 progress: bool = True, hflip: bool = False, conditional: bool = False, p_uncond: float = 0.1,
                 guidance: float = 0.0) -> None:
        super().__init__(spec)
        if hflip and spec.kind != "image":
            raise ValueError(f"model.hflip flips images; this is {spec.kind} data: set model.hflip=false")
        if not 0 <= p_uncond < 1:
            raise ValueError(f"model.p_uncond must be in [0, 1), got {p_uncond}")
        self.is_conditional = conditional
        self.knobs = ("guidance",) if conditional else ()
        self.null_index = conditional_classes(spec, type(self).__name__) if conditional else None
        self.p_uncond = p_uncond
        self.guidance = self.check_knob("guidance", guidance)
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

    def check_knob(self, name: str, value: float | None) -> float | None:
        if name == "guidance":
            if value is None or not math.isfinite(value) or value < -1:
                raise ValueError(f"guidance must be a number >= -1 (0: the conditional prediction, -1: the "
                                 f"unconditional one), got {value}")
            return float(value)
        return super().check_knob(name, value)

    # --- the network, with labels -------------------------------------------------------------
    def network(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """The network's output at (x_t, t), for labels ``y`` when the model is conditional (``None``:
        "no class"), in the network's own time units."""
        net = self.sampling_network()
        return net(x, t) if self.null_index is None else net(x, t, y)

    def prediction(self, labels: Tensor | None,
                   net: LabelledNet | None = None) -> Callable[[Tensor, Tensor], Tensor]:
        """``(x, t) -> output`` for sampling: ``net`` (default :meth:`network`) unconditionally, or
        guided towards ``labels`` with scale :attr:`guidance`."""
        net = net or self.network
        if labels is None:
            return lambda x, t: net(x, t, None)
        return guided(net, labels, self.guidance, self.null_index)

    # --- training -----------------------------------------------------------------------------
    def training_input(self, batch: tuple[Tensor, ...]) -> Tensor:
        """The batch's samples in model space, flipped at random when ``hflip`` is on."""
        x = random_hflip(batch[0]) if self.hflip else batch[0]
        return self.to_model_space(x)

    def training_labels(self, batch: tuple[Tensor, ...]) -> Tensor | None:
        """The batch's labels with "no class" at rate ``p_uncond`` (conditional models), else ``None``."""
        if self.null_index is None:
            return None
        return drop_labels(batch[1].to(self.device), self.p_uncond, self.null_index)

    # --- sampling -----------------------------------------------------------------------------
    def bind_sampler(self, sampler: Any = None) -> Any:
        """The sampler ``sampler`` (a factory; ``None``: the model's own) builds for this model."""
        raise NotImplementedError

    def integrate(self, sampler: Any, noise: Tensor, generator: torch.Generator | None,
                  labels: Tensor | None = None) -> Tensor:
        """Run a bound ``sampler`` from ``noise`` (B, ...) to samples in model space, guided towards
        ``labels`` (B,) or (B, K) for a conditional model."""
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
        labels = self.labels_for(n, labels, generator)
        bound = self.bind_sampler(sampler)
        out = []
        with self.sampling_mode():
            for i in range(math.ceil(n / self.sample_batch_size)):
                lo = i * self.sample_batch_size
                m = min(self.sample_batch_size, n - lo)
                noise = self.sample_latent(m, generator)
                y = labels[lo : lo + m] if labels is not None else None
                out.append(self.to_data_space(self.integrate(bound, noise, generator, y)))
        return torch.cat(out)

    # --- latent walks: the starting noise is the latent, decoded by a deterministic sampler ------
    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, *spec.shape) standard normal noise, the state :meth:`sample` starts from (per batch)."""
        return self.randn(n, *self.spec.shape, generator=generator)

    def decode(self, latents: Tensor, labels: Tensor | None = None, sampler: Any = None) -> Tensor:
        """Noise (n, ...) -> samples by a deterministic sampler (:meth:`deterministic_sampler`), so that
        ``decode(sample_latent(n, g), y, s)`` is ``sample(n, g, labels=y, sampler=s)`` for n up to
        ``sample_batch_size`` and a deterministic ``s``."""
        bound = self.bind_sampler(self.deterministic_sampler(sampler))
        if labels is not None and not self.is_conditional:
            self.check_labels(labels, latents.shape[0])
        with self.sampling_mode():
            y = labels.to(self.device) if labels is not None else None
            return self.to_data_space(self.integrate(bound, latents.to(self.device), None, y))
