"""DDPM (Ho et al. 2020): epsilon-prediction with L_simple; any sampler at sampling time.

The objective holds three separate things: the network (``denoiser(x_t, t) -> eps``), the process
(:class:`~gen_bench.diffusion.GaussianDiffusion`: schedule buffers, ``q_sample``, the loss) and a
sampler factory (ancestral DDPM by default; DDIM or another sampler can be swapped in with
:meth:`DDPM.sample`'s ``sampler`` argument or by assigning ``model.sampler``, with no retraining).

2-D toy data are scaled to about unit variance in model space, and training images may be flipped
(``hflip``): :class:`~gen_bench.models.iterative.IterativeModule`, which also holds class
conditioning with classifier-free guidance (``conditional``, ``p_uncond``, ``guidance``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from gen_bench import keys
from gen_bench.data.spec import DataSpec
from gen_bench.diffusion import (
    DDIMSampler,
    DDPMSampler,
    FlowSampler,
    GaussianDiffusion,
    Sampler,
    SamplerFactory,
    repaint_loop,
    sample_loop,
    sampler_class,
)
from gen_bench.diffusion.likelihood import exact_terms, variational_bound_bits
from gen_bench.models.base import quantise
from gen_bench.models.gan import OptimizerFactory
from gen_bench.models.iterative import IterativeModule, LabelledNet, default_toy_scale, random_hflip

__all__ = ["DDPM", "bind_diffusion_sampler", "default_toy_scale", "random_hflip"]

# model.bpd: the variational bound's settings (Ho et al. 2020 report 3.70-3.75 bits on CIFAR-10 at
# 256 levels, every term)
BPD_DEFAULTS = {"levels": 256, "variance": "beta", "seed": 0}


def bind_diffusion_sampler(factory: SamplerFactory, diffusion: GaussianDiffusion,
                           clip_x0: float | None) -> Sampler:
    """``factory`` (a sampler config, Hydra ``_partial_``) bound to ``diffusion``; a flow-matching
    sampler is refused with the samplers that apply."""
    cls = sampler_class(factory)
    if cls is not None and issubclass(cls, FlowSampler):
        raise ValueError(f"a diffusion model samples with a diffusion sampler (sampler=ddpm | ddim | dpmpp), "
                         f"not the flow sampler {cls.__name__} (that is for model=flow_matching)")
    return factory(diffusion, clip_x0=clip_x0)


class DDPM(IterativeModule):
    """Denoising diffusion probabilistic model.

    Args:
        spec: The dataset's spec.
        denoiser: ``(x_t (B, ...), t (B,) long[, y (B,)]) -> eps (B, ...)`` (or x_0 or v: what
            ``diffusion.prediction`` says); takes class labels ``y`` when the model is ``conditional``.
        diffusion: The Gaussian process (T, schedule, what the denoiser predicts).
        optimizer: Factory ``params -> Optimizer`` (Hydra ``_partial_``).
        sampler: Factory ``(diffusion, clip_x0=...) -> Sampler`` used by :meth:`sample`
            (default: ancestral DDPM).
        warmup_steps: Linear learning-rate warm-up from 0 over this many steps (5000 in Ho et al.).
        grad_clip: Max gradient norm (1.0 in Ho et al.; ``None``: no clipping).
        toy_scale: Divisor of 2-D toy data in model space; ``None``: :func:`default_toy_scale`.
        sample_batch_size: Largest batch the denoiser sees while sampling.
        progress: Show a progress bar while sampling.
        hflip: Flip each training image left-right with probability 1/2 (Ho et al.'s CIFAR-10
            training); images only.
        conditional: Class-conditional with classifier-free guidance (the denoiser built
            ``conditional`` too).
        p_uncond: Rate at which training labels become "no class" (0.1 in Ho and Salimans).
        guidance: Guidance scale w of :meth:`sample` (0: the conditional prediction).
        bpd: How :meth:`bits_per_dim` bounds the likelihood of images (:mod:`gen_bench.diffusion.likelihood`):
            ``levels`` (quantisation per sub-pixel, 256), ``variance`` (of the reverse steps: ``beta`` or
            ``posterior``) and ``seed`` (of the x_t noise and the strata); the number of KL terms is
            :attr:`bound_terms` (``eval.bpd.bound_terms``).
    """

    sampling_network_name = "denoiser"

    def __init__(
        self,
        spec: DataSpec,
        denoiser: nn.Module,
        diffusion: GaussianDiffusion,
        optimizer: OptimizerFactory,
        sampler: SamplerFactory | None = None,
        warmup_steps: int = 0,
        grad_clip: float | None = 1.0,
        toy_scale: float | None = None,
        sample_batch_size: int = 1024,
        progress: bool = True,
        hflip: bool = False,
        conditional: bool = False,
        p_uncond: float = 0.1,
        guidance: float = 0.0,
        bpd: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(spec, optimizer, sampler or DDPMSampler, warmup_steps, grad_clip, toy_scale,
                         sample_batch_size, progress, hflip, conditional, p_uncond, guidance)
        self.denoiser = denoiser
        self.diffusion = diffusion
        self.bpd = {**BPD_DEFAULTS, **(bpd or {})}
        if set(self.bpd) != set(BPD_DEFAULTS):
            raise ValueError(f"model.bpd takes {', '.join(BPD_DEFAULTS)}; got {', '.join(sorted(self.bpd))}")

    # --- training -----------------------------------------------------------------------------
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x0, y = self.training_input(batch), self.training_labels(batch)
        denoiser = self.denoiser if y is None else (lambda x, t: self.denoiser(x, t, y))
        loss = self.diffusion.loss(denoiser, x0)
        self.log(keys.LOSS_DIFFUSION, loss.detach(), prog_bar=True)
        return loss

    # --- sampling -----------------------------------------------------------------------------
    def prediction(self, labels: Tensor | None,
                   net: LabelledNet | None = None) -> Callable[[Tensor, Tensor], Tensor]:
        """``(x_t, t) -> eps`` for sampling, RePaint and the bound (guided as the base class), whatever the
        denoiser predicts."""
        return self.diffusion.eps_denoiser(super().prediction(labels, net))

    def bind_sampler(self, sampler: SamplerFactory | None = None) -> Sampler:
        """A sampler for this model's process, clipping predicted images to [-1, 1]."""
        return bind_diffusion_sampler(sampler or self.sampler, self.diffusion,
                                      clip_x0=None if self.spec.kind == "toy2d" else 1.0)

    def integrate(self, sampler: Sampler, noise: Tensor, generator: torch.Generator | None,
                  labels: Tensor | None = None) -> Tensor:
        """x_T = ``noise`` -> x_0 through ``sampler``'s steps, one (guided) denoiser call each."""
        return sample_loop(self.prediction(labels), sampler, noise, generator, progress=self.progress)

    def repaint(self, image: Tensor, known: Tensor, generator: torch.Generator | None = None,
                labels: Tensor | None = None, steps: int | None = None, jump_length: int = 10,
                resamplings: int = 10, variance: str = "posterior") -> Tensor:
        """Inpaint ``image`` where ``known`` is 0 with RePaint (Lugmayr et al. 2022; no training,
        :func:`~gen_bench.diffusion.repaint_loop`), using the EMA weights if any.

        Args:
            image: (N, C, H, W) images in [0, 1] (the unknown pixels are never read).
            known: (N, 1, H, W) masks, 1 where a pixel is known.
            generator: Source of every noise (the starting noise first).
            labels: (N,) classes the fill is asked for (class-conditional models, guided with
                :attr:`guidance`); ``None``: unconditional (a conditional model draws them).
            steps: Respaced timesteps of the walk (``None``: all T).
            jump_length: Levels climbed by each resampling jump.
            resamplings: Times each jump level is walked down (1: no resampling).
            variance: Of the ancestral steps: ``posterior`` or ``beta`` (:class:`DDPMSampler`).

        Returns:
            (N, C, H, W) in [0, 1], equal to ``image`` on the known pixels.
        """
        if self.spec.kind != "image":
            raise ValueError(f"RePaint fills images; this DDPM models {self.spec.kind} data")
        n = image.shape[0]
        labels = self.labels_for(n, labels, generator)
        sampler = DDPMSampler(self.diffusion, variance=variance, clip_x0=1.0, steps=steps)
        out = []
        with self.sampling_mode():
            for lo in range(0, n, self.sample_batch_size):
                hi = min(n, lo + self.sample_batch_size)
                noise = self.sample_latent(hi - lo, generator)
                x_known = self.to_model_space(image[lo:hi].to(self.device))
                keep = known[lo:hi].to(self.device)
                y = labels[lo:hi] if labels is not None else None
                x = repaint_loop(self.prediction(y), sampler, x_known, keep, noise, generator, jump_length,
                                 resamplings, progress=self.progress)
                filled = self.to_data_space(x)
                out.append(torch.where(keep.bool().expand_as(filled), image[lo:hi].to(self.device), filled))
        return torch.cat(out)

    # --- likelihood -----------------------------------------------------------------------------
    def likelihood_protocol(self) -> dict[str, Any] | None:
        """The variational bound of images (Ho et al. 2020); ``None`` on 2-D data (no quantisation)."""
        if self.spec.kind != "image":
            return None
        num, k = self.diffusion.num_timesteps - 1, self.bound_terms
        exact = exact_terms(num, k)
        return {"kind": "bound", "levels": self.bpd["levels"], "variance": self.bpd["variance"],
                "kl_terms": "all" if exact == num else f"{k} of {num}, stratified", "kl_terms_exact": exact,
                "quantisation": "level = round(x * (levels - 1)) of x in [0, 1]; decoder bins of that width"}

    def bits_per_dim(self, x: Tensor) -> Tensor:
        """(B,) the variational bound on -log2 p(x) per dimension of images ``x`` (B, C, H, W) in [0, 1],
        quantised to ``bpd.levels``, with the EMA weights if any (unconditional: "no class" for a
        conditional model)."""
        if self.likelihood_protocol() is None:
            raise NotImplementedError(f"a DDPM of {self.spec.kind} data has no bits per dimension")
        levels = self.bpd["levels"]
        q = quantise(x.to(self.device), levels).float() / (levels - 1)
        generator = torch.Generator(device=self.device).manual_seed(int(self.bpd["seed"]))
        with self.sampling_mode():
            return variational_bound_bits(self.diffusion, self.prediction(None), self.to_model_space(q),
                                          levels, self.bound_terms, self.bpd["variance"], generator,
                                          progress=self.progress)

    def deterministic_sampler(self, sampler: SamplerFactory | None = None) -> SamplerFactory:
        factory = sampler or self.sampler
        if self.bind_sampler(factory).deterministic:
            return factory
        if sampler is not None:
            label = self.bind_sampler(sampler).label
            raise ValueError(f"{label} adds noise at every step, so its samples are not a function of the "
                             "starting noise: use sampler=ddim (eta 0) or sampler=dpmpp")
        # the model's own sampler is stochastic (ancestral): DDIM with eta 0, 50 steps (or all T)
        return partial(DDIMSampler, steps=min(50, self.diffusion.num_timesteps), eta=0.0)
