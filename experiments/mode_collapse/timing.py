"""Smoke-time every arm of the mode-collapse sweeps, to size the full sweeps (the arithmetic is in
each config's header and in README.md, "Sizing").

    OMP_NUM_THREADS=1 .venv/bin/python experiments/mode_collapse/timing.py [SWEEP ...] [--steps N]
        [--only TEXT,...] [--skip TEXT,...] [--modes-per-mode K] [--out runs/mode_collapse_timing]

Each arm trains twice in this process (``run_training``, as ``gen-bench train experiment=<sweep>
<arm overrides>`` does, with no budget, intermediate evaluation or sample grid), ``--steps`` generator
steps each, once without and once with the final evaluation. Times are CPU seconds of this process
(``time.process_time``): on one thread that is what the run takes on an idle core, however busy the
machine is while it is timed. Reported: CPU seconds per training step (from step 3 on), the fixed
cost of a run (data, networks, the first steps with their FLOP count, the final sample grid and
checkpoint; a new process adds about 5 s of imports) and the final evaluation (the second run less
the first: sampling, features, metrics). The classifier and the real-data references are cached by
the first arm of a dataset, so a dataset's first arm is timed once more, after the others.
``--modes-per-mode K`` counts modes on K samples per mode instead of the sweep's 26 (stacked digits)
for models too slow to time at 26,000 samples; the evaluation then scales with the sample count.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import Callback

from gen_bench.config import config_dir
from gen_bench.train import run_training

ROOT = Path(__file__).resolve().parents[2]
# The arms of each sweep, as its two commands run them (README.md).
PACKS = [["model.pack=2"], ["model.pack=4"]]


def arms(prefix: str, models: list[str]) -> list[list[str]]:
    """``arm=<prefix>/<model>`` for each model, then PacDCGAN2 and 4 (the dcgan arm with a pack)."""
    return [[f"arm={prefix}/{m}"] for m in models] + [[f"arm={prefix}/dcgan", *p] for p in PACKS]


MODELS = ["dcgan", "wgan_gp", "r3gan", "ddpm", "flow_matching"]
SWEEPS = {
    "mode_collapse_grid25": [[f"model={m}"] for m in MODELS] + [["model=dcgan", *p] for p in PACKS],
    "mode_collapse_grid25_paper": arms("grid25_paper", MODELS),
    "mode_collapse_stacked": arms("stacked", [*MODELS, "pixelcnn"]),
    "mode_collapse_stacked_paper": arms("stacked_paper", ["dcgan", "wgan_gp", "r3gan"]),
    "mode_collapse_stacked_quarter": arms("stacked_quarter", ["dcgan", "wgan_gp", "r3gan"]),
}
WARM = 3  # steps before the per-step clock starts


class CPUClock(Callback):
    """CPU seconds of the training steps from step ``WARM`` to the last (set in ``CLOCK``)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == WARM and "start" not in CLOCK:
            CLOCK["start"] = time.process_time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        CLOCK["end"], CLOCK["steps"] = time.process_time(), trainer.global_step


CLOCK: dict[str, float] = {}


def cpu_run(overrides: list[str], run_dir: Path) -> float:
    """CPU seconds of one training run with these overrides (``CLOCK`` filled by :class:`CPUClock`)."""
    CLOCK.clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"run_dir={run_dir}", "overwrite=true", "logger=csv",
                                          "trainer.enable_progress_bar=false",
                                          "+callbacks.cpu_clock._target_=__main__.CPUClock"])
    start = time.process_time()
    run_training(cfg)
    return time.process_time() - start


def time_arm(sweep: str, arm: list[str], steps: int, per_mode: int | None, out: Path) -> dict:
    base = [f"experiment={sweep}", *arm, "budget.images=null", "budget.train_flops=null",
            f"trainer.max_steps={steps}", "eval.every_n_steps=0", "callbacks.sample_grid.every_n_steps=0"]
    if per_mode is not None:
        base.append(f"eval.modes.min_samples_per_mode={per_mode}")
    folder = out / (sweep + "-" + "-".join(a.replace("=", "_") for a in arm))
    train_cpu = cpu_run([*base, "eval.enabled=false"], folder)
    per_step = (CLOCK["end"] - CLOCK["start"]) / (CLOCK["steps"] - WARM)
    with_eval = cpu_run(base, folder)
    return {"sweep": sweep, "arm": " ".join(arm), "s_per_step": per_step,
            "fixed_s": train_cpu - steps * per_step, "eval_s": with_eval - train_cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", nargs="*", default=list(SWEEPS), help=f"of {', '.join(SWEEPS)}")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--modes-per-mode", type=int, default=None)
    parser.add_argument("--only", default="", help="only arms whose overrides contain one of these "
                        "comma-separated texts")
    parser.add_argument("--skip", default="", help="no arm whose overrides contain one of these")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "mode_collapse_timing")
    args = parser.parse_args()
    columns = ["sweep", "arm", "CPU s / step", "fixed CPU s", "final eval CPU s"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns), flush=True)
    for sweep in args.sweeps:
        only, skip = [t for t in args.only.split(",") if t], [t for t in args.skip.split(",") if t]
        chosen = [arm for arm in SWEEPS[sweep] if (not only or any(t in " ".join(arm) for t in only))
                  and not any(t in " ".join(arm) for t in skip)]
        for arm in [*chosen, chosen[0]]:  # the first again, with the evaluation caches filled
            r = time_arm(sweep, arm, args.steps, args.modes_per_mode, args.out)
            cells = [r["sweep"], r["arm"], f"{r['s_per_step']:.4f}", f"{r['fixed_s']:.1f}",
                     f"{r['eval_s']:.1f}"]
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
