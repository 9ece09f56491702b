"""Mode coverage on ring8 after a short CPU run of each model with its default config (MLP nets).

Not a test (minutes of CPU). Trains ``gen-bench train model=M data=ring8 trainer.max_steps=S`` for each
model in-process, then draws 2500 samples (the VEEGAN protocol) from the saved checkpoint and reports:

* high quality: share of samples within 3 std (0.03) of their nearest mode centre;
* near: share within 10 std (0.1; neighbouring modes are 0.77 apart), a looser view of the same;
* modes: modes whose centre is the nearest to at least one high-quality sample (of 8);
* min/max mode share: the smallest / largest share of the high-quality samples a mode gets (1/8 each
  is perfectly balanced).

Diffusion models are also sampled with DDIM (``--ddim-steps``, eta = 0) from the same checkpoint.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ring8.py --steps 3000 --out runs/bench_ring8
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from gen_bench import rundir
from gen_bench.checkpoint import load_model
from gen_bench.config import config_dir
from gen_bench.diffusion import DDIMSampler
from gen_bench.train import run_training


def mode_stats(x: torch.Tensor, centers: torch.Tensor, std: float) -> dict[str, float]:
    dist = torch.cdist(x.double(), centers.double())  # (N, K)
    nearest, which = dist.min(1)
    hq = nearest <= 3 * std
    near = nearest <= 10 * std
    counts = torch.bincount(which[hq], minlength=centers.shape[0]).double()
    share = counts / counts.sum().clamp_min(1)
    return {"high_quality": hq.double().mean().item(), "near": near.double().mean().item(),
            "modes": int((counts > 0).sum()), "min_share": share.min().item(),
            "max_share": share.max().item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["dcgan", "wgan_gp", "ddpm"])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=2500)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_ring8"))
    parser.add_argument("--ddim-steps", type=int, default=50, help="0: no DDIM row for diffusion models")
    parser.add_argument("--reuse", action="store_true", help="sample from runs already in --out")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()

    rows = []
    for model in args.models:
        run_dir = (args.out / model).resolve()
        over = [f"model={model}", "data=ring8", f"trainer.max_steps={args.steps}", f"seed={args.seed}",
                "logger=csv", "trainer.enable_progress_bar=false", "overwrite=true", f"run_dir={run_dir}",
                *args.overrides]
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose("train", overrides=over)
        if not (args.reuse and rundir.last_checkpoint(run_dir).is_file()):
            run_training(cfg)
        net, dm, _, ckpt = load_model(run_dir)
        wall = rundir.read_metrics(run_dir)["wall_time_s"]
        samplers = {model: None}
        net.progress = False
        if args.ddim_steps and net.sampler_label() is not None:  # diffusion: also through DDIM
            ddim = lambda d, **kw: DDIMSampler(d, args.ddim_steps, **kw)  # noqa: E731
            samplers[f"{model} (ddim{args.ddim_steps})"] = ddim
        for name, sampler in samplers.items():
            g = torch.Generator().manual_seed(args.seed)
            start = time.perf_counter()
            x = net.sample(args.samples, generator=g, sampler=sampler)
            sample_s = time.perf_counter() - start
            stats = mode_stats(x, torch.tensor(dm.spec.mode_centers), dm.spec.mode_std)
            rows.append((name, ckpt["global_step"], wall, sample_s, stats))
            print(f"[ring8] {name}: {stats}", flush=True)

    print(f"\nring8, {args.steps} steps, seed {args.seed}, {args.samples} samples, 3 std = "
          f"{3 * dm.spec.mode_std:g}")
    print("| model | steps | train wall (s) | sampling (s) | high quality (3 std) | near (10 std) "
          "| modes (of 8) | min / max mode share |")
    print("|---|---|---|---|---|---|---|---|")
    for model, steps, wall, sample_s, s in rows:
        print(f"| {model} | {steps} | {wall:.0f} | {sample_s:.1f} | {100 * s['high_quality']:.1f}% "
              f"| {100 * s['near']:.1f}% | {s['modes']} "
              f"| {100 * s['min_share']:.1f}% / {100 * s['max_share']:.1f}% |")


if __name__ == "__main__":
    main()
