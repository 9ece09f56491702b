"""DCGAN generator and discriminator (Radford et al. 2016), sized from the image shape.

The generator maps z to a 4x4 map and doubles the resolution with strided transposed convolutions
until it reaches the image size; the discriminator mirrors it. Images are in [-1, 1] here.
"""

from __future__ import annotations

import math
from typing import Literal

from torch import Tensor, nn

from gen_bench.data.spec import DataSpec
from gen_bench.models.nets.packing import check_pack

Norm = Literal["batch", "layer", "none"]


def _num_doublings(image_size: int) -> int:
    n = math.log2(image_size / 4) if image_size >= 8 else -1
    if n < 1 or not n.is_integer():
        raise ValueError(f"DCGAN nets need a power-of-two image size >= 8, got {image_size}; "
                         "set data.image_size=32 (or 16, 64, ...)")
    return int(n)


def _norm(kind: Norm, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":  # over (C, H, W) per sample: a critic norm that does not mix the batch
        return nn.GroupNorm(1, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; valid: 'batch', 'layer', 'none'")


def dcgan_init(module: nn.Module) -> None:
    """The DCGAN paper's initialisation: N(0, 0.02) conv weights, N(1, 0.02) norm scales."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    """z (B, latent_dim) -> image (B, C, S, S) in [-1, 1].

    Args:
        spec: The image dataset's spec (channels and size).
        latent_dim: Size of z.
        base_channels: Channels of the last hidden layer; each lower resolution doubles them.
        max_channels: Cap on the channels of any layer.
    """

    def __init__(self, spec: DataSpec, latent_dim: int = 100, base_channels: int = 64,
                 max_channels: int = 512) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        n = _num_doublings(spec.image_size)
        chans = [min(base_channels * 2 ** (n - 1 - i), max_channels) for i in range(n)]
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, chans[0], 4, 1, 0, bias=False),  # (B, c0, 4, 4)
            nn.BatchNorm2d(chans[0]),
            nn.ReLU(True),
        ]
        for c_in, c_out in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(chans[-1], spec.channels, 4, 2, 1), nn.Tanh()]  # (B, C, S, S)
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    """image (B, pack * C, S, S) in [-1, 1] -> logit (B,).

    Args:
        spec: The image dataset's spec.
        base_channels: Channels of the first layer; each lower resolution doubles them.
        max_channels: Cap on the channels of any layer.
        norm: Normalisation after each conv but the first: ``batch`` (DCGAN), ``layer`` (for
            WGAN-GP critics, which must not mix samples of a batch) or ``none``.
        pack: Samples scored together (PacGAN): the input is ``pack`` images stacked along channels.
    """

    def __init__(self, spec: DataSpec, base_channels: int = 64, max_channels: int = 512,
                 norm: Norm = "batch", pack: int = 1) -> None:
        super().__init__()
        self.pack = check_pack(pack)
        n = _num_doublings(spec.image_size)
        chans = [min(base_channels * 2**i, max_channels) for i in range(n)]
        layers: list[nn.Module] = [nn.Conv2d(pack * spec.channels, chans[0], 4, 2, 1),  # (B, c0, S/2, S/2)
                                   nn.LeakyReLU(0.2, True)]
        for c_in, c_out in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=norm == "none"), _norm(norm, c_out),
                       nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(chans[-1], 1, 4, 1, 0))  # (B, 1, 1, 1)
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).flatten()
