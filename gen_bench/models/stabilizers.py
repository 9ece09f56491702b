"""Names of the GAN stabilizers a model config switches on (see :mod:`gen_bench.models.gan`), for the
leaderboard's stabilizers column and the wandb tags of a run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The config keys of the stabilizers (``stabilizer`` / ``stabilizers``: the arm of
# experiment=compare_stabilizers): runs that differ in these differ by their stabilizers column.
STABILIZER_KEYS = ("model.spectral_norm", "model.real_label", "model.instance_noise", "model.grad_clip_g",
                   "model.grad_clip_d", "model.pack", "stabilizer", "stabilizers")


def stabilizer_settings(model_cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """The GAN stabilizers a model config switches on (empty: none).

    Returns:
        A subset of ``spectral_norm`` (True), ``label_smoothing`` (the real target), ``instance_noise``
        (``sigma_start/anneal_steps``), ``grad_clip`` (``g/d`` max norms) and ``pack`` (PacGAN's m,
        when above 1).
    """
    if not model_cfg:
        return {}
    out: dict[str, Any] = {}
    if model_cfg.get("spectral_norm"):
        out["spectral_norm"] = True
    real = model_cfg.get("real_label")
    if real is not None and float(real) != 1.0:
        out["label_smoothing"] = float(real)
    noise = model_cfg.get("instance_noise") or {}
    if float(noise.get("sigma_start") or 0) > 0:
        out["instance_noise"] = f"{noise.get('sigma_start'):g}/{noise.get('anneal_steps')}"
    clip_g, clip_d = model_cfg.get("grad_clip_g"), model_cfg.get("grad_clip_d")
    if clip_g is not None or clip_d is not None:
        g, d = ("-" if c is None else f"{c:g}" for c in (clip_g, clip_d))
        out["grad_clip"] = f"{g}/{d}"
    pack = int(model_cfg.get("pack") or 1)
    if pack > 1:
        out["pack"] = pack
    return out


def stabilizer_label(settings: Mapping[str, Any]) -> str:
    """``spectral_norm+label_smoothing=0.9`` style label; ``none`` when nothing is on."""
    if not settings:
        return "none"
    return "+".join(k if v is True else f"{k}={v}" for k, v in settings.items())


def stabilizer_tags(model_cfg: Mapping[str, Any] | None) -> list[str]:
    """wandb tags for the stabilizers that are on (``spectral_norm``, ``label_smoothing=0.9``...)."""
    return [k if v is True else f"{k}={v}" for k, v in stabilizer_settings(model_cfg).items()]
