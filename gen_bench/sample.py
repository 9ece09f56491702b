"""``gen-bench sample``: samples from a saved model, as a grid (images) or a scatter (2-D data)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from gen_bench import rundir
from gen_bench.checkpoint import load_model, resolve_device
from gen_bench.io import atomic_open
from gen_bench.models import GenerativeModule
from gen_bench.viz import save_image_grid, save_scatter
from gen_bench.viz_video import save_video_samples

log = logging.getLogger(__name__)


def draw(model: GenerativeModule, n: int, seed: int, sampler_cfg: DictConfig | None,
         name: str) -> tuple[torch.Tensor, str]:
    """``n`` samples from a CPU generator seeded with ``seed`` (the same samples on any device), and a
    label naming how they were drawn: the sampler's, or ``name`` for models that sample in one pass."""
    generator = torch.Generator().manual_seed(seed)
    factory = instantiate(sampler_cfg) if sampler_cfg is not None else None
    label = model.sampler_label(factory)  # diffusion: the sampler is chosen now, not at training time
    if label is None and sampler_cfg is not None:
        log.warning("%s samples in one pass; sampler=%s is ignored", type(model).__name__,
                    sampler_cfg.get("_target_"))
    return model.sample(n, generator=generator, sampler=factory), label or name


def sample_command(cfg: DictConfig) -> None:
    """Load ``cfg.ckpt``, draw ``cfg.n`` samples and write them under ``cfg.out``.

    Writes ``samples.png`` (a grid; video: first frames, plus ``samples.gif`` with every clip
    animated and ``samples_frames.png``, a clip per row) or, for 2-D data, ``scatter.png`` over the
    true mode centres, plus ``samples.pt`` (the raw (n, ...) tensor in data space).
    """
    if cfg.n < 1:
        raise ValueError(f"n must be >= 1, got {cfg.n}")
    model, _, run_cfg, ckpt = load_model(cfg.ckpt, map_location=resolve_device(cfg.device),
                                         ema=cfg.get("ema", True))
    model.progress = True  # models that sample in many steps show them
    uses_ema = model.ema_weights is not None

    start = time.perf_counter()
    name = run_cfg.model.get("name") or type(model).__name__.lower()
    samples, label = draw(model, cfg.n, cfg.seed, cfg.get("sampler"), name)
    seconds = time.perf_counter() - start
    samples = samples.cpu()

    default_out = rundir.run_dir_of(cfg.ckpt) / rundir.SAMPLES / f"sample_{label}_{cfg.n}"
    out = Path(cfg.out) if cfg.out else default_out
    out.mkdir(parents=True, exist_ok=True)
    spec = model.spec
    title = f"{name} step {ckpt.get('global_step')} ({label}{', EMA' if uses_ema else ''})"
    if spec.kind == "toy2d":
        path = save_scatter(samples, out / "scatter.png", centers=spec.mode_centers, title=title)
    else:
        path = save_image_grid(samples[:, :, 0] if samples.ndim == 5 else samples, out / "samples.png")
        if samples.ndim == 5:  # video: also every clip animated and a frame grid
            path = save_video_samples(samples, out, "samples")["gif"]
    with atomic_open(out / "samples.pt") as f:
        torch.save(samples, f)
    print(f"[gen-bench] {cfg.n} samples ({title}) in {seconds:.1f} s -> {path}")
