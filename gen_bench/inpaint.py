"""``gen-bench inpaint``: fill a removed region of held-out images with a trained DDPM, no training:
RePaint (Lugmayr et al. 2022, :mod:`gen_bench.diffusion.repaint`). A class-conditional DDPM fills
with the class asked for (``labels=7``, guided with ``guidance=``): the offline stand-in for "fill it
with what I describe".

Writes, under ``out`` (default ``<run dir>/inpaint/<mask>_s<steps>_j<jump>_r<resamplings>[_class<k>]``):
``inpaint.png`` (one image per row: masked input | fill | original), ``inpaint.pt`` (inputs, outputs,
targets, labels) and ``inpaint.json`` (the settings, network passes per image, the PSNR of the fill
against the original on the removed pixels, the wall time).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from gen_bench import rundir
from gen_bench.checkpoint import load_model, resolve_device
from gen_bench.data.paired import Inpainting
from gen_bench.diffusion import repaint_passes
from gen_bench.io import atomic_open, atomic_write_json
from gen_bench.models.base import knob_tag, labels_argument
from gen_bench.models.ddpm import DDPM
from gen_bench.viz import save_image_grid, side_by_side

log = logging.getLogger(__name__)


def inpaint_command(cfg: DictConfig) -> dict[str, Any]:
    """Load the DDPM ``cfg.ckpt``, fill ``cfg.n`` masked held-out images and write the grid."""
    if cfg.n < 1:
        raise ValueError(f"n must be >= 1, got {cfg.n}")
    if cfg.split not in ("heldout", "train"):
        raise ValueError(f"split must be heldout or train, got {cfg.split!r}")
    start = time.perf_counter()
    model, datamodule, run_cfg, ckpt = load_model(cfg.ckpt, map_location=resolve_device(cfg.device),
                                                  ema=cfg.get("ema", True))
    if not isinstance(model, DDPM):
        raise ValueError(f"gen-bench inpaint runs RePaint on a DDPM (model=ddpm); {cfg.ckpt} holds a "
                         f"{type(model).__name__}")
    model.progress = True
    task = Inpainting(mask=cfg.mask, size=cfg.size, boxes=cfg.boxes, box_min=cfg.box_min, box_max=cfg.box_max)
    task.check(model.spec)
    steps = cfg.steps if cfg.steps is not None else model.diffusion.num_timesteps
    knobs = {"guidance": cfg.guidance} if cfg.get("guidance") is not None else {}
    labels = labels_argument(model, cfg.get("labels"), cfg.n)

    g = torch.Generator().manual_seed(cfg.seed)  # the images, their masks, then every noise of the walk
    dataset = datamodule.train_set if cfg.split == "train" else datamodule.heldout_set
    if len(dataset) == 0:
        raise ValueError(f"the {cfg.split} split is empty: set data.heldout_fraction > 0 or split=train")
    index = torch.randint(len(dataset), (cfg.n,), generator=g)
    target = torch.stack([dataset[int(i)][0] for i in index])
    x_in = task.degrade(target, g)
    image, known = Inpainting.split(x_in)
    with model.knobs_applied(**knobs):
        filled = model.repaint(image, known, g, labels=labels, steps=steps, jump_length=cfg.jump_length,
                               resamplings=cfg.resamplings, variance=cfg.variance).cpu()
    seconds = time.perf_counter() - start

    unknown = 1 - known
    mse = ((filled - target).square() * unknown).sum() / (unknown.sum() * target.shape[1])
    label_tag = f"_class{cfg.labels}" if isinstance(cfg.get("labels"), int) else ""
    folder = f"{cfg.mask}_s{steps}_j{cfg.jump_length}_r{cfg.resamplings}{label_tag}"
    if knobs:
        folder += f"_{knob_tag(knobs)}"
    out = Path(cfg.out) if cfg.get("out") else rundir.run_dir_of(cfg.ckpt) / rundir.INPAINT / folder
    out.mkdir(parents=True, exist_ok=True)
    grid = save_image_grid(side_by_side([image, filled, target]), out / "inpaint.png", nrow=3)
    with atomic_open(out / "inpaint.pt") as f:
        torch.save({"inputs": x_in, "outputs": filled, "targets": target, "index": index,
                    "labels": labels}, f)
    name = run_cfg.model.get("name") or type(model).__name__.lower()
    record = {
        "model": name, "data": run_cfg.data.get("name"), "step": ckpt.get("global_step"),
        "checkpoint": str(Path(cfg.ckpt).expanduser().resolve()), "method": "RePaint (Lugmayr et al. 2022)",
        "task": task.describe(), "split": cfg.split, "n": cfg.n, "seed": cfg.seed, "steps": steps,
        "jump_length": cfg.jump_length, "resamplings": cfg.resamplings, "variance": cfg.variance,
        "network_passes_per_image": repaint_passes(steps, cfg.jump_length, cfg.resamplings),
        "labels": labels.tolist() if labels is not None else None, "knobs": model.knob_values() | knobs,
        "ema": model.ema_weights is not None,
        "psnr_removed_region": -10 * math.log10(float(mse)) if float(mse) > 0 else None,
        "seconds": round(seconds, 3),
    }
    atomic_write_json(out / "inpaint.json", record)
    passes = record["network_passes_per_image"]
    print(f"[gen-bench] {cfg.n} images inpainted ({name}, mask {cfg.mask}, {steps} steps, jumps of "
          f"{cfg.jump_length} x {cfg.resamplings}: {passes} network passes each) in {seconds:.1f} s "
          f"-> {grid}")
    return record
