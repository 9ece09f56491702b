"""``gen-bench assets fetch|verify``: provision the external weight files of the evaluation, so a
cluster without internet can run it.

On a machine with internet::

    gen-bench assets fetch --to DIR        # downloads every file, writes DIR/assets.json (sha256)

then copy DIR over and, on the air-gapped machine::

    gen-bench assets verify DIR            # every file present, intact and the expected one
    gen-bench train ... eval.assets_dir=DIR   (or export GEN_BENCH_ASSETS=DIR)

Files are written atomically (a killed download leaves no partial file under the final name), and
checked against the sha256 prefix their publishers embed in the file name where there is one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gen_bench.io import atomic_open, atomic_write_json

MANIFEST = "assets.json"
ENV_DIR = "GEN_BENCH_ASSETS"


@dataclass(frozen=True)
class Asset:
    """One external weight file.

    Attributes:
        name: Short name (``inception``).
        url: Where it is published.
        filename: Its file name (as the library that uses it expects it in its cache).
        sha256_prefix: The hash prefix its publisher put in the name (``""``: none published).
        used_by: What reads it.
    """

    name: str
    url: str
    filename: str
    sha256_prefix: str
    used_by: str


ASSETS: dict[str, Asset] = {
    a.name: a
    for a in (
        Asset("inception",
              "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
              "weights-inception-2015-12-05-6726825d.pth",
              "weights-inception-2015-12-05-6726825d.pth", "6726825d",
              "FID / KID / IS / MiFID with eval.extractor=inception (torch-fidelity's FID Inception-v3, "
              "converted from the TensorFlow graph of Heusel et al.)"),
        Asset("i3d",
              "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1",
              "i3d_torchscript.pt", "",
              "FVD (the TorchScript I3D of StyleGAN-V, Skorokhodov et al. 2022)"),
        # No published hash: the sha256 is recorded in assets.json on the first fetch, and verify
        # checks every later copy against it.
        Asset("dinov2_vits14",
              "https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth",
              "dinov2_vits14_pretrain.pth", "",
              "eval.extractor=dinov2 / eval.extractors=[dinov2] (DINOv2 ViT-S/14, Oquab et al. 2023; also "
              "needs the DINOv2 source, eval.dinov2.code_dir)"),
    )
}


def sha256_of(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def assets_dirs(explicit: str | os.PathLike[str] | None = None) -> list[Path]:
    """Folders to search for asset files: ``explicit`` then ``$GEN_BENCH_ASSETS``."""
    dirs = [explicit, os.environ.get(ENV_DIR)]
    return [Path(os.path.expanduser(str(d))) for d in dirs if d]


def _download(url: str, dest: Path, timeout: float) -> None:
    with atomic_open(dest, suffix=".part") as out, urllib.request.urlopen(url, timeout=timeout) as response:
        while block := response.read(1 << 20):
            out.write(block)


def fetch(to: str | os.PathLike[str], names: Sequence[str] | None = None, force: bool = False,
          timeout: float = 60.0) -> dict[str, dict]:
    """Download assets into ``to`` and record their sha256 in ``to/assets.json``.

    Files already there with the expected hash prefix are kept unless ``force``.

    Returns:
        The manifest entries written, by asset name.

    Raises:
        ValueError: A downloaded file does not have its published hash prefix.
    """
    root = Path(to).expanduser()
    manifest_path = root / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    for name in names or list(ASSETS):
        asset = _asset(name)
        dest = root / asset.filename
        if force or not dest.is_file() or not sha256_of(dest).startswith(asset.sha256_prefix):
            print(f"[gen-bench] fetching {asset.name}: {asset.url}", flush=True)
            start = time.perf_counter()
            _download(asset.url, dest, timeout)
            seconds = time.perf_counter() - start
            print(f"[gen-bench]   {dest.stat().st_size / 2**20:.1f} MiB in {seconds:.1f} s")
        digest = sha256_of(dest)
        if not digest.startswith(asset.sha256_prefix):
            dest.unlink()
            raise ValueError(f"{asset.name}: {asset.url} gave a file whose sha256 {digest} does not start "
                             f"with the published {asset.sha256_prefix}; it was removed")
        manifest[asset.name] = {"file": asset.filename, "url": asset.url, "sha256": digest,
                                "bytes": dest.stat().st_size, "used_by": asset.used_by}
        atomic_write_json(manifest_path, manifest)
    return manifest


def verify(root: str | os.PathLike[str], names: Sequence[str] | None = None) -> list[str]:
    """Check the assets in ``root`` against its ``assets.json`` and the published hash prefixes.

    Args:
        root: A folder written by :func:`fetch`.
        names: Assets that must be there (``None``: every asset its manifest lists).

    Returns:
        Problems found, one line each (empty: everything is in order).
    """
    root = Path(root).expanduser()
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        return [f"{manifest_path} is missing: run `gen-bench assets fetch --to {root}` on a machine with "
                "internet"]
    manifest = json.loads(manifest_path.read_text())
    if not names and not manifest:
        return [f"{manifest_path} lists no assets"]
    problems = []
    for name in names or list(manifest):
        asset = _asset(name)
        entry = manifest.get(name)
        if entry is None:
            problems.append(f"{name}: not in {manifest_path} (fetch it with --only {name})")
            continue
        path = root / entry["file"]
        if not path.is_file():
            problems.append(f"{name}: {path} is missing")
            continue
        digest = sha256_of(path)
        if digest != entry["sha256"]:
            problems.append(f"{name}: {path} has sha256 {digest}, the manifest records {entry['sha256']} "
                            "(corrupted or replaced; fetch it again)")
        elif not digest.startswith(asset.sha256_prefix):
            problems.append(f"{name}: {path} has sha256 {digest}, not the published prefix "
                            f"{asset.sha256_prefix}")
    return problems


def _asset(name: str) -> Asset:
    if name not in ASSETS:
        raise ValueError(f"unknown asset {name!r}; valid: {', '.join(ASSETS)}")
    return ASSETS[name]


def assets_command(argv: Sequence[str]) -> int:
    """``gen-bench assets fetch --to DIR [--only NAME ...] | verify DIR [--only NAME ...] | list``."""
    parser = argparse.ArgumentParser(prog="gen-bench assets", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    p_fetch = sub.add_parser("fetch", help="download every external weight file into a folder")
    p_fetch.add_argument("--to", required=True, help="destination folder")
    p_fetch.add_argument("--only", nargs="+", choices=list(ASSETS), help="only these assets")
    p_fetch.add_argument("--force", action="store_true", help="download again even if present")
    p_fetch.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds")
    p_verify = sub.add_parser("verify", help="check a folder written by fetch")
    p_verify.add_argument("dir")
    p_verify.add_argument("--only", nargs="+", choices=list(ASSETS), help="only these assets")
    sub.add_parser("list", help="list the assets and where they come from")
    args = parser.parse_args(list(argv))
    if args.action == "list":
        for a in ASSETS.values():
            print(f"{a.name:10s} {a.filename}\n{'':10s} {a.url}\n{'':10s} used by {a.used_by}")
        return 0
    if args.action == "fetch":
        manifest = fetch(args.to, args.only, args.force, args.timeout)
        for name in args.only or list(ASSETS):
            print(f"[gen-bench] {name}: {manifest[name]['file']} sha256 {manifest[name]['sha256']}")
        print(f"[gen-bench] manifest: {Path(args.to) / MANIFEST}. On the offline machine: "
              f"gen-bench assets verify DIR, then eval.assets_dir=DIR or {ENV_DIR}=DIR")
        return 0
    problems = verify(args.dir, args.only)
    for p in problems:
        print(f"[gen-bench] FAIL {p}", file=sys.stderr)
    if not problems:
        checked = args.only or list(json.loads((Path(args.dir) / MANIFEST).read_text()))
        print(f"[gen-bench] OK: {', '.join(checked)} in {args.dir} match {MANIFEST}")
    return 1 if problems else 0
