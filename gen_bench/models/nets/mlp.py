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


class Maxout(nn.Module):
    """Maxout units (Goodfellow et al. 2013): a linear map to ``out_dim`` units of ``pieces`` values
    each, (B, in_dim) -> (B, out_dim) the largest piece of each unit."""

    def __init__(self, in_dim: int, out_dim: int, pieces: int) -> None:
        super().__init__()
        self.pieces = pieces
        self.linear = nn.Linear(in_dim, out_dim * pieces)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x).unflatten(1, (-1, self.pieces)).amax(2)  # (B, out, pieces) -> (B, out)


class MLPGenerator(nn.Module):
    """z (B, latent_dim) -> x (B, D) in data units.

    Args:
        spec: The 2-D dataset's spec.
        latent_dim: Size of z.
        hidden: Width of the hidden layers.
        depth: Number of hidden ReLU layers.
        batch_norm: Batch norm before each ReLU, the hidden layers then without bias (PacGAN's 2-D
            generator, Lin et al. 2018).
    """

    def __init__(self, spec: DataSpec, latent_dim: int = 8, hidden: int = 128, depth: int = 3,
                 batch_norm: bool = False) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        if not batch_norm:
            self.net = mlp(latent_dim, spec.shape[0], hidden, depth, nn.ReLU)
            return
        layers: list[nn.Module] = []
        d = latent_dim
        for _ in range(depth):
            layers += [nn.Linear(d, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU()]
            d = hidden
        self.net = nn.Sequential(*layers, nn.Linear(d, spec.shape[0]))

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
        maxout: Pieces per hidden unit: above 1, the hidden layers are maxout units (PacGAN's and
            ALI's 2-D discriminators: 5) instead of linear layers with leaky ReLU.
    """

    def __init__(self, spec: DataSpec, hidden: int = 128, depth: int = 3, pack: int = 1,
                 maxout: int = 1) -> None:
        super().__init__()
        self.pack = check_pack(pack)
        if maxout < 1:
            raise ValueError(f"maxout is the number of pieces per unit (>= 1; 1: leaky ReLU), got {maxout}")
        d = pack * spec.shape[0]
        if maxout == 1:
            self.net = mlp(d, 1, hidden, depth, _LeakyReLU)
            return
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers.append(Maxout(d, hidden, maxout))
            d = hidden
        self.net = nn.Sequential(*layers, nn.Linear(d, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(1)
