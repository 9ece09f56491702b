"""MLP generator and discriminator for 2-D toy data."""

from __future__ import annotations

from torch import Tensor, nn

from gen_bench.data.spec import DataSpec
from gen_bench.models.nets.packing import check_pack


def mlp(in_dim: int, out_dim: int, hidden: int, depth: int, act: type[nn.Module]) -> nn.Sequential:
    """``depth`` hidden layers of width ``hidden`` with activation ``act``, then a linear output."""
    layers: list[nn.Module] = []
    d = in_dim
    for _ in range(depth):
        layers += [nn.Linear(d, hidden), act()]
        d = hidden
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class MLPGenerator(nn.Module):
    """z (B, latent_dim) -> x (B, D) in data units."""

    def __init__(self, spec: DataSpec, latent_dim: int = 8, hidden: int = 128, depth: int = 3) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.net = mlp(latent_dim, spec.shape[0], hidden, depth, nn.ReLU)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class _LeakyReLU(nn.LeakyReLU):
    def __init__(self) -> None:
        super().__init__(0.2)


class MLPDiscriminator(nn.Module):
    """x (B, pack * D) -> logit (B,).

    Args:
        spec: The 2-D dataset's spec.
        hidden: Width of the hidden layers.
        depth: Number of hidden layers.
        pack: Samples scored together (PacGAN): the input is ``pack`` samples' features, concatenated.
    """

    def __init__(self, spec: DataSpec, hidden: int = 128, depth: int = 3, pack: int = 1) -> None:
        super().__init__()
        self.pack = check_pack(pack)
        self.net = mlp(pack * spec.shape[0], 1, hidden, depth, _LeakyReLU)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(1)
