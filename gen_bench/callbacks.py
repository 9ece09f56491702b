"""Callbacks of a training run: exact resume, sample grids, run summary, progress bar."""

from __future__ import annotations

import csv
import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.callbacks import ModelSummary as LightningModelSummary
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.model_summary import get_human_readable_count

from gen_bench import interrupt, rundir
from gen_bench.io import atomic_open, atomic_write_bytes
from gen_bench.viz import plot_curves, save_image_grid, save_scatter, side_by_side
from gen_bench.viz_video import save_video_samples

log = logging.getLogger(__name__)


def capture_rng() -> dict[str, Any]:
    """Every global RNG state a training step can touch, as tensors and plain types (checkpoints
    are loaded with ``weights_only=True``, which refuses numpy arrays)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def rank_seed(seed: int, rank: int) -> int:
    """Seed of the global RNGs of process ``rank`` of a distributed run.

    Rank 0 keeps the run seed, so a one-process run draws what it always drew; every other rank gets
    a 32-bit hash of (seed, rank), so the processes draw different latents, noise, timesteps,
    gradient-penalty mixing weights and dropout masks (the effective fake batch is the global one).
    """
    if rank == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(rank)]).generate_state(1)[0])


def seed_process(seed: int) -> None:
    """Seed torch (every device), numpy and Python's ``random`` with ``seed``."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _gather(obj: Any) -> list[Any]:
    """``obj`` of every process, by rank (a one-element list outside a distributed run)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write checkpoints to a temporary file and rename, so a killed run keeps its last good one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        with atomic_open(path) as f:  # streamed: no in-memory copy of the whole checkpoint
            torch.save(checkpoint, f)


class TrainingState(Callback):
    """Makes a resumed run continue exactly where the checkpoint left off.

    Lightning restores weights, optimizers and the step counter; this adds the global RNG states
    of every process (gathered from all ranks into the checkpoint, each restored on its own rank),
    the number of batches drawn (so the data order continues), the cumulative wall time, and the
    run's config (so ``gen-bench sample`` can rebuild the model from the checkpoint alone).

    It also seeds each process of a distributed run differently (:func:`rank_seed`) once the ranks
    are known, after every process has built the same networks from the run seed.

    Args:
        config: The run's resolved config as a plain dict.
        seed: The run seed (``None``: the processes are not reseeded).
    """

    def __init__(self, config: dict[str, Any] | None = None, seed: int | None = None) -> None:
        self.config = config
        self.seed = seed
        self.batches_seen = 0
        self.wall_time_before = 0.0  # seconds spent in earlier sessions of this run
        self._session_start = time.perf_counter()
        self._pending_rng: list[dict[str, Any]] | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        # After the strategy has set up the processes (ranks known) and the datamodule has been set
        # up, before DDP wraps the model (it broadcasts rank 0's weights) and before any batch.
        if self.seed is not None and trainer.world_size > 1:
            seed_process(rank_seed(self.seed, trainer.global_rank))

    @property
    def wall_time(self) -> float:
        return self.wall_time_before + time.perf_counter() - self._session_start

    def state_dict(self) -> dict[str, Any]:
        # Every process saves a checkpoint's state (only rank 0 writes it): gather all RNG states.
        rng = _gather(capture_rng())
        return {"batches_seen": self.batches_seen, "rng": rng[0], "rng_per_rank": rng,
                "wall_time": self.wall_time}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batches_seen = state["batches_seen"]
        self.wall_time_before = state["wall_time"]
        self._session_start = time.perf_counter()
        self._pending_rng = state.get("rng_per_rank") or [state["rng"]]

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint["gen_bench"] = {"config": self.config}

    def on_fit_start(self, trainer, pl_module) -> None:
        # Callback states are restored before on_fit_start and the training iterator is made
        # after it; the sampler reads start_batch when that iterator is made.
        self._session_start = time.perf_counter()
        if trainer.datamodule is not None and hasattr(trainer.datamodule, "start_batch"):
            trainer.datamodule.start_batch = self.batches_seen

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # Restored here rather than at load time: between loading and the first batch Lightning
        # and the loaders draw random numbers that an uninterrupted run drew at its start instead.
        if self._pending_rng is not None:
            states, rank = self._pending_rng, trainer.global_rank
            if len(states) == trainer.world_size:
                restore_rng(states[rank])
            else:  # resumed on another number of processes: the streams cannot continue exactly
                log.warning("the checkpoint holds the random state of %d process(es), this run has %d: "
                            "rank %d continues from a fresh stream (the run is no longer exactly "
                            "reproducible)", len(states), trainer.world_size, rank)
                if rank < len(states):
                    restore_rng(states[rank])
                elif self.seed is not None:
                    seed_process(rank_seed(self.seed + trainer.global_step, rank))
            self._pending_rng = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches_seen += 1
        # Loggers put a batch's values at Lightning's count of batches by default; gen-bench's step
        # is the main network's update (trainer.global_step), the unit of metrics.json, checkpoints
        # and evaluations. A logged "step" sets the loggers' x-axis (CSV, loss plot, wandb), so
        # WGAN-GP's critic batches share their generator step's row instead of counting as steps.
        # Logged here, before ModelCheckpoint (callbacks run before the model's hooks, checkpoints
        # last), whose file names read the same "step".
        pl_module.log("step", float(trainer.global_step), logger=True, prog_bar=False)
        # A stop asked for by SIGINT / SIGTERM happens here, where the state is whole (checkpointed
        # by on_exception), and before this step's sample grid or evaluation start.
        interrupt.check()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        # A graceful stop (ours, or Lightning's at a batch boundary on SIGTERM) comes at a step boundary
        # or from inside sampling: the weights, optimizers and counters are those after a whole step,
        # so the last checkpoint resumes exactly. A bare KeyboardInterrupt may land mid-step: no checkpoint.
        if isinstance(exception, (interrupt.Interrupted, SIGTERMException)):
            save_last_checkpoint(trainer, force=True)

    def on_train_end(self, trainer, pl_module) -> None:
        # Before the sample grid and the final evaluation (this callback comes before them): a crash
        # there must not lose the steps trained since the last periodic checkpoint.
        save_last_checkpoint(trainer)

    def on_fit_end(self, trainer, pl_module) -> None:
        # Again after them, so a run extended later (resume with a larger max_steps) carries the final
        # evaluation's history and the wall time it took.
        save_last_checkpoint(trainer, force=True)


def save_last_checkpoint(trainer: L.Trainer, force: bool = False) -> list[str]:
    """Write the last checkpoint of every ``ModelCheckpoint(save_last=True)`` with the trainer's full state.

    ``ModelCheckpoint`` saves every N steps only; this makes the last checkpoint hold the current step, and
    tells the callback, or its own ``on_train_end`` (Lightning runs checkpoint callbacks last) writes
    ``last-v1.ckpt``. Every process must call it (saving synchronises them).

    Args:
        trainer: The trainer.
        force: Write even when the callback has already saved this step (the state of other
            callbacks, an evaluation's history say, may have changed since).

    Returns:
        The paths written.
    """
    written = []
    for cb in trainer.callbacks:
        if (isinstance(cb, ModelCheckpoint) and cb.save_last and cb.dirpath
                and (force or cb._last_global_step_saved != trainer.global_step)):
            path = str(Path(cb.dirpath) / f"{cb.CHECKPOINT_NAME_LAST}{cb.FILE_EXTENSION}")
            cb.last_model_path = path  # part of the saved callback state, so set before saving
            trainer.save_checkpoint(path, weights_only=False)  # the full state, to resume from
            cb._last_global_step_saved = trainer.global_step
            cb._last_checkpoint_saved = path
            written.append(path)
    return written


class Periodic(Callback):
    """A callback that acts every ``every_n_steps`` training steps (sample grids, evaluations), or at
    the steps of ``at_steps`` when set; a compute budget sets these once it knows the run's length."""

    every_n_steps: int
    at_steps: frozenset[int] | None = None

    def due(self, step: int) -> bool:
        """Whether to act after ``step`` updates (never at step 0)."""
        if step <= 0:
            return False
        if self.at_steps is not None:
            return step in self.at_steps
        return self.every_n_steps > 0 and step % self.every_n_steps == 0


class StepProgressBar(TQDMProgressBar):
    """A progress bar over optimizer steps up to ``max_steps``, not over epochs; each update written
    once (tqdm's setters write the bar themselves, so Lightning's bar writes most states twice)."""

    def init_train_tqdm(self) -> Tqdm:
        trainer = self.trainer
        return Tqdm(desc="train", total=trainer.max_steps if trainer.max_steps > 0 else None,
                    initial=trainer.global_step, position=2 * self.process_position, disable=self.is_disabled,
                    leave=True, dynamic_ncols=True, file=sys.stdout, smoothing=0, bar_format=self.BAR_FORMAT)

    def on_train_epoch_start(self, trainer, *_: Any) -> None:
        pass  # the bar is made at train start with its total; the data's epochs do not reset it

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        bar = self.train_progress_bar
        step = trainer.global_step
        if trainer.max_steps > 0 and bar.total != trainer.max_steps:  # a budget has set the length
            bar.total = trainer.max_steps
        if step != bar.n and (step % max(1, self.refresh_rate) == 0 or step == trainer.max_steps):
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.refresh()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        pass  # the data's epochs mean nothing here: no extra write of the bar at each


class ModelSummary(LightningModelSummary):
    """Lightning's model summary, logged (so it is in the run's log file) and without its FLOPs column
    and total: Lightning counts FLOPs by running ``example_input_array``, which a model of several
    networks has not, and would print 0."""

    @staticmethod
    def summarize(summary_data, total_parameters: int, trainable_parameters: int, model_size: float,
                  total_training_modes: dict[str, int], total_flops: int, **kwargs: Any) -> None:
        cols = [(name, [str(v) for v in values]) for name, values in summary_data if name != "FLOPs"]
        widths = [max([len(name), *map(len, values)]) for name, values in cols]
        lines = [" | ".join(name.ljust(w) for (name, _), w in zip(cols, widths, strict=True))]
        lines.append("-" * len(lines[0]))
        lines += [" | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True))
                  for row in zip(*(values for _, values in cols), strict=True)]
        lines.append(f"{get_human_readable_count(trainable_parameters)} trainable parameters, "
                     f"{get_human_readable_count(total_parameters - trainable_parameters)} non-trainable, "
                     f"{model_size:.3f} MB")
        log.info("model\n%s", "\n".join(lines))


def _wandb_loggers(trainer) -> list[WandbLogger]:
    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]


class SampleGrid(Periodic):
    """Fixed-noise samples every ``every_n_steps`` steps and at the end of training.

    Images: ``samples/step_XXXXXXX.png`` grids and ``samples/final.png``. Video: the same grids of
    first frames, plus ``<tag>.gif`` (every clip, animated) and ``<tag>_frames.png`` (a clip per row,
    time left to right); the GIF goes to wandb as a video. 2-D data: a scatter of
    ``num_points`` samples over the true mode centres (``samples/scatter_*.png``). Class-conditional
    image models also get ``class_grid_<tag>.png``: one row per class, ``num_samples / K`` samples
    (at least 4) of that class each; image-to-image models ``pairs_<tag>.png``: input | output |
    target, one held-out input per row (the grid's first ``num_samples / 4``, at least 4). Also logged
    to wandb when a wandb logger is attached.

    Args:
        dirpath: Where to write.
        every_n_steps: Interval in optimizer steps (0: only at the end).
        num_samples: Images in a grid.
        num_points: Points in a 2-D scatter.
        seed: Seed of the fixed noise (the same samples every time, apart from training).
        sampler: Sampler factory diffusion models draw the previews with (``model.training_sampler``;
            ``None``: their own sampler); ignored by models that sample in one pass.
    """

    def __init__(self, dirpath: str | os.PathLike, every_n_steps: int = 500, num_samples: int = 64,
                 num_points: int = 2000, seed: int = 1234, sampler=None) -> None:
        self.sampler = sampler
        self.dirpath = Path(dirpath)
        self.every_n_steps = every_n_steps
        self.num_samples = num_samples
        self.num_points = num_points
        self.seed = seed
        self._last_step = -1

    def save(self, trainer, pl_module, tag: str) -> list[Path]:
        g = torch.Generator().manual_seed(self.seed)
        spec = pl_module.spec
        step = trainer.global_step
        video: dict[str, Path] | None = None
        kw = {"sampler": self.sampler} if self.sampler is not None else {}  # else the model's own
        if spec.kind == "toy2d":
            pts = pl_module.sample(self.num_points, generator=g, **kw)
            paths = [save_scatter(pts, self.dirpath / f"scatter_{tag}.png", centers=spec.mode_centers,
                                  title=f"{type(pl_module).__name__} step {step}")]
        elif pl_module.image_to_image:  # what sample() draws, with its inputs and targets kept
            x_in, target = pl_module.draw_inputs(self.num_samples, g)
            x = pl_module.translate(x_in, g, **kw)
            rows = min(self.num_samples, max(4, self.num_samples // 4))
            pairs = side_by_side([pl_module.task.show(x_in[:rows]), x[:rows], target[:rows]])
            paths = [save_image_grid(x, self.dirpath / f"{tag}.png"),
                     save_image_grid(pairs, self.dirpath / f"pairs_{tag}.png", nrow=3)]
        else:
            x = pl_module.sample(self.num_samples, generator=g, **kw)
            if x.ndim == 5:  # video (N, C, T, H, W): a GIF, a frame grid, and the first frames as before
                video = save_video_samples(x, self.dirpath, tag)
                x = x[:, :, 0]
            paths = [save_image_grid(x, self.dirpath / f"{tag}.png")]
            if video is not None:
                paths.append(video["frames"])
            if pl_module.is_conditional and video is None:
                paths.append(self.save_class_grid(pl_module, tag, **kw))
        for lg in _wandb_loggers(trainer):
            lg.log_image(key="samples", images=[str(p) for p in paths], step=step)
            if video is not None:
                lg.log_video(key="samples_video", videos=[str(video["gif"])], step=step, format=["gif"])
        return paths

    def save_class_grid(self, pl_module, tag: str, **kw) -> Path:
        """``class_grid_<tag>.png``: row k holds samples of class k (fixed noise, like the grid)."""
        k = pl_module.spec.num_classes
        per_class = max(4, self.num_samples // k)
        labels = torch.arange(k).repeat_interleave(per_class)  # (K * per_class,): class-major rows
        g = torch.Generator().manual_seed(self.seed)
        x = pl_module.sample(len(labels), generator=g, labels=labels, **kw)
        return save_image_grid(x, self.dirpath / f"class_grid_{tag}.png", nrow=per_class)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        # the last step's grid is the final one, drawn at train end once the last checkpoint is written
        if self.due(step) and step < trainer.max_steps and step != self._last_step and trainer.is_global_zero:
            self._last_step = step
            self.save(trainer, pl_module, f"step_{step:07d}")

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self.save(trainer, pl_module, "final")


def read_logged_rows(run_dir: str | os.PathLike) -> list[dict[str, float]]:
    """All rows the CSV logger wrote in a run, across resumed sessions, one per step.

    Each session writes ``csv/version_K/metrics.csv``; where sessions overlap (steps redone after
    a resume) the later session wins.
    """
    by_step: dict[int, dict[str, float]] = {}
    versions = sorted(Path(run_dir).glob("csv/version_*/metrics.csv"),
                      key=lambda p: int(p.parent.name.split("_")[1]))
    for path in versions:
        resumed_from: int | None = None
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                vals = {k: float(v) for k, v in row.items() if v not in ("", None)}
                if "step" not in vals:
                    continue
                step = int(vals["step"])
                if resumed_from is None:
                    resumed_from = step
                    for s in [s for s in by_step if s >= step]:  # superseded by this session
                        del by_step[s]
                by_step.setdefault(step, {}).update(vals)
    return [by_step[s] for s in sorted(by_step)]


class RunSummary(Callback):
    """Writes ``metrics.json`` (status, steps, wall time, final metrics), ``metrics.csv`` and
    ``loss_curves.png`` into the run directory.

    ``metrics.json`` is rewritten atomically at the start (status ``running``), at every checkpoint
    (the step, wall time and status it holds), at the end (``completed``) and on an exception
    (``failed`` with the error, or ``interrupted``).

    Args:
        run_dir: The run directory.
        info: Fixed fields to record (model, data, seed, config digest...).
    """

    def __init__(self, run_dir: str | os.PathLike, info: dict[str, Any] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.info = dict(info or {})
        self.status = "running"

    def _state(self, trainer) -> TrainingState | None:
        return next((c for c in trainer.callbacks if isinstance(c, TrainingState)), None)

    def write(self, trainer, status: str, **extra: Any) -> dict[str, Any]:
        """Merge the run's state into ``metrics.json``.

        Any callback with a ``summary_fields() -> dict`` method (the evaluation callback, say)
        contributes its fields; callbacks run before this one, so their end-of-training results
        are in.
        """
        previous = rundir.read_metrics(self.run_dir)
        for cb in trainer.callbacks:
            if cb is not self and hasattr(cb, "summary_fields"):
                extra = {**cb.summary_fields(), **extra}
        state = self._state(trainer)
        final = {k: float(v) for k, v in trainer.callback_metrics.items()
                 if "/" in k and torch.as_tensor(v).numel() == 1}
        summary = {
            **previous,
            **self.info,
            "status": status,
            "steps": trainer.global_step,
            "max_steps": trainer.max_steps,
            "batches_seen": state.batches_seen if state else None,
            "wall_time_s": round(state.wall_time, 3) if state else None,
            "final": {**previous.get("final", {}), **final},
            **extra,
        }
        self.status = status
        if status != "failed":
            summary.pop("error", None)
        if trainer.is_global_zero:
            rundir.write_metrics(self.run_dir, summary)
        return summary

    def on_train_start(self, trainer, pl_module) -> None:  # after a resume has restored the step
        self.write(trainer, "running")

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        # so a run killed at any time says how far it got, not the step it started from
        self.write(trainer, self.status)

    def _artefacts(self, trainer) -> None:
        for lg in trainer.loggers:
            lg.save()
        rows = read_logged_rows(self.run_dir)
        if rows:
            cols = sorted({k for r in rows for k in r}, key=lambda k: (k != "step", k))
            lines = [",".join(cols)] + [",".join(f"{r[c]:g}" if c in r else "" for c in cols) for r in rows]
            atomic_write_bytes(self.run_dir / rundir.METRICS_CSV, ("\n".join(lines) + "\n").encode())
            plot_curves(rows, self.run_dir / rundir.LOSS_CURVES,
                        title=f"{self.info.get('model', '')} on {self.info.get('data', '')}")

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self._artefacts(trainer)
        self.write(trainer, "completed")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, (KeyboardInterrupt, interrupt.Interrupted, SIGTERMException)):
            name = getattr(exception, "signal_name", None) or (
                "SIGINT" if isinstance(exception, KeyboardInterrupt) else "SIGTERM")
            self.write(trainer, "interrupted", interrupted_by=name)
            return
        self.write(trainer, "failed", **rundir.failure_fields(exception))


def find_callback(trainer: L.Trainer, kind: type) -> Any | None:
    return next((c for c in trainer.callbacks if isinstance(c, kind)), None)


class ConfiguredLearningRates(Callback):
    """A resumed run trains with the learning rates of its config, not those saved in the checkpoint.

    Lightning builds the optimizers from the config, then loads their saved state, learning rates
    included, over them: a learning rate changed for the resumed run would be dropped without a word.
    This puts each parameter group's configured base rate back after the restore, scaling its current
    rate (a warm-up or schedule in progress) and its scheduler's base rate to match. A no-op when the
    rates did not change.
    """

    def __init__(self) -> None:
        self.configured: list[list[float]] = []

    @staticmethod
    def _base(group: dict[str, Any]) -> float:
        return group.get("initial_lr", group["lr"])  # schedulers keep the configured rate as initial_lr

    def on_fit_start(self, trainer, pl_module) -> None:  # optimizers built, their state not yet restored
        self.configured = [[self._base(g) for g in opt.param_groups] for opt in trainer.optimizers]

    def on_train_start(self, trainer, pl_module) -> None:
        for opt, rates in zip(trainer.optimizers, self.configured, strict=True):
            for j, (group, new) in enumerate(zip(opt.param_groups, rates, strict=True)):
                old = self._base(group)
                if new == old:
                    continue
                group["lr"] = group["lr"] * new / old if old else new
                if "initial_lr" in group:
                    group["initial_lr"] = new
                for config in trainer.lr_scheduler_configs:
                    if config.scheduler.optimizer is opt and hasattr(config.scheduler, "base_lrs"):
                        config.scheduler.base_lrs[j] = new
