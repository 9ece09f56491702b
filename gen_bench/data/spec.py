"""What a dataset looks like from the outside: its kind, sample shape and labels.

Every dataset builder ("source") exposes a :class:`DataSpec` *before* any data is loaded, so
networks can be sized from the config alone, and a ``load()`` that returns the full dataset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

from torch.utils.data import Dataset

DataKind = Literal["toy2d", "image", "video"]


@dataclass(frozen=True)
class DataSpec:
    """Shape and label information of a dataset.

    Attributes:
        kind: ``toy2d`` (samples of shape (2,) in data units), ``image`` (C, H, W in [0, 1]) or
            ``video`` (C, T, H, W in [0, 1]).
        shape: Shape of one sample.
        num_classes: Number of classes of the label, or ``None`` for unlabeled data.
        label_shape: Shape of one label (``()`` for a class index, ``(3,)`` for stacked digits).
        num_modes: Number of modes of the distribution when it is known by construction
            (8 for ring8, 1000 for stacked digits).
        mode_centers: For toy 2-D mixtures, the component means as ((x, y), ...).
        mode_std: For toy 2-D mixtures, the component standard deviation.
        task: The paired image-to-image task a run makes of the data (``task=superres`` or
            ``inpaint``; :mod:`gen_bench.data.paired`), ``None`` for generation from noise. ``shape``
            stays the target's; out of ``repr``, so caches of the real images (reference statistics,
            the dataset classifier) are shared with runs without a task.
    """

    kind: DataKind
    shape: tuple[int, ...]
    num_classes: int | None = None
    label_shape: tuple[int, ...] = ()
    num_modes: int | None = None
    mode_centers: tuple[tuple[float, float], ...] | None = field(default=None, repr=False)
    mode_std: float | None = None
    # a gen_bench.data.paired.PairedTask (not imported: paired.py builds on this module)
    task: Any | None = field(default=None, repr=False)

    @property
    def channels(self) -> int:
        """Number of channels of an image or video sample."""
        if self.kind == "toy2d":
            raise ValueError("toy2d data has no channels")
        return self.shape[0]

    @property
    def image_size(self) -> int:
        """Spatial size (H == W) of an image or video sample."""
        if self.kind == "toy2d":
            raise ValueError("toy2d data has no image size")
        return self.shape[-1]

    @property
    def labeled(self) -> bool:
        return self.num_classes is not None


class Splits(NamedTuple):
    """A dataset that comes with its own training and held-out parts (an official test set, or
    stacked digits built from disjoint source digits); the datamodule then draws no split."""

    train: Dataset
    heldout: Dataset


@runtime_checkable
class DataSource(Protocol):
    """A dataset builder: cheap to construct, loads data only on ``load()``."""

    name: str

    @property
    def spec(self) -> DataSpec: ...

    def prepare(self) -> None:
        """Download or generate files if needed (called on one process only)."""

    def load(self) -> Dataset | Splits:
        """Return the full dataset, or its :class:`Splits` when the source defines the held-out
        part itself; items are ``(x, y)`` with ``x`` float32 and ``y`` int64."""
