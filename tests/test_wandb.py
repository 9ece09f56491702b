"""wandb, offline: what a sweep's runs and the leaderboard logged, read back from the offline run files
(``RUN_DIR/wandb/offline-run-*/run-*.wandb`` and its ``files/``), with no account and no network."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import wandb
from omegaconf import OmegaConf
from wandb.proto import wandb_internal_pb2

from gen_bench.io import read_json
from gen_bench.train import DivergedError, run_training

from conftest import compose_train, run_cli

TINY = ["data=ring8", "trainer.max_steps=4", "eval=fast", "eval.every_n_steps=2",
        "trainer.log_every_n_steps=1", "callbacks.sample_grid.every_n_steps=2",
        "callbacks.sample_grid.num_points=100", "data.source.num_samples=3000",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def _records(path: Path) -> Iterator[wandb_internal_pb2.Record]:
    """The records of a ``.wandb`` file: a LevelDB-style log (32 KiB blocks of chunks with a 7-byte
    header: crc32c, length, type FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4) after a 7-byte file header."""
    data, block, pos, pending = path.read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            break
        pending += chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def read_offline_run(run_dir: Path) -> dict[str, Any]:
    """run (group, name, tags, job type), config, history rows, final summary, media files, exit code."""
    (log,) = run_dir.glob("run-*.wandb")
    out: dict[str, Any] = {"config": {}, "history": [], "summary": {}, "files": [], "exit_code": None}
    for rec in _records(log):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out.update(group=rec.run.run_group, name=rec.run.display_name, tags=list(rec.run.tags),
                       job_type=rec.run.job_type)
            out["config"].update({_key(u): json.loads(u.value_json) for u in rec.run.config.update})
        elif kind == "config":
            out["config"].update({_key(u): json.loads(u.value_json) for u in rec.config.update})
        elif kind == "history":
            out["history"].append({_key(i): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "summary":
            out["summary"].update({_key(u): json.loads(u.value_json) for u in rec.summary.update})
        elif kind == "files":
            out["files"] += [f.path for f in rec.files.files]
        elif kind == "exit":
            out["exit_code"] = rec.exit.exit_code
    return out


def _offline_run(folder: Path) -> Path:
    (run,) = folder.glob("wandb/offline-run-*")
    return run


def test_sweep_runs_and_the_leaderboard_are_logged_offline(tmp_path):
    sweep = tmp_path / "sweep"
    r = run_cli(["train", "-m", *TINY, "model.real_label=1.0,0.9", "+tags.study=wb",
                 f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = sorted(sweep.glob("*/metrics.json"))
    assert len(runs) == 2
    for metrics_path in runs:
        summary = read_json(metrics_path)
        logged = read_offline_run(_offline_run(metrics_path.parent))
        # one group per sweep; the job's folder as name; tags: model, data, stabilizers, tags
        assert logged["group"] == sweep.name and logged["name"] == metrics_path.parent.name
        assert logged["job_type"] == "train"
        smoothing = OmegaConf.load(metrics_path.parent / "config.yaml").model.real_label == 0.9
        expected = {"dcgan", "ring8", "study=wb", *(["label_smoothing=0.9"] if smoothing else [])}
        assert set(logged["tags"]) == expected
        # the whole resolved config
        assert logged["config"]["model"]["real_label"] == (0.9 if smoothing else 1.0)
        assert logged["config"]["data"]["name"] == "ring8" and logged["config"]["seed"] == 0
        # losses and val/* over steps
        losses = [h["train/loss_d"] for h in logged["history"] if "train/loss_d" in h]
        fids = [(h["trainer/global_step"], h["val/fid"]) for h in logged["history"] if "val/fid" in h]
        assert len(losses) >= 4 and [s for s, _ in fids] == [2, 4]
        assert fids[-1][1] == summary["eval"]["scores"]["fid"]["value"]
        # sample scatter plots as images, written next to the run
        images = [f for f in logged["files"] if f.startswith("media/images/samples_")]
        assert len(images) >= 2
        assert all((_offline_run(metrics_path.parent) / "files" / f).is_file() for f in images)
        assert any(h.get("samples/_type") == "images/separated" for h in logged["history"])
        # the summary holds the final metrics (the runs table sorts by val/fid)
        s = logged["summary"]
        assert s["val/fid"] == summary["eval"]["scores"]["fid"]["value"]
        assert s["val/kid"] == summary["eval"]["scores"]["kid"]["value"]
        assert s["status"] == "completed" and s["steps"] == 4 and s["train/loss_g"] == pytest.approx(
            summary["final"]["train/loss_g"])
        assert logged["exit_code"] == 0

    r = run_cli(["leaderboard", str(sweep), "--wandb", "--metric", "fid"], cwd=tmp_path)  # 2-D default: modes
    assert r.returncode == 0, r.stderr[-3000:]
    board_run = _offline_run(sweep)
    logged = read_offline_run(board_run)
    assert logged["job_type"] == "leaderboard" and logged["group"] == sweep.name
    assert logged["config"]["metric"] == "fid" and "leaderboard" in logged["tags"]
    (row,) = [h for h in logged["history"] if "leaderboard/_type" in h]
    assert row["leaderboard/_type"] == "table-file"
    table = json.loads((board_run / "files" / row["leaderboard/path"]).read_text())
    cols = table["columns"]
    assert len(table["data"]) == 2
    fids = sorted(read_json(p)["eval"]["scores"]["fid"]["value"] for p in runs)
    assert sorted(rec[cols.index("fid_mean")] for rec in table["data"]) == pytest.approx(fids, rel=1e-12)
    assert {rec[cols.index("stabilizers")] for rec in table["data"]} == {"none", "label_smoothing=0.9"}
    assert row["fid_over_steps/_type"] == "image-file"
    assert (board_run / "files" / row["fid_over_steps/path"]).is_file()
    assert logged["summary"]["best/fid"] == pytest.approx(fids[0], rel=1e-12)


def test_a_diverged_run_ends_failed_in_wandb(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose_train([*TINY, "logger=wandb", "model.optimizer_d.lr=1e30"], tmp_path)
    with pytest.raises(DivergedError):
        run_training(cfg)
    wandb.teardown()  # the in-process wandb service writes out the offline run before it stops
    logged = read_offline_run(_offline_run(tmp_path))
    assert logged["exit_code"] == 1
    assert logged["summary"]["status"] == "failed" and "DivergedError" in logged["summary"]["error"]
    assert read_json(tmp_path / "metrics.json")["status"] == "failed"


def test_a_resumed_run_logs_on_into_the_same_wandb_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    first = run_training(compose_train([*TINY, "logger=wandb"], tmp_path))
    wandb.teardown()
    longer = run_training(compose_train([*TINY, "logger=wandb", "trainer.max_steps=6", "resume=auto"],
                                        tmp_path))
    wandb.teardown()
    assert (first["steps"], longer["steps"]) == (4, 6)
    folders = sorted(tmp_path.glob("wandb/offline-run-*"))
    sessions = [read_offline_run(p) for p in folders]
    run_ids = {r.run.run_id for p in folders for r in _records(next(p.glob("run-*.wandb")))
               if r.HasField("run")}
    assert len(sessions) == 2 and run_ids == {(tmp_path / "wandb_run_id").read_text().strip()}  # one run...
    steps = [[h["trainer/global_step"] for h in s["history"] if "val/fid" in h] for s in sessions]
    assert steps == [[2, 4], [6]]  # ...the second session logging on from where the first stopped
    assert sessions[1]["summary"]["steps"] == 6 and sessions[1]["exit_code"] == 0
