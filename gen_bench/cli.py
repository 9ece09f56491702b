"""The ``gen-bench`` command: ``gen-bench train|... [hydra overrides]``."""

from __future__ import annotations

import sys
from collections.abc import Callable

import hydra
from omegaconf import DictConfig

from gen_bench.config import config_dir

USAGE = """usage: gen-bench COMMAND [key=value ...] [hydra options]

commands:
  train    train one model (or a sweep with -m); e.g.
           gen-bench train model=dcgan data=digits trainer.max_steps=2000 seed=1

Every command takes Hydra overrides; add --help after the command for its config groups,
or --cfg job to print the composed config without running.
"""


def _train(cfg: DictConfig) -> None:
    from gen_bench.train import run_training

    summary = run_training(cfg)
    final = ", ".join(f"{k}={v:.4g}" for k, v in sorted(summary.get("final", {}).items()))
    print(f"[gen-bench] {summary['status']}: {summary['steps']} steps in {summary['wall_time_s']:.1f} s "
          f"-> {summary['run_dir']}\n[gen-bench] {final}")


COMMANDS: dict[str, tuple[str, Callable[[DictConfig], None]]] = {
    "train": ("train", _train),
}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        sys.exit(f"gen-bench: unknown command {command!r}; valid: {', '.join(COMMANDS)}\n\n{USAGE}")
    config_name, fn = COMMANDS[command]
    task = hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=config_name)(fn)
    sys.argv = [f"gen-bench-{command}", *rest]
    task()


if __name__ == "__main__":
    main()
