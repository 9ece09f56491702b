"""Rebuild a trained model (and its datamodule) from a checkpoint alone."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from gen_bench.data import GenerativeDataModule
from gen_bench.models import GenerativeModule, build_model
from gen_bench.rundir import checkpoint_file


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by ``gen-bench train``, loaded with ``weights_only=True`` (tensors and plain
    types only: a file from elsewhere cannot run code while it is read).

    Raises:
        ValueError: ``path`` is not such a checkpoint (another file, another program's checkpoint).
    """
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path} is not a gen-bench checkpoint (torch.load: {reason[:150]}); pass a "
                         "checkpoints/*.ckpt file of a run or the run's folder") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "global_step" not in ckpt:
        raise ValueError(f"{path} is not a Lightning checkpoint (no state_dict / global_step); pass a "
                         "checkpoints/*.ckpt file of a run or the run's folder")
    if not (ckpt.get("gen_bench") or {}).get("config"):
        raise ValueError(f"{path} was not written by gen-bench train (it has no embedded run config)")
    return ckpt


def load_model(path: str | Path, map_location: str | torch.device = "cpu", *, ema: bool = True
               ) -> tuple[GenerativeModule, GenerativeDataModule, DictConfig, dict[str, Any]]:
    """The model with its trained weights (in eval mode), its datamodule, its run config and the
    raw checkpoint dict (for callback states such as EMA weights).

    Args:
        path: A ``.ckpt`` file or a run directory (its last checkpoint is used).
        map_location: The device the model goes to.
        ema: Sample with the checkpoint's EMA weights when it has them (``False``: the live weights).
    """
    ckpt = read_checkpoint(checkpoint_file(path))
    cfg = OmegaConf.create(ckpt["gen_bench"]["config"])
    datamodule: GenerativeDataModule = instantiate(cfg.data)
    model = build_model(cfg.model, datamodule.spec)
    model.load_state_dict(ckpt["state_dict"])
    model.on_load_checkpoint(ckpt)
    model.use_data(datamodule)  # image-to-image models draw their inputs from its held-out split
    if not ema:
        model.ema_weights = None
    model.to(map_location).eval()
    return model, datamodule, cfg, ckpt


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
