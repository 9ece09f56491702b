"""scikit-learn's bundled 8x8 handwritten digits (1797 images), and Stacked Digits (1000 modes)."""

from __future__ import annotations

import torch
from torch import Tensor

from gen_bench.data.arrays import ArrayDataset, resize_images, to_uint8
from gen_bench.data.spec import DataSpec


def load_sklearn_digits(image_size: int = 32) -> tuple[Tensor, Tensor]:
    """All 1797 digits resized to ``image_size`` with antialiased bilinear interpolation.

    Returns:
        (N, 1, S, S) uint8 images and (N,) int64 labels 0..9.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images).float().div(16.0).unsqueeze(1)  # (N, 1, 8, 8) in [0, 1]
    return resize_images(to_uint8(x), image_size), torch.from_numpy(bunch.target).long()


class Digits:
    """The 1797 scikit-learn digits, one channel, resized to ``image_size`` (default 32)."""

    def __init__(self, name: str = "digits", image_size: int = 32) -> None:
        self.name = name
        self.image_size = image_size

    @property
    def spec(self) -> DataSpec:
        return DataSpec(kind="image", shape=(1, self.image_size, self.image_size), num_classes=10,
                        num_modes=10)

    def prepare(self) -> None:
        """Bundled with scikit-learn: nothing to download."""

    def load(self) -> ArrayDataset:
        return ArrayDataset(*load_sklearn_digits(self.image_size))


class StackedDigits:
    """Three independently drawn digits as the R, G and B channels: 10^3 = 1000 modes.

    The scikit-learn analogue of Stacked MNIST (Metz et al. 2017; Lin et al. 2018). The label of a
    sample is the triple of digit classes, shape (3,); ``100*r + 10*g + b`` numbers its mode.

    Args:
        image_size: Output size.
        num_samples: Number of stacked images to draw.
        seed: Seed of the draw.
    """

    def __init__(self, name: str = "stacked_digits", image_size: int = 32, num_samples: int = 25_600,
                 seed: int = 0) -> None:
        self.name = name
        self.image_size = image_size
        self.num_samples = num_samples
        self.seed = seed

    @property
    def spec(self) -> DataSpec:
        return DataSpec(kind="image", shape=(3, self.image_size, self.image_size), num_classes=10,
                        label_shape=(3,), num_modes=1000)

    def prepare(self) -> None:
        """Bundled with scikit-learn: nothing to download."""

    def load(self) -> ArrayDataset:
        digits, labels = load_sklearn_digits(self.image_size)  # (M, 1, S, S)
        g = torch.Generator().manual_seed(self.seed)
        idx = torch.randint(digits.shape[0], (self.num_samples, 3), generator=g)  # (N, 3)
        x = digits[idx].squeeze(2)  # (N, 3, S, S): one digit per channel
        return ArrayDataset(x, labels[idx])
