"""``gen-bench interpolate``: latent walks of a saved model, and its perceptual path length.

Every latent model walks through its latent space the same way (:meth:`GenerativeModule.interpolate`):
a GAN through z, a diffusion or flow model through its starting noise, decoded by a deterministic
sampler (DDIM with eta 0 for DDPM unless ``sampler=`` names another deterministic one; the model's
own ODE solver for flow matching). Walk i goes from the latent that ``sample`` draws with seed
``seed + i`` to the one of seed ``seed + i + 1``, so its first and last frames are those samples,
and consecutive walks join into one tour. A class-conditional model walks with a fixed class (walk i:
``labels``, or class i mod K) and, at the fixed latent of each walk's start, also from class
``classes[0]`` to ``classes[1]`` (their embeddings mixed).

Writes, under ``out`` (default ``<run dir>/interpolate/<sampler label>_<mode>[_<knobs>]``):
``walk.gif`` (every walk animated, side by side) and ``walk.png`` (one walk per row), for conditional
models ``class_walk.gif`` and ``class_walk.png``, ``frames.pt`` (the tensors), and ``interpolate.json``
with the walks' endpoints and the perceptual path length (:mod:`gen_bench.metrics.path_length`) in
the evaluation extractor's feature space. 2-D data: ``walk.png`` plots the walks over the mode centres.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from gen_bench import rundir
from gen_bench.checkpoint import load_model, resolve_device
from gen_bench.io import atomic_open, atomic_write_json
from gen_bench.metrics.engine import Evaluator, settings_from
from gen_bench.metrics.extractors import ExtractorRequest, build_extractor
from gen_bench.metrics.path_length import path_length
from gen_bench.metrics.settings import KNOB_NAMES
from gen_bench.models import GenerativeModule
from gen_bench.models.base import knob_tag
from gen_bench.viz import save_walks_2d
from gen_bench.viz_video import save_frame_grid, save_gif

log = logging.getLogger(__name__)

def walk_labels(model: GenerativeModule, labels: Any, walks: int) -> list[int | None]:
    """The class of each walk: ``labels`` (one int for all), else class i mod K; ``None`` for an
    unconditional model (which refuses ``labels``)."""
    if not model.is_conditional:
        if labels is not None:
            raise ValueError(f"labels={labels} given, but {type(model).__name__} is not class-conditional")
        return [None] * walks
    if labels is not None and (isinstance(labels, bool) or not isinstance(labels, int)):
        raise ValueError(f"labels must be one class index for every walk (labels=3), got {labels!r}")
    return [labels if labels is not None else i % model.spec.num_classes for i in range(walks)]


def latent_walks(model: GenerativeModule, seed: int, walks: int, steps: int, labels: list[int | None],
                 mode: str, sampler: Any) -> Tensor:
    """(walks, steps, ...) samples: walk i from the latent of seed ``seed + i`` to that of seed
    ``seed + i + 1``."""
    out = []
    for i, y in enumerate(labels):
        z0 = model.sample_latent(1, torch.Generator().manual_seed(seed + i))[0]
        z1 = model.sample_latent(1, torch.Generator().manual_seed(seed + i + 1))[0]
        y_path = torch.tensor([y]) if y is not None else None
        out.append(model.interpolate(z0, z1, steps, labels=y_path, mode=mode, sampler=sampler).cpu())
    return torch.stack(out)


def class_walks(model: GenerativeModule, seed: int, walks: int, steps: int, classes: tuple[int, int],
                sampler: Any) -> Tensor:
    """(walks, steps, ...) samples of a conditional model: at the latent of seed ``seed + i``, the class
    embedding moves linearly from ``classes[0]`` to ``classes[1]``."""
    k = model.spec.num_classes
    if len(classes) != 2 or not all(0 <= c < k for c in classes):
        raise ValueError(f"classes must be two class indices in [0, {k}), got {list(classes)}")
    t = torch.linspace(0, 1, steps)[:, None]
    one_hot = F.one_hot(torch.tensor(list(classes)), k).float()  # (2, K)
    weights = (1 - t) * one_hot[0] + t * one_hot[1]  # (steps, K): exactly one-hot at both ends
    out = []
    for i in range(walks):
        z = model.sample_latent(1, torch.Generator().manual_seed(seed + i))
        out.append(model.decode(z.expand(steps, *z.shape[1:]), weights, sampler).cpu())
    return torch.stack(out)


def _save_walks(frames: Tensor, out: Path, stem: str, fps: float, spec) -> list[Path]:
    if spec.kind == "toy2d":
        return [save_walks_2d(frames, out / f"{stem}.png", centers=spec.mode_centers)]
    clips = frames.transpose(1, 2)  # (walks, C, steps, H, W): each walk is a clip
    return [save_gif(clips, out / f"{stem}.gif", fps=fps, nrow=clips.shape[0]),
            save_frame_grid(clips, out / f"{stem}.png", max_clips=clips.shape[0])]


def interpolate_command(cfg: DictConfig) -> dict[str, Any]:
    """Load ``cfg.ckpt``, write its latent walks and record its perceptual path length."""
    if cfg.steps < 2 or cfg.walks < 1:
        raise ValueError(f"steps must be >= 2 and walks >= 1, got {cfg.steps} and {cfg.walks}")
    start = time.perf_counter()
    device = resolve_device(cfg.get("device", "auto"))
    model, datamodule, run_cfg, ckpt = load_model(cfg.ckpt, map_location=device, ema=cfg.get("ema", True))
    spec = model.spec
    if spec.kind == "video":
        raise ValueError("gen-bench interpolate walks image and 2-D models; this is a video model")
    knobs = {k: cfg.get(k) for k in KNOB_NAMES if cfg.get(k) is not None}
    factory = instantiate(cfg.sampler) if cfg.get("sampler") is not None else None
    sampler = model.deterministic_sampler(factory)  # None for one-pass models
    label = model.sampler_label(sampler) if sampler is not None else None
    name = run_cfg.model.get("name") or type(model).__name__.lower()
    folder = "_".join([label or name, cfg.mode, *([knob_tag(knobs)] if knobs else [])])
    out = Path(cfg.out) if cfg.get("out") else rundir.run_dir_of(cfg.ckpt) / rundir.INTERPOLATE / folder
    out.mkdir(parents=True, exist_ok=True)

    labels = walk_labels(model, cfg.get("labels"), cfg.walks)
    record: dict[str, Any] = {
        "model": name, "data": run_cfg.data.get("name"), "step": ckpt.get("global_step"),
        "checkpoint": str(Path(cfg.ckpt).expanduser().resolve()), "sampler": label,
        "ema": model.ema_weights is not None, "knobs": model.knob_values() | knobs, "mode": cfg.mode,
        "walks": [{"from_seed": cfg.seed + i, "to_seed": cfg.seed + i + 1, "label": y}
                  for i, y in enumerate(labels)],
    }
    with model.knobs_applied(**knobs):
        try:
            frames = {"walk": latent_walks(model, cfg.seed, cfg.walks, cfg.steps, labels, cfg.mode, sampler)}
        except NotImplementedError as e:
            raise ValueError(f"gen-bench interpolate needs a latent model: {e}") from None
        if model.is_conditional:
            classes = tuple(cfg.classes)
            frames["class_walk"] = class_walks(model, cfg.seed, cfg.walks, cfg.steps, classes, sampler)
            record["class_walk"] = {"classes": list(classes),
                                    "seeds": [cfg.seed + i for i in range(cfg.walks)]}
        pictures = [p for stem, x in frames.items() for p in _save_walks(x, out, stem, cfg.fps, spec)]

        pl = cfg.path_length
        settings = settings_from(cfg.eval)
        extractor_name = Evaluator(settings, datamodule).extractor_name()
        extractor = build_extractor(extractor_name, ExtractorRequest(spec, datamodule, settings, device))
        info = extractor.describe()
        ppl = path_length(lambda z, y: model.decode(z, y, sampler), model.sample_latent,
                          lambda x: extractor(x.to(device))["pool"], pl.num_samples, pl.eps, cfg.mode,
                          pl.seed, pl.batch_size, model.draw_labels if model.is_conditional else None)
    record["path_length"] = {**{k: v for k, v in ppl.items() if k != "values"},
                             "extractor": {k: info[k] for k in ("name", "version", "weights_sha256")}}
    record["seconds"] = round(time.perf_counter() - start, 3)
    with atomic_open(out / "frames.pt") as f:
        torch.save(frames, f)
    atomic_write_json(out / "interpolate.json", record)
    print(f"[gen-bench] {cfg.walks} walks of {cfg.steps} frames ({name}, {label or 'one pass'}) -> "
          f"{', '.join(str(p) for p in pictures)}\n[gen-bench] perceptual path length "
          f"{ppl['path_length']:.4g} (filtered {ppl['path_length_filtered']:.4g}; {extractor_name} features, "
          f"{pl.num_samples} pairs)")
    log.debug("interpolate config: %s", OmegaConf.to_yaml(cfg))
    return record
