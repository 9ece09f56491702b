"""Figures of experiments/compare_compute from the finished sweep: the leaderboard's plots (score
against training FLOPs and against sampling FLOPs) and the final sample grids side by side.

    .venv/bin/python experiments/compare_compute/figures.py runs/sweeps/compare_compute
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw

from gen_bench.leaderboard import (
    curves,
    pareto_markdown,
    pareto_table,
    plot_metric_over_steps,
    plot_quality_vs_sampling_cost,
)
from gen_bench.rundir import collect_runs

OUT = Path(__file__).parent
MODELS = ["dcgan", "dcgan (resnet)", "wgan_gp", "r3gan", "ddpm", "flow_matching", "pixelcnn"]
# run folder of each row (the residual-backbone DCGAN is `model=dcgan backbone=resnet`)
FOLDERS = {m: f"experiment=compare_compute,model={m}" for m in MODELS}
FOLDERS["dcgan (resnet)"] = "backbone=resnet,experiment=compare_compute,model=dcgan"


def row_label(key: tuple) -> str:
    """A table row's model: the residual-backbone DCGAN apart from the plain one."""
    return f"{key[0]} (resnet)" if "resnet" in key[3].lower() else key[0]


def grids_side_by_side(sweep: Path, seed: int = 0, path: Path = OUT / "grids_seed0.png") -> None:
    tiles = []
    for model in MODELS:
        grid = sweep / f"{FOLDERS[model]},seed={seed}" / "samples" / "final.png"
        if grid.is_file():
            tiles.append((model, Image.open(grid).convert("RGB")))
    w, h = max(t.width for _, t in tiles), max(t.height for _, t in tiles)
    canvas = Image.new("RGB", (len(tiles) * (w + 10), h + 24), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (model, tile) in enumerate(tiles):
        canvas.paste(tile, (i * (w + 10), 24))
        draw.text((i * (w + 10) + 4, 4), model, fill="black")
    canvas.save(path)


def table(runs, metrics=("fid", "precision", "recall", "coverage")) -> str:
    """Markdown: one row per model and budget level, each metric's mean ± std over seeds."""
    per = {m: curves(runs, m, "train_flops") for m in metrics}
    walls = curves(runs, "fid", "wall_s")
    lines = ["| model | budget (FLOPs) | " + " | ".join(metrics) + " | wall time at the point (s) | seeds |",
             "|---|---|" + "---|" * (len(metrics) + 2)]
    order = {label: i for i, label in enumerate(MODELS)}
    for key in sorted(per["fid"], key=lambda k: order.get(row_label(k), 99)):
        for k, (x, *_rest) in enumerate(per["fid"][key]):
            cells = []
            for m in metrics:
                pts = per[m].get(key, [])
                mean, std = (pts[k][1], pts[k][2]) if k < len(pts) else (None, None)
                cells.append("-" if mean is None else f"{mean:.3g} ± {std or 0:.2g}")
            wall = walls.get(key, [])
            cells.append(f"{wall[k][0]:.0f}" if k < len(wall) else "-")
            seeds = per["fid"][key][k][3]
            lines.append(f"| {row_label(key)} | {x:.2g} | " + " | ".join(cells) + f" | {seeds} |")
    return "\n".join(lines)


def main(sweep: str) -> None:
    root = Path(sweep)
    runs = collect_runs(root)
    print(table(runs))
    print()
    print(pareto_markdown(pareto_table(runs, "fid", "train_flops"), "fid", "train_flops"))
    plot_metric_over_steps(runs, "fid", OUT / "fid_over_train_flops.png", x="train_flops",
                           title="FID against training FLOPs (digits 16 px, 3 seeds)")
    plot_metric_over_steps(runs, "fid", OUT / "fid_over_wall_s.png", x="wall_s",
                           title="FID against wall time (2 CPU cores, 2 runs at once)")
    plot_quality_vs_sampling_cost(runs, "fid", OUT / "fid_vs_sampling_flops.png")
    grids_side_by_side(root)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/sweeps/compare_compute")
