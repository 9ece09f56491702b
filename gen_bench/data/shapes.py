"""Procedural coloured shapes with class labels (shape x colour), drawn with numpy."""

from __future__ import annotations

import numpy as np
import torch

from gen_bench.data.arrays import ArrayDataset, to_uint8
from gen_bench.data.spec import DataSpec

SHAPES = ("circle", "square", "triangle", "cross")
PALETTE = {
    "red": (0.9, 0.15, 0.15),
    "green": (0.15, 0.8, 0.2),
    "blue": (0.2, 0.35, 0.95),
    "yellow": (0.95, 0.85, 0.1),
    "magenta": (0.85, 0.2, 0.85),
    "cyan": (0.1, 0.85, 0.9),
}


def _mask(shape: str, xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape == "square":
        return (np.abs(dx) <= r * 0.85) & (np.abs(dy) <= r * 0.85)
    if shape == "triangle":  # apex up, base at cy + r/2
        return (dy <= r * 0.6) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.62)
    if shape == "cross":
        w = r * 0.33
        return ((np.abs(dx) <= w) & (np.abs(dy) <= r)) | ((np.abs(dy) <= w) & (np.abs(dx) <= r))
    raise ValueError(f"unknown shape {shape!r}; valid: {SHAPES}")


class Shapes:
    """Coloured shapes on a dark background; label = ``shape_index * len(PALETTE) + colour_index``.

    Position, size and a small brightness jitter vary per image; 4 shapes x 6 colours = 24 classes.

    Args:
        image_size: Output size.
        num_samples: Number of images.
        seed: Seed of the draw.
    """

    def __init__(self, name: str = "shapes", image_size: int = 32, num_samples: int = 10_000,
                 seed: int = 0) -> None:
        if image_size < 8:
            raise ValueError(f"shapes need image_size >= 8, got {image_size}")
        self.name = name
        self.image_size = image_size
        self.num_samples = num_samples
        self.seed = seed

    @property
    def spec(self) -> DataSpec:
        k = len(SHAPES) * len(PALETTE)
        return DataSpec(kind="image", shape=(3, self.image_size, self.image_size), num_classes=k,
                        num_modes=k)

    def prepare(self) -> None:
        """Procedural: nothing to download."""

    def load(self) -> ArrayDataset:
        s = self.image_size
        rng = np.random.default_rng(self.seed)
        colours = np.array(list(PALETTE.values()), dtype=np.float32)
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) + 0.5
        images = np.zeros((self.num_samples, 3, s, s), dtype=np.float32)
        labels = np.zeros(self.num_samples, dtype=np.int64)
        for i in range(self.num_samples):
            k, c = rng.integers(len(SHAPES)), rng.integers(len(PALETTE))
            r = rng.uniform(0.18, 0.32) * s
            cx, cy = rng.uniform(r, s - r, size=2)
            mask = _mask(SHAPES[k], xx, yy, cx, cy, r)
            colour = colours[c] * rng.uniform(0.85, 1.0)
            images[i] = 0.08  # dark grey background
            images[i][:, mask] = colour[:, None]
            labels[i] = k * len(PALETTE) + c
        return ArrayDataset(to_uint8(torch.from_numpy(images)), torch.from_numpy(labels))
