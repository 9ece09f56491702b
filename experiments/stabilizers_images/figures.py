"""Table and figures of experiments/stabilizers_images from a finished sweep.

    .venv/bin/python experiments/stabilizers_images/figures.py runs/sweeps/stabilizers_images [--out DIR]

* ``table.md`` (also printed): per learning-rate setting and arm (none, each stabilizer alone, all),
  mean ± std over the seeds of the final FID, modes (of 1,000), mode KL, the share of confidently
  classified samples and the modes among them, and two statistics of the training log that show a
  discriminator overpowering its generator: the share of logged steps of the second half of training
  with mean D(fake) below 0.05 ("D wins"), and the largest generator loss (smoothed over 5 logged steps).
* ``loss_curves.png``: loss_d and loss_g of every seed against step, one panel per arm, one row per
  setting, shared y axes within a row.
* ``samples.png``: seed 0's final samples, one tile per arm, one row per setting.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from gen_bench.callbacks import read_logged_rows  # noqa: E402
from gen_bench.rundir import RunRecord, collect_runs  # noqa: E402

OUT = Path(__file__).parent
ARMS = ["none", "spectral_norm", "label_smoothing", "instance_noise", "grad_clip", "all"]
D_WINS = 0.05  # mean D(fake) below this: the discriminator rejects (almost) every generated sample
COLUMNS = [("FID", "fid", ".3g", 1), ("modes (of 1000)", "modes", ".4g", 1), ("KL", "mode_kl", ".3g", 1),
           ("confident (%)", "confident_fraction", ".1f", 100),
           ("modes among confident", "modes_confident", ".3g", 1)]


def settings_of(runs: list[RunRecord]) -> list[str]:
    """The sweep's learning-rate settings, DCGAN's own first."""
    return sorted({arm_of(r)[0] for r in runs}, key=lambda s: (s != "default", s))


def smooth(values: list[float], k: int = 5) -> list[float]:
    """Running mean over ``k`` logged steps (len(values) - k + 1 values)."""
    return torch.tensor(values).unfold(0, k, 1).mean(1).tolist()


def arm_of(run: RunRecord) -> tuple[str, str]:
    """(setting, stabilizer) of a run of the sweep."""
    return str(run.config.get("setting", "?")), str(run.config.get("stabilizer", "?"))


def log_stats(rows: list[dict[str, float]]) -> tuple[float | None, float | None]:
    """(share of second-half logged steps with D(fake) < D_WINS, max of loss_g smoothed over 5 rows)."""
    fake = [r["train/d_fake"] for r in rows if "train/d_fake" in r]
    loss_g = [r["train/loss_g"] for r in rows if "train/loss_g" in r]
    wins = None
    if fake:
        half = fake[len(fake) // 2:]
        wins = sum(f < D_WINS for f in half) / len(half)
    peak = None
    if len(loss_g) >= 5:
        peak = max(smooth(loss_g))
    return wins, peak


def _pm(values: list[float], fmt: str, scale: float) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values) * scale
    std = (statistics.stdev(values) if len(values) > 1 else 0.0) * scale
    return f"{mean:{fmt}} ± {std:{fmt}}"


def table(runs: list[RunRecord]) -> str:
    header = (["setting", "arm"] + [c[0] for c in COLUMNS]
              + ["D wins (2nd half, %)", "max loss_g", "seeds", "wall time per run (s)"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    settings = settings_of(runs)
    for setting in settings:
        for stab in ARMS:
            done = [r for r in runs if arm_of(r) == (setting, stab) and r.status == "completed"]
            if not done:
                continue
            cells = [setting, stab]
            for _, key, fmt, scale in COLUMNS:
                cells.append(_pm([v for r in done if (v := r.score(key)[0]) is not None], fmt, scale))
            stats = [log_stats(read_logged_rows(r.run_dir)) for r in done]
            cells.append(_pm([w for w, _ in stats if w is not None], ".0f", 100))
            cells.append(_pm([p for _, p in stats if p is not None], ".2f", 1))
            cells.append(str(len(done)))
            cells.append(_pm([float(r.summary["wall_time_s"]) for r in done if r.summary.get("wall_time_s")],
                             ".0f", 1))
            lines.append("| " + " | ".join(cells) + " |")
    first = next((r for r in runs if r.status == "completed"), None)
    if first is not None:
        real = [first.score(f"{k}_real")[0]
                for k in ("modes", "mode_kl", "confident_fraction", "modes_confident")]
        perfect = [first.score(k)[0] for k in ("modes_perfect", "mode_kl_perfect")]
        fmt = lambda v, f=".4g", s=1: "-" if v is None else f"{v * s:{f}}"  # noqa: E731
        lines.append(f"| *real held-out digits, same count* | | - | {fmt(real[0])} | {fmt(real[1], '.3g')} | "
                     f"{fmt(real[2], '.1f', 100)} | {fmt(real[3])} | | | | |")
        lines.append(f"| *perfect generator, exact classifier* | | - | {fmt(perfect[0])} | "
                     f"{fmt(perfect[1], '.3g')} | 100 | {fmt(perfect[0])} | | | | |")
    return "\n".join(lines)


def loss_figure(runs: list[RunRecord], path: Path) -> Path:
    settings = settings_of(runs)
    fig, axes = plt.subplots(len(settings), len(ARMS), figsize=(3.1 * len(ARMS), 2.6 * len(settings)),
                             sharex=True, sharey="row", squeeze=False, dpi=100)
    for i, setting in enumerate(settings):
        for j, stab in enumerate(ARMS):
            ax = axes[i, j]
            for r in sorted((r for r in runs if arm_of(r) == (setting, stab)), key=lambda r: r.seed):
                rows = read_logged_rows(r.run_dir)
                for key, color in (("train/loss_d", "tab:blue"), ("train/loss_g", "tab:orange")):
                    pts = [(row["step"], row[key]) for row in rows if key in row]
                    if len(pts) < 5:
                        continue
                    xs, ys = zip(*pts, strict=True)
                    ax.plot(xs[4:], smooth(list(ys)), lw=1, alpha=0.8, color=color,
                            label=key.removeprefix("train/") if r.seed == 0 else None)
            ax.set_title(f"{stab} ({setting})", fontsize=9)
            ax.grid(alpha=0.3)
            if i == len(settings) - 1:
                ax.set_xlabel("step", fontsize=8)
            if j == 0:
                ax.set_ylabel("loss (every seed)", fontsize=8)
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def samples_figure(runs: list[RunRecord], path: Path) -> Path:
    settings = settings_of(runs)
    fig, axes = plt.subplots(len(settings), len(ARMS), figsize=(2.6 * len(ARMS), 2.8 * len(settings)),
                             squeeze=False, dpi=100)
    for i, setting in enumerate(settings):
        for j, stab in enumerate(ARMS):
            ax = axes[i, j]
            ax.axis("off")
            seed0 = [r for r in runs if arm_of(r) == (setting, stab) and r.seed == 0]
            grid = seed0[0].run_dir / "samples" / "final.png" if seed0 else None
            if grid is not None and grid.is_file():
                ax.imshow(Image.open(grid))
            ax.set_title(f"{stab} ({setting})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    runs = collect_runs(args.sweep)
    args.out.mkdir(parents=True, exist_ok=True)
    text = table(runs)
    (args.out / "table.md").write_text(text + "\n")
    print(text)
    print(loss_figure(runs, args.out / "loss_curves.png"))
    print(samples_figure(runs, args.out / "samples.png"))


if __name__ == "__main__":
    main()
