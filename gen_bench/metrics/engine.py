"""The evaluation engine: the :class:`Evaluator` scores any ``GenerativeModule`` against its
datamodule, during training (the :class:`EvaluationCallback`) and after it (the ``gen-bench eval``
command, :mod:`gen_bench.eval`), with the extractors and metric families registered in
:mod:`gen_bench.metrics`.

One draw::

    model.sample(batch, generator)  -> every extractor, once per batch  -> every metric's update
    (batch b of draw i: a CPU generator seeded with (seed + i, b))          (torchmetrics states)
    -> compute (states synced across processes)  -> scores

The real side (reference features and statistics) is computed once and cached on disk. The
evaluation runs under a saved-and-restored global RNG state, so training continues with exactly
the random numbers it would have drawn without it.

Every score in the result carries a ``protocol_id``: the hash of everything that makes two numbers
comparable (data content, extractor and its weights, sample counts, reference split, metric
parameters). The sampler, the evaluation seed and the batch size are recorded next to the scores
but left out of the hash: they belong to the model being compared or to the random draw, and a GAN
and a diffusion model must be rankable against each other.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from gen_bench import interrupt, rundir
from gen_bench.callbacks import Periodic, TrainingState, capture_rng, find_callback, restore_rng
from gen_bench.compute import SAMPLING_FLOPS, count_flops
from gen_bench.data.spec import DataSpec
from gen_bench.metrics.bootstrap import interval, resample_weights
from gen_bench.metrics.cache import digest
from gen_bench.metrics.conditional import LABELS_PROTOCOL, requested_labels
from gen_bench.metrics.extractors import ExtractorRequest, FeatureExtractor, build_extractor
from gen_bench.metrics.inception import find_inception_weights
from gen_bench.metrics.reference import Reference, frames, reference_features
from gen_bench.metrics.registry import METRICS
from gen_bench.metrics.settings import EvalSettings, from_mapping
from gen_bench.metrics.suite import EvalBatch, NotApplicable, Score, SuiteContext, build_score
from gen_bench.models.base import knob_grid, knob_tag

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
VAL_PREFIX = "val/"  # log keys are val/<score>, e.g. val/fid
CI_KEYS = ("ci_low", "ci_high")  # a score's bootstrap interval, beside its value (val/fid_ci_low)
SPACE_SEP = "@"  # scores of a further feature space: fid@random
BOOTSTRAP_METHOD = ("generated rows resampled with replacement, reference fixed; bias-corrected percentile "
                    "interval: value + quantiles - mean of the replicates")

class PairedDraw(NamedTuple):
    """A batch of an image-to-image model: its outputs (the samples), the inputs they were translated
    from and the targets those inputs were made from."""

    outputs: Tensor
    inputs: Tensor
    targets: Tensor


#: ``draw(draw_index, first_row, n, generator) -> samples``: rows [first_row, first_row + n) of a draw
#: (an image-to-image model's: a :class:`PairedDraw`).
DrawBatch = Callable[[int, int, int, torch.Generator], "Tensor | PairedDraw"]
#: How an image-to-image model's inputs are drawn (recorded with its scores).
PAIRED_INPUTS = ("held-out split: model.draw_inputs(n, generator), samples uniform with replacement from "
                 "each batch's generator, then model.translate(inputs, generator)")
_EXTRACTOR_ID_KEYS = ("name", "version", "weights_sha256", "feature_dim", "preprocessing")
RANDOM_FALLBACK_WARNING = (
    "eval.extractor=auto: %s is unlabeled and the Inception weights are not on this machine, so FID, KID "
    "and precision / recall use the features of a randomly initialised conv net: comparable within "
    "gen-bench on this dataset only, not with published numbers (fid_real_baseline, the held-out split "
    "against the training reference, gives their scale). For Inception features run `gen-bench assets "
    "fetch --to DIR` on a machine with internet, then eval.assets_dir=DIR eval.extractor=inception")


def settings_from(config: EvalSettings | Mapping | DictConfig | None) -> EvalSettings:
    """:class:`EvalSettings` from an ``eval`` config node (unknown keys are an error)."""
    if isinstance(config, EvalSettings):
        return config
    return from_mapping(EvalSettings, config, "eval")


def auto_extractor(spec: DataSpec, settings: EvalSettings) -> str:
    """What ``eval.extractor=auto`` picks for a dataset: ``identity`` for 2-D data, ``classifier`` for
    labeled images, ``inception`` for unlabeled ones (and for the frames of video) when its weights
    are on disk, else ``random``."""
    if spec.kind == "toy2d":
        return "identity"
    if spec.labeled and spec.kind == "image":
        return "classifier"
    return "inception" if find_inception_weights(settings) is not None else "random"


def _plain(obj: Any) -> Any:
    if obj is None:
        return None
    if isinstance(obj, DictConfig):
        return OmegaConf.to_container(obj, resolve=True)
    return dict(obj) if isinstance(obj, Mapping) else obj


def _finite_or_none(v: float) -> float | None:
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None


def space_key(name: str, space: str) -> str:
    """The result key of score ``name`` in feature space ``space`` (``""``: the main one, plain name)."""
    return f"{name}{SPACE_SEP}{space}" if space else name


def _mean_details(per_draw: list[dict[str, Any]]) -> dict[str, Any]:
    """Numbers and lists of numbers averaged over draws; anything else from the first draw."""
    out = {}
    for k, v in per_draw[0].items():
        vals = [d[k] for d in per_draw]
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "counts":
            out[k] = statistics.fmean(vals)
        elif isinstance(v, list) and k != "counts" and all(isinstance(x, (int, float)) for x in v):
            out[k] = [statistics.fmean(xs) for xs in zip(*vals, strict=True)]
        else:
            out[k] = v
    return out


def _distributed() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


@contextmanager
def _rank_zero_first() -> Iterator[None]:
    """Process 0 runs the block first (training a classifier, filling the disk cache), the others
    after it (reading the cache) instead of all computing the same thing at once."""
    rank, world = _distributed()
    if world > 1 and rank != 0:
        torch.distributed.barrier()
    try:
        yield
    finally:
        if world > 1 and rank == 0:
            torch.distributed.barrier()


def _first_samples(batch: EvalBatch, limit: int) -> EvalBatch:
    """The rows of ``batch`` that belong to the first ``limit`` samples of the draw (video: frames of
    the first ``limit`` clips); the batch itself when all do. Possibly empty: every score is updated
    on every batch, so its state has a shape to sync across processes."""
    steps = batch.clips.shape[2] if batch.clips is not None else 1
    keep = batch.index // steps < limit
    if bool(keep.all()):
        return batch
    features = {name: {k: v[keep] for k, v in f.items()} for name, f in batch.features.items()}
    clips = batch.clips[keep.view(-1, steps)[:, 0]] if batch.clips is not None else None
    labels = batch.labels[keep] if batch.labels is not None else None
    inputs = batch.inputs[keep] if batch.inputs is not None else None
    targets = batch.targets[keep] if batch.targets is not None else None
    return EvalBatch(batch.samples[keep], features, batch.index[keep], clips, labels, inputs, targets)


@dataclass
class EvalResult:
    """Scores of one evaluation (mean and std over ``seeds`` draws) and how they were measured.

    Attributes:
        scores: Score name -> ``{"value", "std", "values", "protocol_id"}`` (``std``: over draws,
            ``None`` for one draw; non-finite values are ``None``), with ``ci_low`` and ``ci_high``
            (the bootstrap interval of ``value``) for scores that have one when
            ``eval.bootstrap.num > 0``, and further fields of some scores (FID_inf's ``fit``).
            Scores of a further feature space key as ``<score>@<extractor>``.
        protocols: protocol_id -> the fields it hashes.
        draw: Seed, number of draws, samples, batch size, sampler, EMA: recorded, not hashed.
        extractor: The main extractor's description (with a classifier's accuracy).
        skipped: Metric families that did not apply, with the reason.
        artifacts: Pictures written, name -> path.
        step: Training step of the model (``None`` if unknown).
        seconds: Wall time of this evaluation.
    """

    scores: dict[str, dict[str, Any]]
    protocols: dict[str, dict[str, Any]]
    draw: dict[str, Any]
    extractor: dict[str, Any]
    skipped: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    step: int | None = None
    seconds: float = 0.0

    def values(self) -> dict[str, float]:
        """Score name -> mean value (finite ones only)."""
        return {k: s["value"] for k, s in self.scores.items() if s["value"] is not None}

    def log_dict(self) -> dict[str, float]:
        """``val/<score>`` (and ``val/<score>_std`` over several draws, ``val/<score>_ci_low`` and
        ``_ci_high`` with bootstrap intervals) for the loggers."""
        out = {f"{VAL_PREFIX}{k}": v for k, v in self.values().items()}
        out.update({f"{VAL_PREFIX}{k}_std": s["std"] for k, s in self.scores.items() if s["std"] is not None})
        out.update({f"{VAL_PREFIX}{k}_{c}": s[c] for k, s in self.scores.items() for c in CI_KEYS
                    if s.get(c) is not None})
        cost = self.draw.get("sampling_flops_per_sample")
        if cost is not None:  # how expensive these samples were, beside the scores (CSV, wandb)
            out[SAMPLING_FLOPS] = float(cost)
        return out

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "scores": self.scores, "protocols": self.protocols, "draw": self.draw,
                "extractor": self.extractor, "skipped": self.skipped, "artifacts": self.artifacts,
                "seconds": round(self.seconds, 3)}


class Evaluator:
    """Scores models of one dataset with the settings of ``eval=``.

    Extractors, reference features and metric states are built on the first :meth:`evaluate` (or
    :meth:`setup`) and reused by later ones.

    Args:
        settings: The ``eval`` config (an :class:`EvalSettings` or a mapping).
        datamodule: The dataset the model was trained on.
        sampler: A sampler config (``_partial_`` factory, as ``conf/sampler/``) that diffusion models
            draw with here (``None``: their own ``model.sampler``); ignored by models that sample
            in one pass. Recorded with the scores, as is the label of the sampler used.
        out_dir: Where pictures go (``None``: none are written).
    """

    def __init__(self, settings: EvalSettings | Mapping | DictConfig | None, datamodule,
                 sampler: Mapping | DictConfig | None = None, out_dir: str | Path | None = None) -> None:
        self.spec = datamodule.spec
        self.settings = settings_from(settings).for_data(self.spec.kind)  # num_samples=auto resolved
        self.datamodule = datamodule
        self.sampler = _plain(sampler)
        self.sampler_factory = instantiate(sampler) if sampler is not None else None
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.device: torch.device | None = None
        self.model = None  # the model being scored (``evaluate``), for scores of the model itself (bpd)
        self._built_for: tuple[torch.device, Any] | None = None
        self.extractors: dict[str, FeatureExtractor] = {}
        self.main: FeatureExtractor | None = None
        self.reference: Reference | None = None
        # feature space ("": the main extractor; else a further one's name) -> its extractor, reference
        self.spaces: dict[str, tuple[FeatureExtractor, Reference]] = {}
        self.scores: list[Score] = []
        self.skipped: dict[str, str] = {}
        self.setup_seconds = 0.0
        self._sampling_flops: dict[str | None, float] = {}  # sampler label -> FLOPs per sample
        self._warned = False
        # the samples come from a class-conditional model: class i mod K for sample i (class scores apply)
        self.conditional = False
        self.task = None  # the paired task of an image-to-image model being scored (in every protocol)

    def extractor_name(self) -> str:
        """The main extractor: ``eval.extractor`` with ``auto`` resolved (:func:`auto_extractor`).

        When ``auto`` falls back to the random conv net (unlabeled data, no Inception weights on disk)
        it logs a warning naming the fix, once, on process 0.
        """
        s = self.settings
        if s.extractor != "auto":
            return s.extractor
        name = auto_extractor(self.spec, s)
        if name == "random" and not self._warned and _distributed()[0] == 0:
            log.warning(RANDOM_FALLBACK_WARNING, self.datamodule.name)
            self._warned = True
        return name

    # --- setup -------------------------------------------------------------------------------------
    def setup(self, device: torch.device | str = "cpu") -> None:
        """Build extractors, reference features and metrics on ``device`` for :attr:`model` (once; again
        for another device or model)."""
        device = torch.device(device)
        if self._built_for is not None and self._built_for[0] == device and self._built_for[1] is self.model:
            return
        start = time.perf_counter()
        s = self.settings
        rank, _ = _distributed()
        with torch.random.fork_rng(devices=[]), _rank_zero_first():  # builders may initialise networks
            name = self.extractor_name()
            self.main = build_extractor(name, ExtractorRequest(self.spec, self.datamodule, s, device))
            self.extractors = {name: self.main}
            ref = s.reference
            self.scores, self.skipped, self.spaces = [], {}, {}
            for space in ["", *(e for e in dict.fromkeys(s.extractors) if e != name)]:
                ctx = SuiteContext(s, self.spec, self.datamodule, self.main, None, device, rank == 0,
                                   self.extractors, model=self.model, conditional=self.conditional,
                                   sampler=self.sampler_factory)
                ctx.main = ctx.extractor(space) if space else self.main  # built once, run on every batch
                ctx.reference = reference_features(self.datamodule, ctx.main, ref.split, ref.num_samples,
                                                   ref.subset_seed, s.cache_path, s.batch_size)
                self.spaces[space] = (ctx.main, ctx.reference)
                for metric in s.metrics:
                    if space and not getattr(METRICS.lookup(metric), "per_feature_space", False):
                        continue  # memorization, modes, video: not a function of the feature space
                    try:
                        score = build_score(metric, ctx)
                    except NotApplicable as e:
                        self.skipped[space_key(metric, space)] = str(e)
                        log.info("eval: %s skipped: %s", space_key(metric, space), e)
                        continue
                    score.feature_space = space
                    self.scores.append(score)
            self.reference = self.spaces[""][1]
        self.device = device
        self._built_for = (device, self.model)
        self.setup_seconds = time.perf_counter() - start
        log.info("eval set up in %.1f s: extractor %s, metrics %s", self.setup_seconds, name,
                 ", ".join(sc.name for sc in self.scores))

    # --- protocol ----------------------------------------------------------------------------------
    def common_protocol(self, space: str = "") -> dict[str, Any]:
        """The fields every score of feature space ``space`` shares (``""``: the main extractor)."""
        extractor, reference = self.spaces[space]
        ref = reference.fields
        ext = extractor.describe()
        common = {
            "protocol_version": PROTOCOL_VERSION,
            "data": self.datamodule.name,
            "data_fingerprint": ref["fingerprint"],
            "extractor": {k: ext[k] for k in _EXTRACTOR_ID_KEYS},
            "num_generated": self.settings.num_samples,
            "reference_split": ref["split"],
            "reference_num_samples": ref["num_samples"],
            "reference_subset_seed": ref["subset_seed"],
        }
        if self.task is not None:  # outputs of a paired task rank only against outputs of the same task
            common["task"] = self.task.describe()
        return common

    def draw_record(self, model) -> dict[str, Any]:
        label = model.sampler_label(self.sampler_factory)
        record = {**self.base_record(), "sampler": label,
                  "sampler_config": self.sampler if label is not None else None,
                  "sampling_flops_per_sample": self._sampling_flops.get(label),
                  "ema": model.ema_weights is not None,
                  "generator": "torch.Generator(cpu) per batch, seed SeedSequence([seed + draw, batch])"}
        if model.knobs:  # guidance scale, truncation: every score of this draw was measured with them
            record["knobs"] = model.knob_values()
        if model.is_conditional:
            record["labels"] = LABELS_PROTOCOL
        if model.image_to_image:
            record["inputs"] = PAIRED_INPUTS
        return record

    def base_record(self) -> dict[str, Any]:
        """The draw record's fields that do not depend on what draws the samples."""
        s = self.settings
        record = {"seed": s.seed, "seeds": s.seeds, "num_samples": s.num_samples,
                  "num_drawn": self.num_drawn(), "batch_size": s.batch_size}
        if s.bootstrap.num > 0:
            record["bootstrap"] = {"num": s.bootstrap.num, "level": s.bootstrap.level,
                                   "seed": "eval.bootstrap.seed + draw", "base_seed": s.bootstrap.seed,
                                   "method": BOOTSTRAP_METHOD}
        return record

    # --- evaluation --------------------------------------------------------------------------------
    @staticmethod
    def batch_seed(draw_seed: int, batch: int) -> int:
        """Seed of batch ``batch`` of a draw: a 32-bit hash of both (torch's CPU generator keeps only
        32 bits of a seed, so no arithmetic packing), independent of how batches map to processes."""
        return int(np.random.SeedSequence([draw_seed, batch]).generate_state(1)[0])

    def _empty_samples(self) -> Tensor:
        shape = self.spec.shape if self.spec.kind != "video" else (self.spec.shape[0], *self.spec.shape[2:])
        return torch.zeros(0, *shape, device=self.device)

    def num_drawn(self) -> int:
        """Samples drawn per draw: ``eval.num_samples``, or more where a score needs more (mode
        counting on stacked digits); every score sees only its own first samples."""
        return max([self.settings.num_samples, *(sc.samples_needed or 0 for sc in self.scores)])

    def _labels(self, index: Tensor) -> Tensor | None:
        """The classes samples ``index`` of a draw are asked for (conditional models), else ``None``."""
        return requested_labels(index, self.spec.num_classes) if self.conditional else None

    def _update(self, samples: Tensor, index: Tensor, clips: Tensor | None = None,
                paired: PairedDraw | None = None) -> None:
        feats = {name: ext(samples) for name, ext in self.extractors.items()}
        steps = clips.shape[2] if clips is not None else 1
        inputs, targets = (paired.inputs, paired.targets) if paired is not None else (None, None)
        batch = EvalBatch(samples, feats, index, clips, self._labels(index // steps), inputs, targets)
        for score in self.scores:
            score.update(_first_samples(batch, score.samples_needed or self.settings.num_samples))

    def _draw(self, draw: DrawBatch, draw_index: int) -> None:
        """Sample this process's share of draw ``draw_index`` and update every metric."""
        s = self.settings
        rank, world = _distributed()
        num_drawn = self.num_drawn()
        num_batches = math.ceil(num_drawn / s.batch_size)
        lo, hi = rank * num_batches // world, (rank + 1) * num_batches // world  # contiguous: global order
        for b in range(lo, hi):
            interrupt.check()  # SIGTERM / Ctrl-C: stop between batches (and between sampling steps)
            n = min(s.batch_size, num_drawn - b * s.batch_size)
            g = torch.Generator().manual_seed(self.batch_seed(s.seed + draw_index, b))
            x = draw(draw_index, b * s.batch_size, n, g)
            paired = None
            if isinstance(x, PairedDraw):
                paired = PairedDraw(*(t.detach().float().to(self.device) for t in x))
                x = paired.outputs
            x = x.detach().float().to(self.device)
            steps = x.shape[2] if x.ndim == 5 else 1  # video: one row per frame
            first = torch.arange(b * s.batch_size, b * s.batch_size + n, device=self.device)
            index = (first[:, None] * steps + torch.arange(steps, device=self.device)).flatten()
            self._update(frames(x), index, x if x.ndim == 5 else None, paired)
        if lo == hi:  # every process updates at least once, so the states have a shape to sync
            self._update(self._empty_samples(), torch.zeros(0, dtype=torch.long, device=self.device))

    def evaluate(self, model, step: int | None = None, tag: str = "final") -> EvalResult:
        """Draw ``seeds`` sample sets from ``model`` and score each.

        Every process of a distributed run must call this (the metric states are synced).

        Args:
            model: A ``GenerativeModule``: its samples (``sample(n, generator)``) and, for a likelihood
                model, its ``bits_per_dim`` are scored.
            step: The model's training step, recorded.
            tag: Names the pictures (``step_0001000``, ``final``).
        """
        self.model = model  # scores of the model itself (bpd) read it
        # a sampler chosen for this evaluation, if any (else the model's own; one-pass models ignore it)
        kw = {"sampler": self.sampler_factory} if self.sampler_factory is not None else {}
        label = model.sampler_label(self.sampler_factory)
        if model.is_conditional != self.conditional:  # the class scores apply, or no longer: set up again
            self.conditional, self.device = model.is_conditional, None
        self.task = model.task

        def draw(draw_index: int, first: int, n: int, g: torch.Generator) -> Tensor | PairedDraw:
            labels = self._labels(torch.arange(first, first + n))
            args = {**kw, "labels": labels} if labels is not None else kw
            if model.image_to_image:  # what sample(n, g) draws, with the inputs and targets kept
                x_in, target = model.draw_inputs(n, g)
                run = lambda: PairedDraw(model.translate(x_in, g, **kw), x_in, target)  # noqa: E731
            else:
                run = lambda: model.sample(n, generator=g, **args)  # noqa: E731
            if label not in self._sampling_flops:  # once per sampler: every network pass of a sample
                flops, x = count_flops(run)
                self._sampling_flops[label] = flops / n
                return x
            return run()

        return self.evaluate_draws(draw, model.device, lambda: self.draw_record(model), step, tag)

    def evaluate_knobs(self, model, step: int | None = None, tag: str = "final",
                       current: EvalResult | None = None) -> list[dict[str, Any]]:
        """One evaluation per combination of the ``eval.knobs`` values that ``model`` has knobs for
        (``[]`` when none applies), each ``{"knobs": {...}, **result}``; the model's own knob values are
        restored afterwards. ``current``: this evaluator's result at the model's current knob values,
        reused for the combination equal to them instead of drawing the same samples again."""
        out = []
        for values in knob_grid(model, self.settings.knobs):
            same = current is not None and all(model.knob_values()[k] == v for k, v in values.items())
            if same:
                result = current
            else:
                with model.knobs_applied(**values):
                    result = self.evaluate(model, step=step, tag=f"{tag}-{knob_tag(values)}")
            reused = {"seconds": 0.0, "reused": True} if same else {}
            out.append({"knobs": values, **result.to_json(), **reused})
        return out

    def evaluate_draws(self, draw: DrawBatch, device: torch.device | str,
                       record: Callable[[], dict[str, Any]], step: int | None = None,
                       tag: str = "final") -> EvalResult:
        """Score ``seeds`` draws of samples made by ``draw`` (a model, a callable, a file of samples).

        Args:
            draw: ``draw(draw_index, first_row, n, generator)``: rows ``[first_row, first_row + n)``
                of draw ``draw_index``, in gen-bench's sample format; ``generator`` is that batch's
                (see :meth:`batch_seed`).
            device: Where features and metrics live.
            record: The draw record (called after the draws: it may report what they measured).
            step: Training step of the model, recorded.
            tag: Names the pictures.
        """
        start = time.perf_counter()
        rank, _ = _distributed()
        s = self.settings
        rng = capture_rng()  # data loaders, KID subsets...: training resumes with the same random state
        per_draw: list[dict[str, float]] = []
        reps_per_draw: list[dict[str, Tensor]] = []
        details_per_draw: list[dict[str, dict[str, Any]]] = []
        names_of: dict[int, list[tuple[str, str]]] = {}  # score (by position) -> (result key, name)
        artifacts: dict[str, str] = {}
        try:
            self.setup(device)
            with torch.no_grad():
                for i in range(s.seeds):
                    for score in self.scores:
                        score.reset()
                    self._draw(draw, i)
                    values: dict[str, float] = {}
                    details: dict[str, dict[str, Any]] = {}
                    with torch.random.fork_rng(devices=[]):
                        for j, score in enumerate(self.scores):
                            # KID subsets, IS splits: each score's own stream, whatever else is scored
                            torch.manual_seed(s.seed + i)
                            computed, space = score.compute(), score.feature_space
                            names_of[j] = [(space_key(k, space), k) for k in computed]
                            values.update({space_key(k, space): v for k, v in computed.items()})
                            details.update({space_key(k, space): v for k, v in score.details.items()})
                    per_draw.append(values)
                    details_per_draw.append(details)
                    reps_per_draw.append(self._bootstrap(i))
                    if i == 0 and rank == 0 and self.out_dir is not None:
                        for score in self.scores:
                            artifacts.update(score.artifacts(self.out_dir, tag))
        finally:
            restore_rng(rng)
        protocols, pid_of = {}, {}
        for j, score in enumerate(self.scores):
            common = self.common_protocol(score.feature_space)
            family = {**common, "metric": score.name, **score.protocol()}
            for key, base in names_of[j]:
                proto = {**family, **score.score_protocol(base)}
                pid_of[key] = digest(proto)[:16]
                protocols[pid_of[key]] = proto
        bounds = {space_key(k, sc.feature_space): b for sc in self.scores for k, b in sc.bounds.items()}
        scores = {}
        for name in per_draw[0]:
            vals = [d[name] for d in per_draw]
            finite = [v for v in vals if math.isfinite(v)]
            mean = statistics.fmean(finite) if len(finite) == len(vals) else math.nan
            std = statistics.stdev(finite) if len(vals) > 1 and len(finite) == len(vals) else None
            scores[name] = {"value": _finite_or_none(mean), "std": std,
                            "values": [_finite_or_none(v) for v in vals], "protocol_id": pid_of[name]}
            if name in reps_per_draw[0] and math.isfinite(mean):
                # the interval of the mean over draws: replicate b averages every draw's replicate b
                reps = torch.stack([r[name].cpu() for r in reps_per_draw]).mean(0)
                lo, hi = interval(reps, mean, s.bootstrap.level, *bounds.get(name, (None, None)))
                scores[name].update({"ci_low": _finite_or_none(lo), "ci_high": _finite_or_none(hi)})
            if name in details_per_draw[0]:
                scores[name]["fit"] = _mean_details([d[name] for d in details_per_draw])
        result = EvalResult(scores, protocols, record(), self.main.describe(),
                            dict(self.skipped), artifacts, step, time.perf_counter() - start)
        log.info("eval %s: %s (%.1f s)", tag, ", ".join(f"{k}={v:.4g}" for k, v in result.values().items()),
                 result.seconds)
        return result

    def _bootstrap(self, draw_index: int) -> dict[str, Tensor]:
        """Score name -> (B,) bootstrap replicates of draw ``draw_index`` (after compute)."""
        b = self.settings.bootstrap
        if b.num <= 0:
            return {}
        cache: dict[int, Tensor] = {}

        def weights(n: int) -> Tensor:  # every score of n rows sees the same resamples
            if n not in cache:
                cache[n] = resample_weights(n, b.num, b.seed + draw_index, self.device)
            return cache[n]

        reps = {}
        for score in self.scores:
            space = score.feature_space
            reps.update({space_key(k, space): v for k, v in score.bootstrap(weights).items()})
        return reps


class EvaluationCallback(Periodic):
    """Evaluates every ``eval.every_n_steps`` steps and at the end of training.

    Logs ``val/<score>`` to every logger, keeps the history, and contributes the final scores and
    their protocols to ``metrics.json`` (``final`` gets the ``val/*`` values; ``eval`` the rest)
    through :class:`~gen_bench.callbacks.RunSummary`.

    Args:
        config: The ``eval`` config.
        run_dir: The run directory (pictures go to ``<run_dir>/eval``).
        sampler: The sampler config diffusion models draw with (``model.training_sampler``;
            ``None``: their own), see :class:`Evaluator`.
    """

    def __init__(self, config: Mapping | DictConfig | EvalSettings | None = None,
                 run_dir: str | Path | None = None, sampler: Mapping | DictConfig | None = None) -> None:
        self.settings = settings_from(config)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.sampler = _plain(sampler)
        self.evaluator: Evaluator | None = None
        self.history: list[dict[str, Any]] = []
        self.last: dict[str, Any] | None = None
        self.last_step = -1
        self.eval_seconds = 0.0
        self.share: float | None = None

    @property
    def every_n_steps(self) -> int:
        return self.settings.every_n_steps

    @every_n_steps.setter
    def every_n_steps(self, value: int) -> None:
        self.settings.every_n_steps = value

    def _evaluator(self, trainer) -> Evaluator:
        if self.evaluator is None:
            if trainer.datamodule is None:
                raise ValueError("the evaluation callback needs the run's GenerativeDataModule: "
                                 "call trainer.fit(model, datamodule=...)")
            out = self.run_dir / rundir.EVAL if self.run_dir is not None else None
            self.evaluator = Evaluator(self.settings, trainer.datamodule, self.sampler, out)
        return self.evaluator

    def on_fit_start(self, trainer, pl_module) -> None:
        if self.settings.enabled:  # a fall-back to random features is worth knowing before the first eval
            self._evaluator(trainer).extractor_name()

    def run(self, trainer, pl_module, tag: str) -> EvalResult:
        step = trainer.global_step
        result = self._evaluator(trainer).evaluate(pl_module, step=step, tag=tag)
        self.eval_seconds += result.seconds
        self.last_step = step
        logged = result.log_dict()
        if trainer.is_global_zero:
            for lg in trainer.loggers:
                lg.log_metrics(logged, step=step)
        for k, v in logged.items():
            trainer.callback_metrics[k] = torch.tensor(v)
        state = find_callback(trainer, TrainingState)
        wall = {"wall_s": round(state.wall_time, 3)} if state is not None else {}
        self.history.append({"step": step, **wall, **result.values()})
        self.last = {**result.to_json(), "tag": tag, "name": self.settings.name}
        if tag == "final" and self.settings.knobs:  # the trade-off curve of guidance / truncation
            sweep = self._evaluator(trainer).evaluate_knobs(pl_module, step=step, tag=tag, current=result)
            self.eval_seconds += sum(r["seconds"] for r in sweep)
            if sweep:
                self.last["knob_sweep"] = sweep
        return result

    def _due(self, step: int) -> bool:
        return self.settings.enabled and self.due(step) and step != self.last_step

    def on_train_start(self, trainer, pl_module) -> None:
        # A run stopped (SIGTERM) during the evaluation of the step it resumes from: run it now
        if self._due(trainer.global_step) and trainer.global_step < trainer.max_steps:
            self.run(trainer, pl_module, f"step_{trainer.global_step:07d}")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self._due(step):
            if self.settings.at_end and step == trainer.max_steps:
                return  # the final evaluation runs at train end, once the last checkpoint holds this step
            self.run(trainer, pl_module, f"step_{step:07d}")

    def on_train_end(self, trainer, pl_module) -> None:
        if not self.settings.enabled:
            return
        if self.settings.at_end and trainer.global_step != self.last_step:
            self.run(trainer, pl_module, "final")
        state = find_callback(trainer, TrainingState)
        if state is not None and state.wall_time > 0:
            self.share = self.eval_seconds / state.wall_time

    def summary_fields(self) -> dict[str, Any]:
        if self.last is None:
            return {}
        seconds = {"evaluations": round(self.eval_seconds, 3),
                   "setup": round(self.evaluator.setup_seconds, 3) if self.evaluator else None,
                   "share_of_wall_time": round(self.share, 4) if self.share is not None else None}
        return {"eval": {**self.last, "history": self.history, "time": seconds}}

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "last_step": self.last_step, "eval_seconds": self.eval_seconds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state.get("history", []))
        self.last_step = state.get("last_step", -1)
        self.eval_seconds = state.get("eval_seconds", 0.0)
