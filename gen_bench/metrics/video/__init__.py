"""Video metrics: FVD with a pluggable video extractor, per-frame FID, and a physics check.

Modules: :mod:`~gen_bench.metrics.video.extractors` (the video extractor registry, I3D),
:mod:`~gen_bench.metrics.video.conv3d` (the 3-D CNNs, their self-supervised training),
:mod:`~gen_bench.metrics.video.fvd` (clips -> features -> Frechet distance),
:mod:`~gen_bench.metrics.video.physics` (ball tracking and its statistics) and
:mod:`~gen_bench.metrics.video.scores` (the ``fvd`` and ``physics`` metric families).

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

from gen_bench.metrics.video import scores  # noqa: F401  registers the fvd and physics metrics
from gen_bench.metrics.video.conv3d import (
    Conv3dNet,
    RandomConv3dExtractor,
    TrainedConv3dExtractor,
    temporal_corruptions,
)
from gen_bench.metrics.video.extractors import (
    VIDEO_EXTRACTORS,
    I3DExtractor,
    auto_video_extractor,
    build_video_extractor,
    register_video_extractor,
)
from gen_bench.metrics.video.fvd import frame_fid, fvd
from gen_bench.metrics.video.physics import PhysicsCheck, physics_statistics, summarise_physics

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
    "summarise_physics",
    "temporal_corruptions",
]
