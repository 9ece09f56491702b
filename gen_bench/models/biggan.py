"""BigGAN (Brock, Donahue and Simonyan 2019): a class-conditional GAN with the hinge loss.

* the generator: class-conditional batch norm from one shared class embedding, hierarchical
  latents, self-attention (:class:`~gen_bench.models.nets.BigGANGenerator`);
* the discriminator: a projection discriminator (Miyato and Koyama 2018),
  D(x, y) = psi(phi(x)) + <embed(y), phi(x)> (:class:`~gen_bench.models.nets.ProjectionDiscriminator`);
* the hinge loss (Lim and Ye 2017), ``d_steps`` discriminator steps per generator step (2 in the
  paper), each on a fresh real batch; generated samples take the real batch's labels, so every D
  step sees as many real as generated samples of each class;
* spectral norm on every weight of G and D (the discriminator's class embedding included), Adam
  with betas (0, 0.999) and a D learning rate above G's (``conf/model/biggan.yaml``);
* an EMA of the generator's weights, on by default (the paper samples with it);
* the truncation trick at sampling time (``truncation`` knob, :class:`~gen_bench.models.gan.GANBase`).

``trainer.global_step`` (and ``trainer.max_steps``) counts generator steps; the D steps in between
are uncounted, as WGAN-GP's critic steps.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gen_bench import keys
from gen_bench.data.spec import DataSpec
from gen_bench.models.gan import GANBase, OptimizerFactory, apply_spectral_norm, hinge_d_loss, hinge_g_loss
from gen_bench.models.nets.embedding import conditional_classes


class BigGAN(GANBase):
    """Class-conditional hinge GAN with a projection discriminator.

    Args:
        spec: The labelled dataset's spec.
        generator: (z (B, latent_dim), y (B,)) -> x in model space; must have ``latent_dim``.
        discriminator: (x, y (B,)) -> logits (B,).
        optimizer_g: Factory ``params -> Optimizer`` for G (Hydra ``_partial_``).
        optimizer_d: Factory for D.
        d_steps: Discriminator steps per generator step, each on its own batch.
        spectral_norm: Spectral-normalise every weight of G and D.
        conditional: Must be true (the key the conditional diffusion models share).
    """

    is_conditional = True
    d_steps_done: Tensor

    def __init__(self, spec: DataSpec, generator: nn.Module, discriminator: nn.Module,
                 optimizer_g: OptimizerFactory, optimizer_d: OptimizerFactory, d_steps: int = 2,
                 spectral_norm: bool = True, conditional: bool = True) -> None:
        super().__init__(spec, generator)
        if not conditional:
            raise ValueError("BigGAN is class-conditional: model.conditional=false is not supported (use "
                             "model=dcgan, wgan_gp or r3gan with backbone=resnet for an unconditional GAN)")
        conditional_classes(spec, "BigGAN")
        if d_steps < 1:
            raise ValueError(f"model.d_steps must be >= 1, got {d_steps}")
        if spectral_norm:
            apply_spectral_norm(generator)
            apply_spectral_norm(discriminator, embeddings=True)
        self.discriminator = discriminator
        self.optimizer_g, self.optimizer_d = optimizer_g, optimizer_d
        self.d_steps = d_steps
        # a buffer, so checkpoints hold it and a resumed run continues the D/G cycle exactly
        self.register_buffer("d_steps_done", torch.zeros((), dtype=torch.long))

    def configure_optimizers(self):
        return (self.optimizer_g(self.generator.parameters()),
                self.optimizer_d(self.discriminator.parameters()))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        real = self.to_model_space(batch[0])
        y = batch[1].to(self.device)
        n = real.shape[0]

        # D step: hinge loss on real and generated samples of the same classes, one pass for both.
        self.toggle_optimizer(opt_d)
        with torch.no_grad():
            fake = self.generator(self.sample_latent(n), y)
        logits = self.discriminator(torch.cat([real, fake]), torch.cat([y, y]))
        loss_d = hinge_d_loss(logits[:n], logits[n:])
        with self.uncounted_step(opt_d):
            self.update(opt_d, loss_d)
        self.untoggle_optimizer(opt_d)
        self.d_steps_done += 1
        self.log_dict({keys.LOSS_D: loss_d.detach(), keys.SCORE_REAL.format("d"): logits[:n].detach().mean(),
                       keys.SCORE_FAKE.format("d"): logits[n:].detach().mean()})
        self.log("loss_d", loss_d.detach(), prog_bar=True, logger=False)

        # G step after every d_steps-th D step, on fresh latents of this batch's classes.
        if int(self.d_steps_done) % self.d_steps == 0:
            self.toggle_optimizer(opt_g)
            loss_g = hinge_g_loss(self.discriminator(self.generator(self.sample_latent(n), y), y))
            self.update(opt_g, loss_g)
            self.untoggle_optimizer(opt_g)
            self.log(keys.LOSS_G, loss_g.detach())
            self.log("loss_g", loss_g.detach(), prog_bar=True, logger=False)
