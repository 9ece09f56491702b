"""DVD-GAN (Clark, Donahue and Simonyan 2019): a video GAN with a spatial and a temporal discriminator.

The generator makes whole clips (:class:`~gen_bench.models.nets.VideoGenerator`); D_S scores k
random full-resolution frames per clip and sums their scores, D_T scores the whole clip at reduced
resolution (:mod:`gen_bench.models.nets.video`). Both use the hinge loss (eq. 1 of the paper,
after Lim & Ye 2017 and Miyato et al. 2018) and spectral norm; the generator's loss is the sum of
both discriminators' ``-D(G(z))``.

Per batch: one discriminator step (both D's, one optimizer, the sum of their losses; uncounted),
then one generator step on the same fakes. ``discriminators`` names those in use (the paper's
ablation: ``[spatial, temporal]``, ``[spatial]`` or ``[temporal]``); one left out is not part of
the model, trained or used.
Frame draws of D_S use the global RNG, which :class:`~gen_bench.callbacks.TrainingState` restores
on resume, so resumed runs are exact.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from torch import Tensor, nn

from gen_bench import keys
from gen_bench.data.spec import DataSpec
from gen_bench.models.gan import GANBase, OptimizerFactory, apply_spectral_norm, hinge_d_loss, hinge_g_loss

DISCRIMINATORS = ("spatial", "temporal")


class DVDGAN(GANBase):
    """Dual-discriminator video GAN with the hinge loss.

    Args:
        spec: The video dataset's spec.
        generator: z (B, latent_dim) -> clips (B, C, T, S, S) in [-1, 1]; must have ``latent_dim``.
        spatial_discriminator: D_S, clips -> (B,) scores.
        temporal_discriminator: D_T, clips -> (B,) scores.
        optimizer_g: Factory ``params -> Optimizer`` for G (Hydra ``_partial_``).
        optimizer_d: Factory for the parameters of both discriminators.
        discriminators: Those trained and used: ``spatial`` (D_S) and / or ``temporal`` (D_T).
        spectral_norm: Spectral-normalise every weight of both discriminators.
        pack: Must be 1: packing (PacGAN) is not implemented for DVD-GAN's discriminators, which
            sample frames per clip (D_S) and pool clips (D_T).
    """

    sampling_network_name = "generator"

    def __init__(self, spec: DataSpec, generator: nn.Module, spatial_discriminator: nn.Module,
                 temporal_discriminator: nn.Module, optimizer_g: OptimizerFactory,
                 optimizer_d: OptimizerFactory, discriminators: Sequence[str] = DISCRIMINATORS,
                 spectral_norm: bool = True, pack: int = 1) -> None:
        if pack != 1:
            raise ValueError(f"DVD-GAN does not support packing (model.pack={pack}); set model.pack=1, or "
                             "use model=dcgan, wgan_gp or r3gan for PacGAN")
        super().__init__(spec, generator)
        if spec.kind != "video":
            raise ValueError(f"DVD-GAN generates video; the data is {spec.kind}")
        names = list(discriminators)
        if not names or len(set(names)) != len(names) or not set(names) <= set(DISCRIMINATORS):
            raise ValueError(f"model.discriminators must name at least one discriminator, each once, out of "
                             f"{list(DISCRIMINATORS)}; got {names}")
        sn = apply_spectral_norm if spectral_norm else (lambda m: m)
        self.spatial_discriminator = sn(spatial_discriminator) if "spatial" in names else None
        self.temporal_discriminator = sn(temporal_discriminator) if "temporal" in names else None
        self.optimizer_g, self.optimizer_d = optimizer_g, optimizer_d

    def discriminators(self) -> dict[str, nn.Module]:
        """The discriminators in use, by name (``spatial``, ``temporal``)."""
        named = {"spatial": self.spatial_discriminator, "temporal": self.temporal_discriminator}
        return {k: d for k, d in named.items() if d is not None}

    def configure_optimizers(self):
        params = itertools.chain.from_iterable(d.parameters() for d in self.discriminators().values())
        return self.optimizer_g(self.generator.parameters()), self.optimizer_d(params)

    def scores(self, x: Tensor) -> dict[str, Tensor]:
        """Every discriminator's (B,) scores of clips ``x`` in model space."""
        return {name: d(x) for name, d in self.discriminators().items()}

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        real = self.to_model_space(batch[0])
        fake = self.generator(self.sample_latent(real.shape[0]))

        # D step: the sum of both hinge losses, one optimizer (uncounted: global_step counts G steps)
        self.toggle_optimizer(opt_d)
        s_real, s_fake = self.scores(real), self.scores(fake.detach())
        losses_d = {name: hinge_d_loss(s_real[name], s_fake[name]) for name in s_real}
        loss_d = sum(losses_d.values())
        with self.uncounted_step(opt_d):
            self.update(opt_d, loss_d)
        self.untoggle_optimizer(opt_d)

        # G step on the same fakes, through the updated discriminators
        self.toggle_optimizer(opt_g)
        loss_g = sum(hinge_g_loss(s) for s in self.scores(fake).values())
        self.update(opt_g, loss_g)
        self.untoggle_optimizer(opt_g)

        logged = {keys.LOSS_D: loss_d.detach(), keys.LOSS_G: loss_g.detach()}
        per_d = {"spatial": keys.LOSS_D_SPATIAL, "temporal": keys.LOSS_D_TEMPORAL}
        for name, loss in losses_d.items():
            logged[per_d[name]] = loss.detach()
            logged[keys.SCORE_REAL.format(name)] = s_real[name].detach().mean()
            logged[keys.SCORE_FAKE.format(name)] = s_fake[name].detach().mean()
        self.log_dict(logged)
        self.log_dict({"loss_d": loss_d.detach(), "loss_g": loss_g.detach()}, prog_bar=True, logger=False)
