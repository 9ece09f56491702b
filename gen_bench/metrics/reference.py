"""Real-data features and statistics, computed once per (dataset content, split, subset,
extractor) and cached on disk.

The cache key holds the dataset's content hash (:meth:`GenerativeDataModule.fingerprint`: the
training split's bytes and the split settings), the split, the sample count and subset seed, and
the extractor's name, version, weights sha256 and preprocessing. Any change to one of them is a
different file; entries are written atomically.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from gen_bench.data.arrays import ArrayDataset
from gen_bench.metrics.cache import cached
from gen_bench.metrics.extractors import FeatureExtractor
from gen_bench.metrics.fid import FeatureStats

log = logging.getLogger(__name__)


def frames(x: Tensor) -> Tensor:
    """Video (N, C, T, H, W) -> its frames (N*T, C, H, W); anything else unchanged."""
    return x.transpose(1, 2).flatten(0, 1) if x.ndim == 5 else x


def split_dataset(datamodule, split: str) -> Dataset:
    return datamodule.train_set if split == "train" else datamodule.heldout_set


def subset_indices(n: int, num_samples: int | None, seed: int) -> Tensor | None:
    """Sorted indices of a seeded random subset of ``num_samples`` out of ``n`` (``None``: all)."""
    if num_samples is None or num_samples >= n:
        return None
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:num_samples].sort().values


def iter_split(datamodule, split: str, indices: Tensor | None, batch_size: int) -> Iterator[Tensor]:
    """Batches of samples of a split (float32, data format), in a deterministic order."""
    if indices is None:
        for x, _ in datamodule.reference_loader(split, batch_size=batch_size):
            yield x
        return
    dataset = split_dataset(datamodule, split)
    if isinstance(dataset, ArrayDataset):
        for i in range(0, len(indices), batch_size):
            yield dataset[indices[i : i + batch_size]][0]
        return
    loader = DataLoader(Subset(dataset, indices.tolist()), batch_size=batch_size, shuffle=False,
                        num_workers=getattr(datamodule, "num_workers", 0))
    for x, _ in loader:
        yield x


@dataclass
class Reference:
    """Features of real samples and their float64 statistics.

    Attributes:
        features: (N, d) float32 pool features (video: one row per frame).
        stats: Statistics of those features.
        fields: What they were computed from (the cache key; part of the protocol).
        path: The cache file.
        seconds: Time spent computing them (0 when loaded from the cache).
    """

    features: Tensor
    stats: FeatureStats
    fields: dict[str, Any]
    path: Path
    seconds: float = 0.0
    cached: bool = field(default=False)


def reference_features(datamodule, extractor: FeatureExtractor, split: str = "train",
                       num_samples: int | None = None, subset_seed: int = 0,
                       cache_dir: str | Path = "~/.cache/gen-bench", batch_size: int = 500,
                       clips: bool = False) -> Reference:
    """Features and statistics of real samples, from the cache when it has them.

    Args:
        datamodule: The dataset.
        extractor: The feature extractor (on the device to run on).
        split: ``train`` or ``heldout``.
        num_samples: A seeded random subset of this many samples (``None``: the whole split).
        subset_seed: Seed of the subset.
        cache_dir: The cache root.
        batch_size: Samples per extraction call.
        clips: Feed the extractor whole clips (video extractors) instead of frames.
    """
    n_split = len(split_dataset(datamodule, split))
    indices = subset_indices(n_split, num_samples, subset_seed)
    ext = extractor.describe()
    fields = {
        "kind": "reference",
        "data": datamodule.name,
        "fingerprint": datamodule.fingerprint(),
        "split": split,
        "num_samples": n_split if indices is None else len(indices),
        "subset_seed": None if indices is None else subset_seed,
        "extractor": {k: ext[k] for k in ("name", "version", "weights_sha256", "preprocessing",
                                          "feature_dim")},
    }
    if clips:
        fields["input"] = "clips"
    seconds = 0.0

    def extract() -> dict[str, Tensor]:
        nonlocal seconds
        start = time.perf_counter()
        stats = FeatureStats.zeros(extractor.feature_dim)
        chunks = []
        for x in iter_split(datamodule, split, indices, batch_size):
            f = extractor((x if clips else frames(x)).to(extractor.device))["pool"].cpu()
            stats.add(f)
            chunks.append(f)
        features = torch.cat(chunks) if chunks else torch.zeros(0, extractor.feature_dim)
        seconds = time.perf_counter() - start
        return {"features": features, **stats.state_dict()}

    stem = f"{datamodule.name}-{split}-{extractor.name}"
    entry = cached(Path(cache_dir).expanduser(), "reference", stem, fields, extract)
    if not entry.loaded:
        log.info("reference features of %s/%s (%d samples, %s) in %.1f s -> %s", datamodule.name, split,
                 entry["features"].shape[0], extractor.name, seconds, entry.path)
    stats = FeatureStats(entry["sum"], entry["cov_sum"], int(entry["n"]))
    return Reference(entry["features"], stats, fields, entry.path, seconds, cached=entry.loaded)
