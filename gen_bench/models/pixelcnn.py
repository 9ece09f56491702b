"""PixelCNN: an exact-likelihood autoregressive model of images quantised to ``levels`` per channel.

The network (:class:`~gen_bench.models.nets.pixelcnn.GatedPixelCNN`) gives, for every sub-pixel, a
softmax over the levels conditioned on the sub-pixels before it in raster order; training minimises
the negative log-likelihood of the training images with teacher forcing (every position in one pass),
so the training loss is the model's bits per dimension on the batch. Sampling is ancestral, one
sub-pixel after another, at a temperature, with the network's activation cache (one network pass per
sample in all). :meth:`PixelCNN.bits_per_dim` scores held-out images exactly (the ``bpd`` metric).

Images only: 2-D and video data are refused when the model is built.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from gen_bench import keys
from gen_bench.data.spec import DataSpec
from gen_bench.ema import EMASampling
from gen_bench.models.base import GenerativeModule, quantise
from gen_bench.models.gan import OptimizerFactory
from gen_bench.models.nets.pixelcnn import GatedPixelCNN


class PixelCNN(EMASampling, GenerativeModule):
    """Autoregressive image model trained by maximum likelihood.

    Args:
        spec: The dataset's spec (images).
        net: The autoregressive network, ``(B, C, H, W) in [-1, 1] -> (B, levels, C, H, W) logits``,
            with ``levels``, ``to_input`` and ``generate``.
        optimizer: Factory ``params -> Optimizer`` (Hydra ``_partial_``).
        levels: Quantisation levels per channel: an image x in [0, 1] is modelled as the levels
            ``round(x * (levels - 1))``; samples come back as ``level / (levels - 1)``.
        temperature: Divides the logits when sampling (1: the model's distribution; < 1 sharper).
        cached: Sample with the activation cache (``False``: the whole network per sub-pixel, the
            reference, H x W x C times slower).
        grad_clip: Max gradient norm (``None``: no clipping); a ``trainer.gradient_clip_val`` wins.
        sample_batch_size: Largest batch sampled at once.
        progress: Show a progress bar while sampling.
    """

    sampling_network_name = "net"

    def __init__(self, spec: DataSpec, net: GatedPixelCNN, optimizer: OptimizerFactory, levels: int = 256,
                 temperature: float = 1.0, cached: bool = True, grad_clip: float | None = 1.0,
                 sample_batch_size: int = 500, progress: bool = True) -> None:
        super().__init__(spec)
        if spec.kind != "image":
            raise ValueError(f"pixelcnn models images; {spec.kind} data are not supported: choose an image "
                             "data= (digits, mnist, cifar10...)")
        if net.levels != levels:
            raise ValueError(f"the network predicts {net.levels} levels, the model quantises to {levels}: "
                             "set model.levels and model.nets.image.net.levels alike (the config links them)")
        if not temperature > 0:
            raise ValueError(f"model.temperature must be > 0, got {temperature}")
        self.net = net
        self.optimizer = optimizer
        self.levels = levels
        self.temperature = temperature
        self.cached = cached
        self.grad_clip = grad_clip
        self.sample_batch_size = sample_batch_size
        self.progress = progress

    # --- data <-> levels --------------------------------------------------------------------------
    def quantise(self, x: Tensor) -> Tensor:
        """[0, 1] images -> levels ``round(x * (levels - 1))`` (long)."""
        return quantise(x, self.levels)

    def nll_bits(self, q: Tensor) -> Tensor:
        """(B,) negative log-likelihood of (B, C, H, W) levels ``q`` in bits per dimension."""
        logits = self.net(self.net.to_input(q))                        # (B, levels, C, H, W)
        nats = F.cross_entropy(logits.float(), q, reduction="none")    # (B, C, H, W)
        return nats.flatten(1).mean(1) / math.log(2)

    # --- training -----------------------------------------------------------------------------------
    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        bits = self.nll_bits(self.quantise(batch[0])).mean()  # teacher forcing: every sub-pixel at once
        self.log(keys.BITS_PER_DIM, bits.detach(), prog_bar=True)
        return bits

    def configure_optimizers(self):
        return self.optimizer(self.net.parameters())

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        clip = gradient_clip_val if gradient_clip_val is not None else self.grad_clip  # the trainer's wins
        if clip is not None:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")

    # --- likelihood -----------------------------------------------------------------------------------
    def likelihood_protocol(self) -> dict[str, Any]:
        return {"kind": "exact", "levels": self.levels,
                "quantisation": "level = round(x * (levels - 1)) of x in [0, 1]"}

    def bits_per_dim(self, x: Tensor) -> Tensor:
        """(B,) exact negative log-likelihood of images ``x`` (B, C, H, W) in [0, 1], quantised to
        ``levels``, in bits per dimension; with the EMA weights when there are any."""
        with self.sampling_mode():
            return self.nll_bits(self.quantise(x.to(self.device)))

    # --- sampling -----------------------------------------------------------------------------------
    def sampler_label(self, sampler: Any = None) -> str:
        """``ancestral`` (``_t0.9`` at another temperature, ``_uncached`` without the cache)."""
        if sampler is not None:
            raise ValueError("pixelcnn samples pixel by pixel (ancestral sampling, model.temperature); it "
                             "takes no sampler=, which chooses a diffusion model's sampler: drop it")
        label = "ancestral" + (f"_t{self.temperature:g}" if self.temperature != 1 else "")
        return label + ("" if self.cached else "_uncached")

    def sample(self, n: int, generator: torch.Generator | None = None, *, labels: Tensor | None = None,
               sampler: Any = None) -> Tensor:
        """Draw ``n`` images, sub-pixel by sub-pixel, with the EMA weights if any.

        Every random number is one uniform per sub-pixel, drawn from ``generator`` (else the global
        RNG) as an (n, C * H * W) block before sampling starts, so the cached and the uncached sampler,
        and any ``sample_batch_size``, give the same images.

        Returns:
            (n, C, H, W) images in [0, 1], on the levels ``k / (levels - 1)``.
        """
        self.check_labels(labels, n)
        self.sampler_label(sampler)  # refuses a sampler
        device = generator.device if generator is not None else self.device
        u = torch.rand(n, math.prod(self.spec.shape), generator=generator, device=device)
        out = []
        with self.sampling_mode():
            for chunk in u.split(self.sample_batch_size):
                q = self.net.generate(chunk.to(self.device), self.temperature, self.cached, self.progress)
                out.append(q.float() / (self.levels - 1))
        return torch.cat(out)
