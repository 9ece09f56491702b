"""``gen-bench eval``: score a saved checkpoint with the evaluation suite, exactly as training does.

Writes ``metrics.json`` in the layout of a training run's (the run's own fields, ``final`` with
the ``val/*`` scores, ``eval`` with scores, protocols and draw) to ``out_dir``, by default
``<run dir>/eval/<eval.name>-<checkpoint name>-<sampler label>-<ema|raw>/`` (one folder per result:
an evaluation with another sampler or without the EMA weights does not overwrite this one), next to
the memorization grid.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def eval_command(cfg: DictConfig) -> dict[str, Any]:
    """Load ``cfg.ckpt``, evaluate it with ``cfg.eval`` and write ``metrics.json``; returns its content.

    With ``samples=PATH data=NAME`` instead, scores a folder or array file of samples
    (:mod:`gen_bench.external`)."""
    if cfg.get("samples"):
        from gen_bench.external import samples_command

        if cfg.get("ckpt"):
            raise ValueError("pass either ckpt=RUN (a trained model) or samples=PATH (images), not both")
        return samples_command(cfg)
    if not cfg.get("ckpt"):
        raise ValueError("nothing to evaluate: pass ckpt=RUN (a run folder or .ckpt file), or samples=PATH "
                         "data=NAME (a folder of images or a .npz / .pt array)")
    if cfg.get("data") is not None:
        raise ValueError("data= comes from the checkpoint; pass it only with samples=PATH")
    from gen_bench import rundir
    from gen_bench.checkpoint import load_model, resolve_device
    from gen_bench.io import ensure_writable
    from gen_bench.metrics.engine import Evaluator, settings_from

    start = time.perf_counter()
    settings = settings_from(cfg.eval)
    device = resolve_device(cfg.get("device", "auto"))
    model, datamodule, run_cfg, ckpt = load_model(cfg.ckpt, map_location=device, ema=cfg.get("ema", True))
    model.progress = True  # models that sample in many steps show them
    run_dir = rundir.run_dir_of(cfg.ckpt)
    model_cfg = run_cfg.get("model") or {}
    sampler = cfg.get("sampler")  # null: the model's own
    evaluator = Evaluator(settings, datamodule, sampler)
    draw = evaluator.draw_record(model)
    ckpt_name = "last" if Path(cfg.ckpt).expanduser().is_dir() else Path(cfg.ckpt).stem
    label = draw["sampler"] or model_cfg.get("name")  # models that sample in one pass: their name
    parts = [settings.name, ckpt_name, label, "ema" if draw["ema"] else "raw"]
    default_out = run_dir / rundir.EVAL / "-".join(parts)
    out_dir = Path(cfg.out_dir).expanduser() if cfg.get("out_dir") else default_out
    try:  # now, not after minutes of sampling
        ensure_writable(out_dir)
    except OSError as e:
        raise PermissionError(f"cannot write the results to {out_dir} ({e.strerror or e}): pass "
                              "out_dir=DIR to write them elsewhere") from None
    evaluator.out_dir = out_dir
    result = evaluator.evaluate(model, step=ckpt.get("global_step"), tag="final")

    previous = rundir.read_metrics(run_dir)
    resolved = OmegaConf.to_container(run_cfg, resolve=True)
    train_final = {k: v for k, v in previous.get("final", {}).items() if not k.startswith("val/")}
    summary = {
        **{k: v for k, v in previous.items() if k not in ("eval", "final", "error", "traceback")},
        "model": model_cfg.get("name"),
        "data": run_cfg.data.get("name"),
        "seed": run_cfg.get("seed"),
        "config_digest": previous.get("config_digest") or rundir.config_digest(resolved),
        "run_dir": str(run_dir),
        "checkpoint": str(Path(cfg.ckpt).expanduser().resolve()),
        "status": "completed",
        "steps": ckpt.get("global_step"),
        "final": {**train_final, **result.log_dict()},
        "eval": {**result.to_json(), "tag": "final", "name": settings.name,
                 "time": {"evaluations": round(result.seconds, 3), "setup": round(evaluator.setup_seconds, 3),
                          "command": round(time.perf_counter() - start, 3)}},
    }
    path = rundir.write_metrics(out_dir, summary)
    scores = ", ".join(f"{k}={v:.4g}" for k, v in result.values().items())
    print(f"[gen-bench] eval {settings.name} of {summary['checkpoint']} (step {summary['steps']}): {scores}\n"
          f"[gen-bench] -> {path}")
    return summary
