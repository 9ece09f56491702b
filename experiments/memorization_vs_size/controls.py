"""The control "generators" of experiments/memorization_vs_size: known copying, scored by the same
evaluation as the trained models, so the table shows what each metric says about it.

* ``copies``: the training subset itself, its images drawn in seeded permutations one after another
  (every training image equally often) until the evaluation's sample count is reached;
* ``noisy_copies``: the same copies plus Gaussian pixel noise of std 0.05, clipped to [0, 1] (a near
  copy that no pixel-exact test would call a copy);
* ``heldout``: the held-out digits, drawn the same way (fresh data: what a model that generalises
  perfectly would give).

The samples come from ``gen_bench.metrics.memorization.control_samples``.

Each control is scored per training-set size N and per seed (the seed draws the order of the copies
and the noise) with the experiment's own config (``experiment=memorization_vs_size data.subset=N``),
through ``gen_bench.external.score_samples``: the same code path as ``gen-bench eval samples=...``.
Results go to ``SWEEP/controls/control=<name>,data.subset=<N>,seed=<S>/metrics.json``, where
``gen-bench leaderboard SWEEP`` and ``figures.py`` find them beside the trained runs.

    python experiments/memorization_vs_size/controls.py runs/sweeps/memorization_vs_size
    python experiments/memorization_vs_size/controls.py DIR eval.num_samples=200 --subsets 32 --seeds 0
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from gen_bench import rundir
from gen_bench.config import config_dir
from gen_bench.external import SampleBank, score_samples
from gen_bench.metrics.memorization import CONTROL_NOISE_STD, CONTROL_PREFIX, CONTROLS, control_samples

EXPERIMENT = "memorization_vs_size"
CONTROLS_DIR = "controls"


def sweep_values(key: str) -> list[str]:
    """The values the experiment's sweep gives ``key`` (``data.subset``, ``seed``), as override strings."""
    params = OmegaConf.load(config_dir() / "experiment" / f"{EXPERIMENT}.yaml").hydra.sweeper.params
    return [v.strip() for v in str(params[key]).split(",")]


def compose_experiment(overrides: Sequence[str]) -> DictConfig:
    """The train config of one run of the experiment, as ``gen-bench train`` composes it."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("train", overrides=[f"experiment={EXPERIMENT}", *overrides, "run_dir=."])


def control_dir(sweep: str | Path, name: str, subset: str, seed: str) -> Path:
    """Where one control's result goes: named like the sweep's runs (``data.subset=null``: all)."""
    return Path(sweep) / CONTROLS_DIR / f"control={name},data.subset={subset},seed={seed}"


def score_controls(sweep: str | Path, overrides: Sequence[str] = (), subsets: Sequence[str] | None = None,
                   seeds: Sequence[str] | None = None, names: Sequence[str] = tuple(CONTROLS)) -> list[Path]:
    """Score every control at every training-set size and seed; returns the result folders.

    Args:
        sweep: The experiment's sweep folder.
        overrides: Further overrides of the train config (e.g. a smaller ``eval.num_samples``).
        subsets: ``data.subset`` values (default: the experiment's sweep's).
        seeds: Seeds (default: the sweep's).
        names: Controls to score.
    """
    out = []
    for subset in subsets or sweep_values("data.subset"):
        for seed in seeds or sweep_values("seed"):
            cfg = compose_experiment([*overrides, f"data.subset={subset}", f"seed={seed}"])
            datamodule = instantiate(cfg.data)
            train, _ = datamodule.tensors("train")
            heldout, _ = datamodule.tensors("heldout")
            n = cfg.eval.num_samples * cfg.eval.seeds
            config = OmegaConf.to_container(cfg, resolve=True)
            for name in names:
                x = control_samples(name, train, heldout, n, int(seed))
                bank = SampleBank(x, 1.0, {"format": "control", "name": name, "num_available": n,
                                           "noise_std": CONTROL_NOISE_STD if name == "noisy_copies" else 0.0})
                folder = control_dir(sweep, name, subset, seed)
                summary = score_samples(bank, datamodule, cfg.eval, folder, f"{CONTROL_PREFIX}{name}",
                                        config={k: config[k] for k in ("data", "eval", "seed", "tags")})
                # a control has a seed (its draw) like a trained run: the leaderboard averages over it
                rundir.write_metrics(folder, {**summary, "seed": int(seed)})
                values = {k: s["value"] for k, s in summary["eval"]["scores"].items()}
                print(f"[controls] {name} N={subset} seed={seed}: "
                      + ", ".join(f"{k}={v:.4g}" for k, v in values.items() if v is not None))
                out.append(folder)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", help="the experiment's sweep folder (runs/sweeps/memorization_vs_size)")
    parser.add_argument("overrides", nargs="*", help="further train-config overrides (eval.num_samples=200)")
    parser.add_argument("--subsets", help="comma-separated data.subset values (default: the sweep's)")
    parser.add_argument("--seeds", help="comma-separated seeds (default: the sweep's)")
    args = parser.parse_args(argv)
    score_controls(args.sweep, args.overrides, args.subsets.split(",") if args.subsets else None,
                   args.seeds.split(",") if args.seeds else None)


if __name__ == "__main__":
    main()
