"""The ``gen-bench`` command: ``gen-bench train|... [hydra overrides]``."""

from __future__ import annotations

import difflib
import functools
import os
import sys
from collections.abc import Callable

import hydra
from omegaconf import DictConfig, OmegaConf

from gen_bench import rundir
from gen_bench.assets import assets_command
from gen_bench.config import config_dir
from gen_bench.eval import eval_command
from gen_bench.leaderboard import leaderboard_command
from gen_bench.report import report_command

USAGE = """usage: gen-bench COMMAND [key=value ...] [hydra options]

commands:
  train    train one model (or a sweep with -m); e.g.
           gen-bench train model=dcgan data=digits trainer.max_steps=2000 seed=1
           train a run longer, in its folder (checkpoints, curves, wandb run carry on):
           gen-bench train resume=runs/RUN trainer.max_steps=4000
  sample   samples from a saved model (grid, or scatter for 2-D data); e.g.
           gen-bench sample ckpt=runs/RUN n=64 sampler=ddim sampler.steps=50
           gen-bench sample ckpt=runs/RUN labels=3 n=16 guidance=2     (class-conditional models)
           gen-bench sample ckpt=runs/RUN upscale=runs/SR_RUN         (a super-resolution model upscales them)
  interpolate  latent walks of a saved model (GIF + strip) and its perceptual path length; e.g.
           gen-bench interpolate ckpt=runs/RUN walks=4 steps=16
  inpaint  fill a removed region of held-out images with a trained DDPM (RePaint, no training); e.g.
           gen-bench inpaint ckpt=runs/DDPM mask=center       (labels=7: a class-conditional DDPM's class)
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
or --cfg job to print the composed config without running. Errors are one line; --verbose
(or HYDRA_FULL_ERROR=1) shows the traceback.
"""


def _train(cfg: DictConfig) -> float | None:
    """One training run (one job of a sweep). Returns the objective for Hydra's Optuna sweeper:
    ``final[objective]`` (``+objective=val/kid``; default ``val/fid``), ``None`` when absent."""
    from gen_bench.logs import route_library_logs
    from gen_bench.train import run_training

    route_library_logs()
    _relaunchable_as_this_job()
    overrides = _job_overrides()
    try:
        summary = run_training(cfg)
    except Exception as e:
        SWEEP_JOBS.append(("failed", overrides))
        if _is_multirun():
            # Hydra records the job as failed, goes on with the sweep's other jobs and exits non-zero at
            # the end; this line names the run whose metrics.json holds the error.
            print(f"[gen-bench] FAILED {cfg.get('run_dir')}: {describe_error(e)}", file=sys.stderr)
        raise
    SWEEP_JOBS.append(("skipped" if summary.get("skipped") else "completed", overrides))
    if summary.get("skipped"):
        print(f"[gen-bench] {summary['run_dir']} already completed {summary['steps']} steps: nothing to do")
        return _objective(cfg, summary)
    final = ", ".join(f"{k}={v:.4g}" for k, v in sorted(rundir.final_values(summary).items()))
    print(f"[gen-bench] {summary['status']}: {summary['steps']} steps in {summary['wall_time_s']:.1f} s "
          f"-> {summary['run_dir']}\n[gen-bench] {final}")
    return _objective(cfg, summary)


def _objective(cfg: DictConfig, summary: dict) -> float | None:
    return rundir.score(summary, cfg.get("objective") or "val/fid")[0]


# The jobs of this process's sweep: (completed | failed | skipped, the job's overrides). A launcher that
# runs jobs in other processes (Slurm) leaves it empty, and no summary is printed.
SWEEP_JOBS: list[tuple[str, list[str]]] = []


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _job_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def sweep_summary(jobs: list[tuple[str, list[str]]]) -> str:
    """One line: how many jobs completed, failed (named by the overrides that differ between the jobs)
    and were skipped."""
    values: dict[str, set[str]] = {}
    for _, overrides in jobs:
        for arg in overrides:
            values.setdefault(rundir.override_key(arg), set()).add(arg)
    keys_of = [{rundir.override_key(a) for a in o} for _, o in jobs]
    swept = {k for k, v in values.items() if len(v) > 1 or any(k not in keys for keys in keys_of)}
    count = {s: [" ".join(a for a in o if not swept or rundir.override_key(a) in swept) for status, o in jobs
                 if status == s] for s in ("completed", "failed", "skipped")}
    failed = f" ({'; '.join(count['failed'])})" if count["failed"] else ""
    return (f"[gen-bench] sweep: {len(jobs)} runs: {len(count['completed'])} completed, "
            f"{len(count['failed'])} failed{failed}, {len(count['skipped'])} skipped (already complete)")


def describe_error(error: BaseException) -> str:
    """A failed command's error in one line, with the closest valid name for a mistyped key or option."""
    from hydra.errors import InstantiationException, MissingConfigException

    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__  # the builder's own error, not Hydra's wrapping of it
    cause = error.__cause__
    if isinstance(error, MissingConfigException) and error.options:
        group, _, name = (error.missing_cfg_file or "").rpartition("/")
        close = difflib.get_close_matches(name, error.options, n=1)
        hint = f": did you mean {group}={close[0]}?" if close else ""
        return f"no {group} config named {name!r}{hint} (options: {', '.join(error.options)})"
    parent_node = getattr(cause, "parent_node", None)
    if parent_node is not None and "not in struct" in str(cause):
        key, full_key = str(cause.key), str(cause.full_key)
        parent = full_key.rpartition(".")[0]
        keys = [str(k) for k in parent_node.keys()]
        close = difflib.get_close_matches(key, keys, n=1)
        hint = f"did you mean {'.'.join(filter(None, [parent, close[0]]))}?" if close else ""
        return (f"{parent or 'the config'} has no key {key!r}: {hint or 'valid: ' + ', '.join(keys)} (a + "
                "prefix would add it as a new key)")
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    plain = isinstance(error, (ValueError, OSError)) and type(error).__module__ == "builtins"
    return text if plain and text else f"{type(error).__name__}: {text}"


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


def _interpolate(cfg: DictConfig) -> None:
    from gen_bench.interpolate import interpolate_command

    interpolate_command(cfg)


def _inpaint(cfg: DictConfig) -> None:
    from gen_bench.inpaint import inpaint_command

    inpaint_command(cfg)


PATH_KEYS = ("ckpt", "out", "out_dir", "resume", "samples", "upscale")  # arguments that hold a path


def _quote(value: str) -> str:
    q = '"' if "'" in value else "'"
    return f"{q}{value}{q}"


def quote_paths(args: list[str]) -> list[str]:
    """Quote path values holding ``=`` or ``,`` (run folders are named after overrides, e.g.
    ``runs/data=ring8,model=ddpm``), which Hydra's override grammar would otherwise split."""
    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key in PATH_KEYS and value[:1] not in ("'", '"') and any(c in value for c in "=,"):
            arg = f"{key}={_quote(value)}"
        out.append(arg)
    return out


def continue_run_args(args: list[str]) -> list[str]:
    """``gen-bench train resume=RUN [changes]``: train the run in folder RUN on, in that folder.

    The run's own command-line overrides (``RUN/.hydra/overrides.yaml``) come first and the new ones
    after them (so ``trainer.max_steps=N`` replaces the run's budget), and Hydra's output folder is
    RUN: checkpoints, curves, the wandb run and the log carry on. A sweep (``-m``), ``resume=auto``
    and an explicit ``hydra.run.dir`` are left as they are.
    """
    if "-m" in args or "--multirun" in args or any(rundir.override_key(a) == "hydra.run.dir" for a in args):
        return args
    resume = [a.partition("=")[2].strip("'\"") for a in args if rundir.override_key(a) == "resume"]
    if not resume or resume[-1] in ("auto", "null", "None", "false", ""):
        return args
    run = rundir.run_dir_of(resume[-1])
    if not rundir.is_run_dir(run):
        return args  # not a run folder: run_training says what is wrong with the path
    saved_path = run / rundir.OVERRIDES
    saved = [str(a) for a in OmegaConf.load(saved_path)] if saved_path.is_file() else []
    given = {rundir.override_key(a) for a in args}
    kept = [a for a in saved if rundir.override_key(a) not in given | {"resume"}]
    return [*kept, *args, f"hydra.run.dir={_quote(str(run))}"]


# config_name None: the command parses its own argv (argparse), no Hydra.
COMMANDS: dict[str, tuple[str | None, Callable]] = {
    "train": ("train", _train),
    "sample": ("sample", _sample),
    "interpolate": ("interpolate", _interpolate),
    "inpaint": ("inpaint", _inpaint),
    "eval": ("eval", eval_command),
    "assets": (None, assets_command),
    "leaderboard": (None, leaderboard_command),
    "report": (None, report_command),
}


def _error_line(error: BaseException) -> None:
    print(f"gen-bench: error: {describe_error(error)}", file=sys.stderr)
    sys.exit(1)


def _one_line_errors(fn: Callable, verbose: bool) -> Callable:
    """``fn`` reporting its error in one line and exiting 1 (a SystemExit, which Hydra does not report
    again); in a sweep the error propagates, so Hydra records the job as failed and goes on."""

    @functools.wraps(fn)
    def task(cfg: DictConfig):
        try:
            return fn(cfg)
        except Exception as e:
            if verbose or _is_multirun():
                raise
            _error_line(e)

    return task


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    # Errors: one line (gen-bench: error: ...); the traceback with --verbose or HYDRA_FULL_ERROR=1
    verbose = "--verbose" in rest or os.environ.get("HYDRA_FULL_ERROR") == "1"
    rest = [a for a in rest if a != "--verbose"]
    if command not in COMMANDS:
        sys.exit(f"gen-bench: unknown command {command!r}; valid: {', '.join(COMMANDS)}\n\n{USAGE}")
    config_name, fn = COMMANDS[command]
    if config_name is None:
        sys.exit(fn(rest))
    task = hydra.main(version_base="1.3", config_path=str(config_dir()),
                      config_name=config_name)(_one_line_errors(fn, verbose))
    rest = quote_paths(rest)
    if command == "train":
        rest = continue_run_args(rest)
    sys.argv = [f"gen-bench-{command}", *rest]
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises instead of printing its own partial trace
    try:
        task()
    except Exception as e:  # composing the config (a mistyped key), or a sweep's first failed job
        if verbose:
            raise
        _error_line(e)
    finally:
        if SWEEP_JOBS and ("-m" in rest or "--multirun" in rest):
            print(sweep_summary(SWEEP_JOBS), file=sys.stderr)


if __name__ == "__main__":
    main()
