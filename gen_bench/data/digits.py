"""scikit-learn's bundled 8x8 handwritten digits (1797 images), and Stacked Digits (1000 modes)."""

from __future__ import annotations

import torch
from torch import Tensor

from gen_bench.data.arrays import ArrayDataset, resize_images, to_uint8
from gen_bench.data.spec import DataSpec, Splits


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

    The 1797 source digits are split first: a ``heldout_fraction`` share of them is held out, and
    the held-out stacks (the same share of ``num_samples``) are built from those digits only, so no
    held-out stack shows a digit of the training stacks. Otherwise the classifier's held-out
    accuracy and the memorization baseline would measure digits the training data contains.

    Args:
        image_size: Output size.
        num_samples: Number of stacked images to draw, training and held-out together.
        seed: Seed of the draw of the stacks.
        heldout_fraction: Share of the source digits, and of the stacks, held out, in [0, 1).
        split_seed: Seed of the split of the source digits.
    """

    def __init__(self, name: str = "stacked_digits", image_size: int = 32, num_samples: int = 25_600,
                 seed: int = 0, heldout_fraction: float = 0.1, split_seed: int = 0) -> None:
        if not 0 <= heldout_fraction < 1:
            raise ValueError(f"data.source.heldout_fraction must be in [0, 1), got {heldout_fraction}")
        self.name = name
        self.image_size = image_size
        self.num_samples = num_samples
        self.seed = seed
        self.heldout_fraction = heldout_fraction
        self.split_seed = split_seed

    @property
    def spec(self) -> DataSpec:
        return DataSpec(kind="image", shape=(3, self.image_size, self.image_size), num_classes=10,
                        label_shape=(3,), num_modes=1000)

    def prepare(self) -> None:
        """Bundled with scikit-learn: nothing to download."""

    def load(self) -> Splits:
        """Training stacks of training digits and held-out stacks of held-out digits."""
        digits, labels = load_sklearn_digits(self.image_size)  # (M, 1, S, S)
        m = digits.shape[0]
        perm = torch.randperm(m, generator=torch.Generator().manual_seed(self.split_seed))
        n_heldout_digits = int(round(m * self.heldout_fraction))
        heldout_digits, train_digits = perm[:n_heldout_digits], perm[n_heldout_digits:]
        n_heldout = int(round(self.num_samples * self.heldout_fraction))
        g = torch.Generator().manual_seed(self.seed)

        def stacks(pool: Tensor, n: int) -> ArrayDataset:
            idx = pool[torch.randint(len(pool), (n, 3), generator=g)] if n else pool.new_zeros(0, 3)  # (n, 3)
            return ArrayDataset(digits[idx].squeeze(2), labels[idx])  # (n, 3, S, S): one digit per channel

        return Splits(stacks(train_digits, self.num_samples - n_heldout), stacks(heldout_digits, n_heldout))
