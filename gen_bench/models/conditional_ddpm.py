"""Conditional diffusion for a paired task: SR3 (Saharia et al. 2022) for super-resolution and
Palette-style (Saharia et al. 2022b) for inpainting.

A DDPM (:class:`~gen_bench.diffusion.GaussianDiffusion`, L_simple) whose denoiser reads the noisy
target x_t and the task's condition concatenated along channels (SR3 sec. 2.4: the bicubic-upsampled
low-resolution image; for inpainting the masked image and its mask): ``net(cat[x_t, c], t)``, the
same ``UNet(condition=true)`` the regression models train. It predicts what the process's
``prediction`` says: eps as SR3, or v (Salimans and Ho 2022), which trains the image at high noise
levels, where the condition decides the output, within a CPU budget of updates. With ``residual`` it
diffuses the residual to the task's first estimate (the upsampled input; the masked image), as the
regression models predict it and as SRDiff (Li et al. 2022) does, rather than the image itself. Any
diffusion sampler runs it, chosen at sampling time without retraining (``sampler=ddim`` ...); for
inpainting the known pixels are put back into the output.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from gen_bench import keys
from gen_bench.data.spec import DataSpec
from gen_bench.diffusion import DDPMSampler, GaussianDiffusion, Sampler, SamplerFactory, sample_loop
from gen_bench.models.ddpm import bind_diffusion_sampler
from gen_bench.models.gan import OptimizerFactory
from gen_bench.models.image_to_image import ImageToImageModule
from gen_bench.models.iterative import WarmupOptimization


class ConditionalDDPM(WarmupOptimization, ImageToImageModule):
    """A DDPM of the target given the task's condition (see the module).

    Args:
        spec: The dataset's spec, with its paired task.
        net: ``UNet(condition=true)``: (cat[x_t, c] (B, C + K, H, W), t (B,)) -> eps, x_0 or v (B, C, H, W).
        diffusion: The Gaussian process (T, schedule).
        optimizer: Factory ``params -> Optimizer`` (Hydra ``_partial_``).
        sampler: Factory of the model's own sampler (default: ancestral DDPM).
        warmup_steps: Linear learning-rate warm-up over this many steps.
        grad_clip: Max gradient norm (``None``: no clipping).
        residual: Diffuse x_0 - the task's estimate (model space) instead of x_0; the sample is the
            estimate plus the sampled residual, whose predictions are clipped to [-2, 2].
        sample_batch_size: Largest batch the denoiser sees while sampling.
        progress: Show a progress bar while sampling.
    """

    def __init__(self, spec: DataSpec, net: nn.Module, diffusion: GaussianDiffusion,
                 optimizer: OptimizerFactory, sampler: SamplerFactory | None = None, warmup_steps: int = 0,
                 grad_clip: float | None = 1.0, residual: bool = False, sample_batch_size: int = 256,
                 progress: bool = True) -> None:
        super().__init__(spec, sample_batch_size, progress)
        self.net = net
        self.diffusion = diffusion
        self.optimizer = optimizer
        self.sampler = sampler or DDPMSampler
        self.warmup_steps = warmup_steps
        self.grad_clip = grad_clip
        self.residual = residual

    def denoiser(self, condition: Tensor):
        """``(x_t, t) ->`` the network's prediction (eps, x_0 or v: ``diffusion.prediction``) for the
        model-space ``condition`` of the batch."""
        return lambda x, t: self.net(torch.cat([x, condition], dim=1), t)

    def origin(self, x_in: Tensor) -> Tensor:
        """What the diffused variable is measured from, model space: the task's estimate (``residual``)
        or 0."""
        if not self.residual:
            return torch.zeros((), device=x_in.device)
        return self.estimate(x_in)

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        x_in, target = batch[0], batch[1]
        x0 = self.to_model_space(target) - self.origin(x_in)
        loss = self.diffusion.loss(self.denoiser(self.condition(x_in)), x0)
        self.log(keys.LOSS_DIFFUSION, loss.detach(), prog_bar=True)
        return loss

    def bind_sampler(self, sampler: SamplerFactory | None = None) -> Sampler:
        """A sampler of this model's process, clipping predicted images to [-1, 1] (residuals to [-2, 2])."""
        clip = 2.0 if self.residual else 1.0
        return bind_diffusion_sampler(sampler or self.sampler, self.diffusion, clip_x0=clip)

    def sampler_label(self, sampler: Any = None) -> str:
        return self.bind_sampler(sampler).label

    def generate(self, x_in: Tensor, generator: torch.Generator | None, sampler: Any) -> Tensor:
        bound = self.bind_sampler(sampler)
        noise = self.randn(x_in.shape[0], *self.spec.shape, generator=generator)
        denoiser = self.diffusion.eps_denoiser(self.denoiser(self.condition(x_in)))
        return self.origin(x_in) + sample_loop(denoiser, bound, noise, generator, progress=self.progress)
