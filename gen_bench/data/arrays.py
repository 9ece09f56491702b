"""In-memory datasets served a whole batch at a time, and the step-indexed batch sampler."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, Sampler, default_collate


class ArrayDataset(Dataset):
    """Samples and labels held in memory.

    Images are stored as uint8 (like the files they come from) and converted to float32 in [0, 1]
    when indexed; toy data is stored as float32. Indexing with a list or tensor of indices returns a
    whole batch in one tensor operation, which is what the training loader does.

    Args:
        x: (N, ...) uint8 images or float32 points.
        y: (N, *label_shape) int64 labels; ``None`` stores -1 for every sample.
    """

    def __init__(self, x: Tensor, y: Tensor | None = None) -> None:
        if x.dtype not in (torch.uint8, torch.float32):
            raise TypeError(f"ArrayDataset stores uint8 images or float32 points, got {x.dtype}")
        if y is None:
            y = torch.full((x.shape[0],), -1, dtype=torch.long)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"{x.shape[0]} samples but {y.shape[0]} labels")
        self.x = x
        self.y = y.long()

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index: int | Sequence[int] | Tensor) -> tuple[Tensor, Tensor]:
        if not isinstance(index, int):
            index = torch.as_tensor(index, dtype=torch.long)
        x = self.x[index]
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        return x, self.y[index]

    def take(self, indices: Tensor) -> ArrayDataset:
        """A new dataset holding the given rows (used for train / held-out splits)."""
        return ArrayDataset(self.x[indices], self.y[indices])


def batch_at(dataset: Dataset, indices: Tensor) -> tuple[Tensor, Tensor]:
    """The batch (samples, labels) of ``dataset`` at ``indices``, by one indexing op when it lives in
    memory."""
    if isinstance(dataset, ArrayDataset):
        return dataset[indices]
    return default_collate([dataset[int(i)] for i in indices])


def resize_images(x: Tensor, image_size: int, chunk: int = 4096) -> Tensor:
    """Resize uint8 images with antialiased bilinear interpolation (a no-op at the native size).

    Args:
        x: (N, C, H, W) uint8 images.
        image_size: Output size S.
        chunk: Images converted to float at a time (bounds the temporary memory).

    Returns:
        (N, C, S, S) uint8 images.
    """
    if tuple(x.shape[-2:]) == (image_size, image_size):
        return x
    out = torch.empty((*x.shape[:2], image_size, image_size), dtype=torch.uint8)
    for i in range(0, x.shape[0], chunk):
        xi = x[i : i + chunk].float().div_(255.0)
        xi = F.interpolate(xi, size=(image_size, image_size), mode="bilinear", antialias=True,
                           align_corners=False)
        out[i : i + chunk] = to_uint8(xi)
    return out


def to_uint8(images: Tensor) -> Tensor:
    """Quantise float images in [0, 1] to uint8, rounding to nearest."""
    return images.clamp(0, 1).mul(255).round().to(torch.uint8)


class StepBatchSampler(Sampler[list[int]]):
    """An endless stream of batches whose content is a pure function of (seed, batch number).

    Batch ``b`` is slice ``b % per_epoch`` of the permutation for epoch ``b // per_epoch``, drawn
    from a generator seeded with ``(seed, epoch)``. Because nothing depends on how many batches were
    drawn before, a resumed run starts at ``start_batch`` and sees exactly the batches an
    uninterrupted run would have seen. Under data parallelism every rank draws the same global batch
    and keeps its own slice of it.

    Args:
        num_samples: Size of the dataset.
        batch_size: Per-process batch size.
        seed: Seed of the shuffling.
        start_batch: Number of the first batch to yield, or a function returning it (read each
            time iteration starts, so a resume can set it after the loader was built).
        rank: This process's rank.
        world_size: Number of processes.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        seed: int,
        start_batch: int | Callable[[], int] = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        global_batch = batch_size * world_size
        if num_samples < global_batch:
            raise ValueError(
                f"the training split has {num_samples} samples, fewer than one batch of "
                f"{batch_size} x {world_size} processes; lower data.batch_size"
            )
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.start_batch = start_batch
        self.rank = rank
        self.world_size = world_size
        self.per_epoch = num_samples // global_batch  # incomplete last batch dropped

    def _permutation(self, epoch: int) -> Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_samples, generator=g)

    def __iter__(self) -> Iterator[list[int]]:
        b = self.start_batch() if callable(self.start_batch) else self.start_batch
        epoch, perm = -1, None
        gb = self.batch_size * self.world_size
        while True:
            e, pos = divmod(b, self.per_epoch)
            if e != epoch:
                epoch, perm = e, self._permutation(e)
            batch = perm[pos * gb : (pos + 1) * gb]
            yield batch[self.rank * self.batch_size : (self.rank + 1) * self.batch_size].tolist()
            b += 1
