"""Pictures of video samples: an animated GIF of a grid of clips, and a frame-grid PNG (one clip per
row, time left to right). Written with PIL and torchvision only (no video encoder needed)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageSequence
from torch import Tensor

from gen_bench.data.arrays import to_uint8
from gen_bench.viz import image_grid, save_image_grid

__all__ = ["clip_grid_frames", "read_gif", "save_frame_grid", "save_gif", "save_video_samples"]

MIN_CELL_PX = 64  # GIF cells are upscaled (nearest) to at least this size: 16 px clips are unreadable


def _check(x: Tensor) -> Tensor:
    if x.ndim != 5:
        raise ValueError(f"expected (N, C, T, H, W) clips, got shape {tuple(x.shape)}")
    return x.detach().float().cpu().clamp(0, 1)


def clip_grid_frames(clips: Tensor, nrow: int | None = None, scale: int | None = None) -> Tensor:
    """The frames of an animation showing every clip at once.

    Args:
        clips: (N, C, T, H, W) in [0, 1].
        nrow: Clips per row of the grid (default: square).
        scale: Integer upscaling of each clip (nearest); default: up to 64 px.

    Returns:
        (T, 3, H', W') uint8 grid frames.
    """
    x = _check(clips)
    n, c, t, h, w = x.shape
    scale = scale or max(1, math.ceil(MIN_CELL_PX / max(h, w)))
    frames = x.transpose(1, 2).flatten(0, 1)  # (N*T, C, H, W)
    if scale > 1:
        frames = F.interpolate(frames, scale_factor=scale, mode="nearest")
    frames = frames.reshape(n, t, c, h * scale, w * scale)
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    return torch.stack([to_uint8(image_grid(frames[:, i], nrow=nrow)) for i in range(t)])


def save_gif(clips: Tensor, path: str | Path, fps: float = 8.0, nrow: int | None = None,
             scale: int | None = None) -> Path:
    """Save (N, C, T, H, W) clips in [0, 1] as one looping GIF of a grid of clips.

    Grey clips are written as 8-bit grey frames (lossless); colour clips through GIF's 256-colour
    palette per frame. PIL merges identical consecutive frames into one longer frame.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = clip_grid_frames(clips, nrow, scale)  # (T, 3, H', W')
    grey = clips.shape[1] == 1
    images = [Image.fromarray(f[0].numpy(), "L") if grey else Image.fromarray(f.permute(1, 2, 0).numpy())
              for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=max(1, round(1000 / fps)), loop=0,
                   optimize=False, disposal=1)
    return path


def read_gif(path: str | Path) -> Tensor:
    """Every frame of a GIF as (T, 3, H, W) uint8 (to check what :func:`save_gif` wrote)."""
    with Image.open(path) as img:
        frames = [torch.from_numpy(np.array(f.convert("RGB"))).permute(2, 0, 1)
                  for f in ImageSequence.Iterator(img)]
    return torch.stack(frames)


def save_frame_grid(clips: Tensor, path: str | Path, max_clips: int = 8, scale: int | None = None) -> Path:
    """Save the first ``max_clips`` clips as one PNG: one clip per row, its T frames left to right
    (each frame upscaled as in :func:`clip_grid_frames`)."""
    x = _check(clips)[:max_clips]
    t, h, w = x.shape[2:]
    scale = scale or max(1, math.ceil(MIN_CELL_PX / max(h, w)))
    frames = x.transpose(1, 2).flatten(0, 1)  # (N*T, C, H, W), clip-major
    if scale > 1:
        frames = F.interpolate(frames, scale_factor=scale, mode="nearest")
    return save_image_grid(frames, path, nrow=t)


def save_video_samples(clips: Tensor, out_dir: str | Path, tag: str, fps: float = 8.0,
                       max_rows: int = 8) -> dict[str, Path]:
    """``<tag>.gif`` (every clip, animated) and ``<tag>_frames.png`` (a frame grid) in ``out_dir``."""
    out_dir = Path(out_dir)
    return {"gif": save_gif(clips, out_dir / f"{tag}.gif", fps=fps),
            "frames": save_frame_grid(clips, out_dir / f"{tag}_frames.png", max_clips=max_rows)}
