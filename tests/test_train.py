"""``gen-bench train`` end to end: artefacts for every dataset kind, exact resume after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from gen_bench.io import read_json
from gen_bench.train import RunExistsError, run_training

from conftest import QUIET, TINY_IMAGE, compose_train, run_cli

ARTEFACTS = ["config.yaml", "checkpoints/last.ckpt", "metrics.json", "metrics.csv", "loss_curves.png",
             "csv/version_0/metrics.csv"]


def _check_run(run_dir: Path, steps: int, grid: str) -> dict:
    for name in [*ARTEFACTS, grid]:
        assert (run_dir / name).is_file(), f"missing {name}"
    summary = read_json(run_dir / "metrics.json")
    assert summary["status"] == "completed" and summary["steps"] == steps
    # steps is not a multiple of the checkpoint interval: the final step is in last.ckpt, once
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt"]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == steps
    assert summary["batches_seen"] == steps  # one D and one G update per batch
    assert summary["wall_time_s"] > 0
    for key in ("train/loss_d", "train/loss_g", "train/d_real", "train/d_fake", "train/noise_sigma"):
        assert key in summary["final"]
    return summary


@pytest.mark.parametrize("data", ["stacked_digits", "shapes"])
def test_image_runs_write_every_artefact(tmp_path, data):
    cfg = compose_train([f"data={data}", *TINY_IMAGE, *QUIET, "trainer.max_steps=4",
                         "callbacks.sample_grid.every_n_steps=2", "data.source.num_samples=200",
                         "data.batch_size=16"], tmp_path)
    run_training(cfg)
    _check_run(tmp_path, 4, "samples/final.png")
    grid = Image.open(tmp_path / "samples" / "step_0000002.png")
    assert grid.mode == "RGB" and grid.size[0] > 16 * 8  # an 8x8 grid of 16 px images


def test_toy_run_writes_a_scatter_over_the_mode_centres(tmp_path):
    cfg = compose_train(["data=ring8", *QUIET, "trainer.max_steps=20",
                         "callbacks.sample_grid.every_n_steps=10", "model.instance_noise.sigma_start=0.2",
                         "model.instance_noise.anneal_steps=10"], tmp_path)
    run_training(cfg)
    _check_run(tmp_path, 20, "samples/scatter_final.png")
    assert (tmp_path / "samples" / "scatter_step_0000010.png").is_file()
    # the logged sigma follows its schedule: 0.2 * (1 - step / 10), then 0
    rows = [r for r in _csv_rows(tmp_path / "metrics.csv") if "train/noise_sigma" in r]
    assert rows, "noise sigma was not logged"
    for r in rows:
        # rows are at gen-bench's step (updates done): row s is the batch of update s, which drew
        # its noise at step s - 1, before that update
        step_of_batch = r["step"] - 1
        assert r["train/noise_sigma"] == pytest.approx(0.2 * max(0.0, 1 - step_of_batch / 10), abs=1e-6)


def test_image_folder_run(tmp_path):
    folder = tmp_path / "thumbs" / "nested"
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for i in range(40):
        arr = (torch.rand(20, 24, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(folder / f"img{i}.png")
    run_dir = tmp_path / "run"
    cfg = compose_train(["data=image_folder", f"data.path={tmp_path / 'thumbs'}", *TINY_IMAGE, *QUIET,
                         "trainer.max_steps=3", "data.batch_size=8", "data.num_workers=0"], run_dir)
    run_training(cfg)
    _check_run(run_dir, 3, "samples/final.png")


def test_existing_run_is_never_overwritten_silently(tmp_path):
    over = ["data=ring8", *QUIET, "trainer.max_steps=3", "callbacks.checkpoint.every_n_train_steps=2",
            "callbacks.checkpoint.save_top_k=-1"]
    run_training(compose_train(over, tmp_path))
    first = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    with pytest.raises(RunExistsError, match="resume=auto"):
        run_training(compose_train(over, tmp_path))
    # resume=auto on a finished run finishes at once; a longer budget continues it
    assert run_training(compose_train([*over, "resume=auto"], tmp_path))["steps"] == 3
    longer = [o for o in over if not o.startswith("trainer.max_steps")] + ["trainer.max_steps=6"]
    assert run_training(compose_train([*longer, "resume=auto"], tmp_path))["steps"] == 6
    assert (tmp_path / "checkpoints" / "step0000004.ckpt").is_file()
    # overwrite=true starts again from scratch: the same weights as the first run, no stale checkpoint
    summary = run_training(compose_train([*over, "overwrite=true"], tmp_path))
    assert summary["steps"] == 3 and summary["status"] == "completed"
    again = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert again["global_step"] == 3
    assert all(torch.equal(first[k], again["state_dict"][k]) for k in first)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.ckpt", "step0000002.ckpt"]


def _csv_rows(path: Path) -> list[dict[str, float]]:
    import csv

    with open(path) as f:
        return [{k: float(v) for k, v in r.items() if v} for r in csv.DictReader(f)]


def _final_state(root: Path) -> dict:
    (ckpt,) = root.glob("*/checkpoints/last.ckpt")
    return torch.load(ckpt, map_location="cpu", weights_only=False)


def test_sigkill_then_resume_ends_with_identical_weights(tmp_path):
    """A run killed with SIGKILL and resumed ends where an uninterrupted run ends, bit for bit."""
    steps = 40
    common = ["train", "data=digits", *TINY_IMAGE, *QUIET, f"trainer.max_steps={steps}",
              "callbacks.checkpoint.every_n_train_steps=10", "callbacks.sample_grid.every_n_steps=0",
              "model.real_label=0.9", "model.instance_noise.sigma_start=0.1",
              "model.instance_noise.anneal_steps=30", "model.grad_clip_g=5.0", "seed=7"]
    straight = run_cli([*common, f"output_root={tmp_path / 'a'}"])
    assert straight.returncode == 0, straight.stderr[-3000:]

    b = tmp_path / "b"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    slow = [*common, f"output_root={b}", "+callbacks.throttle._target_=support.Throttle",
            "+callbacks.throttle.seconds=0.15"]
    proc = subprocess.Popen([sys.executable, "-m", "gen_bench.cli", *slow], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not list(b.glob("*/checkpoints/last.ckpt")):
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = _final_state(b)
    assert 0 < killed["global_step"] < steps
    assert read_json(next(b.glob("*/metrics.json")))["status"] == "running"  # it really died mid-run

    resumed = run_cli([*slow, "resume=auto"])  # resume= does not enter the run-directory name
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, r = _final_state(tmp_path / "a"), _final_state(b)
    assert a["global_step"] == r["global_step"] == steps
    assert a["state_dict"].keys() == r["state_dict"].keys()
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], r["state_dict"][k]), k
    for oa, orr in zip(a["optimizer_states"], r["optimizer_states"], strict=True):
        for pid, sa in oa["state"].items():
            for name, va in sa.items():
                assert torch.equal(torch.as_tensor(va), torch.as_tensor(orr["state"][pid][name])), name
    summary = read_json(next(b.glob("*/metrics.json")))
    assert summary["status"] == "completed" and summary["batches_seen"] == steps
    # the merged CSV has one row per logged step across both sessions
    rows = _csv_rows(next(b.glob("*/metrics.csv")))
    logged = [int(r["step"]) for r in rows if "train/loss_d" in r]
    assert logged == sorted(set(logged)) and logged[-1] >= steps - 10
