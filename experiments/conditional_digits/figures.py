"""Figures of experiments/conditional_digits from the finished sweep: FID, precision, recall, class
accuracy and intra-class FID against the guidance scale (conditional DDPM) and the truncation
threshold (BigGAN), mean and std over seeds; a markdown table; class grids (one row per digit) of
the seed-0 runs at every knob value; the perceptual path lengths of the runs that have been walked
(``gen-bench interpolate ckpt=RUN``).

    python experiments/conditional_digits/figures.py runs/sweeps/conditional_digits [--out DIR] [--no-grids]
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from gen_bench.io import read_json  # noqa: E402
from gen_bench.rundir import INTERPOLATE, RunRecord, collect_runs  # noqa: E402
from gen_bench.viz import image_grid  # noqa: E402

OUT = Path(__file__).parent
ARMS = {"ddpm": "guidance", "biggan": "truncation"}  # model -> the knob its curve is drawn over
METRICS = {"fid": "FID (lower is better)", "precision": "precision", "recall": "recall",
           "class_accuracy": "class accuracy", "intra_fid": "intra-class FID (mean over classes)"}
GRID_SEED = 1234  # the class grids' noise, as the sample-grid callback's


def knob_label(value: float | None) -> str:
    return "none" if value is None else f"{value:g}"


def curves(runs: list[RunRecord]) -> dict[str, dict[str, dict[Any, list[float]]]]:
    """model -> metric -> knob value -> the values of the seeds."""
    out: dict[str, dict[str, dict[Any, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list)))
    for run in runs:
        knob = ARMS.get(run.model)
        if knob is None or run.status != "completed":
            continue
        for metric in METRICS:
            for knobs, value in run.knob_scores(metric):
                if value is not None:
                    out[run.model][metric][knobs.get(knob)].append(value)
    return out


def _order(values) -> list:
    """Knob values in plotting order: numbers ascending, ``None`` (no truncation) last."""
    return sorted(values, key=lambda v: (v is None, v if v is not None else 0))


def plot(model: str, per_metric: dict[str, dict[Any, list[float]]], path: Path) -> Path:
    """One panel per metric: mean and std over seeds against the knob (categorical x axis, so the
    untruncated BigGAN sits at the right end as "none")."""
    knob = ARMS[model]
    names = [m for m in METRICS if per_metric.get(m)]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.0), dpi=110)
    for ax, metric in zip(axes, names, strict=True):
        values = _order(per_metric[metric])
        seeds = [per_metric[metric][v] for v in values]
        means = [statistics.fmean(s) for s in seeds]
        stds = [statistics.stdev(s) if len(s) > 1 else 0.0 for s in seeds]
        xs = range(len(values))
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3)
        ax.set_xticks(list(xs), [knob_label(v) for v in values])
        ax.set_xlabel("guidance scale w" if knob == "guidance" else "truncation threshold psi")
        ax.set_title(METRICS[metric], fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{model}: {knob} (mean ± std over seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def table(all_curves) -> str:
    lines = ["| model | knob | " + " | ".join(METRICS) + " | seeds |",
             "|---|---|" + "---|" * (len(METRICS) + 1)]
    for model, per_metric in all_curves.items():
        for v in _order(per_metric["fid"]):
            cells = []
            for metric in METRICS:
                vals = per_metric.get(metric, {}).get(v, [])
                if not vals:
                    cells.append("-")
                    continue
                std = statistics.stdev(vals) if len(vals) > 1 else 0.0
                cells.append(f"{statistics.fmean(vals):.3g} ± {std:.2g}")
            lines.append(f"| {model} | {ARMS[model]}={knob_label(v)} | " + " | ".join(cells)
                         + f" | {len(per_metric['fid'][v])} |")
    return "\n".join(lines)


def class_grids(run: RunRecord, per_class: int = 4, path: Path | None = None) -> Path:
    """The run's class grid (a row per class, ``per_class`` samples each, fixed noise) at every value of
    its knob sweep, side by side with the value above each."""
    from gen_bench.checkpoint import load_model

    model, *_ = load_model(run.run_dir)
    model.progress = False
    config = run.config
    sampler = None
    node = (config.get("callbacks") or {}).get("evaluation", {}).get("sampler")
    if node:
        from hydra.utils import instantiate

        sampler = instantiate(node)
    knob = ARMS[run.model]
    values = [k.get(knob) for k, _ in run.knob_scores("fid")]
    k = model.spec.num_classes
    labels = torch.arange(k).repeat_interleave(per_class)
    tiles = []
    for v in values:
        with model.knobs_applied(**{knob: v}):
            x = model.sample(len(labels), torch.Generator().manual_seed(GRID_SEED), labels=labels,
                             **({"sampler": sampler} if sampler is not None else {}))
        grid = image_grid(torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"), nrow=per_class)
        picture = Image.fromarray(grid.mul(255).round().byte().permute(1, 2, 0).numpy())
        tiles.append((f"{knob}={knob_label(v)}", picture))
    w, h = tiles[0][1].size
    canvas = Image.new("RGB", (len(tiles) * (w + 8), h + 20), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (title, tile) in enumerate(tiles):
        canvas.paste(tile, (i * (w + 8), 20))
        draw.text((i * (w + 8) + 2, 4), title, fill="black")
    path = path or OUT / f"class_grids_{run.model}.png"
    canvas.save(path)
    return path


def path_lengths(runs: list[RunRecord]) -> str:
    """Markdown: the perceptual path length of every run walked with ``gen-bench interpolate``."""
    rows = defaultdict(list)
    for run in runs:
        for record in sorted((run.run_dir / INTERPOLATE).glob("*/interpolate.json")):
            r = read_json(record)
            ppl = r["path_length"]
            rows[(run.model, r.get("sampler") or "one pass", record.parent.name)].append(
                (ppl["path_length"], ppl["path_length_filtered"]))
    if not rows:
        return "(no run has been walked: gen-bench interpolate ckpt=RUN)"
    lines = ["| model | sampler | walk | path length | filtered (1st-99th percentile) | seeds |",
             "|---|---|---|---|---|---|"]
    for (model, sampler, folder), vals in sorted(rows.items()):
        plain, kept = zip(*vals, strict=True)

        def fmt(xs) -> str:
            return f"{statistics.fmean(xs):.3g} ± {statistics.stdev(xs) if len(xs) > 1 else 0:.2g}"

        lines.append(f"| {model} | {sampler} | {folder} | {fmt(plain)} | {fmt(kept)} | {len(vals)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--no-grids", action="store_true",
                        help="skip the class grids (they load the checkpoints and sample)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    runs = collect_runs(args.sweep)
    all_curves = curves(runs)
    if not all_curves:
        raise SystemExit(f"no completed ddpm or biggan run with a knob sweep under {args.sweep}")
    for model, per_metric in all_curves.items():
        print(plot(model, per_metric, args.out / f"trade_off_{model}.png"))
    text = table(all_curves) + "\n\nPerceptual path lengths:\n\n" + path_lengths(runs) + "\n"
    (args.out / "table.md").write_text(text)
    print(text)
    if not args.no_grids:
        for model in all_curves:
            seed0 = [r for r in runs if r.model == model and r.seed == 0 and r.status == "completed"]
            if seed0:
                print(class_grids(seed0[0], path=args.out / f"class_grids_{model}.png"))
    walls = [r.summary.get("wall_time_s") for r in runs if r.summary.get("wall_time_s")]
    if walls:
        print(f"{len(walls)} runs, {sum(walls):.0f} s of run time in all ({math.fsum(walls) / 60:.1f} min)")


if __name__ == "__main__":
    main()
