"""The run folder: its layout, ``metrics.json``, the config digest, resume, and the runs of a sweep.

One run folder (``OUTPUT_ROOT/<run name>``, the name made of the command-line overrides, see
:func:`run_name`)::

    config.yaml              the resolved run config
    .hydra/overrides.yaml    the command-line overrides (Hydra)
    checkpoints/last.ckpt    the latest full training state (and step*.ckpt)
    metrics.json             status, steps, wall time, compute ledger, scores; rewritten atomically
    metrics.csv              every logged value, one row per step; loss_curves.png
    wandb_run_id             the wandb run every session of the run logs to
    samples/                 fixed-noise grids; ``gen-bench sample`` output
    eval/                    evaluation pictures; ``gen-bench eval`` results (each with a metrics.json)

Training writes through this module; evaluation, sampling, the leaderboard, the report and the wandb
summary read through it. A sweep is a folder of run folders (:func:`collect_runs`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gen_bench.io import atomic_write_json, read_json

# --- layout ----------------------------------------------------------------------------------------------
METRICS = "metrics.json"
CONFIG = "config.yaml"
CHECKPOINTS = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"  # ModelCheckpoint(save_last=True)'s file: Lightning's name, tested
OVERRIDES = ".hydra/overrides.yaml"
WANDB_ID = "wandb_run_id"
METRICS_CSV = "metrics.csv"
LOSS_CURVES = "loss_curves.png"
SAMPLES = "samples"
EVAL = "eval"
INTERPOLATE = "interpolate"  # gen-bench interpolate: latent walks and path lengths
INPAINT = "inpaint"  # gen-bench inpaint: RePaint fills of held-out images


def metrics_path(folder: str | Path) -> Path:
    """``metrics.json`` of a run folder (or of a ``gen-bench eval`` result folder)."""
    return Path(folder) / METRICS


def last_checkpoint(run_dir: str | Path) -> Path:
    """The run's latest full state, the checkpoint a resume continues from."""
    return Path(run_dir) / CHECKPOINTS / LAST_CHECKPOINT


def last_checkpoint_name() -> str:
    """``checkpoints/last.ckpt``: how messages name a run's latest checkpoint."""
    return f"{CHECKPOINTS}/{LAST_CHECKPOINT}"


def checkpoint_file(path: str | Path) -> Path:
    """The checkpoint ``path`` names: a ``.ckpt`` file, or a run folder's last checkpoint.

    Raises:
        FileNotFoundError: There is no such file.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        path = last_checkpoint(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; pass ckpt=PATH to a .ckpt file or a run directory")
    return path


def run_dir_of(ckpt: str | Path) -> Path:
    """The run directory of a checkpoint path (``RUN/checkpoints/x.ckpt`` -> ``RUN``) or of a run dir."""
    path = Path(ckpt).expanduser().resolve()
    if path.is_dir():
        return path
    return path.parent.parent if path.parent.name == CHECKPOINTS else path.parent


def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` is a run folder training has checkpointed into."""
    return (Path(path) / CHECKPOINTS).is_dir()


# --- metrics.json ------------------------------------------------------------------------------------------
def read_metrics(folder: str | Path) -> dict[str, Any]:
    """The folder's ``metrics.json`` (``{}`` when there is none yet)."""
    path = metrics_path(folder)
    return read_json(path) if path.is_file() else {}


def write_metrics(folder: str | Path, summary: Mapping[str, Any]) -> Path:
    """Write ``summary`` as the folder's ``metrics.json``, atomically; returns its path."""
    path = metrics_path(folder)
    atomic_write_json(path, dict(summary))
    return path


def eval_results(run_dir: str | Path) -> list[dict[str, Any]]:
    """The ``metrics.json`` of every ``gen-bench eval`` of a run (``RUN/eval/*/``), by folder name."""
    return [read_json(p) for p in sorted((Path(run_dir) / EVAL).glob(f"*/{METRICS}"))]


def failure_fields(error: BaseException) -> dict[str, str]:
    """``error`` (its one-line form) and ``traceback`` (the last 4000 characters) of a failed run."""
    return {"error": "".join(traceback.format_exception_only(type(error), error)).strip(),
            "traceback": "".join(traceback.format_exception(type(error), error, error.__traceback__))[-4000:]}


def record_failure(run_dir: str | Path, info: Mapping[str, Any], error: BaseException) -> None:
    """Mark the run ``failed`` in its ``metrics.json`` (merged into what is there) with the error: a run
    that failed before training started (a bad data path, a bad config)."""
    previous = read_metrics(run_dir)
    write_metrics(run_dir, {**previous, **info, "status": "failed", "steps": previous.get("steps", 0),
                            **failure_fields(error)})


def finite(v: Any) -> float | None:
    """``v`` as a float when it is a finite number, else ``None``."""
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def score(summary: Mapping[str, Any], metric: str) -> tuple[float | None, str | None]:
    """(value, protocol_id) of a final score of a ``metrics.json``: the evaluation's float64 value when
    there is one, else ``final[val/<metric>]`` or ``final[<metric>]`` (``None`` when missing or not
    finite; no protocol for those).

    Args:
        summary: The ``metrics.json`` content.
        metric: ``fid``, ``val/fid``, ``train/loss_g``...
    """
    name = metric.removeprefix("val/")
    scores = (summary.get("eval") or {}).get("scores") or {}
    if name in scores:
        return finite(scores[name].get("value")), scores[name].get("protocol_id")
    final = summary.get("final") or {}
    for key in (f"val/{name}", metric):
        if key in final:
            return finite(final[key]), None
    return None, None


def score_names(summary: Mapping[str, Any]) -> set[str]:
    """Every name :func:`score` finds in a ``metrics.json``: evaluation scores and final values
    (``val/`` dropped: ``fid``, ``precision``, ``train/loss_g``...)."""
    names = set(((summary.get("eval") or {}).get("scores") or {}).keys())
    return names | {k.removeprefix("val/") for k in (summary.get("final") or {})}


def final_values(summary: Mapping[str, Any]) -> dict[str, Any]:
    """Every final value of a ``metrics.json`` by its log key (``train/loss_g``, ``val/fid``), with the
    evaluation's float64 scores over the loggers' float32 copies."""
    scores = (summary.get("eval") or {}).get("scores") or {}
    return {**(summary.get("final") or {}),
            **{f"val/{k}": s["value"] for k, s in scores.items() if s.get("value") is not None}}


# --- result-neutral settings -----------------------------------------------------------------------------
# Where a run writes and how it is resumed.
BOOKKEEPING_KEYS = ("run_dir", "output_root", "resume", "overwrite")
# Settings that never change what a run computes: bookkeeping, logging and display, labels, and the
# paths of caches. Left out of the config digest, of the leaderboard's grouping and of run folder names.
# Dotted keys; each covers its subtree.
RESULT_NEUTRAL_KEYS = (*BOOKKEEPING_KEYS, "logger", "callbacks", "tags", "objective",
                       "trainer.enable_progress_bar", "trainer.enable_model_summary",
                       "trainer.log_every_n_steps", "eval.cache_dir", "eval.assets_dir", "model.progress",
                       "model.eval_every_n_steps", "model.perceptual.cache_dir")
# What differs between the seeds of one setting: the leaderboard aggregates over them.
REPLICATE_KEYS = ("seed", "data.shuffle_seed")
# Where a run executes: not in its folder name, so a run continues in its folder on another machine;
# in its digest, as the number of processes changes the effective batch.
PLACEMENT_KEYS = ("trainer.accelerator", "trainer.devices")


def under(key: str, prefixes: Iterable[str]) -> bool:
    """Whether dotted ``key`` is one of ``prefixes`` or inside one of them."""
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _without(tree: Mapping[str, Any], prefixes: tuple[str, ...], at: str = "") -> dict[str, Any]:
    return {k: _without(v, prefixes, f"{at}{k}.") if isinstance(v, Mapping) else v
            for k, v in tree.items() if not under(f"{at}{k}", prefixes)}


def config_digest(cfg: Mapping[str, Any]) -> str:
    """sha256 (16 hex digits) of a resolved run config less its :data:`RESULT_NEUTRAL_KEYS`."""
    payload = json.dumps(_without(cfg, RESULT_NEUTRAL_KEYS), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def override_key(arg: str) -> str:
    """The config key a command-line override sets: ``+model.x=1`` -> ``model.x``."""
    return arg.partition("=")[0].lstrip("+~")


def run_slug(override_dirname: str) -> str:
    """A folder name from a string of overrides (``default`` for none).

    Path separators become ``_``; long names keep a readable head and a hash of the whole.
    """
    if not override_dirname:
        return "default"
    slug = re.sub(r"[^A-Za-z0-9=,._+-]", "_", override_dirname)
    if len(slug) > 120:
        slug = slug[:100] + "-" + hashlib.sha256(override_dirname.encode()).hexdigest()[:12]
    return slug


def run_name(overrides: Iterable[str]) -> str:
    """The run folder's name: the command-line overrides, sorted, less those of result-neutral and
    placement settings (``resume=auto``, ``logger=csv``, ``trainer.devices=2`` name no other run), as
    :func:`run_slug` (``${run_name:${hydra:overrides.task}}`` in ``conf/train.yaml``)."""
    kept = sorted(str(o) for o in overrides
                  if not under(override_key(str(o)), (*RESULT_NEUTRAL_KEYS, *PLACEMENT_KEYS)))
    return run_slug(",".join(kept))


# --- resume ------------------------------------------------------------------------------------------------
def resolve_resume(resume: str | None, run_dir: Path) -> Path | None:
    """The checkpoint to continue from.

    Args:
        resume: ``None`` (fresh run), ``auto`` (this run directory's last checkpoint if there is
            one, else a fresh run), a checkpoint file, or a run directory.
        run_dir: This run's directory.
    """
    if resume is None or resume is False:
        return None
    if str(resume) == "auto":
        last = last_checkpoint(run_dir)
        return last if last.is_file() else None
    path = Path(str(resume)).expanduser()
    if path.is_dir():
        path = last_checkpoint(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"resume={resume}: no checkpoint at {path}. Pass a .ckpt file, a run directory holding "
            f"{last_checkpoint_name()}, or resume=auto"
        )
    return path


# --- the runs of a sweep ---------------------------------------------------------------------------------
# The x axes of score-over-training plots (see RunRecord.history).
X_AXES = ("step", "train_flops", "images", "wall_s", "samples")


@dataclass
class RunRecord:
    """One run of a sweep: its ``metrics.json`` and resolved ``config.yaml``.

    Attributes:
        run_dir: The run directory.
        summary: ``metrics.json`` (status, steps, final metrics, the ``eval`` section).
        config: The resolved run config (empty when the run failed before writing it).
    """

    run_dir: Path
    summary: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return str(self.summary.get("status", "unknown"))

    @property
    def model(self) -> str:
        return str(self.summary.get("model") or self.config.get("model", {}).get("name") or "?")

    @property
    def data(self) -> str:
        return str(self.summary.get("data") or self.config.get("data", {}).get("name") or "?")

    @property
    def seed(self) -> Any:
        return self.summary.get("seed", self.config.get("seed"))

    @property
    def kind(self) -> str | None:
        """The data kind of the run's config (``toy2d``, ``image``, ``video``; ``None`` if unknown)."""
        return (self.config.get("data") or {}).get("kind")

    def score(self, metric: str) -> tuple[float | None, str | None]:
        """(value, protocol_id) of a final score, see :func:`score`."""
        return score(self.summary, metric)

    def _entry(self, metric: str) -> dict[str, Any]:
        return ((self.summary.get("eval") or {}).get("scores") or {}).get(metric.removeprefix("val/")) or {}

    def knob_scores(self, metric: str) -> list[tuple[dict[str, Any], float | None]]:
        """(knob values, value) of a final score at every setting of the run's knob sweep
        (``eval.knob_sweep``: guidance scales, truncation thresholds), in sweep order; ``[]`` without one."""
        sweep = (self.summary.get("eval") or {}).get("knob_sweep") or []
        name = metric.removeprefix("val/")
        return [(dict(r["knobs"]), finite(((r.get("scores") or {}).get(name) or {}).get("value")))
                for r in sweep]

    def interval(self, metric: str) -> tuple[float, float] | None:
        """The bootstrap interval ``(ci_low, ci_high)`` of a final score (``None`` without one)."""
        entry = self._entry(metric)
        lo, hi = finite(entry.get("ci_low")), finite(entry.get("ci_high"))
        return (lo, hi) if lo is not None and hi is not None else None

    def fit(self, metric: str) -> dict[str, Any]:
        """Further fields of a score (FID_inf's ``fit``: counts and the FID at each), ``{}`` if none."""
        return self._entry(metric).get("fit") or {}

    def history(self, metric: str, x: str = "step") -> list[tuple[float, float]]:
        """(x, value) of every evaluation during training (``eval.history``), finite values only.

        Args:
            metric: A score of the history.
            x: ``step``; ``train_flops`` or ``images`` (the compute ledger's per-step cost times the
                step); ``wall_s`` (the run's wall time at the evaluation); ``samples`` (real samples
                seen, from ``batches_seen``). Runs without the needed record give no points.
        """
        if x not in X_AXES:
            raise ValueError(f"unknown x axis {x!r}; valid: {', '.join(X_AXES)}")
        name = metric.removeprefix("val/")
        rows = (self.summary.get("eval") or {}).get("history") or []
        compute = self.summary.get("compute") or {}
        per_step = {"step": 1.0, "train_flops": compute.get("flops_per_step"),
                    "images": compute.get("images_per_step")}
        if x == "samples" and self.samples_seen is not None and self.summary.get("steps"):
            per_step["samples"] = self.samples_seen / self.summary["steps"]
        out = []
        for r in rows:
            value = finite(r.get(name))
            pos = r.get("wall_s") if x == "wall_s" else (
                r["step"] * per_step[x] if per_step.get(x) is not None else None)
            if value is not None and pos is not None:
                out.append((float(pos), value))
        return out

    @property
    def samples_seen(self) -> int | None:
        """Real samples drawn: batches per process x batch size x processes (``None`` if unknown)."""
        batches = self.summary.get("batches_seen")
        batch = self.config.get("data", {}).get("batch_size")
        trainer = self.config.get("trainer", {})
        devices, nodes = trainer.get("devices", 1), trainer.get("num_nodes", 1)
        if not all(isinstance(v, int) for v in (batches, batch, devices, nodes)):
            return None
        return batches * batch * devices * nodes


def read_run(run_dir: str | Path) -> RunRecord:
    """The :class:`RunRecord` of one run directory (``metrics.json``, ``config.yaml`` if present)."""
    from omegaconf import OmegaConf

    run_dir = Path(run_dir)
    config: dict[str, Any] = {}
    if (run_dir / CONFIG).is_file():
        config = OmegaConf.to_container(OmegaConf.load(run_dir / CONFIG), resolve=False)
    return RunRecord(run_dir, read_json(metrics_path(run_dir)), config)


def collect_runs(root: str | Path) -> list[RunRecord]:
    """Every run below ``root`` (a sweep folder, a folder of sweeps, or one run), sorted by path.

    A ``metrics.json`` inside another run's folder (``gen-bench eval`` writes ``RUN/eval/*/metrics.json``)
    is a re-evaluation of that run, not another run: it is left out.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such folder (pass a sweep folder, e.g. runs/sweeps/NAME)")
    if metrics_path(root).is_file():
        return [read_run(root)]
    runs: list[Path] = []
    for path in sorted(root.rglob(METRICS), key=lambda p: (len(p.parts), p)):
        if not any(run in path.parents for run in runs):
            runs.append(path.parent)
    return [read_run(run) for run in sorted(runs)]


def latest_sweep(output_root: str | Path = "runs") -> Path:
    """The most recently modified folder of ``OUTPUT_ROOT/sweeps``."""
    sweeps = [p for p in (Path(output_root) / "sweeps").glob("*") if p.is_dir()]
    if not sweeps:
        raise FileNotFoundError(f"no sweep in {Path(output_root) / 'sweeps'}; pass a sweep folder")
    return max(sweeps, key=lambda p: p.stat().st_mtime)
