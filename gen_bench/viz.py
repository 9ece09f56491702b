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

from gen_bench import keys  # noqa: E402


def save_image_grid(images: Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """Save (N, C, H, W) images in [0, 1] as one PNG grid (``nrow`` per row, default square)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nrow = nrow or max(1, int(math.ceil(math.sqrt(images.shape[0]))))
    save_image(images.detach().float().cpu().clamp(0, 1), path, nrow=nrow, padding=2, pad_value=1.0)
    return path


def side_by_side(columns: Sequence[Tensor]) -> Tensor:
    """K batches of (N, C, H, W) images -> (N * K, C, H, W), row i holding image i of every batch in
    order: a grid of K columns (``save_image_grid(..., nrow=K)``), e.g. input | output | target."""
    return torch.stack([c.detach().float().cpu() for c in columns], dim=1).flatten(0, 1)


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


def save_walks_2d(walks: Tensor, path: str | Path, centers: Sequence[Sequence[float]] | None = None,
                  title: str = "") -> Path:
    """Plot (W, S, 2) walks of 2-D points (each a line from its first point, marked o, to its last, x)
    over the true mode centres."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    if centers is not None:
        c = torch.tensor(centers)
        ax.scatter(c[:, 0], c[:, 1], s=60, marker="+", c="tab:gray", label="mode centres")
    for i, w in enumerate(walks.detach().float().cpu()):
        line = ax.plot(w[:, 0], w[:, 1], ".-", ms=3, lw=1, label=f"walk {i}")[0]
        ax.scatter(w[0, 0], w[0, 1], marker="o", color=line.get_color())
        ax.scatter(w[-1, 0], w[-1, 1], marker="x", color=line.get_color())
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=7)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# What the y axis of a logged curve measures (the key's last part is the fallback).
Y_LABELS = {
    keys.LOSS_D: "loss", keys.LOSS_G: "loss", keys.LOSS_CRITIC: "loss", keys.LOSS_D_SPATIAL: "loss",
    keys.LOSS_D_TEMPORAL: "loss", keys.LOSS_DIFFUSION: "loss (MSE of eps)",
    keys.D_REAL: "mean D(x) (probability)", keys.D_FAKE: "mean D(x) (probability)",
    keys.NOISE_SIGMA: "instance-noise sigma", keys.WASSERSTEIN: "critic(real) - critic(fake)",
    keys.GRADIENT_PENALTY: "gradient penalty", keys.LR: "learning rate",
}


def _panels(names: list[str]) -> list[list[str]]:
    """One panel per curve, except a ``..real..`` curve and its ``..fake..`` twin, which share one."""
    twins = {name: name.replace("real", "fake") for name in names if "real" in name}
    twins = {real: fake for real, fake in twins.items() if fake in names}
    paired = set(twins.values())
    return [[name, twins[name]] if name in twins else [name] for name in names if name not in paired]


def curves_figure(rows: list[dict[str, float]], prefix: str = "train/", title: str = "") -> plt.Figure | None:
    """Every ``prefix*`` column of logged rows (each with a ``step``) against step: one panel per curve,
    D(real) and D(fake) (and any other real / fake pair) together, each y axis labelled.

    Returns the figure (close it), or None when there is nothing to plot.
    """
    names = sorted({k for r in rows for k in r if k.startswith(prefix)})
    if not names:
        return None
    panels = _panels(names)
    cols = min(3, len(panels))
    nrows = int(math.ceil(len(panels) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3 * nrows), dpi=100, squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        for name, color in zip(panel, ("tab:blue", "tab:orange"), strict=False):
            pts = [(r["step"], r[name]) for r in rows if name in r and "step" in r]
            if not pts:
                continue
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, lw=0.8, alpha=0.35, color=color, label=name.removeprefix(prefix))
            k = max(1, len(ys) // 50)  # a running mean shows the trend through GAN noise
            if k > 1:
                smooth = torch.tensor(ys).unfold(0, k, 1).mean(1).tolist()
                ax.plot(xs[k - 1:], smooth, lw=1.5, color=color)
        ax.set_title(" vs ".join(n.removeprefix(prefix) for n in panel), fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel(Y_LABELS.get(panel[0], panel[0].rsplit("/", 1)[-1]), fontsize=8)
        if len(panel) > 1:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_curves(rows: list[dict[str, float]], path: str | Path, prefix: str = "train/",
                title: str = "") -> Path | None:
    """Save :func:`curves_figure` to ``path``; None (nothing written) when there was nothing to plot."""
    fig = curves_figure(rows, prefix, title)
    if fig is None:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def pairs_figure(samples: Tensor, nearest: Tensor, ratios: Tensor, pairs_per_row: int = 4) -> plt.Figure:
    """Generated images beside their nearest training images, each pair captioned with its distance
    ratio d1/d2 (nearest over second-nearest training distance: near 0, a copy).

    Args:
        samples: (N, C, H, W) generated images in [0, 1].
        nearest: (N, C, H, W) their nearest training images in [0, 1].
        ratios: (N,) d1/d2 of each sample.
        pairs_per_row: Pairs side by side.

    Returns:
        The figure (close it): per pair, an axis titled ``generated`` then one titled
        ``nearest training`` with ``d1/d2 = ...``.
    """
    n = samples.shape[0]
    cols = min(pairs_per_row, n)
    nrows = int(math.ceil(n / cols))
    fig, axes = plt.subplots(nrows, 2 * cols, figsize=(2.4 * cols, 0.4 + 1.6 * nrows), dpi=100, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        row, col = divmod(i, cols)
        ratio = f"nearest training\nd1/d2 = {float(ratios[i]):.2f}"
        for j, (image, caption) in enumerate(((samples[i], "generated"), (nearest[i], ratio))):
            ax = axes[row, 2 * col + j]
            pixels = image.detach().float().cpu().clamp(0, 1).permute(1, 2, 0)  # (H, W, C)
            ax.imshow(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels, cmap="gray", vmin=0, vmax=1,
                      interpolation="nearest")
            ax.set_title(caption, fontsize=7, color="tab:red" if j else "black")
    fig.suptitle("most copy-like samples (d1/d2 near 0: a near copy of a training image)", fontsize=8)
    fig.tight_layout()
    return fig


def save_pairs(samples: Tensor, nearest: Tensor, ratios: Tensor, path: str | Path) -> Path:
    """Save :func:`pairs_figure` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = pairs_figure(samples, nearest, ratios)
    fig.savefig(path)
    plt.close(fig)
    return path
