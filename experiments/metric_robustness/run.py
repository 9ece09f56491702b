"""How far can a ranking of generative models be trusted? Sample count, feature space, interval width.

On a finished sweep (by default ``runs/sweeps/compare_compute``): each completed run draws
``--draw`` samples once with the sampler its scores were drawn with (``gen-bench sample``), then the
same samples are scored with ``gen-bench eval samples=...`` at every count of ``--counts`` (the first
N of the same draw, so counts differ only in N) in three feature spaces at once: the digit
classifier's (the sweep's protocol), a random network's (``eval.extractors=[random]``) and the
pixels' wavelet packets (FWD, no network). Writes ``results.json`` and, from it, the tables of
``README.md`` and the figures:

* ``fid_vs_count.png``: FID (mean +- std over seeds) against N per model, one panel per space;
* ``ci_width_vs_count.png``: the width of the bootstrap 95% interval of FID against N;
* the Kendall tau between the model order of every (space, N) and the reference order
  (classifier, largest N), from the per-run means over seeds.

    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python experiments/metric_robustness/run.py \\
        runs/sweeps/compare_compute --out runs/metric_robustness

Re-running skips what is done (samples and scores are read back from disk).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

HERE = Path(__file__).parent
SAMPLERS = {"DDIMSampler": "ddim", "DDPMSampler": "ddpm", "DPMSolverPP": "dpmpp", "EulerSampler": "euler",
            "HeunSampler": "heun"}
SPACES = {"classifier": "fid", "random": "fid@random", "wavelet": "fwd"}


def gen_bench(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", str(HERE.parents[1]))}
    print("[metric_robustness] gen-bench", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "gen_bench.cli", *args], check=True, env=env)


def sampler_overrides(run_cfg) -> list[str]:
    """The ``sampler=...`` overrides of the sampler the run's training-time scores were drawn with."""
    node = OmegaConf.select(run_cfg, "callbacks.evaluation.sampler")
    if node is None:
        return []
    name = SAMPLERS[str(node["_target_"]).rsplit(".", 1)[-1]]
    return [f"sampler={name}", *(f"sampler.{k}={v}" for k, v in node.items() if not k.startswith("_"))]


def score_run(run: Path, out: Path, draw: int, counts: list[int], num_reference: int) -> list[dict]:
    cfg = OmegaConf.load(run / "config.yaml")
    model, seed = cfg.model.name, int(cfg.seed)
    label = f"{model}" + (f"-{cfg.backbone}" if cfg.get("backbone") not in (None, "dcgan") else "")
    samples = out / run.name / "samples"
    if not (samples / "samples.pt").exists():
        gen_bench("sample", f"ckpt={run}", f"n={draw}", "seed=7", f"out={samples}", *sampler_overrides(cfg))
    rows = []
    for n in counts:
        dest = out / run.name / f"n{n}"
        if not (dest / "metrics.json").exists():
            gen_bench("eval", f"samples={samples / 'samples.pt'}", f"data={cfg.data.name}",
                      f"data.image_size={cfg.data.image_size}", f"name={label}", f"eval.num_samples={n}",
                      "eval.extractor=classifier", "eval.extractors=[random]",
                      "eval.metrics=[fid,kid,prdc,fwd]",
                      f"eval.prdc.max_samples={n}", f"eval.prdc.num_reference={num_reference}",
                      "eval.bootstrap.num=200", f"out_dir={dest}")
        scores = json.loads((dest / "metrics.json").read_text())["eval"]["scores"]
        row = {"run": run.name, "model": label, "seed": seed, "n": n}
        for space, key in SPACES.items():
            s = scores[key]
            row[space] = s["value"]
            if s.get("ci_low") is not None:
                row[f"{space}_ci"] = [s["ci_low"], s["ci_high"]]
        rows.append(row)
    return rows


def analyse(rows: list[dict], out: Path) -> str:
    """Tables (Markdown) and figures from the rows; returns the Markdown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import kendalltau

    models = sorted({r["model"] for r in rows})
    counts = sorted({r["n"] for r in rows})

    def values(model: str, n: int, key: str) -> list[float]:
        return [r[key] for r in rows if r["model"] == model and r["n"] == n and r.get(key) is not None]

    def mean(model: str, n: int, space: str) -> float:
        return statistics.fmean(values(model, n, space))

    lines = []
    for space in SPACES:
        lines += [f"\n**{space}** ({SPACES[space]}): mean +- std over seeds\n",
                  "| model | " + " | ".join(f"N = {n}" for n in counts) + " |",
                  "|---|" + "---|" * len(counts)]
        for m in sorted(models, key=lambda m: mean(m, counts[-1], "classifier")):
            cells = []
            for n in counts:
                v = values(m, n, space)
                cells.append(f"{statistics.fmean(v):.4g} +- {statistics.stdev(v):.2g}" if len(v) > 1
                             else f"{v[0]:.4g}")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    # interval widths
    lines += ["\n**Bootstrap 95% interval width of FID** (mean over runs; classifier | random features)\n",
              "| model | " + " | ".join(f"N = {n}" for n in counts) + " |", "|---|" + "---|" * len(counts)]
    for m in models:
        cells = []
        for n in counts:
            w = [[r[f"{s}_ci"][1] - r[f"{s}_ci"][0] for r in rows if r["model"] == m and r["n"] == n]
                 for s in ("classifier", "random")]
            cells.append(f"{statistics.fmean(w[0]):.3g} \\| {statistics.fmean(w[1]):.3g}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    # rank agreement against the reference order
    ref = [mean(m, counts[-1], "classifier") for m in models]
    lines += [f"\n**Kendall tau** of the model order (means over seeds) against classifier FID at N = "
              f"{counts[-1]}\n", "| space | " + " | ".join(f"N = {n}" for n in counts) + " |",
              "|---|" + "---|" * len(counts)]
    for space in SPACES:
        taus = [kendalltau(ref, [mean(m, n, space) for m in models]).statistic for n in counts]
        lines.append(f"| {space} | " + " | ".join(f"{t:+.2f}" for t in taus) + " |")
    # single runs: how often one run of model A against one run of model B (every seed pairing) comes
    # out in the reference order; a user comparing one run per model sees this, not the means
    lines += ["\n**Single-run comparisons in the reference order**: over every pair of models and every "
              "pairing of their seeds, the share ordered as the reference (classifier FID at N = "
              f"{counts[-1]}, means over seeds); in brackets the closest pair of the reference\n",
              "| space | " + " | ".join(f"N = {n}" for n in counts) + " |", "|---|" + "---|" * len(counts)]
    order = sorted(models, key=lambda m: mean(m, counts[-1], "classifier"))
    close = min(zip(order, order[1:], strict=False),
                key=lambda p: mean(p[1], counts[-1], "classifier") / mean(p[0], counts[-1], "classifier"))
    for space in SPACES:
        cells = []
        for n in counts:
            agree = total = 0
            close_agree = close_total = 0
            for i, a in enumerate(order):
                for b in order[i + 1:]:
                    for va in values(a, n, space):
                        for vb in values(b, n, space):
                            agree, total = agree + (va < vb), total + 1
                            if (a, b) == close:
                                close_agree, close_total = close_agree + (va < vb), close_total + 1
            cells.append(f"{agree / total:.0%} ({close[0]} < {close[1]}: {close_agree}/{close_total})")
        lines.append(f"| {space} | " + " | ".join(cells) + " |")
    fig, axes = plt.subplots(1, len(SPACES), figsize=(5 * len(SPACES), 4))
    for ax, space in zip(axes, SPACES, strict=True):
        for m in models:
            mu = [mean(m, n, space) for n in counts]
            sd = [statistics.stdev(v) if len(v := values(m, n, space)) > 1 else 0 for n in counts]
            ax.errorbar(counts, mu, yerr=sd, marker="o", capsize=3, label=m)
        ax.set(xscale="log", yscale="log", xlabel="generated samples N", ylabel=SPACES[space], title=space)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / "fid_vs_count.png", dpi=110)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for m in models:
        w = [statistics.fmean([r["classifier_ci"][1] - r["classifier_ci"][0] for r in rows
                               if r["model"] == m and r["n"] == n]) for n in counts]
        ax.plot(counts, w, marker="o", label=m)
    ax.set(xscale="log", yscale="log", xlabel="generated samples N", ylabel="FID 95% interval width",
           title="bootstrap interval width (classifier features)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / "ci_width_vs_count.png", dpi=110)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path, nargs="?", default=Path("runs/sweeps/compare_compute"))
    parser.add_argument("--out", type=Path, default=Path("runs/metric_robustness"))
    parser.add_argument("--draw", type=int, default=2000, help="samples drawn once per run")
    parser.add_argument("--counts", type=int, nargs="+", default=[250, 500, 1000, 2000])
    parser.add_argument("--num-reference", type=int, default=1000, help="real samples of precision / recall")
    parser.add_argument("--only", default="", help="score only the runs whose folder name matches this regex "
                        "(to split the work between processes; a last call without it writes the tables)")
    args = parser.parse_args()
    rows = []
    for run in sorted(p for p in args.sweep.iterdir() if (p / "metrics.json").exists()):
        if json.loads((run / "metrics.json").read_text()).get("status") != "completed":
            continue
        if not re.search(args.only, run.name):
            continue
        rows += score_run(run, args.out, args.draw, args.counts, args.num_reference)
    if args.only:
        return
    (HERE / "results.json").write_text(json.dumps(rows, indent=1))
    print(analyse(rows, args.out))


if __name__ == "__main__":
    main()
