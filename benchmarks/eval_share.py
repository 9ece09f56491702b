"""The evaluation's share of training wall time at default settings (target: <= 10%).

Trains the default run (``gen-bench train``: DCGAN on digits, the default ``eval=default``) with a
fresh evaluation cache, so the first evaluation also trains the dataset classifier and extracts the
reference features (one-time costs, cached for every later run on the machine), and reads the
times the evaluation callback records in ``metrics.json``. Prints the share with and without those
one-time costs, and the final scores.

    .venv/bin/python benchmarks/eval_share.py
    .venv/bin/python benchmarks/eval_share.py data.image_size=16 --models ddpm flow_matching  # overrides 1st
    .venv/bin/python benchmarks/eval_share.py trainer.max_steps=500 eval.every_n_steps=250
    GEN_BENCH_THREADS=1 .venv/bin/python benchmarks/eval_share.py --keep runs/eval_share   # busy machine

``GEN_BENCH_THREADS`` sets torch's intra-op threads for training and evaluation alike (on a machine
whose cores are busy with other jobs, OpenMP's spinning threads make both many times slower).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir

from gen_bench.config import config_dir
from gen_bench.train import run_training


def main(overrides: list[str], keep: str | None = None) -> dict:
    """Train one run with ``overrides`` and report the evaluation's share of its wall time."""
    if os.environ.get("GEN_BENCH_THREADS"):
        import torch

        torch.set_num_threads(int(os.environ["GEN_BENCH_THREADS"]))
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(keep) if keep else Path(tmp) / "run"
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose("train", overrides=["logger=csv", "trainer.enable_progress_bar=false",
                                              f"eval.cache_dir={Path(tmp) / 'cache'}", *overrides,
                                              f"run_dir={run_dir}"])
        summary = run_training(cfg)
    ev = summary["eval"]
    wall, evals, setup = summary["wall_time_s"], ev["time"]["evaluations"], ev["time"]["setup"]
    report = {
        "overrides": overrides,
        "steps": summary["steps"],
        "wall_time_s": wall,
        "evaluations": len(ev["history"]),
        "eval_time_s": evals,
        "one_time_setup_s": setup,
        "share_cold_cache": evals / wall,
        "share_warm_cache": (evals - setup) / (wall - setup),
        "model": summary.get("model"),
        "sampler": ev.get("draw", {}).get("sampler"),
        "classifier": {k: v for k, v in ev["extractor"].items() if k.startswith("classifier_")},
        "final": {k: v["value"] for k, v in ev["scores"].items()},
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", help="run directory to keep (default: a temporary one); with several "
                        "models, one sub-folder per model")
    parser.add_argument("--models", nargs="+", default=None,
                        help="one default-length run per model (model=M), e.g. dcgan ddpm flow_matching")
    args, hydra_overrides = parser.parse_known_args(sys.argv[1:])
    if not args.models:
        main(hydra_overrides, args.keep)
        sys.exit()
    reports = [main([f"model={m}", *hydra_overrides], args.keep and str(Path(args.keep) / m))
               for m in args.models]
    print("| model | sampler | steps | wall (s) | evaluations | eval (s) | share, cold cache | share, warm |")
    print("|---|---|---|---|---|---|---|---|")
    for r in reports:
        print(f"| {r['model']} | {r['sampler'] or '-'} | {r['steps']} | {r['wall_time_s']:.0f} "
              f"| {r['evaluations']} | {r['eval_time_s']:.0f} | {r['share_cold_cache']:.1%} "
              f"| {r['share_warm_cache']:.1%} |")
