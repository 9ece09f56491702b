"""Shared test helpers: composing the real configs, tiny overrides, running the CLI."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from gen_bench.config import config_dir

REPO = Path(__file__).resolve().parent.parent

# Caches (reference statistics, trained classifiers) go to a temporary folder shared by the xdist
# workers (cache writes are atomic), never to the user's ~/.cache.
_CACHE = Path(tempfile.gettempdir()) / f"gen-bench-test-cache-{os.getuid()}"
os.environ.setdefault("GEN_BENCH_CACHE", str(_CACHE))
TESTS = Path(__file__).resolve().parent

# Tiny, fast settings shared by the end-to-end tests.
TINY_IMAGE = [
    "data.image_size=16",
    "model.nets.image.generator.base_channels=8",
    "model.nets.image.discriminator.base_channels=8",
    "model.nets.image.generator.latent_dim=16",
]
QUIET = ["logger=csv", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
         "trainer.log_every_n_steps=1"]


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)
    yield


def compose_train(overrides: list[str], run_dir: Path | str) -> DictConfig:
    """The ``train`` config exactly as ``gen-bench train`` would compose it."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("train", overrides=[*overrides, f"run_dir={run_dir}"])


@pytest.fixture(scope="module")
def ddpm_run(tmp_path_factory) -> Path:
    """A 3-step DDPM run on ring8 (tiny MLP, T = 10), one per test module: the sample, eval and
    interpolate commands' tests read and write it."""
    from gen_bench.train import run_training

    run = tmp_path_factory.mktemp("runs") / "ddpm"
    run_training(compose_train(["data=ring8", "model=ddpm", "data.batch_size=32", "trainer.max_steps=3",
                                "model.nets.toy2d.denoiser.hidden=16", "model.diffusion.num_timesteps=10",
                                "model.training_sampler.steps=3", "callbacks.sample_grid.num_points=16",
                                *QUIET, "eval.enabled=false"], run))
    return run


def _obey_permissions() -> None:
    """In a child process before exec: drop root's power to ignore file permissions (CAP_DAC_OVERRIDE,
    CAP_DAC_READ_SEARCH) from the capability bounding set, so a read-only folder is read-only to it too."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def run_cli(args: list[str], cwd: Path | str | None = None, timeout: float = 300,
            env_extra: dict[str, str] | None = None,
            obey_permissions: bool = False) -> subprocess.CompletedProcess:
    """Run ``gen-bench ARGS`` in a subprocess (the installed console script's code path);
    ``obey_permissions``: even when the tests run as root (root writes anywhere)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true",
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "gen_bench.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout,
                          preexec_fn=_obey_permissions if obey_permissions and os.geteuid() == 0 else None)
