"""The run folder module: one list of result-neutral settings for the digest, the leaderboard's groups
and run folder names; the folder's file names in one place; scores read out of metrics.json once."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf

from gen_bench import rundir
from gen_bench.cli import _objective
from gen_bench.config import config_dir, flatten
from gen_bench.io import atomic_write_json
from gen_bench.leaderboard import build_leaderboard

from conftest import REPO, compose_train


def _run_folder(overrides: list[str]) -> tuple[str, str]:
    """(run folder name, sweep job folder name) Hydra gives ``gen-bench train OVERRIDES``."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    try:
        return Path(cfg.hydra.run.dir).name, cfg.hydra.sweep.subdir
    finally:
        HydraConfig.instance().cfg = None  # other tests run outside a Hydra job


def test_run_folder_names_leave_out_result_neutral_and_placement_settings():
    neutral = ["logger=csv", "trainer.log_every_n_steps=5", "+tags.study=lr", "callbacks.progress_bar=null",
               "callbacks.sample_grid.every_n_steps=10", "resume=auto", "eval.cache_dir=/tmp/c",
               "trainer.devices=1", "trainer.accelerator=cpu", "+objective=val/kid"]
    assert _run_folder(["seed=3", "data=ring8", *neutral]) == ("data=ring8,seed=3", "data=ring8,seed=3")
    assert _run_folder(neutral) == ("default", "default")
    assert _run_folder(["model.optimizer_g.lr=1e-3"])[0] == "model.optimizer_g.lr=1e-3"


def test_one_list_of_result_neutral_settings_for_digest_and_leaderboard(tmp_path):
    base = OmegaConf.to_container(compose_train(["data=ring8"], tmp_path / "r"), resolve=True)
    flat = flatten(base)
    present = [k for k in rundir.RESULT_NEUTRAL_KEYS if any(rundir.under(f, [k]) for f in flat)]
    assert {"logger", "callbacks", "trainer.enable_progress_bar", "trainer.log_every_n_steps",
            "eval.cache_dir", "run_dir", "tags"} <= set(present)
    digest = rundir.config_digest(base)

    def changed(key: str, value) -> dict:
        cfg = OmegaConf.create(base)
        OmegaConf.update(cfg, key, value, force_add=True)
        return OmegaConf.to_container(cfg)

    for key in present:
        assert rundir.config_digest(changed(key, "something else")) == digest, key
    for key, value in (("seed", 1), ("model.optimizer_g.lr", 1e-3), ("trainer.devices", 2), ("eval.seed", 9)):
        assert rundir.config_digest(changed(key, value)) != digest, key

    # the leaderboard: runs that differ in result-neutral settings and seeds are one group, a setting
    # that changes results makes another
    def run(name: str, cfg: dict, fid: float) -> None:
        (tmp_path / "sweep" / name).mkdir(parents=True)
        OmegaConf.save(OmegaConf.create(cfg), tmp_path / "sweep" / name / rundir.CONFIG)
        atomic_write_json(rundir.metrics_path(tmp_path / "sweep" / name),
                          {"status": "completed", "model": "dcgan", "data": "ring8", "seed": cfg["seed"],
                           "eval": {"scores": {"fid": {"value": fid, "protocol_id": "p"}}}})

    run("a", base, 1.0)
    other_seed = changed("seed", 1)
    other_seed["logger"] = {"csv": None}
    run("b", other_seed, 3.0)
    other_display = changed("trainer.log_every_n_steps", 7)
    other_display["seed"] = 2
    run("c", other_display, 5.0)
    run("d", changed("model.optimizer_g.lr", 1e-3), 10.0)
    board = build_leaderboard(rundir.collect_runs(tmp_path / "sweep"), "fid")
    assert [(r["seeds"], r["fid_mean"], r["variant"]) for r in board.rows] == [
        (3, 3.0, "model.optimizer_g.lr=0.002"), (1, 10.0, "model.optimizer_g.lr=0.001")]


def test_the_last_checkpoint_is_lightnings_save_last_file(tmp_path):
    assert rundir.LAST_CHECKPOINT == ModelCheckpoint.CHECKPOINT_NAME_LAST + ModelCheckpoint.FILE_EXTENSION
    cfg = compose_train(["data=ring8"], tmp_path / "run")
    assert Path(cfg.callbacks.checkpoint.dirpath) == rundir.last_checkpoint(tmp_path / "run").parent
    assert cfg.callbacks.checkpoint.save_last is True
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        rundir.checkpoint_file(tmp_path / "run")
    assert rundir.run_dir_of(rundir.last_checkpoint(tmp_path / "run")) == (tmp_path / "run").resolve()


def test_scores_come_from_the_evaluation_before_the_loggers_copies():
    summary = {"final": {"val/fid": 1.2345600128173828, "train/loss_g": 0.5, "val/kid": float("nan")},
               "eval": {"scores": {"fid": {"value": 1.23456, "protocol_id": "p"},
                                   "kid": {"value": None, "protocol_id": "p"}}}}
    assert rundir.score(summary, "fid") == rundir.score(summary, "val/fid") == (1.23456, "p")
    assert rundir.score(summary, "kid") == (None, "p")  # not finite
    assert rundir.score(summary, "train/loss_g") == (0.5, None)
    assert rundir.score(summary, "is") == (None, None)
    assert rundir.score_names(summary) == {"fid", "kid", "train/loss_g"}
    assert rundir.final_values(summary)["val/fid"] == 1.23456
    # the Optuna objective of a training job reads the same score
    assert _objective(OmegaConf.create({"objective": "val/fid"}), summary) == 1.23456
    assert _objective(OmegaConf.create({}), summary) == 1.23456  # val/fid by default
    assert _objective(OmegaConf.create({"objective": "train/loss_g"}), summary) == 0.5


def _mentions(path: Path, pattern: re.Pattern) -> list[int]:
    """Lines of ``path`` whose strings (docstrings included) or comments match ``pattern``."""
    lines = set()
    for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if tok.type in (tokenize.STRING, tokenize.COMMENT) and pattern.search(tok.string):
            lines.add(tok.start[0])
    return sorted(lines)


def test_the_run_folder_file_names_are_written_in_rundir_only():
    quoted = re.compile(r"""^[rbf]*(['"])metrics\.json\1$""")  # the name as a string of its own
    anywhere = re.compile(r"last\.ckpt")
    found = {}
    for path in sorted((REPO / "gen_bench").rglob("*.py")):
        if path.name == "rundir.py":
            continue
        hits = _mentions(path, quoted) + _mentions(path, anywhere)
        if hits:
            found[str(path.relative_to(REPO))] = hits
    assert found == {}
    assert _mentions(REPO / "gen_bench" / "rundir.py", quoted)
