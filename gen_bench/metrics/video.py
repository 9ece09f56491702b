"""Video metrics: FVD with a pluggable video extractor, per-frame FID, and a physics check.

* **Frame FID** is the suite's ``fid`` on video data: the evaluator hands every image extractor
  the frames of each clip (one row per frame), so ``fid``, ``kid``, ``prdc``... are per-frame
  scores. :func:`frame_fid` computes the same number from two sets of clips directly.
* **FVD** (Unterthiner et al. 2018) is the Frechet distance between Gaussians fitted to features
  of whole clips (metric ``fvd``; :func:`fvd`). Video extractors have their own registry
  (``eval.video.extractor``), since they take clips (N, C, T, H, W) where image extractors take
  frames:

  - ``i3d``: the Kinetics-400 I3D as a TorchScript file (StyleGAN-V's ``i3d_torchscript.pt``,
    the standard FVD network), from ``eval.video.i3d_weights`` or an assets folder; never
    downloaded. Clips are scaled to [-1, 1], grey made RGB, padded to ``i3d_min_frames`` by
    repeating the end frames; the network resizes to 224 itself; 400-d features.
  - ``trained3d``: a small 3-D CNN trained once per dataset on a self-supervised task (is this
    clip in its natural order, shuffled, frozen on one frame, or spatially jittered frame by
    frame?) and cached: features that must see time. The offline default.
  - ``random3d``: the same architecture with seeded random weights.
  - ``auto``: ``i3d`` when its weights file is found, else ``trained3d``.

* **Physics** (metric ``physics``, ``bouncing_balls`` only): balls are found in every frame
  (connected cores above a threshold, intensity-weighted centres), matched between frames
  (Hungarian, by distance), and summarised as count consistency (clips whose ball count never
  changes), count error (|count - balls|), speed and acceleration (|p_{t+1} - 2 p_t + p_{t-1}|,
  px / frame^2: near 0 for straight flight, non-zero only at bounces). Generated and real clips
  get the same statistics (``physics_*`` and ``physics_*_real``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torchmetrics import Metric

from gen_bench.assets import ASSETS, assets_dirs, sha256_of
from gen_bench.data.spec import DataSpec
from gen_bench.data.video import BouncingBalls
from gen_bench.metrics.cache import entry_path, load_entry, save_entry
from gen_bench.metrics.extractors import ExtractorRequest, FeatureExtractor, construct, lookup, registrar
from gen_bench.metrics.fid import FID, FeatureStats, frechet_distance
from gen_bench.metrics.reference import frames, iter_split, reference_features, subset_indices
from gen_bench.metrics.settings import EvalSettings, Trained3DOptions
from gen_bench.metrics.suite import EvalBatch, NotApplicable, Score, SuiteContext, register_metric

log = logging.getLogger(__name__)

__all__ = [
    "VIDEO_EXTRACTORS",
    "Conv3dNet",
    "I3DExtractor",
    "PhysicsCheck",
    "RandomConv3dExtractor",
    "TrainedConv3dExtractor",
    "auto_video_extractor",
    "build_video_extractor",
    "frame_fid",
    "fvd",
    "physics_statistics",
    "register_video_extractor",
    "temporal_corruptions",
]

SSL_TASKS = ("natural", "shuffled", "frozen", "jittered")  # classes of the trained3d extractor's task
TRAINED_ARCH_VERSION = "conv3d-ssl-1"


def clip_batch(x: Tensor) -> Tensor:
    """``x`` as float32 (N, C, T, H, W) clips, or a clear error."""
    if x.ndim != 5:
        raise ValueError(f"video extractors take (N, C, T, H, W) clips, got shape {tuple(x.shape)}")
    return x.float()


# --- registry ----------------------------------------------------------------------------------------
VideoExtractorBuilder = Callable[[ExtractorRequest], FeatureExtractor]
VIDEO_EXTRACTORS: dict[str, VideoExtractorBuilder] = {}


#: Decorator: register ``builder(request) -> FeatureExtractor`` as ``eval.video.extractor=name``.
register_video_extractor = registrar(VIDEO_EXTRACTORS, "video extractor")


def find_i3d_weights(settings: EvalSettings) -> Path | None:
    """``eval.video.i3d_weights`` if set (whether or not it exists), else the file in an assets folder."""
    if settings.video.i3d_weights:
        return Path(settings.video.i3d_weights).expanduser()
    found = [d / ASSETS["i3d"].filename for d in assets_dirs(settings.assets_dir)]
    return next((p for p in found if p.is_file()), None)


def auto_video_extractor(settings: EvalSettings) -> str:
    """``i3d`` when its weights are on disk, else ``trained3d``."""
    path = find_i3d_weights(settings)
    return "i3d" if path is not None and path.is_file() else "trained3d"


def build_video_extractor(name: str, request: ExtractorRequest) -> FeatureExtractor:
    """Build a registered video extractor (``auto`` resolved) on ``request.device``, leaving the
    global RNG as it was.

    Raises:
        ValueError: For an unknown name, listing the registered ones.
    """
    if name == "auto":
        name = auto_video_extractor(request.settings)
    builder = lookup(VIDEO_EXTRACTORS, "video extractor", name)
    if request.spec.kind != "video":
        raise ValueError(f"video extractors need video data, got {request.spec.kind}")
    return construct(builder, request)


# --- 3-D conv nets -------------------------------------------------------------------------------------
class Conv3dNet(nn.Module):
    """Four 3x3x3 convs (widths w, 2w, 4w, 8w; the first stride 1, the others stride 2 in space and,
    while T > 1, in time), LeakyReLU(0.2), global average pooling: 8w features; an optional linear
    head. Clips in [0, 1] are scaled to [-1, 1] first.

    Args:
        in_channels: Clip channels.
        width: w.
        frames: T of the clips (fixes the time strides).
        num_classes: Outputs of the head (0: none).
        norm: BatchNorm after every conv but the first.
    """

    def __init__(self, in_channels: int, width: int = 16, frames: int = 8, num_classes: int = 0,
                 norm: bool = False) -> None:
        super().__init__()
        chans = [in_channels, width, 2 * width, 4 * width, 8 * width]
        layers: list[nn.Module] = []
        t = frames
        for i, (a, b) in enumerate(zip(chans, chans[1:], strict=False)):
            st = 1 if i == 0 or t == 1 else 2
            layers.append(nn.Conv3d(a, b, 3, stride=(st, 1 if i == 0 else 2, 1 if i == 0 else 2), padding=1))
            if norm and i > 0:
                layers.append(nn.BatchNorm3d(b))
            layers.append(nn.LeakyReLU(0.2))
            t = (t - 1) // st + 1
        self.body = nn.Sequential(*layers)
        self.feature_dim = chans[-1]
        self.head = nn.Linear(chans[-1], num_classes) if num_classes else None

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(B, C, T, H, W) in [0, 1] -> features (B, 8w) and logits (B, k) or ``None``."""
        h = self.body(x * 2 - 1).mean((2, 3, 4))
        return h, None if self.head is None else self.head(h)


class RandomConv3dExtractor(FeatureExtractor):
    """:class:`Conv3dNet` with He-normal weights from a seeded generator (no training)."""

    name = "random3d"

    def __init__(self, spec: DataSpec, width: int = 16, seed: int = 0, max_batch: int = 256) -> None:
        super().__init__()
        self.net = Conv3dNet(spec.shape[0], width, spec.shape[1])
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for conv in (m for m in self.net.modules() if isinstance(m, nn.Conv3d)):
                fan_in = conv.in_channels * 27
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * math.sqrt(2 / fan_in))
                conv.bias.zero_()
        self.feature_dim = self.net.feature_dim
        self.max_batch = max_batch
        self.preprocessing = f"native size, x*2-1, random 3-D conv net w={width} seed={seed}"

    def features(self, x: Tensor) -> dict[str, Tensor]:
        return {"pool": self.net(clip_batch(x))[0]}


def temporal_corruptions(x: Tensor, labels: Tensor, generator: torch.Generator, max_shift: int = 2) -> Tensor:
    """Apply the self-supervised task's corruption ``SSL_TASKS[label]`` to every clip.

    natural: unchanged; shuffled: frames in a random order other than the identity; frozen: one
    random frame repeated T times; jittered: every frame rolled by its own random shift of up to
    ``max_shift`` pixels in x and y (motion that is not smooth).

    Args:
        x: (B, C, T, H, W) clips, T >= 2.
        labels: (B,) task indices.
        generator: Source of every random choice.
        max_shift: Largest jitter, in pixels.
    """
    b, _, t = x.shape[:3]
    out = x.clone()
    for i in range(b):
        task = SSL_TASKS[int(labels[i])]
        if task == "shuffled":
            perm = torch.randperm(t, generator=generator)
            while bool((perm == torch.arange(t)).all()):
                perm = torch.randperm(t, generator=generator)
            out[i] = x[i][:, perm]
        elif task == "frozen":
            k = int(torch.randint(t, (1,), generator=generator))
            out[i] = x[i][:, k : k + 1].expand_as(x[i])
        elif task == "jittered":
            shifts = torch.randint(-max_shift, max_shift + 1, (t, 2), generator=generator)
            for j in range(t):
                out[i, :, j] = torch.roll(x[i, :, j], (int(shifts[j, 0]), int(shifts[j, 1])), dims=(1, 2))
    return out


def _clips_at(dataset, idx: Tensor) -> Tensor:
    from gen_bench.metrics.classifier import _take

    return _take(dataset, idx)[0]


def train_conv3d(datamodule, spec: DataSpec, opts: Trained3DOptions) -> tuple[Conv3dNet, dict[str, Any]]:
    """Train :class:`Conv3dNet` on the self-supervised task (:data:`SSL_TASKS`) over the training
    split; accuracy on the held-out split with seeded corruptions. The global RNG is untouched."""
    if spec.shape[1] < 2:
        raise ValueError("the trained3d extractor needs clips of at least 2 frames")
    from gen_bench.metrics.classifier import train_seeded

    train = datamodule.train_set
    n = len(train)

    def batch(g: torch.Generator) -> tuple[Tensor, Tensor]:
        x = _clips_at(train, torch.randint(n, (opts.batch_size,), generator=g))
        y = torch.randint(len(SSL_TASKS), (x.shape[0],), generator=g)
        return temporal_corruptions(x, y, g), y

    net, seconds = train_seeded(
        lambda: Conv3dNet(spec.shape[0], opts.width, spec.shape[1], len(SSL_TASKS), norm=True),
        batch, opts.steps, opts.lr, opts.seed)
    split = "heldout" if len(datamodule.heldout_set) > 0 else "train"
    x, _ = datamodule.tensors(split, limit=1000)
    g = torch.Generator().manual_seed(opts.seed + 1)
    y = torch.randint(len(SSL_TASKS), (x.shape[0],), generator=g)
    with torch.no_grad():
        pred = torch.cat([net(c)[1].argmax(1) for c in temporal_corruptions(x, y, g).split(256)])
    acc = (pred == y).double().mean().item()
    return net, {"test_accuracy": acc, "test_split": split, "train_seconds": round(seconds, 2)}


class TrainedConv3dExtractor(FeatureExtractor):
    """Features of a :class:`Conv3dNet` trained on the self-supervised temporal task."""

    name = "trained3d"
    version = TRAINED_ARCH_VERSION

    def __init__(self, net: Conv3dNet, info: dict[str, Any], max_batch: int = 256) -> None:
        super().__init__()
        self.net = net
        self.info = info
        self.feature_dim = net.feature_dim
        self.max_batch = max_batch
        self.preprocessing = f"native size, x*2-1, self-supervised task {'/'.join(SSL_TASKS)}"

    def features(self, x: Tensor) -> dict[str, Tensor]:
        return {"pool": self.net(clip_batch(x))[0]}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **{f"ssl_{k}": v for k, v in self.info.items()}}


def trained_conv3d_extractor(request: ExtractorRequest) -> TrainedConv3dExtractor:
    """The cached self-supervised 3-D CNN of the request's dataset, trained first if needed."""
    spec, dm, opts = request.spec, request.datamodule, request.settings.video.trained3d
    fields = {"kind": "video_extractor", "arch": TRAINED_ARCH_VERSION, "tasks": list(SSL_TASKS),
              "data": dm.name, "fingerprint": dm.fingerprint(), "shape": list(spec.shape),
              "options": asdict(opts)}
    path = entry_path(request.settings.cache_path, "video_extractor", f"{dm.name}-trained3d", fields)
    cached = load_entry(path, fields)
    if cached is not None:
        net = Conv3dNet(spec.shape[0], opts.width, spec.shape[1], len(SSL_TASKS), norm=True)
        net.load_state_dict(cached["state_dict"])
        info = dict(cached["info"])
    else:
        log.info("training the %s 3-D CNN on its self-supervised task (%d steps; cached in %s)", dm.name,
                 opts.steps, path)
        net, info = train_conv3d(dm, spec, opts)
        save_entry(path, fields, {"state_dict": net.state_dict(), "info": info})
        log.info("3-D CNN for %s: task accuracy %.4f in %.1f s", dm.name, info["test_accuracy"],
                 info["train_seconds"])
    info = {**info, "cache_file": path.name}
    return TrainedConv3dExtractor(net.eval(), info, request.settings.video.max_batch)


class I3DExtractor(FeatureExtractor):
    """The FVD network: Kinetics-400 I3D as a TorchScript file, called as StyleGAN-V does
    (``rescale=False, resize=True, return_features=True`` on clips in [-1, 1]).

    Args:
        weights: The ``i3d_torchscript.pt`` file.
        min_frames: Clips shorter than this are padded by repeating their first and last frames.
        max_batch: Clips per forward pass.
    """

    name = "i3d"

    def __init__(self, weights: str | Path, min_frames: int = 9, max_batch: int = 16) -> None:
        super().__init__()
        self.path = Path(weights)
        self.model = torch.jit.load(str(self.path), map_location="cpu").eval()
        self.min_frames = min_frames
        self.max_batch = max_batch
        self._sha = sha256_of(self.path)
        self.preprocessing = (f"x*2-1, grey->RGB, edge-padded to >= {min_frames} frames, "
                              "rescale=False resize=True return_features=True")
        with torch.no_grad():  # the feature size, from the network itself
            self.feature_dim = int(self._run(torch.zeros(1, 3, min_frames, 32, 32)).shape[1])

    def _run(self, x: Tensor) -> Tensor:
        return self.model(x, rescale=False, resize=True, return_features=True).float().flatten(1)

    def features(self, x: Tensor) -> dict[str, Tensor]:
        x = clip_batch(x) * 2 - 1
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1, -1)
        t = x.shape[2]
        if t < self.min_frames:
            before = (self.min_frames - t) // 2
            after = self.min_frames - t - before
            x = torch.cat([x[:, :, :1].expand(-1, -1, before, -1, -1), x,
                           x[:, :, -1:].expand(-1, -1, after, -1, -1)], 2)
        return {"pool": self._run(x.contiguous())}

    def weights_sha256(self) -> str:
        return self._sha


@register_video_extractor("random3d")
def _random3d(request: ExtractorRequest) -> FeatureExtractor:
    opts = request.settings.video.random3d
    return RandomConv3dExtractor(request.spec, opts.width, opts.seed, request.settings.video.max_batch)


@register_video_extractor("trained3d")
def _trained3d(request: ExtractorRequest) -> FeatureExtractor:
    return trained_conv3d_extractor(request)


@register_video_extractor("i3d")
def _i3d(request: ExtractorRequest) -> FeatureExtractor:
    s = request.settings
    path = find_i3d_weights(s)
    if path is None or not path.is_file():
        where = f"{path} does not exist" if path is not None else "no file given"
        raise FileNotFoundError(
            f"the I3D weights for FVD are not available ({where}). Fetch {ASSETS['i3d'].url} "
            f"(the TorchScript I3D of StyleGAN-V) where there is internet and pass "
            f"eval.video.i3d_weights=PATH, or put it in an assets folder (gen-bench assets fetch --to DIR; "
            f"eval.assets_dir=DIR). Offline, use eval.video.extractor=trained3d (a 3-D CNN trained on the "
            f"data, cached) or random3d.")
    return I3DExtractor(path, s.video.i3d_min_frames, min(s.video.max_batch, 16))


# --- pure functions: clips -> features -> Frechet distance -------------------------------------------
def _stats(extractor: FeatureExtractor, x: Tensor, batch: int = 256) -> FeatureStats:
    device = next(iter(extractor.parameters()), torch.empty(0)).device
    stats = FeatureStats.zeros(extractor.feature_dim)
    for chunk in x.split(batch):
        stats.add(extractor(chunk.to(device))["pool"])
    return stats


def fvd(real: Tensor, fake: Tensor, extractor: FeatureExtractor) -> float:
    """Frechet video distance between two sets of (N, C, T, H, W) clips in [0, 1] (a video extractor)."""
    return float(frechet_distance(*_stats(extractor, real).mean_cov(), *_stats(extractor, fake).mean_cov()))


def frame_fid(real: Tensor, fake: Tensor, extractor: FeatureExtractor) -> float:
    """FID between the frames of two sets of clips (an image extractor; every frame is a sample)."""
    return float(frechet_distance(*_stats(extractor, frames(real)).mean_cov(),
                                  *_stats(extractor, frames(fake)).mean_cov()))


# --- physics -------------------------------------------------------------------------------------------
BALL_EDGE = 0.05  # pixels above this count towards the centre of the nearest ball core


def _balls(frame: np.ndarray, threshold: float) -> np.ndarray:
    """(K, 2) (x, y) centres of the balls of one frame.

    Balls are the connected regions above ``threshold`` (4-connectivity: cores of touching balls
    stay apart at a high threshold); every pixel above :data:`BALL_EDGE` then joins its nearest
    core, and a ball's centre is the intensity-weighted mean of its pixels (anti-aliased edges
    included: 0.02 px from the truth on real clips, 0.1 px from the cores alone).
    """
    cores, k = ndimage.label(frame > threshold)
    if k == 0:
        return np.zeros((0, 2))
    _, (ri, ci) = ndimage.distance_transform_edt(cores == 0, return_indices=True)
    labels = cores[ri, ci] * (frame > BALL_EDGE)
    rows_cols = np.asarray(ndimage.center_of_mass(frame, labels, range(1, k + 1)), dtype=np.float64)
    return rows_cols[:, ::-1] + 0.5  # pixel centres: (col + 0.5, row + 0.5)


def physics_statistics(clips: Tensor, num_balls: int | None = None,
                       threshold: float = 0.8) -> dict[str, float]:
    """Sums over clips of the physics statistics (see the module docstring); :meth:`PhysicsCheck.compute`
    turns them into means.

    Args:
        clips: (N, C, T, H, W) in [0, 1]; colour clips use the channel maximum.
        num_balls: The true number of balls (for ``count_error``), if known.
        threshold: Intensity above which a pixel belongs to a ball's core.

    Returns:
        ``clips``, ``consistent`` (clips whose count never changes), ``frames``, ``count`` (sum of
        counts), ``count_error`` (sum of |count - num_balls|), ``steps`` / ``speed`` (matched moves
        and the sum of their lengths), ``triples`` / ``acceleration`` (tracked triples and the sum of
        |p_{t+1} - 2 p_t + p_{t-1}|).
    """
    x = clips.detach().float().cpu().amax(1).numpy()  # (N, T, H, W)
    out = dict.fromkeys(("clips", "consistent", "frames", "count", "count_error", "steps", "speed", "triples",
                         "acceleration"), 0.0)
    for clip in x:
        centres = [_balls(f, threshold) for f in clip]
        counts = [len(c) for c in centres]
        out["clips"] += 1
        out["consistent"] += float(len(set(counts)) == 1)
        out["frames"] += len(counts)
        out["count"] += sum(counts)
        if num_balls is not None:
            out["count_error"] += sum(abs(c - num_balls) for c in counts)
        prev_move: np.ndarray | None = None  # (K, 2) moves into frame t, in frame t's order
        for t in range(1, len(centres)):
            a, b = centres[t - 1], centres[t]
            if len(a) == 0 or len(a) != len(b):
                prev_move = None
                continue
            cost = np.linalg.norm(a[:, None] - b[None], axis=2)
            rows, cols = linear_sum_assignment(cost)
            move = np.empty_like(b)
            move[cols] = b[cols] - a[rows]  # indexed by the ball's position in frame t
            out["steps"] += len(rows)
            out["speed"] += float(np.linalg.norm(move, axis=1).sum())
            if prev_move is not None:
                # ball j of frame t came from ball rows[i] of frame t-1, whose own move is prev_move[rows[i]]
                accel = move[cols] - prev_move[rows]
                out["triples"] += len(rows)
                out["acceleration"] += float(np.linalg.norm(accel, axis=1).sum())
            prev_move = move
    return out


class PhysicsCheck(Metric):
    """Physics statistics of generated clips as float64 sums (DDP: summed over processes).

    Args:
        num_balls: The true number of balls, if known.
        threshold: See :func:`physics_statistics`.
    """

    full_state_update = False
    FIELDS = ("clips", "consistent", "frames", "count", "count_error", "steps", "speed", "triples",
              "acceleration")

    def __init__(self, num_balls: int | None = None, threshold: float = 0.8) -> None:
        super().__init__()
        self.num_balls, self.threshold = num_balls, threshold
        for name in self.FIELDS:
            self.add_state(name, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, clips: Tensor) -> None:
        for name, value in physics_statistics(clips, self.num_balls, self.threshold).items():
            setattr(self, name, getattr(self, name) + value)

    def compute(self) -> dict[str, float]:
        return summarise_physics({name: float(getattr(self, name)) for name in self.FIELDS},
                                 self.num_balls is not None)


def summarise_physics(sums: dict[str, float], with_error: bool = True) -> dict[str, float]:
    """Means from the sums of :func:`physics_statistics` (NaN where there was nothing to average)."""
    div = lambda a, b: sums[a] / sums[b] if sums[b] > 0 else math.nan  # noqa: E731
    out = {"count_consistency": div("consistent", "clips"), "count_mean": div("count", "frames"),
           "speed": div("speed", "steps"), "acceleration": div("acceleration", "triples")}
    if with_error:
        out["count_error"] = div("count_error", "frames")
    return out


# --- the suite's scores ---------------------------------------------------------------------------------
@register_metric("fvd")
class FVDScore(Score):
    """Frechet video distance with ``eval.video.extractor``, against cached reference statistics."""

    name = "fvd"

    def __init__(self, ctx: SuiteContext) -> None:
        if ctx.spec.kind != "video":
            raise NotApplicable("FVD is for video data")
        s = ctx.settings
        request = ExtractorRequest(ctx.spec, ctx.datamodule, s, ctx.device)
        self.extractor = build_video_extractor(s.video.extractor, request)
        ref = s.reference
        reference = reference_features(ctx.datamodule, self.extractor, ref.split, ref.num_samples,
                                       ref.subset_seed, s.cache_path, s.batch_size, clips=True)
        self.num_reference = reference.stats.n
        stats = reference.stats if ctx.is_rank_zero else None
        self.metric = FID(self.extractor.feature_dim, stats).to(ctx.device)

    def update(self, batch: EvalBatch) -> None:
        if batch.clips is None:
            feats = torch.zeros(0, self.extractor.feature_dim, device=self.metric.device)
        else:
            feats = self.extractor(batch.clips)["pool"]
        self.metric.update(feats, real=False)

    def compute(self) -> dict[str, float]:
        return {"fvd": float(self.metric.compute())}

    def protocol(self) -> dict[str, Any]:
        ext = self.extractor.describe()
        keys = ("name", "version", "weights_sha256", "feature_dim", "preprocessing")
        return {"num_reference": self.num_reference, "video_extractor": {k: ext[k] for k in keys}}


@register_metric("physics")
class PhysicsScore(Score):
    """The physics check of generated bouncing-ball clips, beside the same statistics of real ones."""

    name = "physics"

    def __init__(self, ctx: SuiteContext) -> None:
        source = getattr(ctx.datamodule, "source", None)
        if ctx.spec.kind != "video" or not isinstance(source, BouncingBalls):
            raise NotApplicable("the physics check is for bouncing_balls clips")
        opts = ctx.settings.video.physics
        self.threshold, self.num_balls = opts.threshold, source.num_balls
        split, seed = ctx.settings.reference.split, ctx.settings.reference.subset_seed
        n_split = len(ctx.datamodule.train_set if split == "train" else ctx.datamodule.heldout_set)
        index = subset_indices(n_split, opts.num_reference, seed)
        real = PhysicsCheck(self.num_balls, self.threshold)
        for x in iter_split(ctx.datamodule, split, index, ctx.settings.batch_size):
            real.update(x)
        self.num_reference = int(real.clips)
        self.real = real.compute()
        self.metric = PhysicsCheck(self.num_balls, self.threshold).to(ctx.device)

    def update(self, batch: EvalBatch) -> None:
        if batch.clips is not None:
            self.metric.update(batch.clips)

    def compute(self) -> dict[str, float]:
        out = {f"physics_{k}": v for k, v in self.metric.compute().items()}
        out.update({f"physics_{k}_real": v for k, v in self.real.items()})
        return out

    def protocol(self) -> dict[str, Any]:
        return {"num_reference": self.num_reference, "threshold": self.threshold, "num_balls": self.num_balls,
                "matching": "hungarian on centre distances between frames with equal counts"}
