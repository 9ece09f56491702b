"""experiments/memorization_vs_size: the control "generators" of known copying (exact copies, noisy
copies, held-out data), scored by the evaluation code like a model, and the figures' table."""

from __future__ import annotations

import importlib.util
import statistics
import sys
from pathlib import Path

import pytest
import torch

from gen_bench.io import read_json
from gen_bench.metrics.memorization import CONTROLS, control_samples, cycled
from gen_bench.rundir import RunRecord, collect_runs

from conftest import REPO

EXPERIMENT_DIR = REPO / "experiments" / "memorization_vs_size"


def _load(name: str):
    """An experiment script as a module (experiments/ is not a package)."""
    path = EXPERIMENT_DIR / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"memorization_vs_size_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _row_index(rows: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """For each row, the index of the equal row of ``pool`` (-1 where there is none)."""
    eq = (rows.flatten(1)[:, None] == pool.flatten(1)[None]).all(-1)
    return torch.where(eq.any(1), eq.float().argmax(1), torch.full((len(rows),), -1))


def test_controls_are_training_copies_noisy_copies_and_heldout_rows():
    g = torch.Generator().manual_seed(0)
    train = 0.3 + 0.4 * torch.rand(5, 1, 4, 4, generator=g)  # in [0.3, 0.7]: noise of 0.05 is never clipped
    heldout = torch.rand(3, 1, 4, 4, generator=g)
    copies = control_samples("copies", train, heldout, 2000, seed=1)
    idx = _row_index(copies, train)
    assert (idx >= 0).all()
    counts = torch.bincount(idx, minlength=5)
    assert counts.max() - counts.min() <= 1  # every training image equally often
    assert torch.equal(cycled(train, 10, torch.Generator().manual_seed(1))[:5].sort(0).values,
                       train.sort(0).values)  # the first N rows: a permutation of the training set
    assert torch.equal(control_samples("copies", train, heldout, 2000, seed=1), copies)
    assert not torch.equal(control_samples("copies", train, heldout, 2000, seed=2), copies)
    noise = control_samples("noisy_copies", train, heldout, 2000, seed=1) - copies  # the same copies
    assert noise.std().item() == pytest.approx(0.05, rel=0.03) and abs(noise.mean().item()) < 2e-3
    assert (_row_index(control_samples("heldout", train, heldout, 7, seed=0), heldout) >= 0).all()
    with pytest.raises(ValueError, match="unknown control 'copy'; valid: copies, noisy_copies, heldout"):
        control_samples("copy", train, heldout, 4, seed=0)


@pytest.fixture(scope="module")
def controls(tmp_path_factory) -> Path:
    """The controls of N = 32 scored with the experiment's config (one seed, 360 samples = every one
    of the 180 held-out digits twice, random features, pixel memorization)."""
    sweep = tmp_path_factory.mktemp("sweep")
    overrides = ["eval.num_samples=360", "eval.batch_size=360", "eval.extractor=random",
                 "eval.metrics=[memorization]", "eval.memorization.ct_cells=3",
                 "eval.memorization.ct_min_samples=10"]
    _load("controls").score_controls(sweep, overrides, subsets=["32"], seeds=["0"])
    return sweep


def test_each_control_is_scored_like_a_model_and_its_scores_say_what_it_is(controls):
    results = {}
    for name in CONTROLS:
        folder = controls / "controls" / f"control={name},data.subset=32,seed=0"
        results[name] = summary = read_json(folder / "metrics.json")
        assert (summary["model"], summary["seed"], summary["status"]) == (f"control:{name}", 0, "completed")
    ev = results["copies"]["eval"]
    protocol = ev["protocols"][ev["scores"]["copy_rate"]["protocol_id"]]
    assert protocol["num_train"] == 32 and protocol["num_generated"] == 360  # the training subset

    def value(name: str, score: str) -> float:
        return results[name]["eval"]["scores"][score]["value"]

    assert value("copies", "copy_rate") == 1.0 and value("copies", "nn_distance_mean") < 1e-6
    # every held-out digit exactly twice: the held-out split's own nearest-neighbour statistics
    baseline = protocol["heldout_nn_distance_mean"]
    assert value("heldout", "nn_distance_mean") == pytest.approx(baseline, rel=1e-6)
    assert value("heldout", "copy_rate") == pytest.approx(protocol["heldout_copy_rate"], abs=1e-12)
    # pixel noise of 0.05 on 64 pixels, some clipped at 0: at most 0.05 * 8 = 0.4 from the copy
    assert 0.2 < value("noisy_copies", "nn_distance_mean") < 0.4
    # C_T: copies (exact or noisy) sit far closer to the training set than held-out data does
    assert value("copies", "ct") < -2 and value("noisy_copies", "ct") < -2
    assert abs(value("heldout", "ct")) < 0.5


def test_figures_rows_read_the_controls_and_draw_their_grid(controls, tmp_path):
    figures = _load("figures")
    rows = figures.rows(collect_runs(controls))
    assert {(r.model, r.n, r.seed, r.subset) for r in rows} == {
        (f"control:{name}", 32, 0, "32") for name in CONTROLS}
    ratio = {r.model: r.scores["nn_ratio"] for r in rows}
    assert ratio["control:heldout"] == pytest.approx(1.0, rel=1e-6) and ratio["control:copies"] < 1e-6
    path = figures.grid(rows, 32, tmp_path / "grid.png", k=3)
    assert path.is_file() and path.stat().st_size > 0


def _record(model: str, seed: int, copy_rate: float, nn: float, baseline: float, num_train: int,
            subset: int | None) -> RunRecord:
    summary = {"model": model, "seed": seed, "status": "completed", "steps": 1500,
               "eval": {"scores": {"copy_rate": {"value": copy_rate, "protocol_id": "m"},
                                   "nn_distance_mean": {"value": nn, "protocol_id": "m"},
                                   "fid": {"value": 10.0 + seed, "protocol_id": "f"}},
                        "protocols": {"m": {"num_train": num_train, "heldout_nn_distance_mean": baseline}}}}
    return RunRecord(Path(f"{model}-{seed}"), summary, {"data": {"subset": subset}})


def test_figures_table_is_mean_and_std_over_seeds_per_model_and_n_controls_last():
    figures = _load("figures")
    runs = [_record("control:copies", 0, 1.0, 0.0, 2.0, 32, 32),
            _record("ddpm", 0, 0.2, 1.0, 2.0, 32, 32), _record("ddpm", 1, 0.4, 2.0, 2.0, 32, 32),
            _record("ddpm", 0, 0.0, 3.0, 2.0, 1617, None),
            _record("dcgan", 0, 0.0, 4.0, 2.0, 32, 32)]
    rows = figures.rows(runs)
    agg = figures.aggregate(rows)
    mean, std, seeds = agg[("ddpm", 32)]["copy_rate"]
    assert (mean, std, seeds) == (pytest.approx(0.3), pytest.approx(statistics.stdev([0.2, 0.4])), 2)
    ratio = agg[("ddpm", 32)]["nn_ratio"]
    assert ratio[:2] == (pytest.approx(0.75), pytest.approx(statistics.stdev([0.5, 1.0])))
    assert agg[("ddpm", 1617)]["nn_ratio"] == (pytest.approx(1.5), 0.0, 1)
    lines = figures.table(rows).splitlines()[2:]
    assert [tuple(c.strip() for c in line.split("|")[1:3]) for line in lines] == [
        ("dcgan", "32"), ("ddpm", "32"), ("ddpm", "1617"), ("control:copies", "32")]
    assert "| 0.3 ± 0.14 |" in lines[1] and "| 10.5 ± 0.71 |" in lines[1] and lines[1].endswith("| 2 |")
