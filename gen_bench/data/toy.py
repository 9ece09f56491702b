"""2-D Gaussian mixtures with known modes, as in the VEEGAN and PacGAN mode-collapse protocol."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from gen_bench.data.arrays import ArrayDataset
from gen_bench.data.spec import DataSpec


def ring_centers(num_modes: int = 8, radius: float = 1.0) -> Tensor:
    """(num_modes, 2) means equally spaced on a circle."""
    angles = torch.arange(num_modes, dtype=torch.float64) * (2 * math.pi / num_modes)
    return torch.stack([radius * angles.cos(), radius * angles.sin()], dim=1).float()


def grid_centers(side: int = 5, spacing: float = 2.0) -> Tensor:
    """(side**2, 2) means on a square grid centred at 0 ({-4,-2,0,2,4}^2 for side 5, spacing 2)."""
    coords = (torch.arange(side, dtype=torch.float32) - (side - 1) / 2) * spacing
    xs, ys = torch.meshgrid(coords, coords, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)


class GaussianMixture2D:
    """An equal-weight mixture of isotropic Gaussians in 2-D; the label is the component index.

    Args:
        name: Dataset name (``ring8``, ``grid25``).
        layout: ``ring`` (``num_modes`` means on a circle of ``radius``) or ``grid``
            (``side`` x ``side`` means ``spacing`` apart).
        std: Standard deviation of every component.
        num_samples: Samples drawn (train and held-out together).
        seed: Seed of the draw; the dataset is the same for the same seed.
    """

    def __init__(
        self,
        name: str,
        layout: Literal["ring", "grid"] = "ring",
        num_modes: int = 8,
        radius: float = 1.0,
        side: int = 5,
        spacing: float = 2.0,
        std: float = 0.01,
        num_samples: int = 50_000,
        seed: int = 0,
    ) -> None:
        if layout == "ring":
            self.centers = ring_centers(num_modes, radius)
        elif layout == "grid":
            self.centers = grid_centers(side, spacing)
        else:
            raise ValueError(f"unknown layout {layout!r}; valid: 'ring', 'grid'")
        if std <= 0:
            raise ValueError(f"std must be positive, got {std}")
        self.name = name
        self.std = std
        self.num_samples = num_samples
        self.seed = seed

    @property
    def spec(self) -> DataSpec:
        k = self.centers.shape[0]
        return DataSpec(
            kind="toy2d",
            shape=(2,),
            num_classes=k,
            num_modes=k,
            mode_centers=tuple((float(a), float(b)) for a, b in self.centers.tolist()),
            mode_std=self.std,
        )

    def prepare(self) -> None:
        """Nothing to download."""

    def load(self) -> ArrayDataset:
        g = torch.Generator().manual_seed(self.seed)
        labels = torch.randint(self.centers.shape[0], (self.num_samples,), generator=g)
        noise = torch.randn(self.num_samples, 2, generator=g) * self.std
        return ArrayDataset(self.centers[labels] + noise, labels)
