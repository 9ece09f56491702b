"""Lightning DDP on CPU: 2 processes (gloo) started the way a GPU machine starts them (the command is
run again, torchrun-style), as a job of a Hydra multirun; the scores equal one process's."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from gen_bench.config import config_dir
from gen_bench.eval import eval_command
from gen_bench.io import read_json
from gen_bench.rundir import read_run

from conftest import QUIET, run_cli


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
    assert read_run(run_dir).samples_seen == 6 * 64 * 2  # the leaderboard's count: steps x batch x processes
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


def _ddp_run(root, steps: int, *extra: str):
    args = ["train", "data=ring8", "seed=3", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
            f"trainer.max_steps={steps}", "data.batch_size=16", "data.source.num_samples=3000",
            "callbacks.evaluation=null", "callbacks.sample_grid.every_n_steps=0",
            "callbacks.sample_grid.num_points=50", *QUIET, f"hydra.run.dir={root}",
            "+callbacks.recorder._target_=support.RankRecorder", f"+callbacks.recorder.dirpath={root}/rec",
            *extra]
    r = run_cli(args, cwd=root.parent, timeout=170)
    assert r.returncode == 0, r.stderr[-4000:]
    return [read_json(root / "rec" / f"rank{k}.json") for k in (0, 1)]


def test_ddp_processes_draw_their_own_numbers_and_resume_exactly(tmp_path):
    """Each process trains on its own rows of the global batch and draws its own latents, both hold
    the same weights at the end, and a run stopped at step 3 and resumed ends bit for bit where the
    uninterrupted run ends (every process's RNG state is in the checkpoint)."""
    r0, r1 = _ddp_run(tmp_path / "straight", 6)
    assert [s for s, _ in r0["batches"]] == [s for s, _ in r1["batches"]] == list(range(6))
    for (_, rows0), (_, rows1) in zip(r0["batches"], r1["batches"], strict=True):
        assert len(rows0) == len(rows1) == 16
        assert not {tuple(r) for r in rows0} & {tuple(r) for r in rows1}  # disjoint shares of the batch
    assert len(r0["latents"]) == len(r1["latents"]) == 6
    for (_, z0), (_, z1) in zip(r0["latents"], r1["latents"], strict=True):
        assert z0 != z1  # the processes draw different latents
    assert r0["end"] == r1["end"]  # DDP keeps the replicas equal

    s0, s1 = _ddp_run(tmp_path / "split", 3)
    s0, s1 = _ddp_run(tmp_path / "split", 6, "resume=auto")
    assert s0["latents"] == r0["latents"] and s1["latents"] == r1["latents"]
    assert s0["batches"] == r0["batches"] and s1["batches"] == r1["batches"]
    assert s0["end"][-1] == s1["end"][-1] == r0["end"][-1]  # the same weights, bit for bit
    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(tmp_path / "split" / "checkpoints" / "last.ckpt", weights_only=False)
    assert a["global_step"] == b["global_step"] == 6
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
