"""Where the Hydra configs live, and the resolvers they use.

The configs are found next to the package, so they work from a clone (``conf/`` at the repo root)
and from an installed wheel (``gen_bench/conf``), whatever the current directory.
"""

from __future__ import annotations

import functools
from pathlib import Path

from omegaconf import OmegaConf

from gen_bench.rundir import run_name


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


@functools.cache
def labelled_datasets() -> tuple[str, ...]:
    """The ``data=`` configs of image or 2-D data with one class label per sample, which
    class-conditional models train on (digits, shapes, ring8 with the mode index...).

    Read from each config's source spec, which a source gives without loading any data.
    """
    from hydra.utils import instantiate

    names = []
    for path in sorted((config_dir() / "data").glob("*.yaml")):
        root = OmegaConf.create({"seed": 0, "data": OmegaConf.load(path)})
        try:
            spec = instantiate(root.data.source).spec
        except Exception:  # noqa: BLE001  a config that needs a path given on the command line (image_folder)
            continue
        if spec.kind != "video" and spec.num_classes is not None and spec.label_shape == ():
            names.append(path.stem)
    return tuple(names)


def per_kind(options: dict, *, _root_) -> object:
    """``${per_kind:{image: 2e-4, toy2d: 2e-3}}``: the value for the run's data kind (``data.kind``).

    Model configs use it for settings that differ between images and 2-D points (the learning rate
    of an MLP vs a conv net). A command-line override of the key replaces the whole interpolation,
    so what the user types always wins. ``default`` covers kinds not listed.
    """
    data = _root_.get("data")
    kind = data.get("kind") if data is not None else None
    if kind is None:
        raise ValueError(
            "this config picks a value per data kind (${per_kind:...}) but the data config has no "
            f"`kind:`; add `kind: image`, `kind: toy2d` or `kind: video` to it (options: {dict(options)})"
        )
    if kind in options:
        return options[kind]
    if "default" in options:
        return options["default"]
    raise ValueError(f"no value for data kind {kind!r} in ${{per_kind:{dict(options)}}}; add a {kind} "
                     "or a default entry, or set the key on the command line")


def switch(value: object, options: dict) -> object:
    """``${switch:${..spectral_norm},{true: none, false: batch}}``: the option keyed by ``value``.

    A setting that follows another one (the discriminator's norm follows ``spectral_norm``); a
    command-line override of the key replaces the interpolation, so what the user types wins.
    """
    if value not in options:
        raise ValueError(f"no option for {value!r} in ${{switch:...,{dict(options)}}}; valid: "
                         f"{', '.join(map(repr, options))}")
    return options[value]


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("run_name", run_name, replace=True)
    OmegaConf.register_new_resolver("per_kind", per_kind, replace=True)
    OmegaConf.register_new_resolver("switch", switch, replace=True)


register_resolvers()


def flatten(tree: object, prefix: str = "") -> dict[str, object]:
    """Dotted keys to the leaves of nested mappings (lists are leaves): ``{"a": {"b": 1}} -> {"a.b": 1}``."""
    if isinstance(tree, dict) and tree:
        out: dict[str, object] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree} if prefix else {}
