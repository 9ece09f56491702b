"""Where the Hydra configs live, and the resolvers they use.

The configs are found next to the package, so they work from a clone (``conf/`` at the repo root)
and from an installed wheel (``gen_bench/conf``), whatever the current directory.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from omegaconf import OmegaConf


def config_dir() -> Path:
    """The folder holding ``train.yaml`` and the config groups."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"gen-bench configs not found in {here / 'conf'} or {here.parent / 'conf'}; "
        "reinstall the package (pip install -e .) from a complete clone"
    )


def run_slug(override_dirname: str) -> str:
    """A run-folder name from the command-line overrides (``default`` for none).

    Path separators become ``_``; long names keep a readable head and a hash of the whole.
    """
    if not override_dirname:
        return "default"
    slug = re.sub(r"[^A-Za-z0-9=,._+-]", "_", override_dirname)
    if len(slug) > 120:
        slug = slug[:100] + "-" + hashlib.sha256(override_dirname.encode()).hexdigest()[:12]
    return slug


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("run_slug", run_slug, replace=True)


register_resolvers()
