"""Figures of experiments/compare_compute from the finished sweep: the leaderboard's plots (score
against training FLOPs and against sampling FLOPs) and the final sample grids side by side.

    .venv/bin/python experiments/compare_compute/figures.py runs/sweeps/compare_compute
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw

from gen_bench.leaderboard import plot_metric_over_steps, plot_quality_vs_sampling_cost
from gen_bench.rundir import collect_runs

OUT = Path(__file__).parent
MODELS = ["dcgan", "wgan_gp", "r3gan", "ddpm", "flow_matching"]


def grids_side_by_side(sweep: Path, seed: int = 0, path: Path = OUT / "grids_seed0.png") -> None:
    tiles = []
    for model in MODELS:
        grid = sweep / f"experiment=compare_compute,model={model},seed={seed}" / "samples" / "final.png"
        if grid.is_file():
            tiles.append((model, Image.open(grid).convert("RGB")))
    w, h = max(t.width for _, t in tiles), max(t.height for _, t in tiles)
    canvas = Image.new("RGB", (len(tiles) * (w + 10), h + 24), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (model, tile) in enumerate(tiles):
        canvas.paste(tile, (i * (w + 10), 24))
        draw.text((i * (w + 10) + 4, 4), model, fill="black")
    canvas.save(path)


def main(sweep: str) -> None:
    root = Path(sweep)
    runs = collect_runs(root)
    plot_metric_over_steps(runs, "fid", OUT / "fid_over_train_flops.png", x="train_flops",
                           title="FID against training FLOPs (digits 16 px, 3 seeds)")
    plot_metric_over_steps(runs, "fid", OUT / "fid_over_wall_s.png", x="wall_s",
                           title="FID against wall time (2 CPU cores, 2 runs at once)")
    plot_quality_vs_sampling_cost(runs, "fid", OUT / "fid_vs_sampling_flops.png")
    grids_side_by_side(root)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/sweeps/compare_compute")
