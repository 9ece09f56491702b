"""Every notebook in notebooks/ runs top to bottom (nbclient) on a tiny sweep made here, and is
committed with its outputs cleared."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from gen_bench.train import run_training

from conftest import QUIET, REPO, compose_train

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
TINY = ["data=ring8", *QUIET, "trainer.max_steps=4", "eval=fast", "eval.every_n_steps=2",
        "callbacks.sample_grid.every_n_steps=0", "callbacks.sample_grid.num_points=100",
        "data.source.num_samples=3000"]


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory) -> Path:
    """DCGAN with 2 seeds, WGAN-GP with 1, and a run that failed before training."""
    sweep = tmp_path_factory.mktemp("sweep")
    for name, over in [("dcgan-seed0", ["seed=0"]), ("dcgan-seed1", ["seed=1"]),
                       ("wgan_gp-seed0", ["model=wgan_gp", "trainer.max_steps=2",
                                                 "eval.every_n_steps=1"])]:
        run_training(compose_train([*TINY, *over], sweep / name))
    with pytest.raises(Exception, match="std must be positive"):
        run_training(compose_train([*TINY, "seed=2", "data.source.std=-1"], sweep / "dcgan-seed2"))
    return sweep


def test_there_are_notebooks():
    assert REPO / "notebooks" / "leaderboard.ipynb" in NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: clear the outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_on_a_tiny_sweep(path, tiny_sweep, monkeypatch):
    monkeypatch.setenv("GEN_BENCH_SWEEP", str(tiny_sweep))
    monkeypatch.setenv("GEN_BENCH_METRIC", "fid")
    monkeypatch.delenv("GEN_BENCH_WANDB_PROJECT", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    if path.name == "leaderboard.ipynb":
        markdown = "\n".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
        rows = [line.split(" | ") for line in markdown.splitlines() if "| ring8 |" in line]
        ranked = {r[1]: r for r in rows if r[0] != "| -"}
        assert set(ranked) == {"dcgan", "wgan_gp"}
        assert sorted(r[0].rstrip("=") for r in ranked.values()) == ["| 1", "| 2"]  # "=": tied by interval
        assert ranked["dcgan"][5] == "2" and ranked["wgan_gp"][5] == "1"  # seeds aggregated
        (failed,) = [r for r in rows if r[0] == "| -"]
        assert failed[4] == "data.source.std=-1" and failed[5] == "0 (1 failed)"  # its own setting, listed
        assert "**failed**" in markdown and "std must be positive" in markdown
        assert any("image/png" in o.get("data", {}) for o in outputs)
        assert (tiny_sweep / "fid_over_steps.png").is_file()
