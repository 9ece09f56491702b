"""The physics check of bouncing-ball clips: balls found in every frame, matched between frames,
and summarised as count consistency, count error, speed and acceleration (see
:mod:`gen_bench.metrics.video`)."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from torchmetrics import Metric

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
