"""Table and grid of an image-to-image sweep (``experiment=superres`` or ``experiment=inpaint``): the loss
ladder L2 -> + perceptual -> + adversarial against conditional diffusion, one UNet, 3 seeds.

* ``table.md``: per model, mean ± std over seeds of the final evaluation's PSNR, SSIM, FID (outputs
  against the real images), sharpness (high-frequency energy of the outputs over the targets'),
  consistency and diversity, and the runs' wall time.
* ``grid.png``: the same held-out inputs through the seed-0 run of every model: input | L2 |
  + perceptual | GAN | diffusion | target, one input per row (the diffusion model with the sampler
  its evaluation used).

    python experiments/superres/figures.py runs/sweeps/superres [--out DIR] [--rows 8] [--no-grid]
    python experiments/superres/figures.py runs/sweeps/inpaint --out experiments/inpaint
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

from gen_bench.checkpoint import load_model  # noqa: E402
from gen_bench.rundir import RunRecord, collect_runs  # noqa: E402

OUT = Path(__file__).parent
LADDER = {"i2i_regression": "L2", "i2i_perceptual": "+ perceptual", "i2i_gan": "+ adversarial (GAN)",
          "i2i_diffusion": "conditional diffusion"}
DIFFUSION = {"SuperResolution": "diffusion (SR3-style)", "Inpainting": "diffusion (Palette-style)"}
METRICS = {"psnr": "PSNR (dB) ↑", "ssim": "SSIM ↑", "fid": "FID ↓", "sharpness": "sharpness (1 = real)",
           "consistency": "consistency (MSE) ↓", "diversity": "diversity (std)"}
GRID_SEED = 2024  # which held-out inputs the grid shows, and the diffusion model's noise


def _fmt(values: list[float]) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.4g} ± {std:.2g}"


def labels(runs: list[RunRecord]) -> dict[str, str]:
    """The ladder's column names, the diffusion model's after its task (SR3 or Palette) and what it
    diffuses and predicts (the image or its residual to the task's estimate; eps, x0 or v)."""
    target = ((runs[0].config.get("data") or {}).get("task") or {}).get("_target_", "")
    name = DIFFUSION.get(target.rsplit(".", 1)[-1], LADDER["i2i_diffusion"])
    diffusion = [r.config.get("model") or {} for r in runs if r.model == "i2i_diffusion"]
    if diffusion:
        cfg = diffusion[0]
        what = "residual" if cfg.get("residual") else "image"
        name = f"{name}, {what}, {(cfg.get('diffusion') or {}).get('prediction', 'eps')}"
    return {**LADDER, "i2i_diffusion": name}


def table(runs: list[RunRecord]) -> str:
    """Markdown: one row per model of the ladder, mean ± std over its completed seeds."""
    lines = ["| model | " + " | ".join(METRICS.values()) + " | seeds | wall time per run (s) |",
             "|---|" + "---|" * (len(METRICS) + 2)]
    for model, label in labels(runs).items():
        done = [r for r in runs if r.model == model and r.status == "completed"]
        if not done:
            continue
        cells = [_fmt([v for r in done if (v := r.score(m)[0]) is not None]) for m in METRICS]
        walls = [r.summary["wall_time_s"] for r in done if r.summary.get("wall_time_s")]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {len(done)} | {_fmt(walls)} |")
    return "\n".join(lines)


def grid(runs: list[RunRecord], path: Path, rows: int = 8) -> Path:
    """input | one column per model (seed 0) | target, for the same ``rows`` held-out inputs."""
    columns: list[tuple[str, torch.Tensor]] = []
    target = x_in = task = None
    for model_name, label in labels(runs).items():
        seed0 = [r for r in runs if r.model == model_name and r.seed == 0 and r.status == "completed"]
        if not seed0:
            continue
        run = seed0[0]
        model, *_ = load_model(run.run_dir)
        model.progress = False
        if x_in is None:
            x_in, target = model.draw_inputs(rows, torch.Generator().manual_seed(GRID_SEED))
            task = model.task
            columns.append(("input", task.show(x_in)))
        node = (run.config.get("callbacks") or {}).get("evaluation", {}).get("sampler")
        kw = {"sampler": instantiate(node)} if node else {}
        columns.append((label, model.translate(x_in, torch.Generator().manual_seed(GRID_SEED), **kw)))
    if not columns:
        raise SystemExit("no completed seed-0 run of the ladder to draw")
    columns.append(("target", target))
    fig, axes = plt.subplots(rows, len(columns), figsize=(1.3 * len(columns), 1.3 * rows + 0.4), dpi=110,
                             squeeze=False)
    for j, (title, images) in enumerate(columns):
        for i in range(rows):
            ax = axes[i][j]
            img = images[i].detach().float().cpu().clamp(0, 1)
            ax.imshow(img.permute(1, 2, 0).numpy() if img.shape[0] == 3 else img[0].numpy(), cmap="gray",
                      interpolation="nearest", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title.replace(", ", "\n", 1), fontsize=8)
    fig.suptitle(", ".join(f"{k} {v}" for k, v in task.describe().items()), fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--no-grid", action="store_true", help="skip the grid (it loads the checkpoints)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    runs = [r for r in collect_runs(args.sweep) if r.model in LADDER]
    if not runs:
        raise SystemExit(f"no image-to-image run (model={', '.join(LADDER)}) under {args.sweep}")
    text = table(runs)
    (args.out / "table.md").write_text(text + "\n")
    print(text)
    failed = [f"{r.run_dir.name}: {r.summary.get('error', r.status)}" for r in runs
              if r.status != "completed"]
    if failed:
        print("not completed:\n  " + "\n  ".join(failed))
    if not args.no_grid:
        print(grid(runs, args.out / "grid.png", args.rows))
    walls = [r.summary.get("wall_time_s") for r in runs if r.summary.get("wall_time_s")]
    if walls:
        print(f"{len(walls)} runs, {sum(walls) / 60:.1f} min of run time in all")


if __name__ == "__main__":
    main()
