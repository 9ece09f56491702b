"""Bring your own samples: score images that gen-bench did not draw, with the protocol of a trained
run, so the leaderboard ranks them beside trained models.

Three sources, one path (:meth:`gen_bench.metrics.engine.Evaluator.evaluate_draws`):

* a folder of PNG / JPEG images, searched recursively in file-name order, of any bit depth
  (8 bits per channel; 16-bit grey PNGs keep their 16 bits), converted to the dataset's channels;
* an array file, ``.npz`` (its one array, or the one named ``samples`` or ``arr_0``) or ``.pt`` (a
  tensor, or a dict holding one), in one of :data:`ARRAY_LAYOUTS`;
* a callable ``sample_fn(n, generator) -> (n, C, H, W)`` in [0, 1] (:func:`evaluate`).

Images must have the dataset's size and values in [0, 1]; anything else is one clear error that
says what was found and what to pass. A folder or file must hold ``eval.seeds x`` the samples a draw
needs (``eval.num_samples``, or more for mode counting): draw i scores rows
``[i * n, (i + 1) * n)`` in file order. The scores carry the same protocol ids as a trained model's
(same extractor, reference and counts); ``metrics.json`` names the model ``samples:<name>``.

::

    gen-bench eval samples=PATH data=digits [eval=paper] [out_dir=DIR] [name=NAME]
    gen_bench.evaluate(sample_fn, data="digits", eval="default")
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from gen_bench import rundir
from gen_bench.data.spec import DataSpec

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ARRAY_SUFFIXES = (".npz", ".pt")
ARRAY_LAYOUTS = ("floating point (N, C, H, W) in [0, 1] (2-D data: (N, 2))",
                 "uint8 (N, H, W, C) or (N, H, W) in 0..255")
ARRAY_KEYS = ("samples", "arr_0")  # the array of an .npz / .pt holding several
SAMPLES_PREFIX = "samples:"  # model name of a samples evaluation: samples:<folder or file name>
_16BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
#: ``sample_fn(n, generator) -> (n, C, H, W)`` images in [0, 1] (2-D data: (n, 2) points).
SampleFn = Callable[[int, torch.Generator], Tensor]


class SamplesError(ValueError):
    """Samples of the wrong shape, range, type or count; the message says what to pass."""


def check_samples(x: Any, spec: DataSpec, where: str) -> Tensor:
    """``x`` as float32 samples of ``spec`` in [0, 1], or a :class:`SamplesError`.

    Args:
        x: A tensor or array: floating (N, C, H, W) in [0, 1] (2-D data: (N, 2) in data units).
        spec: The dataset's spec.
        where: What produced ``x``, for the message.
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, Tensor):
        raise SamplesError(f"{where} gave a {type(x).__name__}; expected a tensor of shape "
                           f"(N, {', '.join(map(str, spec.shape))})")
    if not x.is_floating_point():
        raise SamplesError(f"{where} gave {x.dtype} values; expected floating point samples in [0, 1]")
    if tuple(x.shape[1:]) != tuple(spec.shape):
        raise SamplesError(f"{where} gave samples of shape {tuple(x.shape[1:])}; the data has samples of "
                           f"shape {tuple(spec.shape)}: pass (N, {', '.join(map(str, spec.shape))}) "
                           f"(images N C H W at the data's image size, e.g. data.image_size=...)")
    x = x.detach().float()
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise SamplesError(f"{where} gave non-finite values (nan or inf)")
    if spec.kind != "toy2d" and x.numel():
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 1:
            raise SamplesError(f"{where} gave values in [{lo:.4g}, {hi:.4g}]; images must lie in [0, 1] "
                               f"(map [-1, 1] samples with (x + 1) / 2, 0..255 ones with x / 255)")
    return x


@dataclass
class SampleBank:
    """Samples held in memory: ``data`` / ``scale`` are the float samples (uint8 kept as such).

    Attributes:
        data: (N, C, H, W) uint8 or float samples (2-D data: (N, 2)).
        scale: 255 for uint8, 1 for float.
        source: What they are (path, format, layout, count): recorded in ``metrics.json``.
    """

    data: Tensor
    scale: float
    source: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.data.shape[0]

    def rows(self, start: int, n: int) -> Tensor:
        """Rows ``[start, start + n)`` as float32 in [0, 1]."""
        return self.data[start : start + n].float() / self.scale

    def sha256(self) -> str:
        """sha256 of the samples' bytes (recorded: which samples were scored)."""
        return hashlib.sha256(self.data.contiguous().numpy().tobytes()).hexdigest()


def _array_layout(x: Tensor, spec: DataSpec, path: Path) -> tuple[Tensor, float, str]:
    """(samples N C H W, scale, layout) of an array in one of :data:`ARRAY_LAYOUTS`."""
    layouts = "; ".join(ARRAY_LAYOUTS)
    if x.dtype == torch.uint8 and spec.kind != "toy2d":
        if x.ndim == 3:
            return x[:, None], 255.0, "uint8 (N, H, W)"
        if x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
            return x.permute(0, 3, 1, 2).contiguous(), 255.0, "uint8 (N, H, W, C)"
        raise SamplesError(f"{path}: uint8 array of shape {tuple(x.shape)}; accepted layouts: {layouts}")
    if x.is_floating_point():
        return check_samples(x, spec, str(path)), 1.0, f"float (N, {', '.join(map(str, spec.shape))})"
    raise SamplesError(f"{path}: {x.dtype} array of shape {tuple(x.shape)}; accepted layouts: {layouts}")


def _pick(arrays: dict[str, Any], path: Path) -> Any:
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    for key in ARRAY_KEYS:
        if key in arrays:
            return arrays[key]
    raise SamplesError(f"{path} holds {sorted(arrays)}: name the samples {' or '.join(ARRAY_KEYS)}, or keep "
                       f"only them in the file")


def _load_array(path: Path) -> Tensor:
    if path.suffix == ".npz":
        with np.load(path) as z:
            return torch.from_numpy(np.ascontiguousarray(_pick({k: z[k] for k in z.files}, path)))
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict):
        obj = _pick(obj, path)
    if not isinstance(obj, Tensor):
        raise SamplesError(f"{path} holds a {type(obj).__name__}; save a tensor (torch.save(samples, path))")
    return obj


def _decode(path: Path, channels: int) -> tuple[np.ndarray, int]:
    """(H, W, C) array of one image file and its maximum value (255 or 65535)."""
    from PIL import Image

    from gen_bench.data.folder import _to_rgb

    with Image.open(path) as img:
        img.load()
        if img.mode in _16BIT_MODES:  # 16-bit grey: keep every bit
            arr = np.asarray(img).astype(np.int64)
            if arr.max() > 65535 or arr.min() < 0:
                raise SamplesError(f"{path}: {img.mode} image with values outside 0..65535")
            return np.repeat(arr[..., None], channels, -1).astype(np.uint16), 65535
        rgb = _to_rgb(img)  # palettes, transparency (onto white), grey: all to 8-bit RGB
    arr = np.asarray(rgb.convert("L"))[..., None] if channels == 1 else np.asarray(rgb)
    return arr, 255


def _load_folder(root: Path, spec: DataSpec, limit: int | None) -> SampleBank:
    from gen_bench.data.folder import scan_images

    files = scan_images(root, IMAGE_SUFFIXES)
    if not files:
        raise SamplesError(f"{root} holds no {', '.join(IMAGE_SUFFIXES)} files (searched recursively)")
    channels, size = spec.shape[0], tuple(spec.shape[1:])
    decoded = []
    for path in files[:limit]:
        arr, top = _decode(path, channels)
        if arr.shape[:2] != size:
            raise SamplesError(f"{path} is {arr.shape[1]}x{arr.shape[0]} pixels; the data's images are "
                               f"{size[1]}x{size[0]}: resize the samples, or pass the data's size "
                               f"(data.image_size=...)")
        decoded.append((arr, top))
    if all(top == 255 for _, top in decoded):  # 8-bit: kept as uint8, a quarter of the memory
        data, scale, bits = torch.from_numpy(np.stack([a for a, _ in decoded])), 255.0, 8
    else:
        data = torch.from_numpy(np.stack([a.astype(np.float32) / top for a, top in decoded]))
        scale, bits = 1.0, 16
    return SampleBank(data.permute(0, 3, 1, 2).contiguous(), scale,
                      {"format": "folder", "num_files": len(files), "bits": bits})


def load_samples(path: str | Path, spec: DataSpec, limit: int | None = None) -> SampleBank:
    """The samples of a folder of images or an array file (see the module docstring).

    Args:
        path: A folder, ``.npz`` or ``.pt`` file.
        spec: The dataset's spec (image size and channels to match).
        limit: Decode only the first ``limit`` files of a folder (they are counted all the same).
    """
    path = Path(path).expanduser()
    if spec.kind == "video":
        raise SamplesError("samples= scores images and 2-D points; video data is not supported")
    if path.is_dir():
        if spec.kind != "image":
            raise SamplesError(f"{path} is a folder of images, but the data is {spec.kind}: pass an array "
                               f"file")
        bank = _load_folder(path, spec, limit)
    elif path.is_file() and path.suffix in ARRAY_SUFFIXES:
        data, scale, layout = _array_layout(_load_array(path), spec, path)
        bank = SampleBank(data, scale, {"format": path.suffix[1:], "layout": layout})
    else:
        what = "does not exist" if not path.exists() else "is neither a folder nor a .npz / .pt file"
        raise SamplesError(f"samples={path} {what}: pass a folder of PNG / JPEG images or a .npz / .pt "
                           f"array")
    available = bank.source.get("num_files", len(bank))
    bank.source.update({"path": str(path.resolve()), "num_available": available})
    return bank


# --- scoring ---------------------------------------------------------------------------------------
def _draws_from_bank(bank: SampleBank, num_drawn: int, seeds: int, where: str) -> Callable:
    available = bank.source["num_available"]
    if available < seeds * num_drawn:
        raise SamplesError(
            f"{where} holds {available} samples; this evaluation needs {seeds * num_drawn} "
            f"(eval.seeds={seeds} x {num_drawn} per draw: eval.num_samples, or more for mode counting): add "
            f"samples, or pass eval.num_samples=N with N <= {available // seeds} (a protocol of its own: it "
            f"ranks only against runs evaluated with N samples) and, for mode counting, "
            f"eval.modes.min_samples_per_mode=0")

    def draw(draw_index: int, first: int, n: int, generator: torch.Generator) -> Tensor:
        return bank.rows(draw_index * num_drawn + first, n)

    return draw


def _draws_from_fn(sample_fn: SampleFn, spec: DataSpec) -> Callable:
    def draw(draw_index: int, first: int, n: int, generator: torch.Generator) -> Tensor:
        x = check_samples(sample_fn(n, generator), spec, f"sample_fn(n={n}, generator)")
        if x.shape[0] != n:
            raise SamplesError(f"sample_fn(n={n}, generator) returned {x.shape[0]} samples; return exactly n")
        return x

    return draw


def score_samples(samples: SampleFn | SampleBank, datamodule, settings, out_dir: str | Path | None = None,
                  name: str | None = None, device: str | torch.device = "cpu",
                  config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate samples with the protocol of a trained run; write ``out_dir/metrics.json``.

    Args:
        samples: A callable ``sample_fn(n, generator)`` or a :class:`SampleBank`.
        datamodule: The dataset whose reference they are compared with.
        settings: The ``eval`` settings.
        out_dir: Where ``metrics.json`` (and ``config.yaml``) go; ``None``: nowhere.
        name: The model name (default ``samples:<folder or file name>``, ``samples:sample_fn``).
        device: Where features and metrics live.
        config: The composed config, written as ``config.yaml`` (the leaderboard reads the data kind).

    Returns:
        The ``metrics.json`` content.
    """
    from gen_bench.io import atomic_write_bytes
    from gen_bench.metrics.cache import digest
    from gen_bench.metrics.engine import Evaluator, settings_from

    start = time.perf_counter()
    settings = settings_from(settings)
    out = Path(out_dir).expanduser() if out_dir is not None else None
    evaluator = Evaluator(settings, datamodule, None, out)
    evaluator.setup(device)  # the scores decide how many samples a draw needs
    num_drawn = evaluator.num_drawn()
    if isinstance(samples, SampleBank):
        source = dict(samples.source)
        where = source.get("path", "the samples")
        draw = _draws_from_bank(samples, num_drawn, settings.seeds, where)
        source.update({"num_used": settings.seeds * num_drawn, "sha256": samples.sha256(),
                       "rows": "draw i scores rows [i * num_drawn, (i + 1) * num_drawn) in file order"})
        default_name = Path(where).stem if "path" in source else "bank"
    else:
        draw = _draws_from_fn(samples, datamodule.spec)
        default_name = getattr(samples, "__name__", "sample_fn")
        source = {"format": "callable", "name": default_name,
                  "rows": "sample_fn(n, generator), generator seeded as a model's evaluation draw"}
    model = name or f"{SAMPLES_PREFIX}{default_name}"

    def record() -> dict[str, Any]:
        return {**evaluator.base_record(), "sampler": None, "sampler_config": None,
                "sampling_flops_per_sample": None, "ema": False, "source": source}

    result = evaluator.evaluate_draws(draw, device, record, tag="final")
    summary = {
        "model": model, "data": datamodule.name, "seed": None, "status": "completed", "steps": None,
        "samples": source, "run_dir": str(out) if out is not None else None,
        "config_digest": digest({"samples": source.get("sha256", source.get("name")),
                                 "data": datamodule.fingerprint(), "eval": settings.name}),
        "final": result.log_dict(),
        "eval": {**result.to_json(), "tag": "final", "name": settings.name,
                 "time": {"evaluations": round(result.seconds, 3), "setup": round(evaluator.setup_seconds, 3),
                          "command": round(time.perf_counter() - start, 3)}},
    }
    if out is not None:
        if config is not None:
            atomic_write_bytes(out / rundir.CONFIG, OmegaConf.to_yaml(OmegaConf.create(config)).encode())
        rundir.write_metrics(out, summary)
    return summary


def samples_command(cfg: DictConfig) -> dict[str, Any]:
    """``gen-bench eval samples=PATH data=NAME``: score a folder or array file of samples."""
    from hydra.utils import instantiate

    from gen_bench.checkpoint import resolve_device
    from gen_bench.metrics.engine import settings_from

    if cfg.get("data") is None:
        raise SamplesError("samples= needs the dataset they are compared with: pass data=NAME (e.g. "
                           "data=digits, or data=image_folder data.path=DIR)")
    settings = settings_from(cfg.eval)
    datamodule = instantiate(cfg.data)
    path = Path(str(cfg.samples)).expanduser()
    bank = load_samples(path, datamodule.spec)
    out_dir = Path(cfg.out_dir).expanduser() if cfg.get("out_dir") else (
        Path("runs") / "samples" / f"{path.stem}-{datamodule.name}" / settings.name)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    config = {k: resolved.get(k) for k in ("data", "eval", "samples")}
    summary = score_samples(bank, datamodule, settings, out_dir, cfg.get("name"),
                            resolve_device(cfg.get("device", "auto")), config)
    values = {k: s["value"] for k, s in summary["eval"]["scores"].items() if s["value"] is not None}
    scores = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
    used = summary["samples"]
    print(f"[gen-bench] eval {settings.name} of {summary['model']} ({used['num_used']} of "
          f"{used['num_available']} samples): {scores}\n[gen-bench] -> {rundir.metrics_path(out_dir)}")
    return summary


def evaluate(samples: SampleFn | Tensor | np.ndarray | str | Path, data, eval: Any = "default",
             overrides: Sequence[str] = (), out_dir: str | Path | None = None, name: str | None = None,
             device: str = "auto") -> dict[str, Any]:
    """Score samples from anywhere with gen-bench's protocol (exported as ``gen_bench.evaluate``).

    Args:
        samples: ``sample_fn(n, generator) -> (n, C, H, W)`` images in [0, 1] (2-D data: (n, 2)), an
            array of samples (see :data:`ARRAY_LAYOUTS`), or a folder / ``.npz`` / ``.pt`` path.
        data: A dataset config name (``"digits"``) or a ``GenerativeDataModule``.
        eval: An ``eval`` preset name (``"default"``, ``"fast"``, ``"paper"``), an ``EvalSettings``
            or a mapping of settings.
        overrides: Further Hydra overrides of the ``eval`` config (``["eval.num_samples=1000",
            "data.image_size=16"]``).
        out_dir: Where to write ``metrics.json`` (``None``: nowhere), e.g. inside a sweep folder so
            ``gen-bench leaderboard`` ranks the samples beside trained models.
        name: Model name in the results (default ``samples:<name>``).
        device: ``auto`` (cuda when available), ``cpu``, ``cuda``...

    Returns:
        The ``metrics.json`` content: ``summary["eval"]["scores"]["fid"]["value"]`` and so on.
    """
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from gen_bench.checkpoint import resolve_device
    from gen_bench.config import config_dir

    overrides = list(overrides)
    named_data = isinstance(data, str)
    preset = eval if isinstance(eval, str) else "default"
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("eval", overrides=[*([f"data={data}"] if named_data else []), f"eval={preset}",
                                         *overrides])
    datamodule = instantiate(cfg.data) if named_data else data
    settings = cfg.eval if isinstance(eval, str) else eval
    if isinstance(samples, (str, Path)):
        samples = load_samples(samples, datamodule.spec)
    elif isinstance(samples, (Tensor, np.ndarray)):
        x = torch.as_tensor(samples)
        bank_data, scale, layout = _array_layout(x, datamodule.spec, Path("samples"))
        samples = SampleBank(bank_data, scale, {"format": "array", "layout": layout,
                                                "num_available": bank_data.shape[0]})
    config = OmegaConf.to_container(cfg, resolve=True) if named_data and isinstance(eval, str) else None
    if config is not None:
        config = {k: config.get(k) for k in ("data", "eval")}
    return score_samples(samples, datamodule, settings, out_dir, name, resolve_device(device), config)
