"""pix2pix's PatchGAN discriminator (Isola et al. 2017, sec. 3.2.2): a fully convolutional net whose
output is a map of logits, one per overlapping patch of the image, so it judges local texture and
edges (what a pixel loss blurs) and leaves the global structure to the pixel loss.

Conditional: it sees the paired task's condition (the upsampled low-resolution input, or the masked
image and its mask) concatenated with the real or generated image, so it scores pairs (input,
output), as pix2pix's and SRGAN-style conditional discriminators do.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gen_bench.data.spec import DataSpec

NORMS = ("batch", "instance", "none")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.Identity()


class PatchDiscriminator(nn.Module):
    """C64-C128-...: ``layers`` 4x4 stride-2 convs (channels doubling from ``base_channels``, at most
    8x), one 4x4 stride-1 conv, then a 4x4 stride-1 conv to one logit per patch; LeakyReLU(0.2), a
    normalisation layer after every conv but the first and the last. ``layers=3`` is pix2pix's 70x70
    PatchGAN; each layer fewer halves the patch (2: 34 px, 1: 16 px).

    Args:
        spec: The image dataset's spec, with its paired task (``spec.task``).
        base_channels: Channels of the first conv.
        layers: Stride-2 convs.
        norm: ``batch`` (pix2pix), ``instance`` or ``none``.
    """

    def __init__(self, spec: DataSpec, base_channels: int = 64, layers: int = 3, norm: str = "batch") -> None:
        super().__init__()
        if spec.task is None:
            raise ValueError("the PatchGAN discriminator scores (input, output) pairs of a paired task: add "
                             "task=superres or task=inpaint")
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")
        if layers < 1:
            raise ValueError(f"the PatchGAN needs layers >= 1, got {layers}")
        c_in = spec.channels + spec.task.condition_channels(spec.channels)
        blocks: list[nn.Module] = [nn.Conv2d(c_in, base_channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        c = base_channels
        for i in range(1, layers + 1):
            c_out = base_channels * min(2**i, 8)
            stride = 2 if i < layers else 1  # the last one keeps the resolution (pix2pix)
            blocks += [nn.Conv2d(c, c_out, 4, stride=stride, padding=1, bias=norm == "none"),
                       _norm(norm, c_out), nn.LeakyReLU(0.2)]
            c = c_out
        blocks.append(nn.Conv2d(c, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*blocks)

    def forward(self, condition: Tensor, image: Tensor) -> Tensor:
        """(B, K, H, W) condition and (B, C, H, W) image in model space -> (B, 1, h, w) patch logits."""
        return self.net(torch.cat([condition, image], dim=1))
