"""Atomic writes: a file is either its old or its new content, never half written."""

from __future__ import annotations

import os
import stat

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


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_files_get_the_permissions_open_would_give(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "atomic", b"x")
        (tmp_path / "plain").write_bytes(b"x")  # what open() gives: 0o666 less the umask
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "atomic").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o666 & ~umask
