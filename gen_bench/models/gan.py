"""DCGAN objective (Goodfellow et al. 2014, non-saturating loss) with switchable stabilizers.

Stabilizers, all off by default (vanilla DCGAN):

* spectral norm on every conv / linear weight of D (Miyato et al. 2018), torch's parametrization
  with one power iteration per forward pass;
* one-sided label smoothing (Salimans et al. 2016): the real target becomes ``real_label`` (e.g.
  0.9), the fake target stays 0;
* instance noise (Sonderby et al. 2017): Gaussian noise on both real and fake D inputs, sigma
  annealed linearly from ``sigma_start`` to 0 over ``anneal_steps`` steps;
* gradient-norm clipping of G and D, done here because manual optimization must do it itself;
* packing (PacGAN, Lin et al. 2018; every GAN objective, :class:`GANBase`): D scores packs of
  ``pack`` real or ``pack`` generated samples, concatenated along channels (features).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from gen_bench import keys
from gen_bench.data.spec import DataSpec
from gen_bench.ema import EMASampling
from gen_bench.models.base import GenerativeModule, slerp
from gen_bench.models.nets.packing import check_pack, pack_samples

OptimizerFactory = Callable[..., torch.optim.Optimizer]


@dataclass
class InstanceNoise:
    """Gaussian instance noise whose sigma falls linearly from ``sigma_start`` to 0.

    Args:
        sigma_start: Standard deviation at step 0, in model units ([-1, 1] for images).
        anneal_steps: Steps over which sigma reaches 0 (after that, no noise).
    """

    sigma_start: float = 0.0
    anneal_steps: int = 0

    def __post_init__(self) -> None:
        if self.sigma_start < 0:
            raise ValueError(f"instance_noise.sigma_start must be >= 0, got {self.sigma_start}")
        if self.sigma_start > 0 and self.anneal_steps <= 0:
            raise ValueError("instance_noise.anneal_steps must be > 0 when sigma_start > 0")

    def sigma(self, step: int) -> float:
        if self.sigma_start == 0:
            return 0.0
        return self.sigma_start * max(0.0, 1.0 - step / self.anneal_steps)


def apply_spectral_norm(module: nn.Module, n_power_iterations: int = 1) -> nn.Module:
    """Spectral-normalise the weight of every conv and linear layer of ``module`` in place."""
    for name, child in list(module.named_children()):
        if isinstance(child, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            setattr(module, name, _spectral_norm(child, n_power_iterations=n_power_iterations))
        else:
            apply_spectral_norm(child, n_power_iterations)
    return module


def uses_batch_norm(module: nn.Module) -> bool:
    """Whether ``module`` holds a batch-norm layer, which mixes the samples of a batch: a per-sample
    gradient penalty (WGAN-GP's, R1/R2) is then not per sample any more."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


class GANBase(EMASampling, GenerativeModule):
    """What every GAN shares: a generator with ``latent_dim``, sampling and interpolation, packing.

    Samples come from the generator's EMA weights when the run has ``model.ema`` set (off by
    default for GANs; Yazici et al. 2019 found generator averaging improves FID).

    Packing (PacGAN, Lin et al. 2018), off at ``pack=1``: the objective passes every batch it
    gives the discriminator through :meth:`packed`, so a batch of B real (or B generated) samples
    becomes B / ``pack`` packs, each of one source only, exactly as in the paper; the
    discriminator is built with ``pack`` times the input channels (``pack`` argument of the nets,
    set from ``model.pack`` by the configs). The paper's reference code draws ``pack`` times the
    samples per step instead (as many packs as the batch size): ``data.batch_size`` scaled by
    ``pack`` reproduces that.
    """

    sampling_network_name = "generator"

    def __init__(self, spec: DataSpec, generator: nn.Module, pack: int = 1) -> None:
        super().__init__(spec)
        self.generator = generator
        self.automatic_optimization = False
        self.pack = check_pack(pack)

    def packed(self, x: Tensor) -> Tensor:
        """(B, C, ...) samples of one source -> (B / pack, pack * C, ...) packs (``x`` when pack is 1)."""
        return pack_samples(x, self.pack)

    def check_packed_input(self, network: nn.Module, role: str) -> nn.Module:
        """``network`` if it was built for this objective's pack size, else a clear error.

        The nets record their ``pack`` argument; a network without one takes single samples.
        """
        built = getattr(network, "pack", 1)
        if built != self.pack:
            raise ValueError(f"the {role} takes packs of {built} samples but model.pack={self.pack}; build "
                             f"it with pack={self.pack} (the model configs pass model.pack to it)")
        return network

    @property
    def latent_dim(self) -> int:
        return self.generator.latent_dim

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.randn(n, self.latent_dim, generator=generator)

    def decode(self, z: Tensor) -> Tensor:
        """Latents (N, latent_dim) -> samples in data space, in eval mode without gradients."""
        with self.sampling_mode():
            return self.to_data_space(self.generator(z.to(self.device)))

    def sample(self, n: int, generator: torch.Generator | None = None, *, labels: Tensor | None = None,
               sampler: Any = None) -> Tensor:
        """``n`` samples from one generator pass over fresh latents; ``sampler`` is ignored (a GAN
        has no sampler to choose)."""
        self.check_labels(labels, n)
        return self.decode(self.sample_latent(n, generator))

    def interpolate(self, z0: Tensor, z1: Tensor, steps: int, mode: str = "slerp") -> Tensor:
        """Decode ``steps`` latents on the path from z0 to z1 (``slerp`` or ``lerp``).

        Returns:
            (steps, ...) samples in data space, the first from z0 and the last from z1.
        """
        t = torch.linspace(0, 1, steps, device=z0.device)
        if mode == "slerp":
            z = slerp(z0, z1, t)
        elif mode == "lerp":
            z = (1 - t[:, None]) * z0.flatten() + t[:, None] * z1.flatten()
        else:
            raise ValueError(f"unknown interpolation mode {mode!r}; valid: 'slerp', 'lerp'")
        return self.decode(z)


class DCGAN(GANBase):
    """Non-saturating GAN with manual optimization: one D step then one G step per batch.

    Args:
        spec: The dataset's spec.
        generator: z (B, latent_dim) -> x in model space; must have ``latent_dim``.
        discriminator: x -> logits (B,).
        optimizer_g: Factory ``params -> Optimizer`` for G (Hydra ``_partial_``).
        optimizer_d: Factory for D.
        spectral_norm: Spectral-normalise every D weight.
        real_label: Target for real samples (1.0 = no smoothing; 0.9 = one-sided smoothing).
        instance_noise: Instance-noise schedule.
        grad_clip_g: Max gradient norm of G (``None``: no clipping).
        grad_clip_d: Max gradient norm of D.
        pack: Samples per discriminator input (PacGAN; 1: off). See :class:`GANBase`.
    """

    def __init__(
        self,
        spec: DataSpec,
        generator: nn.Module,
        discriminator: nn.Module,
        optimizer_g: OptimizerFactory,
        optimizer_d: OptimizerFactory,
        spectral_norm: bool = False,
        real_label: float = 1.0,
        instance_noise: InstanceNoise | dict | None = None,
        grad_clip_g: float | None = None,
        grad_clip_d: float | None = None,
        pack: int = 1,
    ) -> None:
        super().__init__(spec, generator, pack)
        if not 0 < real_label <= 1:
            raise ValueError(f"real_label must be in (0, 1], got {real_label}")
        self.check_packed_input(discriminator, "discriminator")
        self.discriminator = apply_spectral_norm(discriminator) if spectral_norm else discriminator
        self.optimizer_g, self.optimizer_d = optimizer_g, optimizer_d
        self.real_label = real_label
        if isinstance(instance_noise, dict) or instance_noise is None:
            instance_noise = InstanceNoise(**(instance_noise or {}))
        self.instance_noise = instance_noise
        self.grad_clip_g, self.grad_clip_d = grad_clip_g, grad_clip_d
        self._clip_next: float | None = None

    def configure_optimizers(self):
        return (self.optimizer_g(self.generator.parameters()),
                self.optimizer_d(self.discriminator.parameters()))

    def noisy(self, x: Tensor, sigma: float) -> Tensor:
        return x + sigma * torch.randn_like(x) if sigma > 0 else x

    def discriminator_loss(self, logits_real: Tensor, logits_fake: Tensor) -> Tensor:
        real_target = torch.full_like(logits_real, self.real_label)
        return (F.binary_cross_entropy_with_logits(logits_real, real_target)
                + F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake)))

    @staticmethod
    def generator_loss(logits_fake: Tensor) -> Tensor:
        """Non-saturating loss: -log D(G(z))."""
        return F.binary_cross_entropy_with_logits(logits_fake, torch.ones_like(logits_fake))

    def _step(self, optimizer, loss: Tensor, clip: float | None) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        self._clip_next = clip  # applied in on_before_optimizer_step, on unscaled gradients
        try:
            optimizer.step()
        finally:
            self._clip_next = None

    def on_before_optimizer_step(self, optimizer) -> None:
        # Lightning calls this inside optimizer.step(), after the fp16 precision plugin has unscaled
        # the gradients and before the update: a clip applied before step() would bound the
        # loss-scaled gradients (x65536 at the start), not the true ones.
        if self._clip_next is not None:
            self.clip_gradients(optimizer, gradient_clip_val=self._clip_next, gradient_clip_algorithm="norm")

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        real = self.to_model_space(batch[0])
        sigma = self.instance_noise.sigma(self.global_step)
        fake = self.generator(self.sample_latent(real.shape[0]))

        # D step: real -> real_label, fake -> 0 (one logit per pack; noise per sample).
        self.toggle_optimizer(opt_d)
        logits_real = self.discriminator(self.packed(self.noisy(real, sigma)))
        logits_fake = self.discriminator(self.packed(self.noisy(fake.detach(), sigma)))
        loss_d = self.discriminator_loss(logits_real, logits_fake)
        with self.uncounted_step(opt_d):
            self._step(opt_d, loss_d, self.grad_clip_d)
        self.untoggle_optimizer(opt_d)

        # G step on the same fakes, through the updated D.
        self.toggle_optimizer(opt_g)
        loss_g = self.generator_loss(self.discriminator(self.packed(self.noisy(fake, sigma))))
        self._step(opt_g, loss_g, self.grad_clip_g)
        self.untoggle_optimizer(opt_g)

        self.log_dict({
            keys.LOSS_D: loss_d.detach(),
            keys.LOSS_G: loss_g.detach(),
            keys.D_REAL: torch.sigmoid(logits_real.detach()).mean(),
            keys.D_FAKE: torch.sigmoid(logits_fake.detach()).mean(),
            keys.NOISE_SIGMA: sigma,
        }, prog_bar=False)
        self.log_dict({"loss_d": loss_d.detach(), "loss_g": loss_g.detach()}, prog_bar=True, logger=False)
