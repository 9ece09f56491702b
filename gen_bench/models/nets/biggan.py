"""BigGAN's class-conditional generator (Brock et al. 2019) and the projection discriminator (Miyato
and Koyama 2018), on the residual blocks and self-attention of :mod:`gen_bench.models.nets.resnet`.

* Generator: z is split into one chunk for the first linear layer and one per block (BigGAN's
  hierarchical latents); each block's batch norms are class-conditional, their gains and biases
  linear maps of [shared class embedding, the block's z chunk] (one embedding shared by every
  block); self-attention after the blocks at ``attn_resolutions``; a plain BN-ReLU-conv-tanh output.
* Discriminator: SNGAN's residual discriminator, whose logit gains the projection term
  <embed(y), phi(x)>, phi the summed features before the linear layer (eq. 3 of Miyato and Koyama).
* 2-D data: an MLP generator of [z, class embedding] and an MLP discriminator with the same
  projection term (no batch norm to make conditional).

Spectral norm (on every layer of both nets, the discriminator's class embedding included) is the
objective's switch (:class:`gen_bench.models.biggan.BigGAN`). Images are in [-1, 1] here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gen_bench.data.spec import DataSpec
from gen_bench.models.nets.embedding import ClassEmbedding, conditional_classes
from gen_bench.models.nets.mlp import _LeakyReLU, mlp
from gen_bench.models.nets.resnet import (
    GeneratorBlock,
    ResNetDiscriminator,
    SelfAttention,
    _num_blocks,
    _widths,
)


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm without its own affine parameters, then a gain ``1 + W_g c`` and a bias ``W_b c``
    per channel computed from a conditioning vector ``c`` (the class embedding and z chunk)."""

    def __init__(self, channels: int, cond_dim: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Linear(cond_dim, channels, bias=False)
        self.bias = nn.Linear(cond_dim, channels, bias=False)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        """(B, C, H, W), (B, cond_dim) -> (B, C, H, W)."""
        return self.bn(x) * (1 + self.gain(c))[:, :, None, None] + self.bias(c)[:, :, None, None]


class ConditionalGeneratorBlock(GeneratorBlock):
    """:class:`~gen_bench.models.nets.resnet.GeneratorBlock` with class-conditional batch norms:
    (B, c_in, S, S), (B, cond_dim) -> (B, c_out, 2S, 2S)."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int) -> None:
        super().__init__(c_in, c_out)
        self.bn1, self.bn2 = ConditionalBatchNorm2d(c_in, cond_dim), ConditionalBatchNorm2d(c_out, cond_dim)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        h = F.interpolate(F.relu(self.bn1(x, c)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h), c)))
        return h + self.shortcut(F.interpolate(x, scale_factor=2, mode="nearest"))


class BigGANGenerator(nn.Module):
    """(z (B, latent_dim), y) -> image (B, C, S, S) in [-1, 1]; y: (B,) class indices or (B, K) weights
    (their embeddings mixed).

    Args:
        spec: The labelled image dataset's spec (channels, size, classes).
        latent_dim: Size of z, split into ``blocks + 1`` chunks (the first takes the remainder).
        base_channels: Channels at full resolution; each lower resolution doubles them.
        max_channels: Cap on the channels of any layer.
        attn_resolutions: Feature-map sizes (e.g. 16) followed by self-attention.
        shared_dim: Size of the shared class embedding.
    """

    def __init__(self, spec: DataSpec, latent_dim: int = 128, base_channels: int = 32,
                 max_channels: int = 512, attn_resolutions: Sequence[int] = (16,),
                 shared_dim: int = 128) -> None:
        super().__init__()
        num_classes = conditional_classes(spec, "BigGAN generator")
        n = _num_blocks(spec.image_size)
        if latent_dim < n + 1:
            raise ValueError(f"latent_dim={latent_dim} cannot be split into the {n + 1} chunks of a "
                             f"{n}-block generator: set latent_dim >= {n + 1}")
        self.latent_dim = latent_dim
        chunk = latent_dim // (n + 1)
        self.chunks = [latent_dim - n * chunk, *[chunk] * n]  # z0 for the linear layer, one per block
        widths = _widths(base_channels, n, max_channels)
        self.shared = ClassEmbedding(num_classes, shared_dim)
        self.linear = nn.Linear(self.chunks[0], 16 * widths[0])  # -> (B, widths[0], 4, 4)
        self.blocks = nn.ModuleList()
        self.attention = nn.ModuleList()
        for i in range(n):
            self.blocks.append(ConditionalGeneratorBlock(widths[i], widths[i + 1], shared_dim + chunk))
            attend = 4 * 2 ** (i + 1) in attn_resolutions
            self.attention.append(SelfAttention(widths[i + 1]) if attend else nn.Identity())
        self.out = nn.Sequential(nn.BatchNorm2d(widths[-1]), nn.ReLU(),
                                 nn.Conv2d(widths[-1], spec.channels, 3, padding=1), nn.Tanh())

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        zs = torch.split(z, self.chunks, dim=1)
        shared = self.shared(y)  # (B, shared_dim), one embedding for every block
        h = self.linear(zs[0]).reshape(z.shape[0], -1, 4, 4)
        for block, attention, z_i in zip(self.blocks, self.attention, zs[1:], strict=True):
            h = attention(block(h, torch.cat([shared, z_i], dim=1)))
        return self.out(h)  # (B, C, S, S)


class ProjectionDiscriminator(ResNetDiscriminator):
    """(image (B, C, S, S), y (B,)) -> logit (B,) = psi(phi(x)) + <embed(y), phi(x)>.

    SNGAN's residual discriminator (no normalisation layers) with Miyato and Koyama's class
    projection: phi(x) the summed features (:meth:`features`), psi the linear layer.

    Args:
        spec: The labelled image dataset's spec.
        base_channels: Channels of the first block; each lower resolution doubles them.
        max_channels: Cap on the channels of any layer.
        attn_resolutions: Feature-map sizes (e.g. 16) followed by self-attention.
    """

    def __init__(self, spec: DataSpec, base_channels: int = 32, max_channels: int = 512,
                 attn_resolutions: Sequence[int] = (16,)) -> None:
        super().__init__(spec, base_channels, max_channels, attn_resolutions)
        self.embedding = ClassEmbedding(conditional_classes(spec, "projection discriminator"),
                                        self.linear.in_features)

    def projection(self, h: Tensor, y: Tensor) -> Tensor:
        """<embed(y), h> per sample: (B, C), (B,) -> (B,)."""
        return (self.embedding(y) * h).sum(dim=1)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h = self.features(x)  # (B, C)
        return self.linear(h).squeeze(1) + self.projection(h, y)


class ConditionalMLPGenerator(nn.Module):
    """(z (B, latent_dim), y) -> x (B, D) in data units: an MLP of [z, class embedding of y].

    Args:
        spec: The labelled 2-D dataset's spec.
        latent_dim: Size of z.
        hidden: Width of the hidden layers.
        depth: Number of hidden layers.
        embed_dim: Size of the class embedding.
    """

    def __init__(self, spec: DataSpec, latent_dim: int = 8, hidden: int = 128, depth: int = 3,
                 embed_dim: int = 16) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.embedding = ClassEmbedding(conditional_classes(spec, "MLP generator"), embed_dim)
        self.net = mlp(latent_dim + embed_dim, spec.shape[0], hidden, depth, nn.ReLU)

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        return self.net(torch.cat([z, self.embedding(y)], dim=1))


class ProjectionMLPDiscriminator(nn.Module):
    """(x (B, D), y (B,)) -> logit (B,) = psi(phi(x)) + <embed(y), phi(x)>, phi an MLP (LeakyReLU).

    Args:
        spec: The labelled 2-D dataset's spec.
        hidden: Width of the hidden layers (and of phi).
        depth: Number of hidden layers.
    """

    def __init__(self, spec: DataSpec, hidden: int = 128, depth: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(mlp(spec.shape[0], hidden, hidden, depth - 1, _LeakyReLU), _LeakyReLU())
        self.linear = nn.Linear(hidden, 1)
        self.embedding = ClassEmbedding(conditional_classes(spec, "projection discriminator"), hidden)

    def features(self, x: Tensor) -> Tensor:
        """phi(x): (B, D) -> (B, hidden)."""
        return self.body(x)

    def projection(self, h: Tensor, y: Tensor) -> Tensor:
        """<embed(y), h> per sample: (B, hidden), (B,) -> (B,)."""
        return (self.embedding(y) * h).sum(dim=1)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h = self.features(x)
        return self.linear(h).squeeze(1) + self.projection(h, y)
