"""FID and wall time of each sampler on trained diffusion / flow checkpoints (the DDIM paper's Table 1).

Not a test (CPU minutes to hours). Scores every (checkpoint, sampler) pair with ``gen-bench eval``
under one protocol (the same sample count, extractor, reference and seed for every sampler, so the
rows differ only by the sampler), then prints a Markdown table: FID with its bootstrap 95% interval,
precision, recall, network passes and FLOPs per sample, and the evaluation's wall time (sampling
dominates it). Finished pairs are read back from their ``metrics.json`` (an interrupted table
resumes); ``--json`` writes the rows.

Sampler specs: ``ddpm`` (ancestral, all T steps), ``ddim:STEPS:ETA``, ``dpmpp:STEPS``, ``euler:STEPS``,
``heun:STEPS``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sampler_table.py \\
        --ckpt runs/sampler_table/ddpm/checkpoints/step0002000.ckpt \\
        --samplers ddpm ddim:10:0 ddim:20:0 ddim:50:0 dpmpp:10 dpmpp:20 --num-samples 1000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path


def sampler_overrides(spec: str) -> tuple[str, list[str]]:
    """``ddim:50:0`` -> (a folder-safe label, the ``gen-bench eval`` overrides choosing that sampler)."""
    name, *args = spec.split(":")
    if name == "ddpm" and not args:
        return "ddpm", ["sampler=ddpm"]
    if name == "ddim" and len(args) == 2:
        return (f"ddim{args[0]}-eta{args[1]}",
                ["sampler=ddim", f"sampler.steps={args[0]}", f"sampler.eta={args[1]}"])
    if name in ("dpmpp", "euler", "heun") and len(args) == 1:
        return f"{name}{args[0]}", [f"sampler={name}", f"sampler.steps={args[0]}"]
    raise SystemExit(f"unknown sampler spec {spec!r}: use ddpm, ddim:STEPS:ETA, dpmpp:STEPS, euler:STEPS or "
                     "heun:STEPS")


def network_passes(spec: str, num_timesteps: int = 1000) -> int:
    """Network calls per sample of a sampler spec (Heun: two per step; ancestral: the model's T)."""
    name, *args = spec.split(":")
    return num_timesteps if name == "ddpm" else int(args[0]) * (2 if name == "heun" else 1)


def score(ckpt: Path, spec: str, num_samples: int, out_root: Path, extra: list[str]) -> dict:
    """One ``gen-bench eval`` of ``ckpt`` with sampler ``spec`` (skipped when its result exists)."""
    label, overrides = sampler_overrides(spec)
    out = out_root / f"{ckpt.stem}-{label}-n{num_samples}"
    metrics = out / "metrics.json"
    if not metrics.exists():
        cmd = [sys.executable, "-m", "gen_bench.cli", "eval", f"ckpt={ckpt}", *overrides,
               f"eval.num_samples={num_samples}", f"eval.prdc.max_samples={num_samples}",
               f"eval.prdc.num_reference={num_samples}", "eval.extractor=classifier",
               "eval.metrics=[fid,prdc]", "eval.batch_size=250", f"out_dir={out}", *extra]
        print("[sampler_table]", " ".join(cmd[3:]), flush=True)
        subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    ev = json.loads(metrics.read_text())["eval"]
    s, draw = ev["scores"], ev["draw"]
    return {"checkpoint": ckpt.stem, "step": json.loads(metrics.read_text()).get("steps"), "spec": spec,
            "sampler": draw.get("sampler"), "passes": network_passes(spec),
            "flops_per_sample": draw.get("sampling_flops_per_sample"), "num_samples": num_samples,
            "fid": s["fid"]["value"], "fid_ci": [s["fid"].get("ci_low"), s["fid"].get("ci_high")],
            "precision": s["precision"]["value"], "recall": s["recall"]["value"],
            "seconds": ev["time"]["evaluations"]}


def markdown(rows: list[dict]) -> str:
    lines = ["| checkpoint | sampler | passes / sample | FID [95% CI] | precision | recall | wall s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["fid_ci"]
        ci = f" [{lo:.2f}-{hi:.2f}]" if lo is not None else ""
        lines.append(f"| {r['checkpoint']} | {r['sampler']} | {r['passes']} | {r['fid']:.2f}{ci} | "
                     f"{r['precision']:.3f} | {r['recall']:.3f} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", nargs="+", type=Path, required=True, help="checkpoint files to score")
    parser.add_argument("--samplers", nargs="+", required=True)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=None,
                        help="where the per-pair results go (default: <run>/eval/sampler_table)")
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    parser.add_argument("overrides", nargs="*", help="further gen-bench eval overrides")
    args = parser.parse_args()
    rows = []
    for ckpt in args.ckpt:
        out = args.out or ckpt.resolve().parents[1] / "eval" / "sampler_table"
        for spec in args.samplers:
            rows.append(score(ckpt.resolve(), spec, args.num_samples, out, args.overrides))
            print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
