"""``gen-bench train`` end to end: artefacts for every dataset kind, exact resume after SIGKILL."""

from __future__ import annotations

import os
import re
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


STEPS = 40
SIGNAL_RUN = ["train", "data=digits", *TINY_IMAGE, *QUIET, f"trainer.max_steps={STEPS}",
              "callbacks.checkpoint.every_n_train_steps=10", "callbacks.sample_grid.every_n_steps=0",
              "model.real_label=0.9", "model.instance_noise.sigma_start=0.1",
              "model.instance_noise.anneal_steps=30", "model.grad_clip_g=5.0", "seed=7"]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory) -> Path:
    """The uninterrupted run the interrupted ones must end identical to."""
    root = tmp_path_factory.mktemp("straight")
    straight = run_cli([*SIGNAL_RUN, f"output_root={root}"])
    assert straight.returncode == 0, straight.stderr[-3000:]
    return root


def _start_slow_run(root: Path) -> tuple[subprocess.Popen, list[str]]:
    """The signal run, throttled, started in the background once its first checkpoint is written."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    slow = [*SIGNAL_RUN, f"output_root={root}", "+callbacks.throttle._target_=support.Throttle",
            "+callbacks.throttle.seconds=0.15"]
    proc = subprocess.Popen([sys.executable, "-m", "gen_bench.cli", *slow], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not list(root.glob("*/checkpoints/last.ckpt")):
        assert proc.poll() is None, "the run ended before it could be signalled"
        assert time.time() < deadline
        time.sleep(0.05)
    return proc, slow


def _resume_and_compare(root: Path, slow: list[str], straight_root: Path) -> None:
    resumed = run_cli([*slow, "resume=auto"])  # resume= does not enter the run-directory name
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, r = _final_state(straight_root), _final_state(root)
    assert a["global_step"] == r["global_step"] == STEPS
    assert a["state_dict"].keys() == r["state_dict"].keys()
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], r["state_dict"][k]), k
    for oa, orr in zip(a["optimizer_states"], r["optimizer_states"], strict=True):
        for pid, sa in oa["state"].items():
            for name, va in sa.items():
                assert torch.equal(torch.as_tensor(va), torch.as_tensor(orr["state"][pid][name])), name
    summary = read_json(next(root.glob("*/metrics.json")))
    assert summary["status"] == "completed" and summary["batches_seen"] == STEPS
    # the merged CSV has one row per logged step across both sessions
    rows = _csv_rows(next(root.glob("*/metrics.csv")))
    logged = [int(r["step"]) for r in rows if "train/loss_d" in r]
    assert logged == sorted(set(logged)) and logged[-1] >= STEPS - 10


def test_sigkill_then_resume_ends_with_identical_weights(tmp_path, straight_run):
    """A run killed with SIGKILL and resumed ends where an uninterrupted run ends, bit for bit."""
    proc, slow = _start_slow_run(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = _final_state(tmp_path)
    assert 0 < killed["global_step"] < STEPS
    summary = read_json(next(tmp_path.glob("*/metrics.json")))
    assert summary["status"] == "running"  # it really died mid-run
    assert summary["steps"] == killed["global_step"] and summary["wall_time_s"] > 0  # as at the checkpoint
    _resume_and_compare(tmp_path, slow, straight_run)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_checkpoints_the_step_reached_and_resume_ends_with_identical_weights(tmp_path, straight_run,
                                                                                   sig):
    """SIGTERM (Slurm) and Ctrl-C stop at the next step boundary with last.ckpt of that step, metrics.json
    saying interrupted, and the signal's exit code; resuming then ends as the uninterrupted run."""
    proc, slow = _start_slow_run(tmp_path)
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err[-3000:]
    stopped = _final_state(tmp_path)
    summary = read_json(next(tmp_path.glob("*/metrics.json")))
    assert summary["status"] == "interrupted" and summary["interrupted_by"] == signal.Signals(sig).name
    assert 10 <= stopped["global_step"] == summary["steps"] == summary["batches_seen"] < STEPS
    assert f"interrupted by {signal.Signals(sig).name} at step {summary['steps']}" in err
    _resume_and_compare(tmp_path, slow, straight_run)


@pytest.mark.parametrize(("crash", "every"), [("evaluation", 0), ("evaluation", 6), ("sample grid", 6)])
def test_a_crash_at_train_end_keeps_the_final_step_in_last_ckpt(tmp_path, monkeypatch, crash, every):
    """The final evaluation and sample grid come after last.ckpt: a crash there loses no training."""
    from gen_bench.callbacks import SampleGrid
    from gen_bench.metrics.engine import Evaluator

    def fail(*args, **kwargs):
        raise RuntimeError(f"{crash} failed")

    monkeypatch.setattr(*((Evaluator, "evaluate") if crash == "evaluation" else (SampleGrid, "save")), fail)
    overrides = ["data=ring8", *QUIET, "trainer.max_steps=6", "eval=fast", f"eval.every_n_steps={every}",
                 "callbacks.checkpoint.every_n_train_steps=100",
                 f"callbacks.sample_grid.every_n_steps={every}"]
    with pytest.raises(RuntimeError, match=f"{crash} failed"):
        run_training(compose_train(overrides, tmp_path))
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 6 and ckpt["callbacks"]["TrainingState"]["batches_seen"] == 6
    summary = read_json(tmp_path / "metrics.json")
    assert summary["status"] == "failed" and summary["steps"] == 6 and f"{crash} failed" in summary["error"]

    monkeypatch.undo()  # fixed: resuming does the end of training only
    summary = run_training(compose_train([*overrides, "resume=auto"], tmp_path))
    assert summary["status"] == "completed" and summary["steps"] == 6 and summary["eval"]["tag"] == "final"
    assert (tmp_path / "samples" / "scatter_final.png").is_file()
    weights = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(v, ckpt["state_dict"][k]) for k, v in weights.items())  # not a step more


def test_evaluation_settings_the_metrics_cannot_use_fail_before_training(tmp_path):
    cfg = compose_train(["data=ring8", *QUIET, "trainer.max_steps=6", "eval=fast", "eval.num_samples=3"],
                        tmp_path)
    with pytest.raises(ValueError, match=r"PRDC needs more than k=5 generated samples.*eval.num_samples=3"):
        run_training(cfg)
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "metrics.json").exists()


def test_sigterm_during_sampling_stops_within_seconds_and_the_missed_evaluation_runs_on_resume(tmp_path):
    """A SIGTERM that lands in an evaluation's DDPM sampling (here 400 steps of 0.05 s: 20 s) stops it
    at the next sampling step, checkpoints the step reached and exits 143; the resumed run evaluates
    that step first."""
    args = ["train", "data=ring8", "model=ddpm", *QUIET, "trainer.max_steps=6", "data.batch_size=32",
            "model.nets.toy2d.denoiser._target_=support.SleepyDenoiser",
            "model.nets.toy2d.denoiser.hidden=16",
            "model.training_sampler.steps=400", "callbacks.sample_grid.every_n_steps=0", "eval=fast",
            "eval.every_n_steps=4", "eval.num_samples=64", "eval.modes.num_samples=64",
            f"output_root={tmp_path}"]
    marker = tmp_path / "sampling"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent),
           "SLEEPY_MARKER": str(marker), "SLEEPY_SECONDS": "0.05"}
    proc = subprocess.Popen([sys.executable, "-m", "gen_bench.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not marker.exists():
        assert proc.poll() is None and time.time() < deadline, "the run never sampled"
        time.sleep(0.05)
    signalled = time.time()
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-3000:]
    assert time.time() - signalled < 8  # not the 20 s the evaluation would have taken
    (run,) = [p for p in tmp_path.iterdir() if (p / "metrics.json").is_file()]
    summary = read_json(run / "metrics.json")
    assert summary["status"] == "interrupted" and summary["steps"] == 4 and "eval" not in summary
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4

    resumed = run_cli([*args, "resume=auto"])  # SLEEPY_MARKER unset: sampling at full speed
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = read_json(run / "metrics.json")
    assert summary["status"] == "completed" and summary["steps"] == 6
    assert [h["step"] for h in summary["eval"]["history"]] == [4, 6]


def test_resume_refuses_another_model_or_changed_settings_and_applies_a_changed_learning_rate(tmp_path):
    over = ["data=ring8", *QUIET, "trainer.max_steps=3", "eval.enabled=false",
            "callbacks.sample_grid.every_n_steps=0"]
    run_training(compose_train(over, tmp_path))
    before = read_json(tmp_path / "metrics.json")
    longer = [*over, "trainer.max_steps=6"]
    with pytest.raises(ValueError, match=r"holds a dcgan model, this config builds ddpm: pass model=dcgan"):
        run_training(compose_train([*longer, "model=ddpm", f"resume={tmp_path}"], tmp_path))
    changed = r"settings \(data.shuffle_seed: 0 -> 1, model.real_label: 1.0 -> 0.9, seed: 0 -> 1\)"
    with pytest.raises(ValueError, match=changed):
        run_training(compose_train([*longer, "model.real_label=0.9", "seed=1", "resume=auto"], tmp_path))
    assert read_json(tmp_path / "metrics.json") == before  # a refused resume leaves the run as it was

    summary = run_training(compose_train([*over, "model.optimizer_g.lr=5e-4", "trainer.max_steps=6",
                                          "resume=auto"], tmp_path))
    assert summary["status"] == "completed" and summary["steps"] == 6
    assert summary["resumed_with_changes"] == [
        {"step": 3, "changes": {"model.optimizer_g.lr": [2e-3, 5e-4], "trainer.max_steps": [3, 6]}}]
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert sorted(g["lr"] for opt in ckpt["optimizer_states"] for g in opt["param_groups"]) == [5e-4, 2e-3]


def test_a_changed_learning_rate_carries_on_a_warm_up_in_progress(tmp_path):
    """DDPM warms its learning rate up linearly, lr = base * min(1, (step + 1) / warmup): after resuming
    step 3 with base 2e-3 instead of 1e-3, step 6 has 2e-3 * 7 / 10."""
    over = ["data=ring8", "model=ddpm", *QUIET, "trainer.max_steps=3", "eval.enabled=false",
            "callbacks.sample_grid.every_n_steps=0", "model.nets.toy2d.denoiser.hidden=16",
            "model.diffusion.num_timesteps=10", "model.training_sampler.steps=3", "model.warmup_steps=10",
            "data.batch_size=32"]
    run_training(compose_train(over, tmp_path))
    run_training(compose_train([*over, "trainer.max_steps=6", "model.optimizer.lr=2e-3", "resume=auto"],
                               tmp_path))
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    (group,) = ckpt["optimizer_states"][0]["param_groups"]
    assert group["lr"] == pytest.approx(2e-3 * 7 / 10, rel=1e-12) and group["initial_lr"] == 2e-3
    assert ckpt["lr_schedulers"][0]["base_lrs"] == [2e-3]


@pytest.mark.parametrize(("override", "message"), [
    ("trainer.max_steps=0", "trainer.max_steps must be a number of steps >= 1, got 0"),
    ("trainer.max_steps=-1", "trainer.max_steps must be a number of steps >= 1, got -1"),
    ("model.optimizer_d.lr=-0.001", "model.optimizer_d.lr must be >= 0, got -0.001"),
])
def test_settings_that_cannot_train_are_refused_in_one_line_before_anything_is_written(tmp_path, override,
                                                                                      message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        run_training(compose_train(["data=ring8", *QUIET, override], tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_train_a_run_longer_is_one_command_that_carries_on_in_its_folder(tmp_path):
    """``gen-bench train resume=RUN trainer.max_steps=N``: RUN's own settings, RUN's folder (named
    after its overrides: '=' and ','), its checkpoint and curves; a new budget, recorded."""
    first = run_cli(["train", "data=ring8", *QUIET, "trainer.max_steps=3", "eval.enabled=false",
                     "callbacks.sample_grid.every_n_steps=0", "model.real_label=0.9"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    (run,) = (tmp_path / "runs").iterdir()
    assert "=" in run.name and "," in run.name
    longer = run_cli(["train", f"resume={run}", "trainer.max_steps=6"], cwd=tmp_path)
    assert longer.returncode == 0, longer.stderr[-3000:]
    assert list((tmp_path / "runs").iterdir()) == [run]  # no new folder for the new budget
    summary = read_json(run / "metrics.json")
    assert summary["status"] == "completed" and summary["steps"] == summary["batches_seen"] == 6
    assert summary["resumed_with_changes"] == [{"step": 3, "changes": {"trainer.max_steps": [3, 6]}}]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6
    logged = [int(r["step"]) for r in _csv_rows(run / "metrics.csv") if "train/loss_d" in r]
    assert logged == [1, 2, 3, 4, 5, 6]  # both sessions' curves in one file (rows at the updates done)


@pytest.mark.parametrize(("arg", "line"), [
    ("model.optimzer_g.lr=1e-3", "model has no key 'optimzer_g': did you mean model.optimizer_g?"),
    ("model=dcgna", "no model config named 'dcgna': did you mean model=dcgan? (options: dcgan, ddpm,"),
    ("trainer.max_steps=0", "trainer.max_steps must be a number of steps >= 1, got 0"),
])
def test_command_line_errors_are_one_line_with_the_closest_name(tmp_path, arg, line):
    r = run_cli(["train", "data=ring8", arg], cwd=tmp_path)
    assert r.returncode == 1
    (only,) = r.stderr.strip().splitlines()
    assert only.startswith(f"gen-bench: error: {line}")


def test_a_traceback_comes_with_verbose(tmp_path):
    r = run_cli(["train", "data=ring8", "trainer.max_steps=0", "--verbose"], cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last == "ValueError: trainer.max_steps must be a number of steps >= 1, got 0"


def test_the_console_is_quiet_and_the_run_log_has_every_line_once(tmp_path):
    r = run_cli(["train", "data=ring8", "trainer.max_steps=20", "eval=fast", "eval.every_n_steps=10"],
                cwd=tmp_path, env_extra={"WANDB_SILENT": "false"})  # the default loggers: csv and wandb
    assert r.returncode == 0, r.stderr[-3000:]
    console = r.stdout + r.stderr
    assert "wandb:" not in console and "FLOPs" not in console and "GPU available" not in console
    bar = [s for s in re.split(r"[\r\n]", r.stdout) if s.startswith("train:")]
    assert len(bar) == 4 and "0/20" in bar[0]  # the start, steps 10 and 20, the close: each written once
    assert "eval final: fid=" in r.stderr  # gen-bench's own lines stay
    (log,) = tmp_path.glob("runs/*/train.log")
    text = log.read_text()
    assert text.count("GPU available") == 1 and text.count("Seed set to 0") == 1
    assert "| generator     | MLPGenerator" in text and "FLOPs" not in text and "eval final: fid=" in text
