"""The leaderboard on hand-made sweep folders: grouping, mean ± std over seeds, ranking within a
protocol, failed runs listed, every export format, the plot, the command line, wandb's API."""

from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from omegaconf import OmegaConf
from PIL import Image

from gen_bench.cli import main
from gen_bench.io import atomic_write_json
from gen_bench.leaderboard import (
    build_leaderboard,
    default_direction,
    plot_metric_over_steps,
    runs_from_wandb,
)
from gen_bench.models.stabilizers import stabilizer_label, stabilizer_settings, stabilizer_tags
from gen_bench.rundir import collect_runs

DCGAN = {"name": "dcgan", "spectral_norm": False, "real_label": 1.0,
         "instance_noise": {"sigma_start": 0.0, "anneal_steps": 0}, "grad_clip_g": None, "grad_clip_d": None,
         "optimizer_g": {"lr": 2e-4}}


def fake_run(root: Path, name: str, *, model: dict | None = None, data: str = "ring8", seed: int = 0,
             fid: float | None = 1.0, precision: float = 0.5, status: str = "completed", protocol: str = "p1",
             error: str | None = None, steps: int = 10, kind: str | None = None,
             scores: dict[str, float] | None = None) -> Path:
    """A run folder as ``gen-bench train`` leaves it: ``config.yaml`` and ``metrics.json``.

    ``kind`` is the config's ``data.kind`` (left out when ``None``); ``scores`` are further final
    scores, each under protocol ``<protocol>-<name>``."""
    run = root / name
    run.mkdir(parents=True)
    model = {**DCGAN, **(model or {})}
    config = {"seed": seed, "run_dir": str(run), "model": model,
              "data": {"name": data, "batch_size": 64, "shuffle_seed": seed,
                       **({"kind": kind} if kind else {})},
              "trainer": {"devices": 1, "num_nodes": 1, "max_steps": steps}, "eval": {"name": "fast"},
              "logger": {"wandb": {"project": "proj", "offline": True}}}
    OmegaConf.save(OmegaConf.create(config), run / "config.yaml")
    summary = {"status": status, "model": model["name"], "data": data, "seed": seed, "steps": steps,
               "batches_seen": steps, "run_dir": str(run), "final": {}}
    if fid is not None and status == "completed":
        summary["final"] = {"val/fid": fid, "val/precision": precision}
        summary["eval"] = {
            "name": "fast",
            "scores": {"fid": {"value": fid, "std": 0.1, "values": [fid], "protocol_id": protocol},
                       "precision": {"value": precision, "std": None, "values": [precision],
                                     "protocol_id": protocol + "-prdc"}},
            "protocols": {protocol: {"data": data, "metric": "fid"}},
            "history": [{"step": steps // 2, "fid": 2 * fid, "precision": precision / 2},
                        {"step": steps, "fid": fid, "precision": precision}],
        }
        for k, v in (scores or {}).items():
            summary["final"][f"val/{k}"] = v
            summary["eval"]["scores"][k] = {"value": v, "std": None, "values": [v],
                                            "protocol_id": f"{protocol}-{k}"}
    if error is not None:
        summary["error"] = error
    atomic_write_json(run / "metrics.json", summary)
    return run


@pytest.fixture
def sweep(tmp_path) -> Path:
    root = tmp_path / "sweep"
    for seed, fid in enumerate([10.0, 12.0, 14.0]):
        fake_run(root, f"model=dcgan,seed={seed}", seed=seed, fid=fid, precision=0.2 + seed / 10)
    for seed, fid in enumerate([8.0, 9.0]):
        fake_run(root, f"model=wgan_gp,seed={seed}", model={"name": "wgan_gp", "spectral_norm": None,
                                                               "real_label": None}, seed=seed, fid=fid)
    fake_run(root, "model=ddpm,seed=0", model={"name": "ddpm"}, fid=5.0, precision=0.9)
    fake_run(root, "model=ddpm,seed=1", model={"name": "ddpm"}, seed=1, status="failed", fid=None,
             error="gen_bench.train.DivergedError: diverged at step 3: train/loss=nan")
    fake_run(root, "model=dcgan,sn,seed=0", model={"spectral_norm": True}, fid=11.0)
    fake_run(root, "model=dcgan,seed=9", seed=9, status="running", fid=None)
    return root


def test_groups_seeds_into_mean_and_std_and_ranks_by_fid(sweep):
    board = build_leaderboard(collect_runs(sweep))
    assert board.metric == "fid" and board.direction == "min"
    ranked = [(r["rank"], r["model"], r["stabilizers"]) for r in board.rows]
    assert ranked == [(1, "ddpm", "none"), (2, "wgan_gp", "none"), (3, "dcgan", "spectral_norm"),
                      (4, "dcgan", "none")]
    dcgan = board.rows[3]
    assert dcgan["seeds"] == 3 and dcgan["seed_list"] == [0, 1, 2]
    assert dcgan["fid_mean"] == pytest.approx(12.0) and dcgan["fid_std"] == pytest.approx(2.0)
    assert dcgan["precision_mean"] == pytest.approx(statistics.fmean([0.2, 0.3, 0.4]))
    assert dcgan["fid_eval_std"] == pytest.approx(0.1)  # the spread of the evaluation draws, kept apart
    assert dcgan["samples_seen"] == 10 * 64 and dcgan["steps"] == 10
    wgan = board.rows[1]
    assert wgan["fid_mean"] == pytest.approx(8.5)
    assert wgan["fid_std"] == pytest.approx(statistics.stdev([8, 9]))
    ddpm = board.rows[0]
    assert ddpm["seeds"] == 1 and ddpm["fid_std"] is None and ddpm["failed"] == 1


def test_re_evaluations_inside_a_run_are_not_counted_as_runs(sweep):
    run = sweep / "model=dcgan,seed=0"
    fake_run(run / "eval", "paper-last", fid=99.0, protocol="paper")  # what `gen-bench eval` writes
    runs = collect_runs(sweep)
    assert len(runs) == 9 and run / "eval" / "paper-last" not in [r.run_dir for r in runs]
    assert collect_runs(run)[0].run_dir == run  # one run folder is a sweep of one


def test_failed_and_unfinished_runs_are_listed_not_dropped(sweep):
    board = build_leaderboard(collect_runs(sweep))
    unranked = {(u["model"], u["seed"]): u for u in board.unranked}
    assert set(unranked) == {("ddpm", 1), ("dcgan", 9)}
    assert unranked["ddpm", 1]["status"] == "failed" and "DivergedError" in unranked["ddpm", 1]["reason"]
    assert unranked["dcgan", 9]["status"] == "running"
    text = board.to_text()
    assert "not ranked (2)" in text and "DivergedError: diverged at step 3" in text
    assert "1 (1 failed)" in text  # the ddpm row says one of its seeds failed


def test_ct_ranks_by_its_distance_from_zero(tmp_path):
    """C_T is far below 0 for copying, above 0 for underfitting: neither sign is better, 0 is best."""
    assert default_direction("val/ct") == "zero" and default_direction("copy_rate") == "min"
    root = tmp_path / "sweep"
    for name, ct in [("ddpm", -7.2), ("dcgan", 0.4), ("wgan_gp", 3.0), ("r3gan", -0.1)]:
        fake_run(root, f"model={name}", model={"name": name}, scores={"ct": ct})
    board = build_leaderboard(collect_runs(root), metric="ct")
    assert [r["model"] for r in board.rows] == ["r3gan", "dcgan", "wgan_gp", "ddpm"]
    assert "ct (closest to 0 is better)" in board.to_text()


def test_direction_follows_the_metric_and_can_be_set(sweep):
    assert default_direction("fid") == "min" and default_direction("val/kid") == "min"
    assert default_direction("precision") == "max" and default_direction("modes") == "max"
    runs = collect_runs(sweep)
    board = build_leaderboard(runs, metric="precision")
    assert board.direction == "max" and board.rows[0]["model"] == "ddpm"  # 0.9
    assert board.rows[0]["precision_mean"] == pytest.approx(0.9)
    worst_first = build_leaderboard(runs, metric="precision", direction="min")
    assert worst_first.rows[0]["precision_mean"] < worst_first.rows[1]["precision_mean"]
    with pytest.raises(ValueError, match="direction"):
        build_leaderboard(runs, direction="up")


def _ring8_generators(seed: int) -> dict[str, dict[str, float]]:
    """FID (identity features, against 10k ring8 samples) and mode scores of two generators: a blob,
    N(mean, cov) of the data, whose first two moments match (so its FID is ~0), and a sharp one with
    the right modes, std 0.015 and mode weights 2:1 (a worse FID, almost every sample high quality)."""
    from gen_bench.data.toy import GaussianMixture2D
    from gen_bench.metrics.fid import FeatureStats, frechet_distance
    from gen_bench.metrics.modes import ModeCoverage

    source = GaussianMixture2D("ring8", num_samples=10_000)
    real, centers = source.load().x, torch.tensor(source.spec.mode_centers)
    g = torch.Generator().manual_seed(seed)
    mu, cov = real.double().mean(0), real.double().T.cov()
    blob = mu + torch.randn(2500, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    modes = torch.multinomial(torch.tensor([2.0, 2, 1, 1, 2, 2, 1, 1]), 2500, replacement=True, generator=g)
    sharp = centers[modes] + 0.015 * torch.randn(2500, 2, generator=g)
    out = {}
    for name, x in (("blob", blob.float()), ("sharp", sharp)):
        metric = ModeCoverage(8, centers, source.spec.mode_std)
        metric.update(x, torch.arange(2500))
        fid = frechet_distance(*FeatureStats.of(x).mean_cov(), *FeatureStats.of(real).mean_cov()).item()
        out[name] = {"fid": fid, **{k: v for k, v in metric.compute().items() if k != "num_generated"}}
    return out


def test_2d_runs_rank_by_modes_then_high_quality_share_not_by_fid(tmp_path):
    """FID of raw 2-D points only sees the first two moments: a shapeless blob beats a sharp
    generator. The default ranking of 2-D data is mode-aware; FID is still shown."""
    for seed in (0, 1):
        scored = _ring8_generators(seed)
        blob, sharp = scored["blob"], scored["sharp"]
        assert blob["fid"] < sharp["fid"] and blob["hq_fraction"] < sharp["hq_fraction"]
        assert blob["modes"] <= sharp["modes"]
        for name, model, s in (("blob", "ddpm", blob), ("sharp", "dcgan", sharp)):
            fake_run(tmp_path, f"{name},{seed}", model={"name": model}, seed=seed, kind="toy2d", fid=s["fid"],
                     scores={k: v for k, v in s.items() if k != "fid"})
    runs = collect_runs(tmp_path)
    board = build_leaderboard(runs)
    assert (board.metric, board.then_by, board.direction) == ("modes", "hq_fraction", "max")
    assert [r["model"] for r in board.rows] == ["dcgan", "ddpm"]  # the sharp generator first
    assert board.columns[:2] == ["hq_fraction", "fid"]
    assert board.rows[1]["fid_mean"] < board.rows[0]["fid_mean"]  # FID is shown, and prefers the blob
    assert "ranked by modes, then hq_fraction" in board.to_text()
    assert [r["model"] for r in build_leaderboard(runs, metric="fid").rows] == ["ddpm", "dcgan"]
    # equal modes: the high-quality share breaks the tie
    fake_run(tmp_path / "tie", "a", kind="toy2d", fid=0.1, scores={"modes": 8, "hq_fraction": 0.5})
    fake_run(tmp_path / "tie", "b", model={"name": "ddpm"}, kind="toy2d", fid=0.2,
             scores={"modes": 8, "hq_fraction": 0.9})
    assert [r["model"] for r in build_leaderboard(collect_runs(tmp_path / "tie")).rows] == ["ddpm", "dcgan"]
    # image runs keep FID; 2-D and image runs together have no common default score
    fake_run(tmp_path / "img", "a", data="digits", kind="image", fid=3.0)
    assert build_leaderboard(collect_runs(tmp_path / "img")).metric == "fid"
    with pytest.raises(ValueError, match="mix 2-D data with image data.*pass --metric"):
        build_leaderboard(collect_runs(tmp_path))
    assert default_direction("mode_kl") == "min"


def test_runs_under_different_protocols_are_ranked_apart(tmp_path):
    fake_run(tmp_path, "a", fid=3.0, protocol="fast")
    fake_run(tmp_path, "b", model={"name": "wgan_gp"}, fid=1.0, protocol="fast")
    fake_run(tmp_path, "c", model={"name": "ddpm"}, fid=2.0, protocol="paper")  # 50k samples: another number
    board = build_leaderboard(collect_runs(tmp_path))
    ranks = {r["model"]: (r["rank"], r["protocol_id"]) for r in board.rows}
    assert ranks == {"wgan_gp": (1, "fast"), "dcgan": (2, "fast"), "ddpm": (1, "paper")}
    assert "several evaluation protocols" in board.to_text()


def test_settings_that_differ_besides_seed_and_stabilizers_make_their_own_rows(tmp_path):
    for seed in (0, 1):
        fake_run(tmp_path, f"lr1,{seed}", seed=seed, fid=4.0 + seed, model={"optimizer_g": {"lr": 1e-3}})
        fake_run(tmp_path, f"lr2,{seed}", seed=seed, fid=2.0 + seed, model={"optimizer_g": {"lr": 2e-4}})
    board = build_leaderboard(collect_runs(tmp_path))
    assert [(r["variant"], r["seeds"]) for r in board.rows] == [("model.optimizer_g.lr=0.0002", 2),
                                                                ("model.optimizer_g.lr=0.001", 2)]
    assert "variant" in board.to_text().splitlines()[1]


def test_a_config_group_choice_is_labelled_by_its_override_not_by_every_key_it_changes(tmp_path):
    """backbone=resnet changes many model.nets keys; the overrides that made the runs say it in a word.
    Without recorded overrides (or when they do not tell the settings apart) the keys are the label."""
    resnet = {"nets": {"image": {"generator": {"_target_": "ResNetGenerator", "base_channels": 64}}}}
    plain = {"nets": {"image": {"generator": {"_target_": "DCGANGenerator", "base_channels": 32}}}}
    for seed in (0, 1):
        for name, model, extra in [("plain", plain, []), ("resnet", resnet, ["backbone=resnet"])]:
            run = fake_run(tmp_path, f"{name},{seed}", seed=seed, model=model, fid=2.0 + seed)
            (run / ".hydra").mkdir()
            (run / ".hydra" / "overrides.yaml").write_text(
                yaml.safe_dump(["experiment=x", "model=dcgan", f"seed={seed}", "logger=csv", *extra]))
    board = build_leaderboard(collect_runs(tmp_path))
    assert sorted((r["variant"], r["seeds"]) for r in board.rows) == [("", 2), ("backbone=resnet", 2)]
    (tmp_path / "plain,1" / ".hydra" / "overrides.yaml").unlink()  # one run without: keys it is
    variants = {r["variant"] for r in build_leaderboard(collect_runs(tmp_path)).rows}
    assert all("model.nets.image.generator._target_=" in v for v in variants), variants


def test_stabilizer_labels_and_tags():
    on = {**DCGAN, "spectral_norm": True, "real_label": 0.9, "instance_noise": {"sigma_start": 0.1,
                                                                              "anneal_steps": 2000},
          "grad_clip_g": 1.0, "grad_clip_d": None}
    assert stabilizer_settings(DCGAN) == {} and stabilizer_label({}) == "none"
    assert stabilizer_label(stabilizer_settings(on)) == (
        "spectral_norm+label_smoothing=0.9+instance_noise=0.1/2000+grad_clip=1/-")
    assert stabilizer_tags(on) == ["spectral_norm", "label_smoothing=0.9", "instance_noise=0.1/2000",
                                   "grad_clip=1/-"]
    assert stabilizer_tags({"name": "ddpm", "grad_clip": 1.0}) == []  # DDPM's clipping: not a GAN stabilizer
    assert stabilizer_label(stabilizer_settings({**DCGAN, "pack": 2})) == "pack=2"  # PacGAN
    assert stabilizer_settings({**DCGAN, "pack": 1}) == {}  # no packing: vanilla


def test_exports_csv_markdown_json(sweep):
    board = build_leaderboard(collect_runs(sweep), columns=["precision"])
    rows = list(csv.DictReader(io.StringIO(board.format("csv"))))
    assert [r["model"] for r in rows] == ["ddpm", "wgan_gp", "dcgan", "dcgan"]
    assert float(rows[3]["fid_mean"]) == 12.0 and float(rows[3]["fid_std"]) == 2.0
    assert rows[0]["fid_std"] == "" and rows[0]["failed"] == "1"
    md = board.format("markdown").splitlines()
    assert md[0].startswith("| # | model | data | stabilizers | seeds | fid (lower is better) | precision")
    assert md[1].startswith("|---|") and len([line for line in md if line.startswith("| ")]) == 5
    assert any("**failed**" in line for line in md)
    data = json.loads(board.format("json"))
    assert data["metric"] == "fid" and len(data["rows"]) == 4 and len(data["unranked"]) == 2
    assert data["protocols"]["p1"]["metric"] == "fid"
    with pytest.raises(ValueError, match="valid: table, csv, markdown, json"):
        board.format("xlsx")


def test_plot_of_fid_over_steps(sweep, tmp_path):
    runs = collect_runs(sweep)
    fig = plot_metric_over_steps(runs, "fid", tmp_path / "fid.png")
    assert Image.open(tmp_path / "fid.png").size[0] > 300
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    dcgan = lines["dcgan (n=3)"]
    assert list(dcgan.get_xdata()) == [5, 10]
    assert list(dcgan.get_ydata()) == pytest.approx([24.0, 12.0])  # mean over seeds at each step
    assert len(ax.collections) == len(lines)  # one ±std band per line
    assert "ddpm (n=1)" in lines  # the failed ddpm seed has no curve
    by_samples = plot_metric_over_steps(runs, "fid", x="samples")
    assert list(by_samples.axes[0].get_lines()[0].get_xdata()) == [5 * 64, 10 * 64]


def test_command_line(sweep, tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["leaderboard", str(sweep), "--format", "csv", "-o", str(tmp_path / "lb.csv"),
              "--plot", str(tmp_path / "p.png")])
    assert done.value.code == 0
    assert (tmp_path / "lb.csv").read_text().startswith("rank,model,data,stabilizers")
    assert (tmp_path / "p.png").is_file()
    with pytest.raises(SystemExit):
        main(["leaderboard", str(sweep), "--metric", "precision", "--no-plot"])
    out = capsys.readouterr().out
    assert "ranked by precision" in out and "precision (higher is better)" in out
    assert not (sweep / "precision_over_steps.png").exists()
    with pytest.raises(SystemExit) as done:
        main(["leaderboard", str(tmp_path / "nowhere")])
    assert done.value.code == 2 and "no such folder" in capsys.readouterr().err


def test_an_unknown_metric_is_an_error_naming_the_closest_and_draws_nothing(sweep, capsys):
    with pytest.raises(SystemExit) as done:
        main(["leaderboard", str(sweep), "--metric", "fdi"])
    assert done.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and not list(sweep.glob("*.png"))
    assert captured.err.strip() == (f"gen-bench leaderboard: error: no run below {sweep} has a metric 'fdi': "
                                    "did you mean --metric fid? (available: fid, precision)")


def test_runs_from_the_wandb_api_make_the_same_leaderboard():
    def run(name, model, seed, fid, state="finished"):
        config = {"model": {**DCGAN, "name": model}, "data": {"name": "ring8"}, "seed": seed, "_wandb": {}}
        summary = {"val/fid": fid, "status": "completed" if state == "finished" else None, "steps": 10}
        history = [{"_step": 5, "val/fid": 2 * fid}, {"_step": 10, "val/fid": fid}]
        return SimpleNamespace(name=name, config=config, summary=summary, state=state, job_type="train",
                               history=lambda keys, pandas: history)

    calls = []

    class FakeApi:
        def runs(self, path, filters):
            calls.append((path, filters))
            return [run("a", "dcgan", 0, 3.0), run("b", "dcgan", 1, 5.0), run("c", "ddpm", 0, 1.0),
                    run("d", "ddpm", 1, 9.0, state="crashed"),
                    SimpleNamespace(name="lb", config={}, summary={}, state="finished",
                                    job_type="leaderboard")]

    runs = runs_from_wandb("proj", group="compare_ring8", entity="me", api=FakeApi())
    assert calls == [("me/proj", {"group": "compare_ring8"})]
    board = build_leaderboard(runs)
    rows = [(r["model"], r["seeds"], r["fid_mean"]) for r in board.rows]
    assert rows == [("ddpm", 1, 1.0), ("dcgan", 2, 4.0)]
    assert [u["status"] for u in board.unranked] == ["failed"]
    assert runs[0].history("fid") == [(5, 6.0), (10, 3.0)]


def _add(run: Path, scores: dict[str, dict]) -> None:
    """Merge score entries (value, ci_low, ci_high, fit...) into a fake run's metrics.json."""
    path = run / "metrics.json"
    summary = json.loads(path.read_text())
    for name, entry in scores.items():
        old = summary["eval"]["scores"].get(name, {"std": None, "protocol_id": f"p1-{name}"})
        summary["eval"]["scores"][name] = {**old, **entry}
    atomic_write_json(path, summary)


def test_bootstrap_intervals_mark_ties_and_average_over_seeds(tmp_path):
    """Rows whose FID intervals overlap are tied; a row's interval is the mean of its seeds' bounds."""
    root = tmp_path / "sweep"
    spec = {"a": [(1.0, 0.5, 1.5), (1.2, 0.7, 1.7)], "b": [(1.6, 1.4, 2.6)], "c": [(5.0, 4.0, 6.0)]}
    for model, seeds in spec.items():
        for seed, (fid, lo, hi) in enumerate(seeds):
            run = fake_run(root, f"{model}-{seed}", model={"name": model}, seed=seed, fid=fid)
            _add(run, {"fid": {"ci_low": lo, "ci_high": hi}})
    board = build_leaderboard(collect_runs(root), "fid")
    rows = {r["model"]: r for r in board.rows}
    assert [rows[m]["rank"] for m in "abc"] == [1, 2, 3]
    assert (rows["a"]["fid_ci_low"], rows["a"]["fid_ci_high"]) == pytest.approx((0.6, 1.6))
    assert rows["a"]["tied_with"] == [2] and rows["b"]["tied_with"] == [1] and rows["c"]["tied_with"] == []
    text = board.to_text()
    assert "1=" in text and "2=" in text and "[0.6, 1.6]" in text and "95% CI" in text
    csv_rows = list(csv.DictReader(io.StringIO(board.to_csv())))
    assert [r["tied_with"] for r in csv_rows] == ["2", "1", ""]
    plain = build_leaderboard(collect_runs(root), "precision")  # no intervals: no column, no ties
    assert "95% CI" not in plain.to_text() and all(r["tied_with"] == [] for r in plain.rows)


def test_rank_agreement_between_feature_spaces_and_sample_counts_is_scipys_kendall_tau(tmp_path):
    from scipy.stats import kendalltau

    from gen_bench.leaderboard import rank_agreement

    root = tmp_path / "sweep"
    fid = [1.0, 2.0, 3.0, 4.0]
    fid_random = [10.0, 30.0, 20.0, 40.0]  # models 2 and 3 swap places: tau = (5 - 1) / 6
    fid_small = [4.0, 3.5, 6.0, 5.0]  # at N=51: two swaps
    for i in range(4):
        run = fake_run(root, f"m{i}", model={"name": f"m{i}"}, fid=fid[i],
                       scores={"fid@random": fid_random[i]})
        _add(run, {"fid_inf": {"value": fid[i] - 0.5, "values": [fid[i] - 0.5],
                               "fit": {"counts": [51, 256], "fid": [fid_small[i], fid[i]]}}})
    runs = collect_runs(root)
    board = build_leaderboard(runs, "fid")
    board.protocols = {"p1": {"num_generated": 256}}
    agreement = {a["other"]: a for a in rank_agreement(board, runs)}
    assert set(agreement) == {"fid@random", "fid at N=51", "fid_inf"}
    assert agreement["fid@random"]["tau"] == pytest.approx(4 / 6)
    assert agreement["fid@random"]["tau"] == pytest.approx(kendalltau(fid, fid_random).statistic)
    assert agreement["fid@random"]["p_value"] == pytest.approx(kendalltau(fid, fid_random).pvalue)
    assert agreement["fid at N=51"]["tau"] == pytest.approx(kendalltau(fid, fid_small).statistic)
    assert agreement["fid at N=51"]["tau"] == pytest.approx(2 / 6)
    assert agreement["fid_inf"]["tau"] == pytest.approx(1.0) and agreement["fid_inf"]["models"] == 4
    # ranking by the other space, against the main one
    by_random = build_leaderboard(runs, "fid@random")
    assert by_random.direction == "min" and [r["model"] for r in by_random.rows] == ["m0", "m2", "m1", "m3"]
    assert [a["other"] for a in rank_agreement(by_random, runs)] == ["fid"]


def test_agreement_on_the_command_line(tmp_path, capsys):
    root = tmp_path / "sweep"
    for i, (a, b) in enumerate([(1.0, 2.0), (2.0, 1.0), (3.0, 3.0)]):
        fake_run(root, f"m{i}", model={"name": f"m{i}"}, fid=a, scores={"fid@random": b})
    with pytest.raises(SystemExit) as done:
        main(["leaderboard", str(root), "--agreement", "--no-plot"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "rank agreement (Kendall tau-b, scipy) of the model order by fid with:" in out
    assert "fid@random" in out and "tau=+0.333 (3 models" in out
