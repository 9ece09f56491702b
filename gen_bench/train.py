"""``gen-bench train``: build everything from the config and call ``fit``."""

from __future__ import annotations

import logging
import math
import secrets
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import Callback, ProgressBar
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from gen_bench import interrupt, rundir
from gen_bench.callbacks import (
    AtomicCheckpointIO,
    ConfiguredLearningRates,
    ModelSummary,
    RunSummary,
    TrainingState,
)
from gen_bench.checkpoint import read_checkpoint
from gen_bench.compute import Budget, ComputeLedger, StepCost, count_parameters, world_size_of
from gen_bench.config import flatten
from gen_bench.io import atomic_write_bytes
from gen_bench.metrics.engine import settings_from
from gen_bench.models import build_model
from gen_bench.models.stabilizers import stabilizer_tags

log = logging.getLogger(__name__)


class RunExistsError(RuntimeError):
    """The run directory already holds a run that this command would overwrite."""


class DivergedError(RuntimeError):
    """A logged training value (a loss) became NaN or infinite."""


class DivergenceGuard(Callback):
    """Stops a run once a logged ``train/*`` value is NaN or infinite.

    The run ends as ``failed`` with a :class:`DivergedError` in ``metrics.json`` (through
    :class:`~gen_bench.callbacks.RunSummary`) instead of training on, and being evaluated with, NaN
    weights. One finite check of the last logged scalars every ``every_n_steps`` steps (default:
    ``trainer.log_every_n_steps``; one device sync each), where ``detect_anomaly`` checks every
    backward op and is far slower. Under DDP the decision is shared, so every process stops.

    Args:
        every_n_steps: Check interval in optimizer steps (``None``: the trainer's logging interval).
    """

    def __init__(self, every_n_steps: int | None = None) -> None:
        self.every_n_steps = every_n_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        every = self.every_n_steps or trainer.log_every_n_steps or 1
        if trainer.global_step % every != 0:
            return
        logged = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
        if not logged:
            return
        values = torch.stack([torch.as_tensor(v).detach().float().flatten()[0] for v in logged.values()])
        bad = not bool(torch.isfinite(values).all())  # one device sync per check
        if trainer.world_size > 1:
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            shown = ", ".join(f"{k}={float(v):g}" for k, v in zip(logged, values.tolist(), strict=True))
            raise DivergedError(f"diverged at step {trainer.global_step}: {shown}")


class _EndOnly(Callback):
    """Runs only the end of training (the last checkpoint, the final sample grid and evaluation, the run's
    metrics) of a run resumed from a checkpoint that holds all its steps: one stopped, or failed, in
    that end.

    Lightning skips a fit whose checkpoint has reached ``max_steps``, end included; the run is started
    with one step more and this sets the limit back before the first step, so the loop ends at once.
    """

    def __init__(self, max_steps: int) -> None:
        self.max_steps = max_steps

    def on_train_start(self, trainer, pl_module) -> None:
        trainer.fit_loop.epoch_loop.max_steps = self.max_steps


def _sweep_name() -> str | None:
    """The sweep folder's name when this is a job of a Hydra multirun, else ``None``."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    return Path(hc.sweep.dir).name if hc.mode == RunMode.MULTIRUN else None


def _backbone_unused(model_cfg: DictConfig, kind: str) -> str | None:
    """The ``backbone=`` choice when it is not the default and this run has no network it picks (2-D or
    video data, or a model without GAN image networks), else ``None``: such a run would silently train
    the same networks as without it."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    choice = HydraConfig.get().runtime.choices.get("backbone")
    if choice in (None, "dcgan"):
        return None
    roles = set((model_cfg.get("nets") or {}).get("image") or {})
    if kind == "image" and roles & {"generator", "discriminator", "critic"}:
        return None
    return choice


def _wandb_run_id(run_dir: Path, resuming: bool) -> str:
    """The run's wandb id: the saved one when the run is resumed, else a new one (saved)."""
    path = run_dir / rundir.WANDB_ID
    if resuming and path.is_file():
        return path.read_text().strip()
    run_id = secrets.token_hex(4)  # wandb ids: letters and digits
    if rank_zero_only.rank == 0:
        atomic_write_bytes(path, f"{run_id}\n".encode())
    return run_id


def _configure_wandb(cfg: DictConfig, run_dir: Path, resuming: bool = False) -> None:
    """Every wandb logger: one wandb run per gen-bench run, resumed with it (the id saved in the run
    folder); in a sweep's job, the sweep as group and the job's folder as name; tags for the model,
    the data, the stabilizers that are on and the run's ``tags``."""
    sweep = _sweep_name()
    extra = [*stabilizer_tags(cfg.model), *(f"{k}={v}" for k, v in (cfg.get("tags") or {}).items())]
    for node in (cfg.get("logger") or {}).values():
        if node is None or not str(node.get("_target_", "")).endswith("WandbLogger"):
            continue
        with open_dict(node):
            if not node.get("id"):  # WandbLogger resumes a given id ("allow")
                node.id = _wandb_run_id(run_dir, resuming)
            tags = [str(t) for t in (node.get("tags") or [])]
            node.tags = list(dict.fromkeys([*tags, *extra]))[:64]  # wandb's limit; no duplicates
            if sweep is not None:
                node.group = node.get("group") or sweep
                node.name = run_dir.name


def _finish_wandb(loggers: list, summary: dict[str, Any] | None, failed: bool) -> None:
    """Put the final metrics in each wandb run's summary (the runs table sorts by them) and finish the
    run, so the next job of an in-process sweep starts its own run instead of logging into this one."""
    for lg in loggers:
        if not isinstance(lg, WandbLogger) or lg._experiment is None or rank_zero_only.rank != 0:
            continue
        run = lg.experiment
        if summary is not None:
            final = {k: v for k, v in rundir.final_values(summary).items()
                     if isinstance(v, (int, float)) and math.isfinite(v)}
            run.summary.update({**final, "status": summary.get("status"), "steps": summary.get("steps"),
                                "wall_time_s": summary.get("wall_time_s")})
            if summary.get("error"):
                run.summary["error"] = summary["error"]
        run.finish(exit_code=1 if failed else 0)


def _check_training_sampler(model_cfg: DictConfig, model) -> None:
    """Build the sampler previews and evaluation will use now, so a bad one fails before training."""
    node = model_cfg.get("training_sampler")
    if node is None:
        return
    try:
        model.sampler_label(instantiate(node))  # binds it (models that sample in one pass ignore it)
    except ValueError as e:
        raise ValueError(f"model.training_sampler: {e}. Set model.training_sampler.steps=N or "
                         "model.training_sampler=null (the model's own sampler)") from e


def check_config(resolved: dict[str, Any]) -> None:
    """Refuse, before anything is built, settings a run cannot train or evaluate with.

    Args:
        resolved: The run's resolved config.

    Raises:
        ValueError: Naming the setting and what to set instead.
    """
    steps = (resolved.get("trainer") or {}).get("max_steps")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        # Lightning reads -1 as "no limit": with max_epochs=-1 that is a run that never ends
        raise ValueError(f"trainer.max_steps must be a number of steps >= 1, got {steps!r}")
    for key, value in flatten(resolved.get("model") or {}, "model.").items():
        if key.rsplit(".", 1)[-1] == "lr" and isinstance(value, (int, float)) and value < 0:
            raise ValueError(f"{key} must be >= 0, got {value}")
    settings_from(resolved.get("eval"))  # the metrics' needs (PRDC's k neighbours...), see EvalSettings


# What a resumed run may change, besides its learning rates (applied: ConfiguredLearningRates): the
# result-neutral settings (paths, logging and display, labels), the evaluation, speed options, and the
# budget (a larger trainer.max_steps trains the run on); changes of the bookkeeping keys are not even
# recorded. Any other change would silently train a different run than its config says.
_RESUME_ALLOWED = (*rundir.RESULT_NEUTRAL_KEYS, "eval", "trainer.max_steps", "trainer.accelerator",
                   "data.num_workers", "matmul_precision", "channels_last", "compile", "compile_kwargs")


def resume_changes(saved: dict[str, Any], new: dict[str, Any], where: str | Path) -> dict[str, list]:
    """The settings a resumed run changes, ``{key: [in the checkpoint, now]}``.

    Args:
        saved: The resolved config stored in the checkpoint.
        new: This run's resolved config.
        where: The checkpoint, for messages.

    Raises:
        ValueError: The checkpoint holds another model, or the config changes settings a resume cannot
            honour (the message lists them).
    """
    old_model, new_model = saved.get("model") or {}, new.get("model") or {}
    identity = ("name", "_target_")
    if [old_model.get(k) for k in identity] != [new_model.get(k) for k in identity]:
        raise ValueError(f"resume: {where} holds a {old_model.get('name')} model, this config builds "
                         f"{new_model.get('name')}: pass model={old_model.get('name')} (with the run's other "
                         "settings), or start a new run without resume=")
    absent = "(absent)"
    a, b = flatten(saved), flatten(new)
    changed = {k: [a.get(k, absent), b.get(k, absent)] for k in sorted(set(a) | set(b))
               if a.get(k, absent) != b.get(k, absent) and not rundir.under(k, rundir.BOOKKEEPING_KEYS)}
    refused = [k for k in changed if not rundir.under(k, _RESUME_ALLOWED) and k.rsplit(".", 1)[-1] != "lr"]
    if refused:
        shown = ", ".join(f"{k}: {changed[k][0]!r} -> {changed[k][1]!r}" for k in refused)
        raise ValueError(f"resume: {where} was trained with other settings ({shown}); a resume applies only "
                         "learning rates, trainer.max_steps, eval / logging / callback settings. Set these "
                         "back, or start a new run without resume=")
    return changed


# Lightning warns that with manual optimization a step-interval checkpoint holds the weights after
# that step's updates. That is gen-bench's contract (checkpoint N = the state after N steps, what a
# resume continues from, tested bit for bit), so the warning says nothing a user must act on.
warnings.filterwarnings("ignore",
                        message="Using ModelCheckpoint with manual optimization and every_n_train_steps")


def _target_steps(cfg: DictConfig, budget: Budget, previous: dict[str, Any]) -> int | None:
    """The step this run trains to: ``trainer.max_steps``, or under a budget the budget's steps for
    the step cost measured in an earlier session (``previous``, the run's metrics); ``None`` when not yet
    measured."""
    if not budget.active:
        return int(cfg.trainer.max_steps)
    c = previous.get("compute") or {}
    if not c.get("flops_per_step_per_process"):
        return None
    world = int(c.get("world_size") or 1)
    cost = StepCost(flops=int(c["flops_per_step_per_process"]), batches=int(c["batches_per_step"]),
                    batch_size=int(c["images_per_step"]) // (int(c["batches_per_step"]) * world))
    return budget.max_steps(cost, world)


def run_training(cfg: DictConfig) -> dict[str, Any]:
    """Train one model as ``cfg`` says; returns the run's ``metrics.json`` content.

    A run that fails, before training (a bad data path) or during it (an error, a diverged loss),
    leaves ``metrics.json`` with status ``failed`` and the error, and the exception propagates (a
    Hydra multirun records the job as failed and goes on with the others).
    """
    # Config errors come before anything is written or deleted: a refused run leaves its folder as it was.
    resolved = OmegaConf.to_container(cfg, resolve=True)
    check_config(resolved)
    run_dir = Path(cfg.run_dir).expanduser().resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = rundir.resolve_resume(cfg.resume, run_dir)
    if str(cfg.resume) == "auto" and ckpt_path is None:  # a changed budget names another folder
        log.info("resume=auto: no checkpoint in %s, so a new run (to train an existing run longer: "
                 "gen-bench train resume=runs/RUN trainer.max_steps=N)", run_dir)
    if ckpt_path is None and rundir.last_checkpoint(run_dir).exists() and not cfg.get("overwrite", False):
        raise RunExistsError(
            f"{run_dir} already holds a run ({rundir.last_checkpoint_name()}). Pass resume=auto to continue "
            "it, overwrite=true to start it again from scratch, or output_root=DIR to run elsewhere"
        )
    if cfg.get("overwrite", False) and ckpt_path is None:
        for stale in rundir.last_checkpoint(run_dir).parent.glob("*.ckpt"):
            stale.unlink()

    previous = rundir.read_metrics(run_dir)
    budget = Budget(**(cfg.get("budget") or {}))
    target_steps = _target_steps(cfg, budget, previous)
    if cfg.resume is not None and previous:  # e.g. a sweep run again with resume=auto
        # by the run's metrics, not by its checkpoint: that may predate the last steps of a finished run
        if (previous.get("status") == "completed" and target_steps is not None
                and target_steps <= (previous.get("steps") or 0)):
            log.info("%s already completed %d steps: nothing to do", run_dir, previous["steps"])
            return {**previous, "skipped": True}
    info: dict[str, Any] = {"model": cfg.model.get("name"), "data": cfg.data.get("name"), "seed": cfg.seed,
                            "run_dir": str(run_dir)}
    finish_only = False
    if ckpt_path is not None:
        ckpt = read_checkpoint(ckpt_path)
        done = ckpt["global_step"]
        changes = resume_changes(ckpt["gen_bench"]["config"], resolved, ckpt_path)
        if changes:
            log.info("resuming with changed settings: %s", changes)
            info["resumed_with_changes"] = [*previous.get("resumed_with_changes", []),
                                            {"step": done, "changes": changes}]
        # every step trained, the end of training not done (stopped in the final evaluation): do it now
        finish_only = target_steps is not None and done >= target_steps
        del ckpt

    loggers: list = []
    summary = None
    try:
        info.update(config_digest=rundir.config_digest(resolved), tags=dict(resolved.get("tags") or {}))
        if rank_zero_only.rank == 0:
            OmegaConf.save(cfg, run_dir / rundir.CONFIG, resolve=True)
        torch.set_float32_matmul_precision(cfg.get("matmul_precision", "high"))
        L.seed_everything(cfg.seed, workers=True)
        datamodule = instantiate(cfg.data)
        model = build_model(cfg.model, datamodule.spec)
        if (unused := _backbone_unused(cfg.model, datamodule.spec.kind)) is not None:
            log.warning("backbone=%s changes nothing here: it picks GAN image networks, and model=%s on %s "
                        "(%s data) has none; its networks are the model's own", unused, cfg.model.get("name"),
                        cfg.data.get("name"), datamodule.spec.kind)
        _check_training_sampler(cfg.model, model)
        if cfg.get("channels_last"):
            model.use_channels_last()
        if cfg.get("compile"):
            model.compile_networks(**(cfg.get("compile_kwargs") or {}))
        callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
        if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a bar it was told to hide
            callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
        # Order matters. The compute ledger first: it counts the first step's FLOPs up to its own batch
        # end, before the other callbacks' work at that step. Then the guard: a diverged step stops
        # before any callback averages, evaluates or saves NaN weights. Then weight EMA (its settings
        # live with the model), so the training state's checkpoints and every callback that samples
        # (grids, evaluation) see the EMA with the step's update. Then the training state, which writes
        # the last checkpoint at train end before the grids and the evaluation.
        ema = [instantiate(cfg.model.ema)] if cfg.model.get("ema") is not None else []
        if cfg.trainer.get("enable_model_summary", True):  # ours, not Lightning's (a FLOPs total of 0)
            callbacks.append(ModelSummary())
        ledger = ComputeLedger(count_parameters(model), world_size_of(cfg.trainer), budget)
        callbacks = [ledger, DivergenceGuard(), *ema, TrainingState(resolved, seed=cfg.seed), *callbacks,
                     ConfiguredLearningRates(), RunSummary(run_dir, info)]
        trainer_cfg = cfg.trainer
        if finish_only:  # one step more, so Lightning runs the loop's end; _EndOnly takes the step back
            callbacks.insert(0, _EndOnly(done))
            trainer_cfg = OmegaConf.merge(cfg.trainer, {"max_steps": done + 1})
        elif budget.active and target_steps is not None:
            # the budget's steps, measured in an earlier session: Lightning stops a resumed run whose step
            # is past trainer.max_steps before any callback (the ledger) could set them
            trainer_cfg = OmegaConf.merge(cfg.trainer, {"max_steps": target_steps})
        _configure_wandb(cfg, run_dir, resuming=ckpt_path is not None)
        loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values() if lg is not None]
        for lg in loggers:  # Lightning passes anonymous=None, which wandb warns about in every run
            if isinstance(lg, WandbLogger) and lg._wandb_init.get("anonymous", 0) is None:
                del lg._wandb_init["anonymous"]
        for lg in loggers:  # the whole run config, not only the model's hyperparameters
            lg.log_hyperparams(resolved)
        trainer: L.Trainer = instantiate(trainer_cfg, callbacks=callbacks, logger=loggers,
                                         plugins=[AtomicCheckpointIO()], default_root_dir=str(run_dir))
    except Exception as e:
        if rank_zero_only.rank == 0:
            rundir.record_failure(run_dir, info, e)
        summary = rundir.read_metrics(run_dir) if rank_zero_only.rank == 0 else None
        _finish_wandb(loggers, summary, failed=True)
        raise
    failed = True
    try:
        if ckpt_path is not None:
            log.info("resuming from %s (step %d)", ckpt_path, done)
        try:
            with interrupt.graceful_stop():  # SIGINT / SIGTERM: checkpoint at the next step, then exit
                trainer.fit(model, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None,
                            weights_only=True)
        except (interrupt.Interrupted, SIGTERMException) as e:
            # Lightning's own SIGTERM stop is a SystemExit with code 0: a scheduler would take the job
            # for finished. Exit with the signal's code instead (143), as Interrupted does.
            stop = e if isinstance(e, interrupt.Interrupted) else interrupt.Interrupted(signal.SIGTERM)
            if rank_zero_only.rank == 0:
                print(f"[gen-bench] {stop} at step {trainer.global_step}: {rundir.last_checkpoint_name()} "
                      "holds it; run the same command with resume=auto to continue", file=sys.stderr)
            raise stop from None
        summary = rundir.read_metrics(run_dir)
        failed = summary.get("status") != "completed"
        return summary
    finally:
        if failed and summary is None and rundir.metrics_path(run_dir).is_file():
            summary = rundir.read_metrics(run_dir)
        _finish_wandb(loggers, summary, failed)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()  # the next job of a sweep sets up its own
