"""Figures of experiments/memorization_vs_size from the finished sweep and its controls:

* a markdown table, one row per (model, N) and per (control, N): FID against the held-out digits,
  copy rate, C_T and the nearest-neighbour distance ratio (mean distance of the samples to their
  nearest training image over that of the held-out digits), each mean ± std over seeds;
* ``memorization_vs_n.png``: those four scores against N, one line per model, the controls dashed;
* ``grid_n<N>.png`` per N: for every model (its seed-0 run) and control, the first samples of a
  seeded draw, each beside its nearest training image, captioned with their pixel distance d1 and
  the ratio d1/d2 to the second-nearest (red: counted as a copy).

    python experiments/memorization_vs_size/figures.py runs/sweeps/memorization_vs_size [--out DIR]
        [--no-grids]
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

from gen_bench.checkpoint import load_model  # noqa: E402
from gen_bench.metrics.memorization import (  # noqa: E402
    CONTROL_PREFIX,
    CONTROLS,
    control_samples,
    copy_mask,
    copy_ratio,
    nearest_training_neighbours,
)
from gen_bench.rundir import RunRecord, collect_runs, read_run  # noqa: E402

OUT = Path(__file__).parent
MODELS = ["dcgan", "wgan_gp", "r3gan", "ddpm", "flow_matching", "pixelcnn"]
SCORES = {"fid": "FID vs held-out", "copy_rate": "copy rate", "ct": "C_T", "nn_ratio": "NN distance ratio"}
GRID_SEED = 1234
GRID_SAMPLES = 6


@dataclass
class Row:
    """One run's final scores."""

    model: str            # dcgan, ..., or control:copies
    n: int                # training samples (the subset, or the whole split)
    seed: int | None
    steps: int | None
    scores: dict[str, float]
    run_dir: Path
    subset: str           # the run's data.subset override: 32, ..., null (all)


def _memorization_protocol(run: RunRecord) -> dict:
    ev = run.summary.get("eval") or {}
    pid = ((ev.get("scores") or {}).get("copy_rate") or {}).get("protocol_id")
    return (ev.get("protocols") or {}).get(pid) or {}


def rows(runs: list[RunRecord]) -> list[Row]:
    """The completed runs (and controls) that carry the memorization scores."""
    out = []
    for run in runs:
        protocol = _memorization_protocol(run)
        if run.status != "completed" or "num_train" not in protocol:
            continue
        scores = {k: run.score(k)[0] for k in ("fid", "copy_rate", "ct", "nn_distance_mean")}
        base = protocol.get("heldout_nn_distance_mean")
        nn = scores.pop("nn_distance_mean")
        scores["nn_ratio"] = nn / base if nn is not None and base else None
        subset = (run.config.get("data") or {}).get("subset")
        out.append(Row(run.model, int(protocol["num_train"]), run.seed, run.summary.get("steps"),
                       {k: v for k, v in scores.items() if v is not None}, run.run_dir,
                       "null" if subset is None else str(subset)))
    return out


def _order(name: str) -> tuple[int, str]:
    if name in MODELS:
        return MODELS.index(name), name
    return len(MODELS) + (list(CONTROLS).index(name.removeprefix(CONTROL_PREFIX))
                          if name.removeprefix(CONTROL_PREFIX) in CONTROLS else 99), name


def aggregate(table_rows: list[Row]) -> dict[tuple[str, int], dict[str, tuple[float, float, int]]]:
    """(model, N) -> score -> (mean, std over seeds (0 for one), number of seeds)."""
    groups: dict[tuple[str, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in table_rows:
        for k, v in r.scores.items():
            groups[(r.model, r.n)][k].append(v)
    return {key: {k: (statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v))
                  for k, v in per.items()}
            for key, per in groups.items()}


def table(table_rows: list[Row]) -> str:
    """Markdown: one row per (model or control, N), every score as mean ± std over seeds."""
    agg = aggregate(table_rows)
    steps = defaultdict(set)
    for r in table_rows:
        steps[(r.model, r.n)].add(r.steps)
    lines = ["| model | N | steps | " + " | ".join(SCORES.values()) + " | seeds |",
             "|---|---|---|" + "---|" * (len(SCORES) + 1)]
    for key in sorted(agg, key=lambda k: (_order(k[0]), k[1])):
        cells = [f"{agg[key][s][0]:.3g} ± {agg[key][s][1]:.2g}" if s in agg[key] else "-" for s in SCORES]
        seeds = max((v[2] for v in agg[key].values()), default=0)
        st = ",".join(str(s) for s in sorted(steps[key], key=lambda s: (s is None, s or 0))
                      if s is not None) or "-"
        lines.append(f"| {key[0]} | {key[1]} | {st} | " + " | ".join(cells) + f" | {seeds} |")
    return "\n".join(lines)


def plot(table_rows: list[Row], path: Path) -> Path:
    """Each score against N (log axis), mean ± std over seeds; models solid, controls dashed grey."""
    agg = aggregate(table_rows)
    names = sorted({k[0] for k in agg}, key=_order)
    fig, axes = plt.subplots(1, len(SCORES), figsize=(3.4 * len(SCORES), 3.2), dpi=110)
    for ax, (score, label) in zip(axes, SCORES.items(), strict=True):
        for name in names:
            pts = sorted((n, v[score]) for (m, n), v in agg.items() if m == name and score in v)
            if not pts:
                continue
            xs = [n for n, _ in pts]
            control = name.startswith(CONTROL_PREFIX)
            ax.errorbar(xs, [v[0] for _, v in pts], yerr=[v[1] for _, v in pts], marker="o", ms=3, capsize=2,
                        label=name, linestyle="--" if control else "-", alpha=0.6 if control else 1)
        ax.set_xscale("log", base=2)
        ns = sorted({n for _, n in agg})
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.minorticks_off()
        ax.set_xlabel("training samples N")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6)
    fig.suptitle("memorization against training-set size (digits 8x8; mean ± std over seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _draw(row: Row, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(k generated or control samples, the training subset) of one run or control."""
    if row.model.startswith(CONTROL_PREFIX):  # its config.yaml holds the resolved data config
        dm = instantiate(read_run(row.run_dir).config["data"])
        train, heldout = dm.tensors("train")[0], dm.tensors("heldout")[0]
        return control_samples(row.model.removeprefix(CONTROL_PREFIX), train, heldout, k, GRID_SEED), train
    model, dm, cfg, _ = load_model(row.run_dir)
    sampler_cfg = (cfg.get("callbacks") or {}).get("evaluation", {}).get("sampler")
    kw = {"sampler": instantiate(sampler_cfg)} if sampler_cfg is not None else {}
    with torch.no_grad():
        x = model.sample(k, torch.Generator().manual_seed(GRID_SEED), **kw)
    return x.cpu(), dm.tensors("train")[0]


def grid(table_rows: list[Row], n: int, path: Path, k: int = GRID_SAMPLES) -> Path | None:
    """For each model (seed 0) and control at training-set size ``n``: ``k`` samples, each beside its
    nearest training image, captioned with d1 (pixel L2) and d1/d2; red where the copy test fires."""
    picks = {}
    for r in sorted(table_rows, key=lambda r: (_order(r.model), r.seed if r.seed is not None else 0)):
        if r.n == n and r.model not in picks:
            picks[r.model] = r
    if not picks:
        return None
    fig, axes = plt.subplots(len(picks), 2 * k, figsize=(1.1 * 2 * k, 0.6 + 1.55 * len(picks)), dpi=110,
                             squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for i, (name, row) in enumerate(picks.items()):
        samples, train = _draw(row, k)
        d1, d2, idx = nearest_training_neighbours(samples.flatten(1), train.flatten(1))
        copies, ratio = copy_mask(d1, d2), copy_ratio(d1, d2)
        for j in range(k):
            label = f"d1={float(d1[j]):.2f}\nd1/d2={float(ratio[j]):.2f}"
            for c, (image, caption) in enumerate(((samples[j], ""), (train[idx[j]], label))):
                ax = axes[i, 2 * j + c]
                ax.imshow(image.float().clamp(0, 1).permute(1, 2, 0).squeeze(-1), cmap="gray", vmin=0, vmax=1,
                          interpolation="nearest")
                if caption:
                    ax.set_xlabel(caption, fontsize=6, color="tab:red" if bool(copies[j]) else "black")
        axes[i, 0].set_ylabel(name.removeprefix(CONTROL_PREFIX), fontsize=7)
    for j in range(k):
        axes[0, 2 * j].set_title("sample", fontsize=7)
        axes[0, 2 * j + 1].set_title("nearest train", fontsize=7)
    fig.suptitle(f"N = {n}: samples beside their nearest training image (red: d1/d2 <= 1/3, a copy)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="figures of experiments/memorization_vs_size")
    parser.add_argument("sweep", nargs="?", default="runs/sweeps/memorization_vs_size")
    parser.add_argument("--out", default=str(OUT), help="where the pictures go")
    parser.add_argument("--no-grids", action="store_true",
                        help="skip the sample grids (they load checkpoints and sample)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table_rows = rows(collect_runs(args.sweep))
    if not table_rows:
        raise SystemExit(f"no completed run with memorization scores under {args.sweep}")
    print(table(table_rows))
    print(f"-> {plot(table_rows, out / 'memorization_vs_n.png')}")
    if not args.no_grids:
        for n in sorted({r.n for r in table_rows}):
            print(f"-> {grid(table_rows, n, out / f'grid_n{n}.png')}")


if __name__ == "__main__":
    main()
