"""Tables and figures of experiments/mode_collapse from finished sweeps.

    .venv/bin/python experiments/mode_collapse/figures.py runs/sweeps/mode_collapse_grid25 \\
        runs/sweeps/mode_collapse_grid25_paper runs/sweeps/mode_collapse_stacked ... [--out DIR]

For each sweep folder: a markdown table (printed, and written to ``DIR/<sweep>.md``) with one row per
arm (DCGAN, PacDCGAN2, PacDCGAN4, WGAN-GP, R3GAN, DDPM, flow matching, PixelCNN), each score as mean
± std over the seeds, then the reference rows at the same sample count (a perfect generator; for
images also real held-out digits through the same classifier) and the papers' published rows of the
same setting; and the figures, written to DIR: ``<sweep>_samples.png`` (seed 0's final scatter over
the 25 mode centres for 2-D data, its final sample grid for images, per arm, four to a row) and, for
stacked digits, ``<sweep>_modes.png`` (seed 0's samples per mode, the 1000 modes sorted by count, all
samples and the confidently classified ones, against the uniform count of a perfect generator).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from gen_bench.io import read_json  # noqa: E402
from gen_bench.rundir import EVAL, RunRecord, collect_runs  # noqa: E402

OUT = Path(__file__).parent
ARMS = ["DCGAN", "PacDCGAN2", "PacDCGAN3", "PacDCGAN4", "WGAN-GP", "R3GAN", "DDPM", "DDPM (v-prediction)",
        "flow matching",
        "PixelCNN"]
NAMES = {"dcgan": "DCGAN", "wgan_gp": "WGAN-GP", "r3gan": "R3GAN", "ddpm": "DDPM",
         "flow_matching": "flow matching", "pixelcnn": "PixelCNN"}

# The papers' published rows: (row label, source, {column: "value"}); PacGAN reports the standard error
# over 10 (Tables 1-2) or 50 (Table 3) trials, VEEGAN plain averages over 5 runs.
PAPERS = {
    "grid25": [
        ("GAN", "VEEGAN Table 1", {"modes": "3.3", "hq": "0.5%"}),
        ("ALI", "VEEGAN Table 1", {"modes": "15.8", "hq": "1.6%"}),
        ("Unrolled GAN", "VEEGAN Table 1", {"modes": "23.6", "hq": "16%"}),
        ("VEEGAN", "VEEGAN Table 1", {"modes": "24.6", "hq": "40%"}),
        ("GAN", "PacGAN Table 1", {"modes": "17.3 ± 0.8", "hq": "94.8 ± 0.7%", "kl": "0.70 ± 0.07"}),
        ("ALI", "PacGAN Table 1", {"modes": "24.1 ± 0.4", "hq": "95.7 ± 0.6%", "kl": "0.14 ± 0.03"}),
        ("PacGAN2", "PacGAN Table 1", {"modes": "23.8 ± 0.7", "hq": "91.3 ± 0.8%", "kl": "0.13 ± 0.04"}),
        ("PacGAN3", "PacGAN Table 1", {"modes": "24.6 ± 0.4", "hq": "94.2 ± 0.4%", "kl": "0.06 ± 0.02"}),
        ("PacGAN4", "PacGAN Table 1", {"modes": "24.8 ± 0.2", "hq": "93.6 ± 0.6%", "kl": "0.04 ± 0.01"}),
    ],
    "stacked": [
        ("DCGAN", "VEEGAN Table 2", {"modes": "99", "kl": "3.4"}),
        ("ALI", "VEEGAN Table 2", {"modes": "16", "kl": "5.4"}),
        ("Unrolled GAN", "VEEGAN Table 2", {"modes": "48.7", "kl": "4.32"}),
        ("VEEGAN", "VEEGAN Table 2", {"modes": "150", "kl": "2.95"}),
        ("DCGAN", "PacGAN Table 2", {"modes": "78.9 ± 6.46", "kl": "4.50 ± 0.127"}),
        ("PacDCGAN2", "PacGAN Table 2", {"modes": "1000.0 ± 0.00", "kl": "0.06 ± 0.003"}),
        ("PacDCGAN3", "PacGAN Table 2", {"modes": "1000.0 ± 0.00", "kl": "0.06 ± 0.003"}),
        ("PacDCGAN4", "PacGAN Table 2", {"modes": "1000.0 ± 0.00", "kl": "0.07 ± 0.005"}),
    ],
    "stacked_quarter": [
        ("DCGAN", "PacGAN Table 3, D = G/4", {"modes": "30.6 ± 20.73", "kl": "5.99 ± 0.42"}),
        ("Unrolled GAN, 10 steps", "PacGAN Table 3, D = G/4",
         {"modes": "327.2 ± 74.67", "kl": "4.66 ± 0.46"}),
        ("DCGAN (their implementation)", "PacGAN Table 3, D = G/4",
         {"modes": "78.5 ± 17.56", "kl": "5.21 ± 0.19"}),
        ("PacDCGAN2", "PacGAN Table 3, D = G/4", {"modes": "484.5 ± 32.99", "kl": "2.61 ± 0.22"}),
        ("PacDCGAN3", "PacGAN Table 3, D = G/4", {"modes": "601.3 ± 32.18", "kl": "2.00 ± 0.17"}),
        ("PacDCGAN4", "PacGAN Table 3, D = G/4", {"modes": "667.4 ± 29.00", "kl": "1.81 ± 0.15"}),
        ("DCGAN (their implementation)", "PacGAN Table 3, D = G/2",
         {"modes": "487.7 ± 34.59", "kl": "2.24 ± 0.15"}),
        ("PacDCGAN2", "PacGAN Table 3, D = G/2", {"modes": "840.7 ± 15.92", "kl": "1.00 ± 0.05"}),
        ("PacDCGAN4", "PacGAN Table 3, D = G/2", {"modes": "820.2 ± 25.50", "kl": "1.15 ± 0.14"}),
    ],
}


def arm(run: RunRecord) -> str:
    """The row a run belongs to: its model, PacDCGANm for DCGAN with packs of m, a diffusion model's
    target when it is not eps (``model.diffusion.prediction``)."""
    model = run.config.get("model") or {}
    pack = int(model.get("pack") or 1)
    if run.model == "dcgan" and pack > 1:
        return f"PacDCGAN{pack}"
    prediction = (model.get("diffusion") or {}).get("prediction") or "eps"
    return (NAMES.get(run.model, run.model) + (f" (pack {pack})" if pack > 1 else "")
            + (f" ({prediction}-prediction)" if prediction != "eps" else ""))


def mean_std(values: list[float], fmt: str = ".3g", scale: float = 1.0) -> str:
    """``mean ± std`` (sample std over seeds) of the finite values, ``-`` for none."""
    values = [v * scale for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{statistics.fmean(values):{fmt}} ± {statistics.stdev(values):{fmt}}"


def value(run: RunRecord, name: str) -> float | None:
    return run.score(name)[0]


def groups(runs: list[RunRecord]) -> dict[str, list[RunRecord]]:
    """Completed runs by arm, in ``ARMS`` order, then the others."""
    out: dict[str, list[RunRecord]] = {}
    for run in runs:
        if run.status == "completed":
            out.setdefault(arm(run), []).append(run)
    order = {name: i for i, name in enumerate(ARMS)}
    return dict(sorted(out.items(), key=lambda kv: (order.get(kv[0], len(ARMS)), kv[0])))


def setting(sweep: Path) -> str:
    """The papers' setting a sweep is compared with: ``grid25``, ``stacked`` or ``stacked_quarter``."""
    name = sweep.name
    if "quarter" in name:
        return "stacked_quarter"
    return "grid25" if "grid25" in name else "stacked"


def table(sweep: Path, runs: list[RunRecord]) -> str:
    """The markdown table of one sweep: ours (mean ± std over seeds), the references, the papers'."""
    by_arm = groups(runs)
    first = next(iter(by_arm.values()))[0] if by_arm else None
    toy = first is not None and first.kind == "toy2d"
    if toy:
        cols = [("modes (of 25)", "modes", ".3g", 1), ("high quality (%)", "hq_fraction", ".1f", 100),
                ("reverse KL", "mode_kl", ".3g", 1), ("FID", "fid", ".3g", 1)]
    else:
        cols = [("modes (of 1000)", "modes", ".4g", 1), ("KL", "mode_kl", ".3g", 1),
                ("confident (%)", "confident_fraction", ".1f", 100),
                ("modes among confident", "modes_confident", ".4g", 1), ("FID", "fid", ".3g", 1)]
    header = ["arm", *[c[0] for c in cols], "steps", "seeds", "run (min)"]
    lines = [f"**{sweep.name}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, members in by_arm.items():
        cells = [mean_std([value(r, key) for r in members], fmt, scale) for _, key, fmt, scale in cols]
        steps = sorted({r.summary.get("steps") for r in members})
        minutes = mean_std([r.summary.get("wall_time_s") for r in members], ".1f", 1 / 60)
        row = [name, *cells, "/".join(map(str, steps)), str(len(members)), minutes]
        lines.append("| " + " | ".join(row) + " |")
    if first is not None:
        protocols = (first.summary.get("eval") or {}).get("protocols", {}).values()
        count = next((p.get("num_generated") for p in protocols if p.get("metric") == "modes"), None)
        perfect = {"modes": value(first, "modes_perfect"), "mode_kl": value(first, "mode_kl_perfect"),
                   "hq_fraction": value(first, "hq_fraction_perfect"), "confident_fraction": 1.0,
                   "modes_confident": value(first, "modes_perfect")}
        label = f"perfect generator, {count} samples" + ("" if toy else " (exact classifier)")
        lines.append("| " + " | ".join([f"*{label}*", *[mean_std([perfect.get(key)], fmt, scale)
                                                         for _, key, fmt, scale in cols], "", "", ""]) + " |")
        if not toy:
            real = {k: value(first, f"{k}_real") for k in ("modes", "mode_kl", "confident_fraction",
                                                           "modes_confident")}
            lines.append("| " + " | ".join([f"*real held-out digits, {count} drawn, same classifier*",
                                            *[mean_std([real.get(key)], fmt, scale)
                                              for _, key, fmt, scale in cols], "", "", ""]) + " |")
    paper_cols = {"modes": 1, "hq": 2, "kl": 3} if toy else {"modes": 1, "kl": 2}
    for label, source, numbers in PAPERS[setting(sweep)]:
        cells = [""] * len(cols)
        for key, pos in paper_cols.items():
            cells[pos - 1] = numbers.get(key, "")
        lines.append("| " + " | ".join([f"{label} ({source})", *cells, "", "", ""]) + " |")
    return "\n".join(lines)


def tiled(tiles: list[tuple[str, Path]], path: Path, per_row: int = 4) -> Path | None:
    """The images ``tiles`` (caption, file), ``per_row`` to a row, each captioned."""
    images = [(caption, Image.open(file).convert("RGB")) for caption, file in tiles if file.is_file()]
    if not images:
        return None
    w, h = max(t.width for _, t in images), max(t.height for _, t in images)
    cols = min(per_row, len(images))
    rows = -(-len(images) // cols)
    canvas = Image.new("RGB", (cols * (w + 10), rows * (h + 24)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (caption, tile) in enumerate(images):
        x, y = (i % cols) * (w + 10), (i // cols) * (h + 24)
        canvas.paste(tile, (x, y + 24))
        draw.text((x + 4, y + 4), caption, fill="black")
    canvas.save(path)
    return path


def seed0(members: list[RunRecord]) -> RunRecord:
    return min(members, key=lambda r: (r.seed is None, r.seed))


def samples_figure(sweep: Path, runs: list[RunRecord], out: Path) -> Path | None:
    """Seed 0's final scatter (2-D) or sample grid (images) of every arm, four to a row."""
    tiles = []
    for name, members in groups(runs).items():
        run = seed0(members)
        picture = "scatter_final.png" if run.kind == "toy2d" else "final.png"
        tiles.append((f"{name} (seed {run.seed})", run.run_dir / "samples" / picture))
    return tiled(tiles, out / f"{sweep.name}_samples.png")


def modes_figure(sweep: Path, runs: list[RunRecord], out: Path) -> Path | None:
    """Seed 0's samples per mode of every arm, modes sorted by count, with the confident ones."""
    found = []
    for name, members in groups(runs).items():
        run = seed0(members)
        path = run.run_dir / EVAL / "modes_final.json"
        if path.is_file():
            found.append((name, run, read_json(path)))
    if not found or found[0][1].kind == "toy2d":
        return None
    fig, axes = plt.subplots(1, len(found), figsize=(3.2 * len(found), 3), sharey=True, squeeze=False)
    for ax, (name, _run, hist) in zip(axes[0], found, strict=True):
        counts = sorted(hist["hist"], reverse=True)
        ax.plot(range(1, len(counts) + 1), [max(c, 0.5) for c in counts], label="all samples")
        if "confident_hist" in hist:
            confident = sorted(hist["confident_hist"], reverse=True)
            ax.plot(range(1, len(confident) + 1), [max(c, 0.5) for c in confident], label="confident")
        ax.axhline(hist["num_generated"] / hist["num_modes"], color="gray", ls="--", lw=0.8,
                   label="uniform (perfect)")
        ax.set_yscale("log")
        ax.set_title(f"{name}: {sum(c > 0 for c in counts)} modes", fontsize=9)
        ax.set_xlabel("mode rank")
    axes[0][0].set_ylabel(f"samples (of {found[0][2]['num_generated']})")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{sweep.name}: samples per mode, seed 0", fontsize=10)
    fig.tight_layout()
    path = out / f"{sweep.name}_modes.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for sweep in args.sweeps:
        runs = collect_runs(sweep)
        text = table(sweep, runs)
        print(text + "\n")
        (args.out / f"{sweep.name}.md").write_text(text + "\n")
        for fig in (samples_figure(sweep, runs, args.out), modes_figure(sweep, runs, args.out)):
            if fig is not None:
                print(f"wrote {fig}")
        failed = [r for r in runs if r.status != "completed"]
        for r in failed:
            print(f"not completed: {r.run_dir} ({r.status}: {r.summary.get('error', '')})")


if __name__ == "__main__":
    main()
