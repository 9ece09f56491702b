"""Lightning DDP on CPU: 2 processes (gloo) started the way a GPU machine starts them (the command is
run again, torchrun-style), as a job of a Hydra multirun; the scores equal one process's."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from gen_bench.config import config_dir
from gen_bench.eval import eval_command
from gen_bench.io import read_json
from gen_bench.leaderboard import load_run

from conftest import run_cli


def test_two_process_ddp_training_in_a_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    r = run_cli(["train", "-m", "data=ring8", "seed=3", "trainer=ddp", "trainer.accelerator=cpu",
                 "trainer.devices=2", "trainer.max_steps=6", "data.batch_size=64",
                 "data.source.num_samples=3000", "eval=fast", "eval.every_n_steps=3", "logger=csv",
                 "callbacks.sample_grid.num_points=100", "trainer.enable_progress_bar=false",
                 "trainer.enable_model_summary=false", f"hydra.sweep.dir={sweep}"], cwd=tmp_path, timeout=170)
    assert r.returncode == 0, r.stderr[-4000:]
    (metrics,) = sweep.glob("*/metrics.json")
    run_dir = metrics.parent
    summary = read_json(metrics)
    assert summary["status"] == "completed" and summary["steps"] == 6 and summary["batches_seen"] == 6
    assert load_run(run_dir).samples_seen == 6 * 64 * 2  # each process draws its own 64 of the global batch
    assert [h["step"] for h in summary["eval"]["history"]] == [3, 6]
    # the second process ran this one job, in this job's folder (not the sweep, not runs/<overrides>)
    assert (run_dir / "train_ddp_process_1.log").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep"]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == [run_dir.name]

    # the distributed evaluation (samples split across the processes, states synced) gives what one
    # process evaluating the same weights gives
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("eval", overrides=[f"ckpt='{run_dir}'", "eval=fast", "device=cpu",
                                         f"out_dir={tmp_path / 'single'}"])
    single = eval_command(cfg)["eval"]["scores"]
    for name in ("fid", "kid", "precision", "recall", "modes"):
        assert single[name]["protocol_id"] == summary["eval"]["scores"][name]["protocol_id"]
        distributed = summary["eval"]["scores"][name]["value"]
        assert single[name]["value"] == pytest.approx(distributed, rel=1e-6, abs=1e-9)
