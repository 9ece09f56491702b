"""The contract every model meets: ``sample`` and, for latent models, ``interpolate``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from torch import Tensor, nn

from gen_bench.data.spec import DataSpec

if TYPE_CHECKING:
    from gen_bench.ema import EMAWeights


class GenerativeModule(L.LightningModule):
    """Base class of every model.

    The evaluator, the sample and eval commands, the sample-grid callback and the leaderboard use
    only what this class declares: :meth:`sample` (and :meth:`interpolate` for latent models),
    :meth:`sampler_label`, :attr:`spec`, :attr:`is_conditional`, :attr:`ema_weights`,
    :attr:`progress` and, for likelihood models, :meth:`likelihood_protocol` and :meth:`bits_per_dim`.
    Each has a default that is right for a model without the feature, so callers never probe a model
    for it.

    Inside the model, images live in [-1, 1]; at its boundary they are float32 in [0, 1]
    (toy data: (N, 2) in data units).

    Attributes:
        is_conditional: Whether :meth:`sample` takes ``labels`` (a class-conditional model sets it).
        ema_weights: The averaged weights samples are drawn with (``None``: the live weights, and
            always for a model without weight EMA); setting it to ``None`` samples with the live ones.
        progress: Show a progress bar while sampling (models that sample in many network passes;
            ignored by models that sample in one).

    Args:
        spec: The dataset's spec.
    """

    is_conditional: bool = False
    ema_weights: EMAWeights | None = None
    progress: bool = False

    def __init__(self, spec: DataSpec) -> None:
        super().__init__()
        self.spec = spec
        self.channels_last = False

    # --- speed options (gen-bench train channels_last=true compile=true) ----------------------
    def networks(self) -> dict[str, nn.Module]:
        """The trainable networks (generator, discriminator, critic, denoiser...) by attribute name."""
        return {name: m for name, m in self.named_children() if any(True for _ in m.parameters())}

    def use_channels_last(self) -> None:
        """Store 4-D conv weights and image batches in NHWC order (faster convolutions with tensor
        cores under bf16 / fp16). Video (5-D) and 2-D data are left as they are."""
        if self.spec.kind != "image":
            return
        self.channels_last = True
        self.to(memory_format=torch.channels_last)

    def compile_networks(self, **kwargs) -> None:
        """``torch.compile`` each network in place (``nn.Module.compile``): parameter names, and so
        checkpoints, EMA weights and resume, are unchanged. ``kwargs`` go to ``torch.compile``."""
        for net in self.networks().values():
            net.compile(**kwargs)

    # --- data space <-> model space ---------------------------------------------------------
    def to_model_space(self, x: Tensor) -> Tensor:
        """[0, 1] images -> [-1, 1] (NHWC with :meth:`use_channels_last`); toy data unchanged."""
        if self.spec.kind == "toy2d":
            return x
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x * 2 - 1

    def to_data_space(self, x: Tensor) -> Tensor:
        """[-1, 1] images -> [0, 1] (clamped); toy data unchanged."""
        return x if self.spec.kind == "toy2d" else ((x + 1) / 2).clamp(0, 1)

    # --- the contract -----------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator | None = None, *, labels: Tensor | None = None,
               sampler: Any = None) -> Tensor:
        """Draw ``n`` samples without touching the global RNG when ``generator`` is given.

        Args:
            n: Number of samples.
            generator: Source of every random number of the draw (``None``: the global RNG).
            labels: (n,) class labels, for models whose :attr:`is_conditional` is true; an error
                for the others (:meth:`check_labels`).
            sampler: A sampler factory (``conf/sampler/``, Hydra ``_partial_``) that overrides the
                model's own sampler; ignored by models that sample in one pass (GANs), whose
                :meth:`sampler_label` is ``None``.

        Returns:
            (n, C, H, W) images in [0, 1], (n, C, T, H, W) video in [0, 1], or (n, 2) points.
        """
        raise NotImplementedError

    def sampler_label(self, sampler: Any = None) -> str | None:
        """The label of the sampler :meth:`sample` draws with given ``sampler`` (``ddim50``, ``heun50``;
        ``None`` for the model's own), recorded with every score; ``None`` for models that sample in
        one pass.

        Raises:
            ValueError: ``sampler`` cannot sample this model (a flow sampler for DDPM, say).
        """
        return None

    def check_labels(self, labels: Tensor | None, n: int) -> None:
        """Refuse ``labels`` for an unconditional model, and labels that are not one per sample.

        Raises:
            ValueError: Naming the problem.
        """
        if labels is None:
            return
        if not self.is_conditional:
            raise ValueError(f"{type(self).__name__} is not class-conditional (is_conditional is false): "
                             "sample it without labels")
        if labels.shape != (n,):
            raise ValueError(f"labels must be one class per sample, shape ({n},); got {tuple(labels.shape)}")

    def likelihood_protocol(self) -> dict[str, Any] | None:
        """What :meth:`bits_per_dim` measures, recorded with the ``bpd`` score: ``kind`` (``exact``, or
        ``bound`` for a variational bound), ``levels`` (the quantisation per channel the bits refer to)
        and how images are quantised. ``None`` (the default): the model has no likelihood."""
        return None

    def bits_per_dim(self, x: Tensor) -> Tensor:
        """(B,) negative log-likelihood of images ``x`` (B, C, H, W) in [0, 1], in bits per dimension of
        the quantised data (see :meth:`likelihood_protocol`), with the weights :meth:`sample` uses.

        Raises:
            NotImplementedError: For models whose :meth:`likelihood_protocol` is ``None``.
        """
        raise NotImplementedError(f"{type(self).__name__} has no likelihood")

    def interpolate(self, z0: Tensor, z1: Tensor, steps: int) -> Tensor:
        """Samples along a path between two latents (latent models only)."""
        raise NotImplementedError(f"{type(self).__name__} has no latent space to interpolate")

    def randn(self, *shape: int, generator: torch.Generator | None = None) -> Tensor:
        """Standard normal noise on the model's device, drawn from ``generator`` when given."""
        device = generator.device if generator is not None else self.device
        return torch.randn(*shape, generator=generator, device=device).to(self.device)

    @contextmanager
    def sampling_mode(self) -> Iterator[None]:
        """Eval mode and no grad for the duration, restoring the previous mode afterwards."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.train(was_training)

    @staticmethod
    @contextmanager
    def uncounted_step(optimizer) -> Iterator[None]:
        """Step ``optimizer`` without advancing ``trainer.global_step``.

        Lightning counts every optimizer step in manual optimization, so a GAN with a D and a G
        step per batch would reach ``max_steps`` after half the iterations. gen-bench counts one
        step per generator (or main network) update, the unit of the GAN and diffusion papers:
        auxiliary steps (the discriminator's, the critic's) run inside this context.
        """
        before, after = optimizer._on_before_step, optimizer._on_after_step
        optimizer._on_before_step = optimizer._on_after_step = lambda: None
        try:
            yield
        finally:
            optimizer._on_before_step, optimizer._on_after_step = before, after


def slerp(z0: Tensor, z1: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation between latents (White 2016), the path Gaussian latents prefer.

    Args:
        z0, z1: (D,) latents.
        t: (S,) positions in [0, 1].

    Returns:
        (S, D) latents; falls back to linear interpolation when z0 and z1 are parallel.
    """
    a, b = z0.flatten(), z1.flatten()
    cos = torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1, 1))
    t = t[:, None]
    if omega.abs() < 1e-6:
        out = (1 - t) * a + t * b
    else:
        out = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)
    return out.reshape(-1, *z0.shape)
