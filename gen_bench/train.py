"""``gen-bench train``: build everything from the config and call ``fit``."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar
from omegaconf import DictConfig, OmegaConf

from gen_bench.callbacks import AtomicCheckpointIO, RunSummary, TrainingState
from gen_bench.io import read_json
from gen_bench.models import build_model

log = logging.getLogger(__name__)


class RunExistsError(RuntimeError):
    """The run directory already holds a run that this command would overwrite."""


def resolve_resume(resume: str | None, run_dir: Path) -> Path | None:
    """The checkpoint to continue from.

    Args:
        resume: ``None`` (fresh run), ``auto`` (this run directory's ``last.ckpt`` if there is
            one, else a fresh run), a checkpoint file, or a run directory.
        run_dir: This run's directory.
    """
    if resume is None or resume is False:
        return None
    if str(resume) == "auto":
        last = run_dir / "checkpoints" / "last.ckpt"
        return last if last.is_file() else None
    path = Path(str(resume)).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise FileNotFoundError(
            f"resume={resume}: no checkpoint at {path}. Pass a .ckpt file, a run directory holding "
            "checkpoints/last.ckpt, or resume=auto"
        )
    return path


def config_digest(cfg: dict[str, Any]) -> str:
    """sha256 of the config minus what does not change results (paths, resume, loggers)."""
    ignored = {"resume", "run_dir", "output_root", "logger", "overwrite", "callbacks"}
    payload = json.dumps({k: v for k, v in cfg.items() if k not in ignored}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def run_training(cfg: DictConfig) -> dict[str, Any]:
    """Train one model as ``cfg`` says; returns the run's ``metrics.json`` content."""
    run_dir = Path(cfg.run_dir).expanduser().resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = resolve_resume(cfg.resume, run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    if ckpt_path is None and last.exists() and not cfg.get("overwrite", False):
        raise RunExistsError(
            f"{run_dir} already holds a run (checkpoints/last.ckpt). Pass resume=auto to continue it, "
            "overwrite=true to start it again from scratch, or output_root=DIR to run elsewhere"
        )
    if cfg.get("overwrite", False) and ckpt_path is None:
        for stale in (run_dir / "checkpoints").glob("*.ckpt"):
            stale.unlink()

    torch.set_float32_matmul_precision(cfg.get("matmul_precision", "high"))
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    model = build_model(cfg.model, datamodule.spec)

    resolved = OmegaConf.to_container(cfg, resolve=True)
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    info = {
        "model": cfg.model.get("name"),
        "data": cfg.data.get("name"),
        "seed": cfg.seed,
        "config_digest": config_digest(resolved),
        "run_dir": str(run_dir),
        "tags": dict(resolved.get("tags") or {}),
    }
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a bar it was told to hide
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    if cfg.model.get("ema") is not None:  # weight EMA: a callback whose settings live with the model
        callbacks.append(instantiate(cfg.model.ema))
    callbacks += [TrainingState(resolved), RunSummary(run_dir, info)]
    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values() if lg is not None]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers,
                                     plugins=[AtomicCheckpointIO()], default_root_dir=str(run_dir))
    if ckpt_path is not None:
        done = torch.load(ckpt_path, map_location="cpu", weights_only=False)["global_step"]
        summary_path = run_dir / "metrics.json"
        if 0 < cfg.trainer.max_steps <= done and summary_path.is_file():
            summary = read_json(summary_path)
            if summary.get("status") == "completed":
                log.info("%s already completed %d steps: nothing to do", run_dir, done)
                return summary
        log.info("resuming from %s (step %d)", ckpt_path, done)
    trainer.fit(model, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None)
    return read_json(run_dir / "metrics.json")
