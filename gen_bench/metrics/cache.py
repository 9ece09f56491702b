"""The on-disk cache of the evaluation (reference statistics, trained classifiers).

An entry's file name ends in a hash of everything that determines its content (the dataset's
content hash, split, preprocessing, extractor name, version and weights, sample count), and the
same fields are stored inside it and checked on load. Entries are written atomically, so processes
that compute the same entry at once (DDP ranks, parallel runs) never read a half-written file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gen_bench.io import atomic_open

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the layout of cached entries changes


def digest(fields: Mapping[str, Any]) -> str:
    """sha256 of a JSON-serialisable mapping (keys sorted)."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


def state_sha256(state: Mapping[str, Tensor]) -> str:
    """sha256 over a state dict's names, dtypes, shapes and bytes, in name order.

    A stable identity for weights that have no file of their own (a trained classifier, a random
    net): ``torch.save`` output is not byte-stable across versions.
    """
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def entry_path(cache_dir: Path, kind: str, stem: str, fields: Mapping[str, Any]) -> Path:
    """``cache_dir/kind/<stem>-<hash of fields>.pt``."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)
    return Path(cache_dir) / kind / f"{safe}-{digest({'format': FORMAT, **fields})[:20]}.pt"


def save_entry(path: Path, fields: Mapping[str, Any], payload: Mapping[str, Any]) -> None:
    """Write ``{"fields", "payload"}`` atomically."""
    fields = json.loads(json.dumps(fields, default=str))  # what load_entry compares with
    entry = {"format": FORMAT, "fields": fields, "payload": dict(payload)}
    with atomic_open(path) as f:
        torch.save(entry, f)


def load_entry(path: Path, fields: Mapping[str, Any]) -> dict[str, Any] | None:
    """The payload of a cached entry, or ``None`` when absent, unreadable or for other fields."""
    if not path.is_file():
        return None
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: recompute rather than fail
        log.warning("ignoring unreadable cache entry %s (%s)", path, e)
        return None
    expected = json.loads(json.dumps(fields, default=str))
    if entry.get("format") != FORMAT or entry.get("fields") != expected:
        log.warning("ignoring cache entry %s: it was written for other settings", path)
        return None
    return entry["payload"]


class CacheEntry(dict):
    """A cached payload (a dict), with the file it lives in and whether it was read from there.

    Attributes:
        path: The entry's file.
        loaded: Read from the file (``False``: computed now, then saved).
    """

    def __init__(self, payload: Mapping[str, Any], path: Path, loaded: bool) -> None:
        super().__init__(payload)
        self.path = path
        self.loaded = loaded


def cached(cache_dir: Path, kind: str, stem: str, fields: Mapping[str, Any],
           compute: Callable[[], Mapping[str, Any]]) -> CacheEntry:
    """The payload cached for ``fields`` under ``cache_dir/kind/<stem>-<hash>.pt``; computed by
    ``compute()`` and saved first when there is none (or an unreadable one, or one for other fields).

    The one way the evaluation reads and fills its cache: reference statistics, trained extractors,
    every metric's real-side state.
    """
    path = entry_path(cache_dir, kind, stem, fields)
    payload = load_entry(path, fields)
    if payload is not None:
        return CacheEntry(payload, path, loaded=True)
    payload = dict(compute())
    save_entry(path, fields, payload)
    return CacheEntry(payload, path, loaded=False)
