"""R3GAN's objective (Huang, Gokaslan, Kuleshov, Tompkin 2024, "The GAN is dead; long live the GAN!").

The regularized relativistic GAN loss, with no other trick: on pairs (x_i, G(z_i)) of a real and a
generated sample,

* D minimises  E softplus(D(G(z)) - D(x)) + gamma/2 (E ||grad_x D(x)||^2 + E ||grad_x D(G(z))||^2),
  the relativistic pairing loss (RpGAN, Jolicoeur-Martineau 2019) with zero-centred gradient
  penalties on real data (R1, Mescheder et al. 2018) and on generated data (R2);
* G minimises  E softplus(D(x) - D(G(z))).

Both penalties together give the loss local convergence (the paper's sec. 2); R1 alone does not.
One D step then one G step per batch, each on fresh latents, as in the reference training loop; the
D step is uncounted, so ``trainer.global_step`` (and ``trainer.max_steps``) counts G steps. The
penalties are per sample, so a discriminator with batch norm is refused.

The paper anneals the learning rate (2e-4 -> 5e-5), gamma and Adam's beta2 (0.9 -> 0.99) with a
cosine over its long runs; here they are constants (Adam betas (0, 0.99)), set in
``conf/model/r3gan.yaml``.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gen_bench import keys
from gen_bench.data.spec import DataSpec
from gen_bench.models.gan import GANBase, OptimizerFactory, uses_batch_norm

log = logging.getLogger(__name__)


def relativistic_discriminator_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """E softplus(D(fake_i) - D(real_i)) = -E log sigmoid(D(real_i) - D(fake_i)), on pairs (B,) x (B,)."""
    return F.softplus(logits_fake - logits_real).mean()


def relativistic_generator_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """E softplus(D(real_i) - D(fake_i)): the discriminator's loss with the roles swapped."""
    return F.softplus(logits_real - logits_fake).mean()


def logits_and_squared_gradient_norms(discriminator: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """D's logits on ``x`` and, per sample, ||grad_x D(x)_i||^2, differentiable w.r.t. D's parameters.

    One pass serves the loss and the penalty. The gradient of ``sum_i D(x)_i`` is per sample only
    for a discriminator whose outputs do not mix the batch (no batch norm).

    Args:
        discriminator: x (B, ...) -> logits (B,).
        x: (B, ...) inputs in model space (detached here: the penalty is D's, not G's).

    Returns:
        (B,) logits and (B,) squared gradient norms.
    """
    x = x.detach().requires_grad_(True)
    logits = discriminator(x)
    (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
    return logits, grad.flatten(1).square().sum(dim=1)


class R3GAN(GANBase):
    """Relativistic pairing GAN with R1 and R2 penalties.

    Args:
        spec: The dataset's spec.
        generator: z (B, latent_dim) -> x in model space; must have ``latent_dim``.
        discriminator: x -> logits (B,), with no batch norm.
        optimizer_g: Factory ``params -> Optimizer`` for G (Hydra ``_partial_``).
        optimizer_d: Factory for D.
        gamma: Weight of the penalties: the D loss adds gamma/2 (R1 + R2).
        pack: Samples per discriminator input (PacGAN; 1: off): the pairs are (real pack, generated
            pack), and R1 / R2 are squared gradient norms per pack, w.r.t. D's own inputs.
    """

    def __init__(
        self,
        spec: DataSpec,
        generator: nn.Module,
        discriminator: nn.Module,
        optimizer_g: OptimizerFactory,
        optimizer_d: OptimizerFactory,
        gamma: float = 0.05,
        pack: int = 1,
    ) -> None:
        super().__init__(spec, generator, pack)
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if uses_batch_norm(discriminator):
            raise ValueError("an R3GAN discriminator must not use batch norm (R1 and R2 are per-sample "
                             "penalties); use backbone=resnet, or norm: layer or none")
        self.discriminator = self.check_packed_input(discriminator, "discriminator")
        self.optimizer_g, self.optimizer_d = optimizer_g, optimizer_d
        self.gamma = gamma

    def compile_networks(self, **kwargs) -> None:
        """Compile the generator only: R1 and R2 differentiate through D's input gradient (double
        backward), which ``torch.compile`` does not support."""
        log.info("compile: the R3GAN discriminator stays eager (R1/R2 need double backward)")
        self.generator.compile(**kwargs)

    def configure_optimizers(self):
        return (self.optimizer_g(self.generator.parameters()),
                self.optimizer_d(self.discriminator.parameters()))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        real = self.to_model_space(batch[0])
        n = real.shape[0]

        # D step: relativistic loss on (real_i, fake_i) pairs plus gamma/2 (R1 + R2); with packing,
        # pairs of a real pack and a generated pack.
        self.toggle_optimizer(opt_d)
        with torch.no_grad():
            fake = self.generator(self.sample_latent(n))
        real_packs = self.packed(real)  # (n / pack, pack * C, ...)
        k = real_packs.shape[0]
        logits, sq_grad = logits_and_squared_gradient_norms(self.discriminator,
                                                            torch.cat([real_packs, self.packed(fake)]))
        r1, r2 = sq_grad[:k].mean(), sq_grad[k:].mean()
        adversarial = relativistic_discriminator_loss(logits[:k], logits[k:])
        loss_d = adversarial + self.gamma / 2 * (r1 + r2)
        with self.uncounted_step(opt_d):
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(loss_d)
            opt_d.step()
        self.untoggle_optimizer(opt_d)

        # G step on fresh latents, through the updated D.
        self.toggle_optimizer(opt_g)
        fake = self.generator(self.sample_latent(n))
        logits_g = self.discriminator(torch.cat([real_packs, self.packed(fake)]))
        loss_g = relativistic_generator_loss(logits_g[:k], logits_g[k:])
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss_g)
        opt_g.step()
        self.untoggle_optimizer(opt_g)

        self.log_dict({keys.LOSS_D: adversarial.detach(), keys.LOSS_G: loss_g.detach(),
                       keys.R1_PENALTY: r1.detach(), keys.R2_PENALTY: r2.detach()})
        self.log_dict({"loss_d": adversarial.detach(), "loss_g": loss_g.detach()}, prog_bar=True,
                      logger=False)
