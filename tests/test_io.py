"""Atomic writes: a file is either its old or its new content, never half written."""

from __future__ import annotations

import pytest
import torch

from gen_bench.io import atomic_open, atomic_write_bytes


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "state.pt"
    atomic_write_bytes(path, b"old")
    with pytest.raises(RuntimeError, match="killed"), atomic_open(path) as f:
        f.write(b"new, half")
        raise RuntimeError("killed mid-write")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.pt"]


def test_a_streamed_torch_save_round_trips(tmp_path):
    path = tmp_path / "new" / "x.pt"  # the folder is created
    x = {"w": torch.arange(6.0).reshape(2, 3)}
    with atomic_open(path, suffix=".part") as f:
        torch.save(x, f)
    assert torch.equal(torch.load(path)["w"], x["w"])
    assert [p.name for p in path.parent.iterdir()] == ["x.pt"]
