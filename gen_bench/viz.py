"""Pictures people would rather look at than read: sample grids, 2-D scatters, loss curves."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402
from torchvision.utils import make_grid, save_image  # noqa: E402


def save_image_grid(images: Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """Save (N, C, H, W) images in [0, 1] as one PNG grid (``nrow`` per row, default square)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nrow = nrow or max(1, int(math.ceil(math.sqrt(images.shape[0]))))
    save_image(images.detach().float().cpu().clamp(0, 1), path, nrow=nrow, padding=2, pad_value=1.0)
    return path


def image_grid(images: Tensor, nrow: int | None = None) -> Tensor:
    """(N, C, H, W) in [0, 1] -> one (3, H', W') grid tensor."""
    nrow = nrow or max(1, int(math.ceil(math.sqrt(images.shape[0]))))
    grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=2, pad_value=1.0)
    return grid if grid.shape[0] == 3 else grid.expand(3, -1, -1)


def save_scatter(points: Tensor, path: str | Path, centers: Sequence[Sequence[float]] | None = None,
                 real: Tensor | None = None, title: str = "") -> Path:
    """Scatter (N, 2) samples, optionally over real points and the true mode centres."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    if real is not None:
        r = real.detach().cpu()
        ax.scatter(r[:, 0], r[:, 1], s=2, c="tab:gray", alpha=0.3, label="data")
    p = points.detach().float().cpu()
    ax.scatter(p[:, 0], p[:, 1], s=2, c="tab:blue", alpha=0.5, label="samples")
    if centers is not None:
        c = torch.tensor(centers)
        ax.scatter(c[:, 0], c[:, 1], s=60, marker="x", c="tab:red", label="mode centres")
        pad = 0.25 * float((c.max(0).values - c.min(0).values).max()) + 0.5
        ax.set_xlim(float(c[:, 0].min()) - pad, float(c[:, 0].max()) + pad)
        ax.set_ylim(float(c[:, 1].min()) - pad, float(c[:, 1].max()) + pad)
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=7, markerscale=3)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_curves(rows: list[dict[str, float]], path: str | Path, prefix: str = "train/",
                title: str = "") -> Path | None:
    """Plot every ``prefix*`` column of logged rows (each with a ``step``) against step, one panel each.

    Returns the path written, or None when there was nothing to plot.
    """
    names = sorted({k for r in rows for k in r if k.startswith(prefix)})
    if not names:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = min(3, len(names))
    nrows = int(math.ceil(len(names) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3 * nrows), dpi=100, squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        pts = [(r["step"], r[name]) for r in rows if name in r and "step" in r]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, lw=0.8, alpha=0.35, color="tab:blue")
            k = max(1, len(ys) // 50)  # a running mean shows the trend through GAN noise
            if k > 1:
                smooth = torch.tensor(ys).unfold(0, k, 1).mean(1).tolist()
                ax.plot(xs[k - 1:], smooth, lw=1.5, color="tab:blue")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
