"""MLP denoiser for 2-D toy data: (x_t (B, D), t (B,)[, y]) -> eps (B, D)."""

from __future__ import annotations

from torch import Tensor, nn

from gen_bench.data.spec import DataSpec
from gen_bench.models.nets.embedding import ClassEmbedding, add_class_embedding, conditional_classes
from gen_bench.models.nets.unet import timestep_embedding


class MLPDenoiser(nn.Module):
    """``depth`` SiLU layers of width ``hidden``, each adding its own projection of a shared
    timestep embedding (sinusoidal, then a 2-layer MLP, as in the DDPM UNet). Class-conditional
    (``conditional``): a class embedding added to the timestep embedding, as in the UNet.

    Args:
        spec: The toy dataset's spec (dimension D).
        hidden: Width of every layer and of the timestep embedding.
        depth: Number of hidden layers.
        conditional: Condition on the dataset's class labels (ring8: the mode index).
    """

    def __init__(self, spec: DataSpec, hidden: int = 128, depth: int = 3, conditional: bool = False) -> None:
        super().__init__()
        dim = spec.shape[0]
        self.hidden = hidden
        self.temb = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.class_embedding = (ClassEmbedding(conditional_classes(spec, "MLP denoiser"), hidden,
                                               null=True) if conditional else None)
        self.inp = nn.Linear(dim, hidden)
        self.layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))
        self.temb_proj = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))
        self.out = nn.Linear(hidden, dim)
        self.act = nn.SiLU()

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        temb = add_class_embedding(self.temb(timestep_embedding(t, self.hidden)), self.class_embedding, y)
        temb = self.act(temb)  # (B, hidden)
        h = self.inp(x)
        for layer, proj in zip(self.layers, self.temb_proj, strict=True):
            h = self.act(layer(h) + proj(temb))
        return self.out(h)
