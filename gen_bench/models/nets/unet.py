"""The DDPM UNet (Ho et al. 2020, appendix B), a PixelCNN++-style UNet with timestep embedding.

Per resolution level: ``num_res_blocks`` residual blocks (GroupNorm, SiLU, 3x3 convs, the timestep
embedding added after the first conv, dropout before the second), self-attention after each block
at the resolutions in ``attn_resolutions``, then a strided-conv downsample; a middle of
res-attention-res; the mirror image on the way up with skip connections from every block. With
``ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,), dropout=0.1`` on 32x32 RGB
this is the paper's 35.7M-parameter CIFAR-10 model. Images are in [-1, 1] here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gen_bench.data.spec import DataSpec
from gen_bench.models.nets.embedding import ClassEmbedding, add_class_embedding, conditional_classes


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal embedding of integer timesteps (Vaswani et al. 2017; Ho et al.'s
    ``get_timestep_embedding``): [sin(t w_0..w_{d/2-1}), cos(...)] with w_i = max_period^(-i/(d/2-1)).

    Args:
        t: (B,) timesteps (any real values).
        dim: Embedding size (even).

    Returns:
        (B, dim) float32.
    """
    if dim % 2:
        raise ValueError(f"timestep embedding size must be even, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / max(half - 1, 1))
    args = t.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([args.sin(), args.cos()], dim=1)


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, channels), channels, eps=1e-6)


class ResBlock(nn.Module):
    """x + conv(drop(act(norm(conv(act(norm(x))) + dense(act(temb)))))), a 1x1 conv on the skip
    when the channels change."""

    def __init__(self, c_in: int, c_out: int, temb_dim: int, dropout: float, groups: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in, groups), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.temb = nn.Linear(temb_dim, c_out)
        self.norm2, self.drop = _norm(c_out, groups), nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity (init_scale=0 in Ho et al.)

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions, with a residual connection."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = _norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2).unbind(1)  # (B, HW, C)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(C)) v
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Block(nn.Module):
    """A residual block, followed by self-attention when ``attn``: one entry of the skip stack."""

    def __init__(self, c_in: int, c_out: int, temb_dim: int, dropout: float, groups: int, attn: bool) -> None:
        super().__init__()
        self.res = ResBlock(c_in, c_out, temb_dim, dropout, groups)
        self.attn = AttnBlock(c_out, groups) if attn else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        return self.attn(self.res(x, temb))


class UNet(nn.Module):
    """eps-prediction network: (x_t (B, C, S, S), t (B,)[, y]) -> eps (B, C, S, S).

    Class-conditional (``conditional``): a learned class embedding is added to the timestep
    embedding (classifier-free guidance, Ho and Salimans 2022), with one more "no class" vector,
    index K, for the unconditional prediction; ``y`` is (B,) class indices or (B, K[+1]) weights, and
    ``None`` means no class.

    Conditioned on an image (``condition``, image-to-image models): the input holds the image's C
    channels followed by the paired task's condition (``spec.task``: the upsampled low-resolution
    image for super-resolution, C channels; the masked image and its mask for inpainting, C + 1),
    concatenated by the caller; only the first convolution sees more channels. The output keeps C.

    Args:
        spec: The image dataset's spec (channels and size).
        ch: Channels of the first level; level i has ``ch * ch_mult[i]``.
        ch_mult: Channel multiplier per resolution level; the image is halved between levels.
        num_res_blocks: Residual blocks per level on the way down (one more on the way up).
        attn_resolutions: Feature-map sizes (e.g. 16 for 16x16) that get self-attention.
        dropout: Dropout rate inside the residual blocks.
        norm_groups: GroupNorm groups (32 in the paper; fewer when a layer has fewer channels).
        conditional: Condition on the dataset's class labels (``spec.num_classes``).
        condition: Read the paired task's condition beside the image (see above).
    """

    def __init__(self, spec: DataSpec, ch: int = 16, ch_mult: Sequence[int] = (1, 2, 4),
                 num_res_blocks: int = 2, attn_resolutions: Sequence[int] = (8,), dropout: float = 0.1,
                 norm_groups: int = 32, conditional: bool = False, condition: bool = False) -> None:
        super().__init__()
        if condition and spec.task is None:
            raise ValueError("a UNet with condition=true reads a paired task's condition: add "
                             "task=superres or task=inpaint")
        size, levels = spec.image_size, len(ch_mult)
        if size % 2 ** (levels - 1):
            raise ValueError(f"a UNet with {levels} levels needs an image size divisible by "
                             f"{2 ** (levels - 1)}, got {size}")
        self.ch = ch
        temb_dim = 4 * ch
        self.temb = nn.Sequential(nn.Linear(ch, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim))
        self.class_embedding = (ClassEmbedding(conditional_classes(spec, "UNet"), temb_dim, null=True)
                                if conditional else None)
        extra = spec.task.condition_channels(spec.channels) if condition else 0
        self.in_channels = spec.channels + extra
        self.conv_in = nn.Conv2d(self.in_channels, ch, 3, padding=1)

        # Every entry of ``down`` pushes its output on the skip stack; every Block of ``up`` pops one.
        self.down = nn.ModuleList()
        skips, c, res = [ch], ch, size
        for i, mult in enumerate(ch_mult):
            for _ in range(num_res_blocks):
                self.down.append(Block(c, ch * mult, temb_dim, dropout, norm_groups, res in attn_resolutions))
                c = ch * mult
                skips.append(c)
            if i != levels - 1:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
                res //= 2

        self.mid = Block(c, c, temb_dim, dropout, norm_groups, attn=True)
        self.mid2 = ResBlock(c, c, temb_dim, dropout, norm_groups)

        self.up = nn.ModuleList()
        for i, mult in reversed(list(enumerate(ch_mult))):
            for _ in range(num_res_blocks + 1):
                self.up.append(Block(c + skips.pop(), ch * mult, temb_dim, dropout, norm_groups,
                                     res in attn_resolutions))
                c = ch * mult
            if i != 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                             nn.Conv2d(c, c, 3, padding=1)))
                res *= 2
        self.norm_out = _norm(c, norm_groups)
        self.conv_out = nn.Conv2d(c, spec.channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        temb = self.temb(timestep_embedding(t, self.ch))  # (B, 4 ch)
        temb = add_class_embedding(temb, self.class_embedding, y)
        h = self.conv_in(x)  # (B, ch, S, S)
        hs = [h]
        for layer in self.down:
            h = layer(h, temb) if isinstance(layer, Block) else layer(h)
            hs.append(h)
        h = self.mid2(self.mid(h, temb), temb)  # res, attention, res at the lowest resolution
        for layer in self.up:
            h = layer(torch.cat([h, hs.pop()], dim=1), temb) if isinstance(layer, Block) else layer(h)
        return self.conv_out(F.silu(self.norm_out(h)))
