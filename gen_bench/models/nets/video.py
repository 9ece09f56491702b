"""DVD-GAN networks (Clark, Donahue and Simonyan 2019), sized from a video spec (C, T, S, S).

* :class:`VideoGenerator` makes the whole clip in one pass: z is projected to a 4x4 map, a temporal
  core (a ConvGRU unrolled over the T frames, as in DVD-GAN, or 3-D convolutions) turns it into T
  4x4 maps, and one 2-D upsampling stack shared by all frames decodes each to S x S.
* :class:`SpatialDiscriminator` (D_S) scores k frames drawn at random per clip, at full
  resolution, and sums their scores: it judges frame content only.
* :class:`TemporalDiscriminator` (D_T) scores the whole clip after spatial average pooling by
  ``downsample``, with 3-D convolutions: it judges motion.

Clips are (B, C, T, S, S) in [-1, 1] here. Spectral norm is applied by the objective.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gen_bench.data.spec import DataSpec

TemporalCore = Literal["gru", "conv3d"]


def _levels(size: int, what: str) -> int:
    """n such that size = 4 * 2^n."""
    n = math.log2(size / 4) if size >= 4 else -1
    if n < 0 or not n.is_integer():
        raise ValueError(f"{what} needs a frame size of 4 * 2^n (4, 8, 16, 32, ...), got {size}; "
                         "set data.image_size=16 (or 32, 64, ...)")
    return int(n)


def _video_spec(spec: DataSpec) -> tuple[int, int, int]:
    if spec.kind != "video" or len(spec.shape) != 4:
        raise ValueError(f"video networks need a video spec (C, T, H, W), got {spec.kind} {spec.shape}")
    c, t, h, w = spec.shape
    if h != w:
        raise ValueError(f"video networks need square frames, got {h}x{w}")
    return c, t, h


class ConvGRUCell(nn.Module):
    """Convolutional GRU cell (Ballas et al. 2016): GRU gates computed by convolutions over maps.

    Args:
        channels: Channels of the input and of the hidden state.
        kernel_size: Size of the gate convolutions.
    """

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.gates = nn.Conv2d(2 * channels, 2 * channels, kernel_size, padding=kernel_size // 2)
        self.candidate = nn.Conv2d(2 * channels, channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        """x, h (B, c, H, W) -> the next hidden state (B, c, H, W)."""
        update, reset = torch.sigmoid(self.gates(torch.cat([x, h], 1))).chunk(2, 1)
        candidate = torch.tanh(self.candidate(torch.cat([x, reset * h], 1)))
        return (1 - update) * h + update * candidate


class ConvGRUCore(nn.Module):
    """z -> T maps: z projected to a (c, 4, 4) map fed to a stack of ConvGRUs at every one of the T
    steps (DVD-GAN); the hidden state starts from a second projection of z.

    Args:
        latent_dim: Size of z.
        channels: c.
        frames: T.
        layers: Stacked ConvGRU cells.
    """

    def __init__(self, latent_dim: int, channels: int, frames: int, layers: int = 1) -> None:
        super().__init__()
        self.channels, self.frames = channels, frames
        self.input = nn.Linear(latent_dim, channels * 16)
        self.initial = nn.Linear(latent_dim, layers * channels * 16)
        self.cells = nn.ModuleList(ConvGRUCell(channels) for _ in range(layers))

    def forward(self, z: Tensor) -> Tensor:
        b, c = z.shape[0], self.channels
        x = self.input(z).view(b, c, 4, 4)
        hidden = list(torch.tanh(self.initial(z)).view(b, len(self.cells), c, 4, 4).unbind(1))
        out = []
        for _ in range(self.frames):
            h = x
            for i, cell in enumerate(self.cells):
                hidden[i] = h = cell(h, hidden[i])
            out.append(h)
        return torch.stack(out, 1)  # (B, T, c, 4, 4)


class Conv3dCore(nn.Module):
    """z -> T maps: z projected to a (c, T, 4, 4) volume refined by residual 3x3x3 convolutions.

    Args:
        latent_dim: Size of z.
        channels: c.
        frames: T.
        layers: Residual blocks.
    """

    def __init__(self, latent_dim: int, channels: int, frames: int, layers: int = 1) -> None:
        super().__init__()
        self.channels, self.frames = channels, frames
        self.project = nn.Linear(latent_dim, channels * frames * 16)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.BatchNorm3d(channels), nn.ReLU(), nn.Conv3d(channels, channels, 3, padding=1),
                          nn.BatchNorm3d(channels), nn.ReLU(), nn.Conv3d(channels, channels, 3, padding=1))
            for _ in range(layers))

    def forward(self, z: Tensor) -> Tensor:
        h = self.project(z).view(z.shape[0], self.channels, self.frames, 4, 4)
        for block in self.blocks:
            h = h + block(h)
        return h.transpose(1, 2)  # (B, T, c, 4, 4)


class VideoGenerator(nn.Module):
    """z (B, latent_dim) -> clip (B, C, T, S, S) in [-1, 1], every frame in one pass.

    Args:
        spec: The video dataset's spec (C, T, S, S), S = 4 * 2^n.
        latent_dim: Size of z.
        base_channels: Channels at full resolution; each halving of the resolution doubles them.
        max_channels: Cap on the channels of any layer.
        temporal_core: ``gru`` (a ConvGRU over time, DVD-GAN) or ``conv3d``.
        temporal_layers: ConvGRU cells or residual 3-D blocks in the core.
    """

    def __init__(self, spec: DataSpec, latent_dim: int = 64, base_channels: int = 32, max_channels: int = 256,
                 temporal_core: TemporalCore = "gru", temporal_layers: int = 1) -> None:
        super().__init__()
        c_out, frames, size = _video_spec(spec)
        n = _levels(size, "VideoGenerator")
        self.latent_dim, self.frames = latent_dim, frames
        chans = [min(base_channels * 2 ** (n - i), max_channels) for i in range(n + 1)]  # 4x4 ... SxS
        if temporal_core == "gru":
            self.core = ConvGRUCore(latent_dim, chans[0], frames, temporal_layers)
        elif temporal_core == "conv3d":
            self.core = Conv3dCore(latent_dim, chans[0], frames, temporal_layers)
        else:
            raise ValueError(f"unknown temporal_core {temporal_core!r}; valid: 'gru', 'conv3d'")
        layers: list[nn.Module] = [nn.BatchNorm2d(chans[0]), nn.ReLU()]
        for a, b in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(a, b, 3, padding=1, bias=False),
                       nn.BatchNorm2d(b), nn.ReLU()]
        layers += [nn.Conv2d(chans[-1], c_out, 3, padding=1), nn.Tanh()]
        self.decoder = nn.Sequential(*layers)  # shared by every frame

    def forward(self, z: Tensor) -> Tensor:
        maps = self.core(z)  # (B, T, c, 4, 4)
        b, t = maps.shape[:2]
        frames = self.decoder(maps.flatten(0, 1))  # (B*T, C, S, S)
        return frames.view(b, t, *frames.shape[1:]).transpose(1, 2)  # (B, C, T, S, S)


def _frame_net(in_channels: int, levels: int, base: int, cap: int) -> tuple[nn.Module, int]:
    """A 3x3 stem then ``levels`` stride-2 4x4 convs (channels doubling), LeakyReLU(0.2) after each."""
    chans = [min(base * 2**i, cap) for i in range(levels + 1)]
    layers: list[nn.Module] = [nn.Conv2d(in_channels, chans[0], 3, 1, 1), nn.LeakyReLU(0.2)]
    for a, b in zip(chans[:-1], chans[1:], strict=True):
        layers += [nn.Conv2d(a, b, 4, 2, 1), nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers), chans[-1]


class SpatialDiscriminator(nn.Module):
    """D_S: k frames per clip, drawn without replacement, at full resolution; score = sum over them.

    Args:
        spec: The video dataset's spec.
        num_frames: k (DVD-GAN: 8); capped at T, where D_S sees every frame.
        base_channels: Channels of the first layer; each halving of the resolution doubles them.
        max_channels: Cap on the channels of any layer.
    """

    def __init__(self, spec: DataSpec, num_frames: int = 8, base_channels: int = 32,
                 max_channels: int = 256) -> None:
        super().__init__()
        channels, frames, size = _video_spec(spec)
        if num_frames < 1:
            raise ValueError(f"the spatial discriminator needs num_frames >= 1, got {num_frames}")
        self.num_frames = min(num_frames, frames)
        self.net, width = _frame_net(channels, _levels(size, "SpatialDiscriminator"), base_channels,
                                     max_channels)
        self.head = nn.Linear(width, 1)

    def sample_frames(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """k distinct frames of every clip, drawn independently per clip.

        Args:
            x: (B, C, T, H, W) clips.
            generator: Source of the draw (else the global RNG of ``x``'s device).

        Returns:
            frames (B, k, C, H, W) and their sorted time indices (B, k).
        """
        b, t = x.shape[0], x.shape[2]
        device = generator.device if generator is not None else x.device
        index = torch.rand(b, t, generator=generator, device=device).argsort(1)[:, : self.num_frames]
        index = index.sort(1).values.to(x.device)
        frames = x.transpose(1, 2)[torch.arange(b, device=x.device)[:, None], index]  # (B, k, C, H, W)
        return frames, index

    def score_frames(self, frames: Tensor) -> Tensor:
        """(B, k, C, H, W) -> per-frame scores (B, k)."""
        b, k = frames.shape[:2]
        h = self.net(frames.flatten(0, 1)).sum((2, 3))  # sum pooling, as BigGAN / DVD-GAN
        return self.head(h).view(b, k)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """(B, C, T, H, W) -> (B,) the sum of the scores of k random frames."""
        frames, _ = self.sample_frames(x, generator)
        return self.score_frames(frames).sum(1)


class TemporalDiscriminator(nn.Module):
    """D_T: the whole clip, average-pooled spatially by ``downsample``, through 3-D convolutions.

    Args:
        spec: The video dataset's spec; S / downsample must be 4 * 2^n.
        downsample: Spatial reduction factor (DVD-GAN: 2); 1 keeps full resolution.
        base_channels: Channels of the first layer; each halving of the resolution doubles them.
        max_channels: Cap on the channels of any layer.
    """

    def __init__(self, spec: DataSpec, downsample: int = 2, base_channels: int = 32,
                 max_channels: int = 256) -> None:
        super().__init__()
        channels, frames, size = _video_spec(spec)
        if downsample < 1 or size % downsample:
            raise ValueError(f"temporal discriminator: downsample must divide the frame size {size}, "
                             f"got {downsample}")
        self.downsample = downsample
        levels = _levels(size // downsample, "TemporalDiscriminator (after downsampling)")
        chans = [min(base_channels * 2**i, max_channels) for i in range(levels + 1)]
        layers: list[nn.Module] = [nn.Conv3d(channels, chans[0], 3, 1, 1), nn.LeakyReLU(0.2)]
        t = frames
        for a, b in zip(chans[:-1], chans[1:], strict=True):
            st = 2 if t > 1 else 1  # halve time with space while there is time to halve
            layers += [nn.Conv3d(a, b, (3, 4, 4), (st, 2, 2), (1, 1, 1)), nn.LeakyReLU(0.2)]
            t = (t - 1) // st + 1
        self.net = nn.Sequential(*layers)
        self.head = nn.Linear(chans[-1], 1)

    def reduce(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) -> (B, C, T, H/f, W/f): every frame, average-pooled f x f."""
        f = self.downsample
        return x if f == 1 else F.avg_pool3d(x, (1, f, f))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) -> (B,) scores."""
        h = self.net(self.reduce(x)).sum((2, 3, 4))
        return self.head(h).flatten()
