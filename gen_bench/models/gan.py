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
from gen_bench.models.base import GenerativeModule
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


def apply_spectral_norm(module: nn.Module, n_power_iterations: int = 1,
                        embeddings: bool = False) -> nn.Module:
    """Spectral-normalise the weight of every conv and linear layer of ``module`` in place (and of every
    embedding table with ``embeddings``: the class projection of a projection discriminator)."""
    kinds: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    kinds += (nn.Embedding,) if embeddings else ()
    for name, child in list(module.named_children()):
        if isinstance(child, kinds):
            setattr(module, name, _spectral_norm(child, n_power_iterations=n_power_iterations))
        else:
            apply_spectral_norm(child, n_power_iterations, embeddings)
    return module


def truncated_normal(shape: tuple[int, ...], threshold: float, generator: torch.Generator | None = None,
                     device: torch.device | str | None = None) -> Tensor:
    """Standard normal values with every one beyond +-``threshold`` drawn again until none is (the
    truncation trick of Brock et al. 2019): a normal truncated to [-threshold, threshold].

    Draws come from ``generator`` (on its device) when given; the result goes to ``device``.
    """
    if not threshold > 0:
        raise ValueError(f"the truncation threshold must be > 0, got {threshold}")
    gen_device = generator.device if generator is not None else device
    z = torch.randn(shape, generator=generator, device=gen_device)
    outside = z.abs() > threshold
    while bool(outside.any()):  # each round redraws only the values still outside
        z[outside] = torch.randn(int(outside.sum()), generator=generator, device=gen_device)
        outside = z.abs() > threshold
    return z.to(device) if device is not None else z


def hinge_d_loss(real: Tensor, fake: Tensor) -> Tensor:
    """E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))] (Lim and Ye 2017; SAGAN, BigGAN, DVD-GAN)."""
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def hinge_g_loss(fake: Tensor) -> Tensor:
    """-E[D(G(z))]."""
    return -fake.mean()


def uses_batch_norm(module: nn.Module) -> bool:
    """Whether ``module`` holds a batch-norm layer, which mixes the samples of a batch: a per-sample
    gradient penalty (WGAN-GP's, R1/R2) is then not per sample any more."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


class ManualSteps:
    """Mixin of a LightningModule with manual optimization: :meth:`update` takes one optimizer step,
    clipping the gradient norm where the precision plugin has unscaled the gradients."""

    _clip_next: float | None = None  # the clip of the optimizer step in progress (update)

    def update(self, optimizer, loss: Tensor, clip: float | None = None) -> None:
        """One manual optimization step: zero the gradients, backward ``loss``, step ``optimizer``
        (its networks toggled by the caller), clipping the gradient norm to ``clip`` when set."""
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


class GANBase(ManualSteps, EMASampling, GenerativeModule):
    """What every GAN shares: a generator with ``latent_dim``, sampling and interpolation, packing.

    Samples come from the generator's EMA weights when the run has ``model.ema`` set (off by
    default for GANs; Yazici et al. 2019 found generator averaging improves FID).

    The truncation trick (Brock et al. 2019), the ``truncation`` knob: with a threshold psi, the
    latents :meth:`sample_latent` draws for sampling are standard normal values redrawn until all lie
    in [-psi, psi], trading variety for fidelity without retraining; ``None`` (the default, and
    always while training): no truncation. A class-conditional GAN (:attr:`is_conditional`) calls
    its generator as ``generator(z, y)``.

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

    knobs = ("truncation",)
    truncation: float | None = None

    def check_knob(self, name: str, value: float | None) -> float | None:
        if name == "truncation":
            if value is not None and not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"truncation must be a threshold > 0 (e.g. 0.5) or null (none), "
                                 f"got {value!r}")
            return None if value is None else float(value)
        return super().check_knob(name, value)

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, latent_dim) standard normal latents, truncated to [-psi, psi] when the ``truncation``
        knob is set (never while training, where it is ``None``)."""
        if self.truncation is None:
            return self.randn(n, self.latent_dim, generator=generator)
        return truncated_normal((n, self.latent_dim), self.truncation, generator, self.device)

    def decode(self, latents: Tensor, labels: Tensor | None = None, sampler: Any = None) -> Tensor:
        """Latents (N, latent_dim) -> samples in data space, in eval mode without gradients; ``labels``
        (N,) or (N, K) weights for a conditional GAN; ``sampler`` is ignored."""
        if labels is not None and not self.is_conditional:
            self.check_labels(labels, latents.shape[0])
        with self.sampling_mode():
            z = latents.to(self.device)
            x = self.generator(z) if labels is None else self.generator(z, labels.to(self.device))
            return self.to_data_space(x)

    def sample(self, n: int, generator: torch.Generator | None = None, *, labels: Tensor | None = None,
               sampler: Any = None) -> Tensor:
        """``n`` samples from one generator pass over fresh latents (after the labels, when they are
        drawn); ``sampler`` is ignored (a GAN has no sampler to choose)."""
        labels = self.labels_for(n, labels, generator)
        return self.decode(self.sample_latent(n, generator), labels)


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
            self.update(opt_d, loss_d, self.grad_clip_d)
        self.untoggle_optimizer(opt_d)

        # G step on the same fakes, through the updated D.
        self.toggle_optimizer(opt_g)
        loss_g = self.generator_loss(self.discriminator(self.packed(self.noisy(fake, sigma))))
        self.update(opt_g, loss_g, self.grad_clip_g)
        self.untoggle_optimizer(opt_g)

        self.log_dict({
            keys.LOSS_D: loss_d.detach(),
            keys.LOSS_G: loss_g.detach(),
            keys.D_REAL: torch.sigmoid(logits_real.detach()).mean(),
            keys.D_FAKE: torch.sigmoid(logits_fake.detach()).mean(),
            keys.NOISE_SIGMA: sigma,
        }, prog_bar=False)
        self.log_dict({"loss_d": loss_d.detach(), "loss_g": loss_g.detach()}, prog_bar=True, logger=False)
