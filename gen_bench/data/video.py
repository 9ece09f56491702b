"""Procedural video: bouncing balls and moving digits (a Moving-MNIST analogue), drawn with numpy.

Both keep their ground truth after ``load()`` (``positions``, ``velocities``), so tests and the
physics check can compare what a clip shows with what made it. Clips leave as uint8
(N, C, T, S, S) in an :class:`ArrayDataset` (float32 in [0, 1] when indexed).

Coordinates are continuous pixel units: x to the right, y down, pixel ``i`` covering [i, i + 1),
so an object of half-size r inside an S-pixel frame has its centre in [r, S - r].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from gen_bench.data.arrays import ArrayDataset, to_uint8
from gen_bench.data.digits import load_sklearn_digits
from gen_bench.data.spec import DataSpec

__all__ = ["BALL_COLOURS", "BouncingBalls", "MovingDigits", "reflect", "render_balls", "simulate_balls"]

# One colour per ball index (RGB clips); grey clips draw every ball white.
BALL_COLOURS = np.array([(0.95, 0.25, 0.2), (0.2, 0.85, 0.3), (0.25, 0.45, 1.0), (0.95, 0.85, 0.15),
                         (0.9, 0.3, 0.9), (0.2, 0.9, 0.95)], dtype=np.float32)


def reflect(u: np.ndarray, lo: float | np.ndarray, hi: float | np.ndarray) -> np.ndarray:
    """Fold free motion into [lo, hi] as elastic walls do: a triangle wave of period 2 (hi - lo).

    A point moving freely to ``u`` ends, after every bounce between walls at ``lo`` and ``hi``,
    at ``reflect(u, lo, hi)``: the closed form of elastic motion in a box.
    """
    span = hi - lo
    m = np.mod(u - lo, 2 * span)
    return lo + np.where(m <= span, m, 2 * span - m)


def _check_speed(speed: Sequence[float]) -> tuple[float, float]:
    lo, hi = (float(s) for s in speed)
    if not 0 <= lo <= hi:
        raise ValueError(f"speed must be [min, max] with 0 <= min <= max, got {list(speed)}")
    return lo, hi


def _velocities(rng: np.random.Generator, shape: tuple[int, ...], lo: float, hi: float) -> np.ndarray:
    """(…, 2) velocities with uniform direction and speed in [lo, hi]."""
    angle = rng.uniform(0, 2 * np.pi, size=shape)
    speed = rng.uniform(lo, hi, size=shape)
    return np.stack([np.cos(angle), np.sin(angle)], -1) * speed[..., None]


def simulate_balls(num_clips: int, frames: int, size: float, num_balls: int, radius: float,
                   speed: tuple[float, float], collisions: bool = True, substeps: int = 8,
                   rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Equal-mass balls in a square box with elastic walls and, optionally, elastic ball collisions.

    Balls start apart (rejection sampling). Each frame interval is split into ``substeps`` Euler
    steps; a ball past a wall is mirrored back and its normal velocity negated (exact for elastic
    walls); two overlapping balls that approach each other exchange the velocity components along
    the line of their centres (elastic collision of equal masses: momentum and kinetic energy are
    conserved exactly).

    Args:
        num_clips: N.
        frames: T.
        size: Side of the box, in pixels.
        num_balls: B.
        radius: Ball radius in pixels.
        speed: [min, max] initial speed in pixels per frame.
        collisions: Let balls collide (else they pass through each other).
        substeps: Integration steps per frame.
        rng: numpy generator (default: seed 0).

    Returns:
        positions (N, T, B, 2) and velocities (N, T, B, 2), in pixels and pixels per frame, (x, y).
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    lo_v, hi_v = _check_speed(speed)
    if not 0 < radius < size / 2:
        raise ValueError(f"ball radius {radius} px does not fit a {size} px frame")
    pos = np.empty((num_clips, num_balls, 2))
    for b in range(num_balls):  # rejection sampling: no overlap at the start
        todo = np.ones(num_clips, dtype=bool)
        for _ in range(1000):
            cand = rng.uniform(radius, size - radius, size=(int(todo.sum()), 2))
            ok = np.ones(len(cand), dtype=bool)
            if collisions:
                for other in range(b):
                    ok &= np.linalg.norm(cand - pos[todo, other], axis=1) >= 2 * radius
            idx = np.flatnonzero(todo)[ok]
            pos[idx, b] = cand[ok]
            todo[idx] = False
            if not todo.any():
                break
        else:
            raise ValueError(f"could not place {num_balls} balls of radius {radius} px apart in {size} px")
    vel = _velocities(rng, (num_clips, num_balls), lo_v, hi_v)
    positions = np.empty((num_clips, frames, num_balls, 2))
    velocities = np.empty_like(positions)
    dt = 1.0 / substeps
    pairs = [(i, j) for i in range(num_balls) for j in range(i + 1, num_balls)] if collisions else []
    for t in range(frames):
        positions[:, t], velocities[:, t] = pos, vel
        for _ in range(substeps):
            pos = pos + vel * dt
            low, high = pos < radius, pos > size - radius
            pos = np.where(low, 2 * radius - pos, np.where(high, 2 * (size - radius) - pos, pos))
            vel = np.where(low | high, -vel, vel)
            for i, j in pairs:
                d = pos[:, j] - pos[:, i]  # (N, 2)
                dist = np.linalg.norm(d, axis=1, keepdims=True)
                n = d / np.maximum(dist, 1e-12)
                approach = ((vel[:, i] - vel[:, j]) * n).sum(1, keepdims=True)  # > 0: closing in
                hit = (dist < 2 * radius) & (approach > 0)
                dv = np.where(hit, approach * n, 0.0)
                vel[:, i] -= dv
                vel[:, j] += dv
    return positions, velocities


def render_balls(positions: np.ndarray, radius: float, size: int, channels: int = 1) -> np.ndarray:
    """Anti-aliased discs: pixel intensity ``clip(radius + 0.5 - distance to centre, 0, 1)``, the
    maximum over balls; RGB clips colour ball b with ``BALL_COLOURS[b]``.

    Args:
        positions: (N, T, B, 2) centres in pixels.
        radius: Radius in pixels.
        size: Frame side S.
        channels: 1 (white balls) or 3 (coloured).

    Returns:
        (N, C, T, S, S) float32 in [0, 1].
    """
    n, t, b, _ = positions.shape
    centres = (np.arange(size, dtype=np.float32) + 0.5)
    p = positions.astype(np.float32)
    dx = centres[None, None, None, None, :] - p[..., 0][..., None, None]  # (N, T, B, 1, S)
    dy = centres[None, None, None, :, None] - p[..., 1][..., None, None]  # (N, T, B, S, 1)
    disc = np.clip(radius + 0.5 - np.sqrt(dx**2 + dy**2), 0, 1)  # (N, T, B, S, S)
    if channels == 1:
        return disc.max(2)[:, None]
    if channels != 3:
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    colours = BALL_COLOURS[np.arange(b) % len(BALL_COLOURS)]  # (B, 3)
    rgb = (disc[:, :, :, None] * colours[None, None, :, :, None, None]).max(2)  # (N, T, 3, S, S)
    return rgb.transpose(0, 2, 1, 3, 4)


class BouncingBalls:
    """Balls moving in straight lines and bouncing elastically off the frame (and each other).

    Ground truth after :meth:`load`: ``positions`` and ``velocities``, (N, T, B, 2) float64 in
    pixels and pixels per frame, (x, y), for the frames of every clip in dataset order.

    Args:
        name: Dataset name.
        image_size: Frame side S.
        frames: Frames per clip T.
        num_samples: Number of clips N.
        num_balls: Balls per clip B.
        radius: Ball radius as a fraction of S.
        speed: [min, max] speed as a fraction of S per frame.
        channels: 1 (white balls on black) or 3 (one colour per ball).
        collisions: Elastic ball-ball collisions (else balls pass through each other).
        substeps: Integration steps per frame.
        seed: Seed of the draw.
    """

    def __init__(self, name: str = "bouncing_balls", image_size: int = 16, frames: int = 8,
                 num_samples: int = 4000, num_balls: int = 2, radius: float = 0.125,
                 speed: Sequence[float] = (0.05, 0.1), channels: int = 1, collisions: bool = True,
                 substeps: int = 8, seed: int = 0) -> None:
        if image_size < 4 or frames < 1 or num_samples < 1 or num_balls < 1 or substeps < 1:
            raise ValueError("bouncing_balls needs image_size >= 4 and frames, num_samples, num_balls, "
                             "substeps >= 1")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        _check_speed(speed)
        self.name = name
        self.image_size = image_size
        self.frames = frames
        self.num_samples = num_samples
        self.num_balls = num_balls
        self.radius = float(radius)
        self.speed = tuple(float(s) for s in speed)
        self.channels = channels
        self.collisions = collisions
        self.substeps = substeps
        self.seed = seed
        self.positions: np.ndarray | None = None
        self.velocities: np.ndarray | None = None

    @property
    def radius_px(self) -> float:
        return self.radius * self.image_size

    @property
    def spec(self) -> DataSpec:
        return DataSpec(kind="video", shape=(self.channels, self.frames, self.image_size, self.image_size))

    def prepare(self) -> None:
        """Procedural: nothing to download."""

    def simulate(self) -> tuple[np.ndarray, np.ndarray]:
        """positions, velocities (N, T, B, 2) of every clip (see :func:`simulate_balls`)."""
        s = self.image_size
        return simulate_balls(self.num_samples, self.frames, s, self.num_balls, self.radius_px,
                              (self.speed[0] * s, self.speed[1] * s), self.collisions, self.substeps,
                              np.random.default_rng(self.seed))

    def load(self) -> ArrayDataset:
        self.positions, self.velocities = self.simulate()
        x = np.empty((self.num_samples, self.channels, self.frames, self.image_size, self.image_size),
                     dtype=np.uint8)
        for i in range(0, self.num_samples, 512):  # bounded temporary memory
            clips = render_balls(self.positions[i : i + 512], self.radius_px, self.image_size, self.channels)
            x[i : i + 512] = to_uint8(torch.from_numpy(clips)).numpy()
        return ArrayDataset(torch.from_numpy(x))


class MovingDigits:
    """scikit-learn digits drifting over a black canvas and bouncing off its edges: the Moving-MNIST
    protocol (Srivastava et al. 2015: two 28 px digits on 64 px, 20 frames) with the bundled 8x8
    digits, so it works offline.

    Each digit moves at constant speed, reflected elastically at the canvas edges (digits pass over
    each other; overlaps take the brighter pixel). Digits sit at whole-pixel positions, as in
    Moving MNIST. Ground truth after :meth:`load`: ``positions`` (N, T, D, 2) top-left corners
    before rounding, ``velocities`` (N, T, D, 2), ``digit_index`` (N, D) (which of the 1797
    digits) and ``digit_labels`` (N, D) (their classes).

    Args:
        name: Dataset name.
        image_size: Canvas side S.
        frames: Frames per clip T.
        num_samples: Number of clips N.
        num_digits: Digits per clip D.
        digit_size: Digit side in pixels (default S // 2).
        speed: [min, max] speed as a fraction of S per frame.
        seed: Seed of the draw.
    """

    def __init__(self, name: str = "moving_digits", image_size: int = 32, frames: int = 8,
                 num_samples: int = 4000, num_digits: int = 2, digit_size: int | None = None,
                 speed: Sequence[float] = (0.04, 0.08), seed: int = 0) -> None:
        digit_size = digit_size or image_size // 2
        if not 4 <= digit_size <= image_size:
            raise ValueError(f"digit_size must be in [4, image_size={image_size}], got {digit_size}")
        if frames < 1 or num_samples < 1 or num_digits < 1:
            raise ValueError("moving_digits needs frames, num_samples and num_digits >= 1")
        _check_speed(speed)
        self.name = name
        self.image_size = image_size
        self.frames = frames
        self.num_samples = num_samples
        self.num_digits = num_digits
        self.digit_size = digit_size
        self.speed = tuple(float(s) for s in speed)
        self.seed = seed
        self.positions: np.ndarray | None = None
        self.velocities: np.ndarray | None = None
        self.digit_index: np.ndarray | None = None
        self.digit_labels: np.ndarray | None = None

    @property
    def spec(self) -> DataSpec:
        return DataSpec(kind="video", shape=(1, self.frames, self.image_size, self.image_size))

    def prepare(self) -> None:
        """Bundled with scikit-learn: nothing to download."""

    def load(self) -> ArrayDataset:
        s, d, n, t, k = self.image_size, self.digit_size, self.num_samples, self.frames, self.num_digits
        digits, labels = load_sklearn_digits(d)  # (M, 1, d, d) uint8
        rng = np.random.default_rng(self.seed)
        which = rng.integers(digits.shape[0], size=(n, k))
        hi = s - d  # top-left corner in [0, S - d]
        start = rng.uniform(0, hi, size=(n, k, 2))
        vel = _velocities(rng, (n, k), self.speed[0] * s, self.speed[1] * s)
        steps = np.arange(t)[None, :, None, None]
        free = start[:, None] + vel[:, None] * steps  # (N, T, D, 2) unfolded motion
        self.positions = reflect(free, 0.0, float(hi)) if hi > 0 else np.zeros_like(free)
        # velocity at frame t: the direction of the folded motion there (negated on a descending leg)
        folded_leg = np.mod(free, 2 * hi) > hi if hi > 0 else np.zeros_like(free, dtype=bool)
        self.velocities = np.where(folded_leg, -vel[:, None], vel[:, None]) * (hi > 0)
        self.digit_index, self.digit_labels = which, labels.numpy()[which]

        corner = np.rint(self.positions).astype(np.int64)  # (N, T, D, 2) whole pixels
        glyphs = digits.numpy()[which][:, :, 0]  # (N, D, d, d)
        canvas = np.zeros((n, t, s, s), dtype=np.uint8)
        rows = np.arange(d)
        for j in range(k):
            ys = corner[:, :, j, 1][..., None] + rows  # (N, T, d)
            xs = corner[:, :, j, 0][..., None] + rows
            ii = np.arange(n)[:, None, None, None]
            tt = np.arange(t)[None, :, None, None]
            region = canvas[ii, tt, ys[..., :, None], xs[..., None, :]]  # (N, T, d, d)
            canvas[ii, tt, ys[..., :, None], xs[..., None, :]] = np.maximum(region, glyphs[:, j][:, None])
        return ArrayDataset(torch.from_numpy(canvas[:, None]))
