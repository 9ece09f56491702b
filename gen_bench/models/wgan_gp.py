"""WGAN-GP (Gulrajani et al. 2017): a Wasserstein critic with a two-sided gradient penalty.

Algorithm 1 of the paper with Lightning manual optimization: every batch is one critic step on a
fresh real batch; every ``n_critic``-th batch is followed by one generator step on fresh latents.
Critic steps are uncounted, so ``trainer.global_step`` (and ``trainer.max_steps``) counts generator
iterations, the paper's unit. The phase comes from ``critic_steps``, a buffer in the state dict, so
a resumed run continues the n_critic cycle exactly where the checkpoint left it.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from gen_bench import keys
from gen_bench.data.spec import DataSpec
from gen_bench.models.gan import GANBase, OptimizerFactory, uses_batch_norm

log = logging.getLogger(__name__)


def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor, generator: torch.Generator | None = None,
                     mix: Tensor | None = None) -> Tensor:
    """E[(||grad D(x_hat)||_2 - 1)^2] on x_hat = e real + (1 - e) fake, e ~ U[0, 1] per sample
    (eq. 3 of Gulrajani et al.), differentiable w.r.t. the critic's parameters.

    Args:
        critic: x (B, ...) -> (B,) scores.
        real, fake: (B, ...) batches in model space.
        generator: Source of ``e`` (else the global RNG).
        mix: (B,) values of ``e`` to use instead of drawing them.
    """
    if mix is None:
        device = generator.device if generator is not None else real.device
        mix = torch.rand(real.shape[0], generator=generator, device=device).to(real.device)
    e = mix.reshape(-1, *([1] * (real.ndim - 1)))
    x_hat = (e * real.detach() + (1 - e) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


class WGANGP(GANBase):
    """Wasserstein GAN with gradient penalty.

    Args:
        spec: The dataset's spec.
        generator: z (B, latent_dim) -> x in model space; must have ``latent_dim``.
        critic: x -> scores (B,). No batch norm: the penalty is per sample (use layer norm or none).
        optimizer_g: Factory ``params -> Optimizer`` for G (Hydra ``_partial_``).
        optimizer_critic: Factory for the critic.
        n_critic: Critic steps per generator step.
        gp_weight: lambda, the weight of the gradient penalty.
        pack: Samples per critic input (PacGAN; 1: off): the critic scores packs of real and packs
            of generated samples, and the penalty acts on interpolates between a real and a
            generated pack (one ``e`` per pack), the critic's own inputs.
    """

    sampling_network_name = "generator"
    critic_steps: Tensor

    def __init__(
        self,
        spec: DataSpec,
        generator: nn.Module,
        critic: nn.Module,
        optimizer_g: OptimizerFactory,
        optimizer_critic: OptimizerFactory,
        n_critic: int = 5,
        gp_weight: float = 10.0,
        pack: int = 1,
    ) -> None:
        super().__init__(spec, generator, pack)
        if n_critic < 1:
            raise ValueError(f"n_critic must be >= 1, got {n_critic}")
        if uses_batch_norm(critic):
            raise ValueError("a WGAN-GP critic must not use batch norm (the gradient penalty is per sample); "
                             "use norm: layer or none")
        self.critic = self.check_packed_input(critic, "critic")
        self.optimizer_g, self.optimizer_critic = optimizer_g, optimizer_critic
        self.n_critic = n_critic
        self.gp_weight = gp_weight
        self.register_buffer("critic_steps", torch.zeros((), dtype=torch.long))

    def compile_networks(self, **kwargs) -> None:
        """Compile the generator only: the critic's gradient penalty differentiates through its
        gradient (double backward), which ``torch.compile`` does not support."""
        log.info("compile: the WGAN-GP critic stays eager (its gradient penalty needs double backward)")
        self.generator.compile(**kwargs)

    def configure_optimizers(self):
        return (self.optimizer_g(self.generator.parameters()),
                self.optimizer_critic(self.critic.parameters()))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        opt_g, opt_c = self.optimizers()
        real = self.to_model_space(batch[0])
        n = real.shape[0]

        # Critic step (Algorithm 1, lines 2-10): minimise D(fake) - D(real) + lambda GP.
        self.toggle_optimizer(opt_c)
        with torch.no_grad():
            fake = self.generator(self.sample_latent(n))
        real_packs, fake_packs = self.packed(real), self.packed(fake)  # (n / pack, pack * C, ...)
        k = real_packs.shape[0]
        scores = self.critic(torch.cat([real_packs, fake_packs]))  # per-sample critic: one pass for both
        wasserstein = scores[:k].mean() - scores[k:].mean()
        gp = gradient_penalty(self.critic, real_packs, fake_packs)
        loss_c = -wasserstein + self.gp_weight * gp
        with self.uncounted_step(opt_c):
            opt_c.zero_grad(set_to_none=True)
            self.manual_backward(loss_c)
            opt_c.step()
        self.untoggle_optimizer(opt_c)
        self.critic_steps += 1
        self.log_dict({keys.WASSERSTEIN: wasserstein.detach(), keys.GRADIENT_PENALTY: gp.detach(),
                       keys.LOSS_CRITIC: loss_c.detach()})
        self.log("w", wasserstein.detach(), prog_bar=True, logger=False)

        # Generator step (lines 11-12) after every n_critic-th critic step, on fresh latents.
        if int(self.critic_steps) % self.n_critic == 0:
            self.toggle_optimizer(opt_g)
            loss_g = -self.critic(self.packed(self.generator(self.sample_latent(n)))).mean()
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(loss_g)
            opt_g.step()
            self.untoggle_optimizer(opt_g)
            self.log(keys.LOSS_G, loss_g.detach())
