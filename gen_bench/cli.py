"""The ``gen-bench`` command: ``gen-bench train|... [hydra overrides]``."""

from __future__ import annotations

import sys
from collections.abc import Callable

import hydra
from omegaconf import DictConfig

from gen_bench.assets import assets_command
from gen_bench.config import config_dir
from gen_bench.eval import eval_command
from gen_bench.leaderboard import leaderboard_command
from gen_bench.report import report_command

USAGE = """usage: gen-bench COMMAND [key=value ...] [hydra options]

commands:
  train    train one model (or a sweep with -m); e.g.
           gen-bench train model=dcgan data=digits trainer.max_steps=2000 seed=1
  sample   samples from a saved model (grid, or scatter for 2-D data); e.g.
           gen-bench sample ckpt=runs/RUN n=64 sampler=ddim sampler.steps=50
  eval     score a saved model (FID, KID, IS, PRDC, memorization, modes); e.g.
           gen-bench eval ckpt=runs/RUN eval=paper
           gen-bench eval samples=DIR_OR_NPZ data=digits out_dir=runs/sweeps/NAME/mine   (any samples)
  assets   gen-bench assets fetch --to DIR | verify DIR: weight files for offline machines
  leaderboard  rank the runs of a sweep (mean ± std over seeds); e.g.
           gen-bench leaderboard runs/sweeps/compare_digits --metric fid --format markdown --wandb
           gen-bench leaderboard runs/sweeps/compare_compute --x train_flops
  report   one self-contained report.html of a sweep (tables, plots, sample grids, failures); e.g.
           gen-bench report runs/sweeps/compare_compute

Every command takes Hydra overrides; add --help after the command for its config groups,
or --cfg job to print the composed config without running.
"""


def _train(cfg: DictConfig) -> float | None:
    """One training run (one job of a sweep). Returns the objective for Hydra's Optuna sweeper:
    ``final[objective]`` (``+objective=val/kid``; default ``val/fid``), ``None`` when absent."""
    from gen_bench.train import run_training

    _relaunchable_as_this_job()
    try:
        summary = run_training(cfg)
    except Exception as e:
        # Hydra records the job as failed, goes on with the sweep's other jobs and exits non-zero at
        # the end; this line names the run whose metrics.json holds the error.
        print(f"[gen-bench] FAILED {cfg.get('run_dir')}: {type(e).__name__}: {e}", file=sys.stderr)
        raise
    final = ", ".join(f"{k}={v:.4g}" for k, v in sorted(summary.get("final", {}).items()))
    print(f"[gen-bench] {summary['status']}: {summary['steps']} steps in {summary['wall_time_s']:.1f} s "
          f"-> {summary['run_dir']}\n[gen-bench] {final}")
    objective = cfg.get("objective") or "val/fid"
    score = ((summary.get("eval") or {}).get("scores") or {}).get(objective.removeprefix("val/"), {})
    value = score.get("value") if objective.startswith("val/") and score else summary["final"].get(objective)
    return float(value) if value is not None else None


def _relaunchable_as_this_job() -> None:
    """Lightning's DDP launcher starts the other processes of a run by running ``sys.argv`` again with
    ``hydra.run.dir=<hydra.run.dir>``: make that command this one job, in this job's folder (not
    ``gen-bench-train`` with the whole sweep's arguments)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import read_write

    import __main__

    if not HydraConfig.initialized():
        return
    hc = HydraConfig.get()
    script = getattr(__main__, "__file__", None) or sys.argv[0]  # the console script, if that is how we run
    sys.argv = [script, "train", *hc.overrides.task]
    with read_write(hc.run):
        hc.run.dir = hc.runtime.output_dir


def _sample(cfg: DictConfig) -> None:
    from gen_bench.sample import sample_command

    sample_command(cfg)


PATH_KEYS = ("ckpt", "out", "out_dir", "samples")  # sample / eval arguments that hold a path


def quote_paths(args: list[str]) -> list[str]:
    """Quote path values holding ``=`` or ``,`` (run folders are named after overrides, e.g.
    ``runs/data=ring8,model=ddpm``), which Hydra's override grammar would otherwise split."""
    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key in PATH_KEYS and value[:1] not in ("'", '"') and any(c in value for c in "=,"):
            q = '"' if "'" in value else "'"
            arg = f"{key}={q}{value}{q}"
        out.append(arg)
    return out


# config_name None: the command parses its own argv (argparse), no Hydra.
COMMANDS: dict[str, tuple[str | None, Callable]] = {
    "train": ("train", _train),
    "sample": ("sample", _sample),
    "eval": ("eval", eval_command),
    "assets": (None, assets_command),
    "leaderboard": (None, leaderboard_command),
    "report": (None, report_command),
}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        sys.exit(f"gen-bench: unknown command {command!r}; valid: {', '.join(COMMANDS)}\n\n{USAGE}")
    config_name, fn = COMMANDS[command]
    if config_name is None:
        sys.exit(fn(rest))
    task = hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=config_name)(fn)
    if command in ("sample", "eval"):
        rest = quote_paths(rest)
    sys.argv = [f"gen-bench-{command}", *rest]
    task()


if __name__ == "__main__":
    main()
