"""Residual GAN generator and discriminator with optional self-attention, sized from the image shape.

The blocks of SNGAN (Miyato et al. 2018, appendix B) and BigGAN (Brock et al. 2019):

* generator block: BN-ReLU-upsample-conv3x3-BN-ReLU-conv3x3, plus an upsampled 1x1-conv shortcut;
* discriminator block: ReLU-conv3x3-ReLU-conv3x3-avgpool, plus a 1x1-conv-avgpool shortcut; the
  first block is SNGAN's "optimized" one (conv-ReLU-conv-avgpool, shortcut avgpool-1x1 conv: no
  ReLU on the image itself);
* self-attention (SAGAN, Zhang et al. 2019) after the blocks whose output has a size listed in
  ``attn_resolutions``, with its output scaled by a learned gain that starts at 0.

The generator maps z to a 4x4 map and doubles it once per block up to the image size; the
discriminator halves the image once per block down to 4x4, then ReLU, a sum over positions and a
linear layer give the logit. The discriminator has no normalisation layer (no batch statistics), so
it serves as a WGAN-GP critic and under R1/R2 penalties; spectral norm is the objectives' switch
(``model.spectral_norm``). Images are in [-1, 1] here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gen_bench.data.spec import DataSpec
from gen_bench.models.nets.packing import check_pack


def _num_blocks(image_size: int) -> int:
    n = math.log2(image_size / 4) if image_size >= 8 else -1
    if n < 1 or not n.is_integer():
        raise ValueError(f"ResNet GAN nets need a power-of-two image size >= 8, got {image_size}; "
                         "set data.image_size=32 (or 16, 64, ...)")
    return int(n)


class SelfAttention(nn.Module):
    """SAGAN self-attention: x + gain * o(softmax(f(x)^T g(x)) h(x)) over the H*W positions.

    Query and key are 1x1 convs to C/8 channels, the value a 1x1 conv to C/2 channels mapped back to
    C by ``out``; ``gain`` starts at 0, so the block starts as the identity (Zhang et al. 2019, eq. 3).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        inner, value = max(channels // 8, 1), max(channels // 2, 1)
        self.query = nn.Conv2d(channels, inner, 1, bias=False)
        self.key = nn.Conv2d(channels, inner, 1, bias=False)
        self.value = nn.Conv2d(channels, value, 1, bias=False)
        self.out = nn.Conv2d(value, channels, 1, bias=False)
        self.gain = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)  # (B, HW, C/8)
        k = self.key(x).flatten(2).transpose(1, 2)    # (B, HW, C/8)
        v = self.value(x).flatten(2).transpose(1, 2)  # (B, HW, C/2)
        # SAGAN's attention map has no 1/sqrt(d) temperature: scale=1
        o = F.scaled_dot_product_attention(q, k, v, scale=1.0)  # (B, HW, C/2)
        return x + self.gain * self.out(o.transpose(1, 2).reshape(b, -1, h, w))


class GeneratorBlock(nn.Module):
    """BN-ReLU-upsample-conv3x3-BN-ReLU-conv3x3 + upsample-conv1x1 shortcut.

    (B, c_in, S, S) -> (B, c_out, 2S, 2S).
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.bn2, self.conv2 = nn.BatchNorm2d(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = F.interpolate(F.relu(self.bn1(x)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h))))
        return h + self.shortcut(F.interpolate(x, scale_factor=2, mode="nearest"))


class DiscriminatorBlock(nn.Module):
    """ReLU-conv3x3-ReLU-conv3x3-avgpool + conv1x1-avgpool shortcut: (B, c_in, S, S) -> (B, c_out, S/2, S/2).

    ``optimized`` (the first block, on the image): conv-ReLU-conv-avgpool, shortcut avgpool-conv1x1.
    """

    def __init__(self, c_in: int, c_out: int, optimized: bool = False) -> None:
        super().__init__()
        self.optimized = optimized
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(x if self.optimized else F.relu(x))
        h = F.avg_pool2d(self.conv2(F.relu(h)), 2)
        skip = self.shortcut(F.avg_pool2d(x, 2)) if self.optimized else F.avg_pool2d(self.shortcut(x), 2)
        return h + skip


def _widths(base: int, n: int, max_channels: int) -> list[int]:
    """Channels at 4x4, 8x8, ..., image size: ``base`` at full resolution, doubled per halving."""
    return [min(base * 2 ** (n - i), max_channels) for i in range(n + 1)]


class ResNetGenerator(nn.Module):
    """z (B, latent_dim) -> image (B, C, S, S) in [-1, 1].

    Args:
        spec: The image dataset's spec (channels and size).
        latent_dim: Size of z.
        base_channels: Channels at full resolution; each lower resolution doubles them.
        max_channels: Cap on the channels of any layer.
        attn_resolutions: Feature-map sizes (e.g. 16) followed by self-attention.
    """

    def __init__(self, spec: DataSpec, latent_dim: int = 128, base_channels: int = 32,
                 max_channels: int = 512, attn_resolutions: Sequence[int] = (16,)) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        n = _num_blocks(spec.image_size)
        widths = _widths(base_channels, n, max_channels)
        self.linear = nn.Linear(latent_dim, 16 * widths[0])  # -> (B, widths[0], 4, 4)
        layers: list[nn.Module] = []
        for i in range(n):
            layers.append(GeneratorBlock(widths[i], widths[i + 1]))
            if 4 * 2 ** (i + 1) in attn_resolutions:
                layers.append(SelfAttention(widths[i + 1]))
        layers += [nn.BatchNorm2d(widths[-1]), nn.ReLU(),
                   nn.Conv2d(widths[-1], spec.channels, 3, padding=1), nn.Tanh()]  # (B, C, S, S)
        self.blocks = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.blocks(self.linear(z).reshape(z.shape[0], -1, 4, 4))


class ResNetDiscriminator(nn.Module):
    """image (B, pack * C, S, S) in [-1, 1] -> logit (B,). No normalisation layers: per-sample outputs.

    Args:
        spec: The image dataset's spec.
        base_channels: Channels of the first block; each lower resolution doubles them.
        max_channels: Cap on the channels of any layer.
        attn_resolutions: Feature-map sizes (e.g. 16) followed by self-attention.
        pack: Samples scored together (PacGAN): the input is ``pack`` images stacked along channels.
    """

    def __init__(self, spec: DataSpec, base_channels: int = 32, max_channels: int = 512,
                 attn_resolutions: Sequence[int] = (16,), pack: int = 1) -> None:
        super().__init__()
        self.pack = check_pack(pack)
        n = _num_blocks(spec.image_size)
        widths = [pack * spec.channels, *reversed(_widths(base_channels, n - 1, max_channels))]
        layers: list[nn.Module] = []
        size = spec.image_size
        for i in range(n):
            layers.append(DiscriminatorBlock(widths[i], widths[i + 1], optimized=i == 0))
            size //= 2
            if size in attn_resolutions:
                layers.append(SelfAttention(widths[i + 1]))
        self.blocks = nn.Sequential(*layers)  # (B, widths[-1], 4, 4)
        self.linear = nn.Linear(widths[-1], 1)

    def features(self, x: Tensor) -> Tensor:
        """ReLU of the last block's output, summed over positions (SNGAN's global sum pooling): (B, C)."""
        return F.relu(self.blocks(x)).sum(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.features(x)).squeeze(1)
