"""``gen-bench assets fetch|verify`` with local files (file:// URLs stand in for the internet)."""

from __future__ import annotations

import hashlib
import json

import pytest

import gen_bench.assets as assets
from gen_bench.cli import main
from gen_bench.metrics.inception import find_inception_weights
from gen_bench.metrics.settings import EvalSettings


@pytest.fixture
def published(tmp_path, monkeypatch):
    """Two 'published' files served from disk, one with a hash prefix in its name, one without."""
    src = tmp_path / "published"
    src.mkdir()
    weights = {"inception": b"inception weights" * 1000, "i3d": b"i3d weights" * 500}
    table = {}
    for name, blob in weights.items():
        path = src / f"{name}.bin"
        path.write_bytes(blob)
        prefix = hashlib.sha256(blob).hexdigest()[:8] if name == "inception" else ""
        filename = assets.ASSETS[name].filename
        table[name] = assets.Asset(name, path.as_uri(), filename, prefix, "tests")
    monkeypatch.setattr(assets, "ASSETS", table)
    return table, weights


def run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_:
        main(["assets", *argv])
    return exit_.value.code


def test_fetch_records_sha256_and_verify_accepts_it(published, tmp_path, capsys):
    table, weights = published
    dest = tmp_path / "assets"
    assert run(["fetch", "--to", str(dest)]) == 0
    manifest = json.loads((dest / assets.MANIFEST).read_text())
    for name, blob in weights.items():
        assert (dest / table[name].filename).read_bytes() == blob
        assert manifest[name]["sha256"] == hashlib.sha256(blob).hexdigest()
        assert manifest[name]["url"] == table[name].url
    assert not list(dest.glob(".*part"))
    assert run(["verify", str(dest)]) == 0
    assert "OK: i3d, inception" in capsys.readouterr().out


def test_verify_catches_corrupt_missing_and_unfetched_files(published, tmp_path, capsys):
    table, _ = published
    dest = tmp_path / "assets"
    assets.fetch(dest, ["inception"])
    assert run(["verify", str(dest), "--only", "inception", "i3d"]) == 1
    assert "i3d: not in" in capsys.readouterr().err
    target = dest / table["inception"].filename
    target.write_bytes(target.read_bytes()[:-1] + b"!")
    assert run(["verify", str(dest)]) == 1
    assert "corrupted or replaced" in capsys.readouterr().err
    target.unlink()
    assert run(["verify", str(dest)]) == 1
    assert "is missing" in capsys.readouterr().err
    assert run(["verify", str(tmp_path / "nowhere")]) == 1
    assert "gen-bench assets fetch --to" in capsys.readouterr().err


def test_fetch_rejects_a_file_without_its_published_hash_prefix(published, tmp_path, monkeypatch):
    table, _ = published
    bad = assets.Asset("inception", table["inception"].url, table["inception"].filename, "00000000", "tests")
    monkeypatch.setattr(assets, "ASSETS", {**table, "inception": bad})
    with pytest.raises(ValueError, match="does not start with the published 00000000"):
        assets.fetch(tmp_path / "assets", ["inception"])
    assert not (tmp_path / "assets" / bad.filename).exists()


def test_a_fetched_folder_provides_the_inception_weights(published, tmp_path, monkeypatch):
    dest = tmp_path / "assets"
    assets.fetch(dest, ["inception"])
    monkeypatch.delenv("GEN_BENCH_ASSETS", raising=False)
    found = find_inception_weights(EvalSettings(assets_dir=str(dest)))
    assert found == dest / assets.ASSETS["inception"].filename
    monkeypatch.setenv("GEN_BENCH_ASSETS", str(dest))
    assert find_inception_weights(EvalSettings()) == found
