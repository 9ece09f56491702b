"""DDPM (Ho et al. 2020): epsilon-prediction with L_simple; any sampler at sampling time.

The objective holds three separate things: the network (``denoiser(x_t, t) -> eps``), the process
(:class:`~gen_bench.diffusion.GaussianDiffusion`: schedule buffers, ``q_sample``, the loss) and a
sampler factory (ancestral DDPM by default; DDIM or another sampler can be swapped in with
:meth:`DDPM.sample`'s ``sampler`` argument or by assigning ``model.sampler``, with no retraining).

2-D toy data are divided by ``toy_scale`` on the way in (and multiplied on the way out), so the
data have about unit variance, as the N(0, I) prior of the process assumes: by default the RMS of
the dataset's mode centres (0.71 for ring8, 2.83 for grid25, whose modes reach |x| = 4).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from gen_bench import keys
from gen_bench.data.spec import DataSpec
from gen_bench.diffusion import DDPMSampler, GaussianDiffusion, Sampler, SamplerFactory, sample_loop
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


class DDPM(EMASampling, GenerativeModule):
    """Denoising diffusion probabilistic model.

    Args:
        spec: The dataset's spec.
        denoiser: ``(x_t (B, ...), t (B,) long) -> eps (B, ...)``.
        diffusion: The Gaussian process (T, schedule).
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
    ) -> None:
        super().__init__(spec)
        if hflip and spec.kind != "image":
            raise ValueError(f"model.hflip flips images; this is {spec.kind} data: set model.hflip=false")
        self.denoiser = denoiser
        self.diffusion = diffusion
        self.optimizer = optimizer
        self.sampler = sampler or DDPMSampler
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
    def configure_optimizers(self):
        opt = self.optimizer(self.denoiser.parameters())
        if self.warmup_steps <= 0:
            return opt
        warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / self.warmup_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": warmup, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        clip = gradient_clip_val if gradient_clip_val is not None else self.grad_clip  # the trainer's wins
        if clip is not None:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x = random_hflip(batch[0]) if self.hflip else batch[0]
        loss = self.diffusion.loss(self.denoiser, self.to_model_space(x))
        self.log(keys.LOSS_DIFFUSION, loss.detach(), prog_bar=True)
        return loss

    # --- sampling -----------------------------------------------------------------------------
    def bind_sampler(self, sampler: SamplerFactory | None = None) -> Sampler:
        """A sampler for this model's process, clipping predicted images to [-1, 1]."""
        factory = sampler or self.sampler
        return factory(self.diffusion, clip_x0=None if self.spec.kind == "toy2d" else 1.0)

    def sample(self, n: int, generator: torch.Generator | None = None,
               sampler: SamplerFactory | None = None) -> Tensor:
        """Draw ``n`` samples with the model's sampler (or ``sampler``), using EMA weights if any.

        All noise, x_T and the noise of every step, comes from ``generator`` when given.

        Returns:
            (n, C, H, W) images in [0, 1] or (n, 2) points in data units.
        """
        bound = self.bind_sampler(sampler)
        out = []
        with self.sampling_mode():
            for i in range(math.ceil(n / self.sample_batch_size)):
                m = min(self.sample_batch_size, n - i * self.sample_batch_size)
                x_T = self.randn(m, *self.spec.shape, generator=generator)
                x0 = sample_loop(self.denoiser, bound, x_T, generator, progress=self.progress)
                out.append(self.to_data_space(x0))
        return torch.cat(out)
