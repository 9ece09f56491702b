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
from gen_bench.data.paired import SuperResolution
from gen_bench.io import atomic_open
from gen_bench.metrics.settings import KNOB_NAMES
from gen_bench.models import GenerativeModule
from gen_bench.models.base import knob_tag, labels_argument
from gen_bench.viz import save_image_grid, save_scatter, side_by_side
from gen_bench.viz_video import save_video_samples

log = logging.getLogger(__name__)


def draw(model: GenerativeModule, n: int, seed: int, sampler_cfg: DictConfig | None,
         name: str, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, str, torch.Tensor | None]:
    """``n`` samples from a CPU generator seeded with ``seed`` (the same samples on any device), a
    label naming how they were drawn (the sampler's, or ``name`` for models that sample in one pass)
    and, for a conditional model, the classes drawn: ``labels``, or drawn from the generator first,
    which is what ``model.sample(n, generator)`` does."""
    generator = torch.Generator().manual_seed(seed)
    factory = instantiate(sampler_cfg) if sampler_cfg is not None else None
    label = model.sampler_label(factory)  # diffusion: the sampler is chosen now, not at training time
    if label is None and sampler_cfg is not None:
        log.warning("%s samples in one pass; sampler=%s is ignored", type(model).__name__,
                    sampler_cfg.get("_target_"))
    if model.is_conditional and labels is None:
        labels = model.draw_labels(n, generator)
    return model.sample(n, generator=generator, labels=labels, sampler=factory), label or name, labels


def sample_command(cfg: DictConfig) -> None:
    """Load ``cfg.ckpt``, draw ``cfg.n`` samples and write them under ``cfg.out``.

    Writes ``samples.png`` (a grid; video: first frames, plus ``samples.gif`` with every clip
    animated and ``samples_frames.png``, a clip per row) or, for 2-D data, ``scatter.png`` over the
    true mode centres, plus ``samples.pt`` (the raw (n, ...) tensor in data space) and, for a
    class-conditional model, ``labels.pt`` (the (n,) classes, ``labels=`` or drawn). ``guidance=`` and
    ``truncation=`` set the model's sampling knob (the folder name records it). ``upscale=SR_RUN``: a
    super-resolution model (:func:`upscale`) also upscales the samples: ``upscaled.png``,
    ``upscaled.pt`` and ``upscaled_pairs.png`` (each sample, shown pixel for pixel at the new size,
    beside its upscaled version).
    """
    if cfg.n < 1:
        raise ValueError(f"n must be >= 1, got {cfg.n}")
    device = resolve_device(cfg.device)
    model, _, run_cfg, ckpt = load_model(cfg.ckpt, map_location=device, ema=cfg.get("ema", True))
    upscaler = None
    if cfg.get("upscale"):  # loaded first: a wrong model or size fails before any sampling
        upscaler = load_model(cfg.upscale, map_location=device, ema=cfg.get("ema", True))[0]
        check_upscaler(upscaler, model.spec.shape, cfg.upscale)
        upscaler.progress = True
    model.progress = True  # models that sample in many steps show them
    uses_ema = model.ema_weights is not None
    knobs = {k: cfg.get(k) for k in KNOB_NAMES if cfg.get(k) is not None}  # guidance=2, truncation=0.5
    given = labels_argument(model, cfg.get("labels"), cfg.n)

    start = time.perf_counter()
    name = run_cfg.model.get("name") or type(model).__name__.lower()
    with model.knobs_applied(**knobs):
        samples, label, labels = draw(model, cfg.n, cfg.seed, cfg.get("sampler"), name, given)
    seconds = time.perf_counter() - start
    samples = samples.cpu()

    parts = [knob_tag(knobs) if knobs else None,
             f"class{cfg.labels}" if isinstance(cfg.get("labels"), int) else None]
    suffix = "".join(f"_{part}" for part in parts if part)
    default_out = rundir.run_dir_of(cfg.ckpt) / rundir.SAMPLES / f"sample_{label}_{cfg.n}{suffix}"
    out = Path(cfg.out) if cfg.out else default_out
    out.mkdir(parents=True, exist_ok=True)
    spec = model.spec
    shown = ", ".join([label, *(["EMA"] if uses_ema else []), *([knob_tag(knobs)] if knobs else [])])
    title = f"{name} step {ckpt.get('global_step')} ({shown})"
    if spec.kind == "toy2d":
        path = save_scatter(samples, out / "scatter.png", centers=spec.mode_centers, title=title)
    else:
        path = save_image_grid(samples[:, :, 0] if samples.ndim == 5 else samples, out / "samples.png")
        if samples.ndim == 5:  # video: also every clip animated and a frame grid
            path = save_video_samples(samples, out, "samples")["gif"]
    with atomic_open(out / "samples.pt") as f:
        torch.save(samples, f)
    if labels is not None:  # the class of every sample, given or drawn
        with atomic_open(out / "labels.pt") as f:
            torch.save(labels.cpu(), f)
    print(f"[gen-bench] {cfg.n} samples ({title}) in {seconds:.1f} s -> {path}")
    if upscaler is not None:
        start = time.perf_counter()
        factory = instantiate(cfg.upscale_sampler) if cfg.get("upscale_sampler") is not None else None
        big = upscaler.translate(samples, torch.Generator().manual_seed(cfg.seed), factory).cpu()
        seconds = time.perf_counter() - start
        path = save_image_grid(big, out / "upscaled.png")
        save_image_grid(side_by_side([upscaler.task.show(samples), big]), out / "upscaled_pairs.png", nrow=2)
        with atomic_open(out / "upscaled.pt") as f:
            torch.save(big, f)
        print(f"[gen-bench] upscaled x{upscaler.task.factor} by {cfg.upscale} in {seconds:.1f} s -> {path}")


def check_upscaler(model: GenerativeModule, shape: tuple[int, ...], where: str) -> None:
    """Refuse, with the fix, a model that cannot upscale samples of ``shape`` (C, H, W): not a
    super-resolution model, or one trained for other inputs."""
    if not isinstance(model.task, SuperResolution):
        what = f"task={model.task.name}" if model.task is not None else "no paired task"
        raise ValueError(f"upscale={where} is not a super-resolution model ({type(model).__name__}, {what}): "
                         "pass a run trained with task=superres")
    expected = model.task.input_shape(model.spec.shape)
    if tuple(shape) != tuple(expected):
        size = "x".join
        raise ValueError(f"upscale={where} upscales {size(map(str, expected))} images (C x H x W) to "
                         f"{size(map(str, model.spec.shape))}, the samples are {size(map(str, shape))}: "
                         f"train the sampled model at data.image_size={expected[-1]} with {expected[0]} "
                         "channel(s), or a super-resolution model for these samples")
