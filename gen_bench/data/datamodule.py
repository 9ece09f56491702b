"""One LightningDataModule that serves every dataset through the same interface."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Literal

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from gen_bench.data.arrays import ArrayDataset, StepBatchSampler, batch_at
from gen_bench.data.paired import PairedTask
from gen_bench.data.spec import DataSource, DataSpec, Splits

Split = Literal["train", "heldout"]


def _identity(batch):  # module-level so loaders pickle into worker processes
    return batch


def _take(dataset: Dataset, indices: Tensor) -> Dataset:
    """The samples of ``dataset`` at ``indices`` (an in-memory copy for array datasets)."""
    if isinstance(dataset, ArrayDataset):
        return dataset.take(indices)
    return Subset(dataset, indices.tolist())


class GenerativeDataModule(L.LightningDataModule):
    """Train / held-out splits of one dataset, for every model and every metric.

    Samples leave the module as float32 in [0, 1] (images N C H W, video N C T H W) or as (N, 2)
    points in data units (toy 2-D data), with int64 labels (-1 where the data has none).

    The split is a deterministic function of ``split_seed``: a fixed share of the samples is held
    out and never trained on (the memorization tests compare against it). A source whose ``load()``
    returns :class:`~gen_bench.data.spec.Splits` brings its own held-out part (CIFAR-10's test set,
    stacked digits built from held-out source digits); ``heldout_fraction`` is then ``None``.
    ``subset`` keeps a deterministic random ``subset`` samples of the training split (a function of
    ``split_seed`` only, so every run seed and model trains on the same ones; smaller subsets are
    nested in larger ones); the held-out split is unchanged. Everything that reads "the training
    set" (training batches, the reference statistics of ``split="train"``, memorization metrics,
    :meth:`fingerprint`) sees the subset. Training batches come
    from a :class:`StepBatchSampler`, so the batch sequence is a function of the seed and a resumed
    run continues it exactly.

    With a paired ``task`` (``task=superres`` / ``inpaint``, :mod:`gen_bench.data.paired`) the splits
    stay the real images (the targets: reference statistics, the classifier and memorization read
    them as before), training batches become ``(input, target, label)`` and :meth:`paired_batch`
    makes pairs of any split. The training pairs are made after the batch reaches its device
    (:meth:`on_after_batch_transfer`), from a generator seeded with (``shuffle_seed``, batch number,
    rank), never the global RNG: random masks are a function of the batch, so a resumed run draws
    the ones an uninterrupted run would have drawn.

    Args:
        source: The dataset builder (see ``gen_bench.data.spec.DataSource``).
        name: Dataset name, as in ``data=NAME``.
        batch_size: Per-process training batch size.
        num_workers: Loader worker processes (0: load in the training process; right for data
            that lives in memory).
        heldout_fraction: Share of the samples held out, in [0, 1); ``None`` for a source that
            splits its data itself.
        split_seed: Seed of the split.
        shuffle_seed: Seed of the batch order.
        path: Where the data lives (download root or image folder), if the dataset has files.
        image_size: Requested image size, if the dataset is made of images.
        kind: The data kind the config declares (``image``, ``toy2d``, ``video``; model configs pick
            per-kind settings from it); checked against the source's. ``None``: not checked.
        subset: Train on this many samples of the training split (``None``: all of it).
        task: A paired image-to-image task (``None``: the samples themselves, for generation).
    """

    def __init__(
        self,
        source: DataSource,
        name: str,
        batch_size: int = 64,
        num_workers: int = 0,
        heldout_fraction: float | None = 0.1,
        split_seed: int = 0,
        shuffle_seed: int = 0,
        path: str | None = None,
        image_size: int | None = None,
        kind: str | None = None,
        subset: int | None = None,
        task: PairedTask | None = None,
    ) -> None:
        super().__init__()
        if task is not None:
            task.check(source.spec)
        if kind is not None and kind != source.spec.kind:
            raise ValueError(
                f"data config {name!r} says kind: {kind} but its source gives {source.spec.kind} data; "
                f"set kind: {source.spec.kind} in the data config (model settings are chosen by kind)"
            )
        if heldout_fraction is not None and not 0 <= heldout_fraction < 1:
            raise ValueError(f"data.heldout_fraction must be in [0, 1), got {heldout_fraction}")
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        if subset is not None and (isinstance(subset, bool) or not isinstance(subset, int) or subset < 1):
            raise ValueError(f"data.subset must be a number of samples >= 1 or null (all), got {subset!r}")
        self.source = source
        self.name = name
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.heldout_fraction = heldout_fraction
        self.split_seed = split_seed
        self.shuffle_seed = shuffle_seed
        self.path = path
        self.image_size = image_size
        self.subset = subset
        self.task = task
        self.start_batch = 0  # set when a run resumes
        self._pair_batch: int | None = None  # number of the next training batch made into pairs
        self._train: Dataset | None = None
        self._heldout: Dataset | None = None
        self._fingerprint: str | None = None

    @property
    def spec(self) -> DataSpec:
        """Shape and label information, available before any data is loaded (with the paired task,
        ``spec.task``, when there is one)."""
        spec = self.source.spec
        return spec if self.task is None else dataclasses.replace(spec, task=self.task)

    def prepare_data(self) -> None:
        self.source.prepare()

    def setup(self, stage: str | None = None) -> None:
        if self._train is not None:
            return
        self._train, self._heldout = self._split()
        if self.subset is not None:
            self._train = self._take_subset(self._train)

    def _take_subset(self, train: Dataset) -> Dataset:
        """``self.subset`` samples of ``train``: the first ones of a permutation seeded by ``split_seed``
        (sorted), so a smaller subset lies inside a larger one."""
        n = len(train)
        if self.subset > n:
            raise ValueError(f"data.subset={self.subset} is larger than the training split of {self.name!r} "
                             f"({n} samples); set data.subset <= {n}, or null for all of it")
        # A stream of its own, derived from split_seed: not the split's permutation (same seed), nor a
        # batch order's (StepBatchSampler seeds with small integers).
        seed = int.from_bytes(hashlib.sha256(f"subset/{self.split_seed}".encode()).digest()[:8], "little")
        g = torch.Generator().manual_seed(seed)
        return _take(train, torch.randperm(n, generator=g)[: self.subset].sort().values)

    def _split(self) -> tuple[Dataset, Dataset]:
        """(train, held-out) of the whole source."""
        full = self.source.load()
        if isinstance(full, Splits):
            if self.heldout_fraction is not None:
                raise ValueError(
                    f"dataset {self.name!r} comes with its own held-out split, but data.heldout_fraction "
                    f"is {self.heldout_fraction}; set data.heldout_fraction=null (the source's settings, "
                    f"data.source.*, decide what is held out)")
            if len(full.train) == 0:
                raise ValueError(f"dataset {self.name!r} has an empty training split")
            return full.train, full.heldout
        if self.heldout_fraction is None:
            raise ValueError(f"data.heldout_fraction is null, but the source of {self.name!r} returns one "
                             f"dataset to split; set data.heldout_fraction (e.g. 0.1)")
        n = len(full)
        if n == 0:
            raise ValueError(f"dataset {self.name!r} is empty")
        n_heldout = int(round(n * self.heldout_fraction))
        if n - n_heldout < 1:
            raise ValueError(f"dataset {self.name!r} has {n} samples: too few to hold out {n_heldout}")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed))
        heldout_idx, train_idx = perm[:n_heldout].sort().values, perm[n_heldout:].sort().values
        return _take(full, train_idx), _take(full, heldout_idx)

    def _require_setup(self) -> None:
        if self._train is None:
            self.prepare_data()
            self.setup()

    @property
    def train_set(self) -> Dataset:
        self._require_setup()
        return self._train

    @property
    def heldout_set(self) -> Dataset:
        self._require_setup()
        return self._heldout

    def _loader(self, dataset: Dataset, batch_sampler, num_workers: int) -> DataLoader:
        if isinstance(dataset, ArrayDataset):
            # Whole batches by one fancy-indexing op: the sampler yields index lists.
            return DataLoader(dataset, sampler=batch_sampler, batch_size=None, collate_fn=_identity)
        return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers,
                          persistent_workers=num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        self._require_setup()
        rank, world = 0, 1
        if self.trainer is not None:
            rank, world = self.trainer.global_rank, self.trainer.world_size
        sampler = StepBatchSampler(len(self._train), self.batch_size, seed=self.shuffle_seed,
                                   start_batch=lambda: self.start_batch, rank=rank, world_size=world)
        self._pair_batch = None  # the first batch of this loader is batch start_batch
        return self._loader(self._train, sampler, self.num_workers)

    def pair_seed(self, batch: int, rank: int = 0) -> int:
        """Seed of the pairs of training batch ``batch`` on process ``rank``: a 32-bit hash of
        (``shuffle_seed``, batch, rank)."""
        return int(np.random.SeedSequence([self.shuffle_seed, batch, rank]).generate_state(1)[0])

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """With a paired task, a training batch ``(x, y)`` becomes ``(task.degrade(x), x, y)``.

        Lightning calls this once per training batch, in order, on the main process (after any
        prefetching), so a counter started at ``start_batch`` numbers the batches as the batch
        sampler does.
        """
        if self.task is None or self.trainer is None or not self.trainer.training:
            return batch
        if self._pair_batch is None:
            self._pair_batch = self.start_batch
        g = torch.Generator().manual_seed(self.pair_seed(self._pair_batch, self.trainer.global_rank))
        self._pair_batch += 1
        x, y = batch
        return self.task.degrade(x, g), x, y

    def paired_batch(self, indices: Tensor, generator: torch.Generator | None = None,
                     split: Split = "heldout") -> tuple[Tensor, Tensor, Tensor]:
        """``(input, target, label)`` of the samples of ``split`` at ``indices`` (the task's randomness
        from ``generator``).

        Raises:
            ValueError: The datamodule has no paired task.
        """
        if self.task is None:
            raise ValueError(f"dataset {self.name!r} has no paired task: add task=superres or task=inpaint")
        dataset = self.train_set if split == "train" else self.heldout_set
        if len(dataset) == 0:
            raise ValueError(f"the {split} split of {self.name!r} is empty: set data.heldout_fraction > 0")
        x, y = batch_at(dataset, indices)
        return self.task.degrade(x, generator), x, y

    def reference_loader(self, split: Split = "train", batch_size: int = 256) -> DataLoader:
        """A deterministic, unshuffled loader over a whole split (for evaluation)."""
        dataset = self.train_set if split == "train" else self.heldout_set
        n = len(dataset)
        batches = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
        return self._loader(dataset, batches, self.num_workers)

    def tensors(self, split: Split = "train", limit: int | None = None) -> tuple[Tensor, Tensor]:
        """A whole split (or its first ``limit`` samples) as (x, y) tensors."""
        xs, ys, seen = [], [], 0
        for x, y in self.reference_loader(split):
            xs.append(x)
            ys.append(y)
            seen += x.shape[0]
            if limit is not None and seen >= limit:
                break
        x, y = torch.cat(xs), torch.cat(ys)
        return (x[:limit], y[:limit]) if limit is not None else (x, y)

    def fingerprint(self) -> str:
        """sha256 over the training split's content and the split settings (a cache key)."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(repr((self.name, self.heldout_fraction, self.split_seed, self.spec)).encode())
            for x, y in self.reference_loader("train", batch_size=1024):
                h.update(x.numpy().tobytes())
                h.update(y.numpy().tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint
