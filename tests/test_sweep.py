"""Sweeps with Hydra multirun: fair ready-made experiments, a real 3-model sweep and its leaderboard,
failed and diverged jobs recorded without stopping the sweep, ``resume=auto`` completing only what is
missing, and the Slurm launcher and Optuna sweeper configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf

from gen_bench.config import config_dir
from gen_bench.io import read_json
from gen_bench.leaderboard import build_leaderboard
from gen_bench.metrics.engine import settings_from
from gen_bench.models.stabilizers import stabilizer_settings
from gen_bench.rundir import collect_runs
from gen_bench.train import DivergedError, run_training

from conftest import QUIET, compose_train, run_cli

EXPERIMENTS = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))
FAST = ["eval=fast", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
        "callbacks.sample_grid.num_points=100", "data.source.num_samples=3000"]


class FailWhileMarked(Callback):
    """Test-only: the run with seed ``fail_seed`` fails while the file ``marker`` exists (a job that
    fails in a sweep, and whose cause is then fixed)."""

    def __init__(self, marker: str, fail_seed: int, seed: int) -> None:
        self.marker, self.fail_seed, self.seed = Path(marker), fail_seed, seed

    def on_train_start(self, trainer, pl_module) -> None:
        if self.seed == self.fail_seed and self.marker.exists():
            raise RuntimeError(f"injected failure (seed {self.seed})")


def _sweep_params(experiment: str) -> dict[str, list[str]]:
    """The values each swept key takes, parsed by Hydra's override grammar."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = OmegaConf.load(config_dir() / "experiment" / f"{experiment}.yaml")
    swept = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]
    parsed = OverridesParser.create().parse_overrides(swept)
    return {o.key_or_group: list(o.sweep_string_iterator()) for o in parsed}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_for_every_job_of_its_sweep(tmp_path, experiment):
    params = _sweep_params(experiment)
    key, values = next(iter(params.items()))
    for value in values:
        cfg = compose_train([f"experiment={experiment}", f"{key}={value}"], tmp_path)
        OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves


@pytest.mark.parametrize("experiment", ["compare_digits", "compare_ring8"])
def test_model_comparisons_give_every_model_the_same_budget_and_protocol(tmp_path, experiment):
    """Every model of a comparison gets the same budget of real images and the same evaluation
    protocol; each run turns the budget into its own max_steps (tests/test_compute.py)."""
    seen = {}
    for model in _sweep_params(experiment)["model"]:
        cfg = compose_train([f"experiment={experiment}", f"model={model}"], tmp_path)
        assert cfg.budget.images > 0 and cfg.budget.train_flops is None
        seen[model] = (cfg.budget.images, cfg.budget.points, cfg.data.batch_size, cfg.eval.name,
                       cfg.eval.num_samples, cfg.eval.extractor, cfg.eval.reference.split, cfg.data.name)
    assert len(set(seen.values())) == 1, seen
    assert _sweep_params(experiment)["seed"] == ["0", "1", "2"]
    raw = OmegaConf.to_container(OmegaConf.load(config_dir() / "experiment" / f"{experiment}.yaml"))
    assert raw["hydra"]["sweep"]["dir"] == f"${{output_root}}/sweeps/{experiment}"  # fixed: found again


def test_memorization_experiment_runs_every_unconditional_image_model_with_one_protocol(tmp_path):
    """Every unconditional image model on N = 32, 128, 512 and all training digits, 3 seeds, each with
    its own number of steps and the same data, evaluation protocol and (held-out) FID reference."""
    params = _sweep_params("memorization_vs_size")
    models = {p.stem for p in (config_dir() / "model").glob("*.yaml")}
    # biggan: class-conditional only; dvdgan: video; ddpm_cifar: model=ddpm sized for a GPU; i2i_*:
    # image-to-image models (an output for an input image, not samples from noise)
    image_to_image = {m for m in models if m.startswith("i2i_")}
    assert set(params["model"]) == models - {"biggan", "dvdgan", "ddpm_cifar"} - image_to_image
    assert params["data.subset"] == ["32", "128", "512", "null"] and params["seed"] == ["0", "1", "2"]
    seen = {}
    for model in params["model"]:
        cfg = compose_train(["experiment=memorization_vs_size", f"model={model}", "data.subset=32"], tmp_path)
        assert cfg.trainer.max_steps == cfg.steps_per_model[model] > 0
        assert not cfg.model.get("conditional", False)
        seen[model] = (cfg.data.name, cfg.data.image_size, cfg.data.batch_size, cfg.data.subset,
                       OmegaConf.to_yaml(cfg.eval))
    assert len(set(seen.values())) == 1, seen
    cfg = compose_train(["experiment=memorization_vs_size", "data.subset=null"], tmp_path)
    assert cfg.data.subset is None and cfg.eval.reference.split == "heldout" and cfg.eval.every_n_steps == 0
    raw = OmegaConf.to_container(OmegaConf.load(config_dir() / "experiment" / "memorization_vs_size.yaml"))
    assert raw["hydra"]["sweep"]["dir"] == "${output_root}/sweeps/memorization_vs_size"  # fixed, for resume


def test_stabilizer_ablation_switches_one_stabilizer_per_arm(tmp_path):
    arms = {}
    for arm in _sweep_params("compare_stabilizers")["stabilizer"]:
        cfg = compose_train(["experiment=compare_stabilizers", f"stabilizer={arm}"], tmp_path)
        model = OmegaConf.to_container(cfg.model, resolve=True)
        arms[arm] = set(stabilizer_settings(model))
        assert cfg.model.name == "dcgan" and cfg.trainer.max_steps == 3000
    assert arms == {"none": set(), "spectral_norm": {"spectral_norm"}, "label_smoothing": {"label_smoothing"},
                    "instance_noise": {"instance_noise"}, "grad_clip": {"grad_clip"},
                    "all": {"spectral_norm", "label_smoothing", "instance_noise", "grad_clip"}}


def test_image_stabilizer_ablation_switches_one_stabilizer_per_arm_at_both_learning_rates(tmp_path):
    """experiment=stabilizers_images: a convolutional D, one stabilizer per arm, spectral norm without
    batch norm in D (Miyato et al.), the learning rate the only difference between the settings."""
    params = _sweep_params("stabilizers_images")
    assert params["setting"] == ["default", "high_lr"]
    arms, protocol = {}, set()
    for setting in params["setting"]:
        for arm in params["stabilizer"]:
            cfg = compose_train(["experiment=stabilizers_images", f"setting={setting}", f"stabilizer={arm}"],
                                tmp_path)
            model = OmegaConf.to_container(cfg.model, resolve=True)
            arms[arm] = set(stabilizer_settings(model))
            d = model["nets"]["image"]["discriminator"]
            assert "Conv" in d["_target_"] or "DCGAN" in d["_target_"]
            assert d["norm"] == ("none" if "spectral_norm" in arms[arm] else "batch")
            lr = {"default": 2e-4, "high_lr": 2e-3}[setting]
            assert model["optimizer_g"]["lr"] == model["optimizer_d"]["lr"] == lr
            protocol.add((cfg.data.name, cfg.data.image_size, cfg.trainer.max_steps,
                          OmegaConf.to_yaml(cfg.eval)))
    assert len(protocol) == 1 and next(iter(protocol))[0] == "stacked_digits"
    assert arms == {"none": set(), "spectral_norm": {"spectral_norm"}, "label_smoothing": {"label_smoothing"},
                    "instance_noise": {"instance_noise"}, "grad_clip": {"grad_clip"},
                    "all": {"spectral_norm", "label_smoothing", "instance_noise", "grad_clip"}}


def test_a_tiny_sweep_of_three_models_gives_a_three_row_leaderboard(tmp_path):
    """gen-bench train -m experiment=compare_ring8 (shrunk), then gen-bench leaderboard."""
    budget = ["budget.images=2560", "budget.points=2"]  # 10 steps of 256 (WGAN-GP: 2 of 5 x 256)
    sweep = tmp_path / "sweep"
    r = run_cli(["train", "-m", "experiment=compare_ring8", "model=dcgan,wgan_gp,ddpm", "seed=0",
                 "logger=csv", *FAST, *budget, f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Launching 3 jobs" in r.stdout + r.stderr
    summaries = {s["model"]: s for s in (read_json(p) for p in sweep.glob("*/metrics.json"))}
    assert set(summaries) == {"dcgan", "wgan_gp", "ddpm"}
    assert all(s["status"] == "completed" for s in summaries.values())
    assert {m: s["steps"] for m, s in summaries.items()} == {"dcgan": 10, "wgan_gp": 2, "ddpm": 10}
    assert {s["compute"]["images_seen"] for s in summaries.values()} == {2560}  # the same real images
    assert [h["step"] for h in summaries["wgan_gp"]["eval"]["history"]] == [1, 2]

    r = run_cli(["leaderboard", str(sweep), "--format", "json"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    board = json.loads(r.stdout)
    assert len(board["rows"]) == 3 and board["unranked"] == []
    assert (board["metric"], board["then_by"]) == ("modes", "hq_fraction")  # 2-D data: mode-aware
    for row in board["rows"]:
        summary = summaries[row["model"]]
        for name in ("modes", "hq_fraction", "fid", "kid"):  # ranked by the first two, FID shown
            assert row[f"{name}_mean"] == summary["eval"]["scores"][name]["value"]
        assert row["protocol_id"] == summary["eval"]["scores"]["modes"]["protocol_id"]
        assert row["steps"] == summary["steps"] and row["seeds"] == 1
    assert [row["rank"] for row in board["rows"]] == [1, 2, 3]
    order = [(-row["modes_mean"], -row["hq_fraction_mean"]) for row in board["rows"]]
    assert order == sorted(order)
    assert (sweep / "modes_over_steps.png").is_file()

    table = build_leaderboard(collect_runs(sweep)).to_text()
    for model in ("dcgan", "wgan_gp", "ddpm"):
        assert f"  {model} " in table


def test_a_failed_job_does_not_stop_the_sweep_and_resume_auto_runs_only_what_is_missing(tmp_path):
    marker = tmp_path / "broken"
    marker.touch()
    sweep = tmp_path / "sweep"
    cmd = ["train", "-m", "data=ring8", "seed=0,1", "trainer.max_steps=3", "eval.every_n_steps=0", *QUIET,
           *FAST, "+callbacks.flaky._target_=test_sweep.FailWhileMarked", f"+callbacks.flaky.marker={marker}",
           "+callbacks.flaky.fail_seed=1", "+callbacks.flaky.seed=${seed}", f"hydra.sweep.dir={sweep}"]
    first = run_cli(cmd, cwd=tmp_path)
    assert first.returncode != 0  # the sweep reports its failure...
    assert "[gen-bench] FAILED" in first.stderr and "injected failure (seed 1)" in first.stderr
    summary = [line for line in first.stderr.splitlines() if line.startswith("[gen-bench] sweep:")]
    assert summary == ["[gen-bench] sweep: 2 runs: 1 completed, 1 failed (seed=1), 0 skipped "
                       "(already complete)"]
    by_seed = {s["seed"]: (p, s) for p, s in ((p, read_json(p)) for p in sweep.glob("*/metrics.json"))}
    assert by_seed[0][1]["status"] == "completed"  # ...after running every job
    assert by_seed[1][1]["status"] == "failed" and "injected failure" in by_seed[1][1]["error"]

    board = build_leaderboard(collect_runs(sweep))
    assert [(r["seeds"], r["failed"]) for r in board.rows] == [(1, 1)]
    assert [(u["seed"], u["status"]) for u in board.unranked] == [(1, "failed")]
    listed = board.to_text()
    assert "not ranked (1)" in listed and "RuntimeError: injected failure (seed 1)" in listed

    marker.unlink()  # the cause is fixed; the same sweep again, with resume=auto
    done_before = by_seed[0][0].stat().st_mtime_ns
    second = run_cli([*cmd, "resume=auto"], cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "already completed 3 steps: nothing to do" in second.stdout + second.stderr
    assert "[gen-bench] sweep: 2 runs: 1 completed, 0 failed, 1 skipped (already complete)" in second.stderr
    assert by_seed[0][0].stat().st_mtime_ns == done_before  # the finished run was left alone
    assert read_json(by_seed[1][0])["status"] == "completed"
    board = build_leaderboard(collect_runs(sweep))
    assert [(r["seeds"], r["failed"]) for r in board.rows] == [(2, 0)] and board.unranked == []


def test_optuna_searches_the_learning_rates_that_minimise_fid(tmp_path):
    sweep = tmp_path / "lr"
    r = run_cli(["train", "-m", "hydra/sweeper=optuna_lr", "hydra.sweeper.n_trials=2", "data=ring8",
                 "trainer.max_steps=3", "eval.every_n_steps=0", *QUIET, *FAST, f"hydra.sweep.dir={sweep}"],
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    fids = {}
    for path in sweep.glob("*/metrics.json"):
        config = OmegaConf.load(path.parent / "config.yaml")
        fids[config.model.optimizer_g.lr, config.model.optimizer_d.lr] = \
            read_json(path)["eval"]["scores"]["fid"]["value"]
    assert len(fids) == 2 and all(1e-5 <= lr <= 1e-2 for pair in fids for lr in pair)
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert best.best_value == min(fids.values())  # the objective is the run's final FID
    params = best.best_params
    assert fids[params["model.optimizer_g.lr"], params["model.optimizer_d.lr"]] == best.best_value
    board = build_leaderboard(collect_runs(sweep))
    assert len(board.rows) == 2 and all("model.optimizer_g.lr=" in r["variant"] for r in board.rows)


def test_a_diverged_run_is_recorded_as_failed(tmp_path):
    cfg = compose_train(["data=ring8", *QUIET, *FAST, "trainer.max_steps=50", "model.optimizer_d.lr=1e30",
                         "callbacks.sample_grid.every_n_steps=0"], tmp_path)
    with pytest.raises(DivergedError, match="nan"):
        run_training(cfg)
    summary = read_json(tmp_path / "metrics.json")
    assert summary["status"] == "failed" and "DivergedError: diverged at step" in summary["error"]
    assert summary["steps"] < 50 and "eval" not in summary  # stopped at once, NaN weights never evaluated


def test_a_run_failing_before_training_records_its_error(tmp_path):
    cfg = compose_train(["data=ring8", *QUIET, "data.source.std=-1"], tmp_path)
    with pytest.raises(Exception, match="std must be positive"):
        run_training(cfg)
    summary = read_json(tmp_path / "metrics.json")
    assert summary["status"] == "failed" and "std must be positive" in summary["error"]
    assert summary["model"] == "dcgan" and summary["data"] == "ring8" and summary["steps"] == 0
    assert (tmp_path / "config.yaml").is_file()  # the leaderboard can still group it


def _compose_with_hydra(overrides: list[str]):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


def test_slurm_launcher_config_composes_and_instantiates():
    ddp = ["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"]
    cfg = _compose_with_hydra(["hydra/launcher=slurm", *ddp, "experiment=compare_digits",
                               "hydra.launcher.partition=gpu"])
    launcher = instantiate(cfg.hydra.launcher)
    # by name: Hydra's plugin scan may load the plugin module again, so classes differ by identity
    assert type(launcher).__qualname__ == "SlurmLauncher"
    p = launcher.params
    assert (p["nodes"], p["tasks_per_node"], p["gpus_per_node"]) == (2, 4, 4)  # one task per GPU for DDP
    assert p["partition"] == "gpu" and p["submitit_folder"].startswith("runs/sweeps/compare_digits/.submitit")


def test_optuna_sweeper_config_composes_and_instantiates():
    cfg = _compose_with_hydra(["hydra/sweeper=optuna_lr", "model=dcgan", "data=ring8"])
    sweeper = instantiate(cfg.hydra.sweeper)
    assert type(sweeper).__qualname__ == "OptunaSweeper"
    assert set(sweeper.sweeper.params) == {"model.optimizer_g.lr", "model.optimizer_d.lr"}
    assert str(sweeper.sweeper.direction).endswith("minimize") and sweeper.sweeper.max_failure_rate == 1.0


def test_trainer_configs_compose_and_build(tmp_path):
    from lightning.pytorch.strategies import DDPStrategy

    for name, extra in [("cpu", []), ("gpu", ["trainer.precision=bf16-mixed"]), ("ddp", [])]:
        cfg = compose_train([f"trainer={name}", *extra], tmp_path)
        assert cfg.trainer._target_ == "lightning.pytorch.Trainer" and cfg.trainer.max_steps == 2000
    cfg = compose_train(["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.num_nodes=1",
                         "trainer.precision=bf16-mixed", "trainer.enable_progress_bar=false"], tmp_path)
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[])
    assert isinstance(trainer.strategy, DDPStrategy) and trainer.num_devices == 2
    assert trainer.precision == "bf16-mixed"


MODE_COLLAPSE = ["mode_collapse_grid25", "mode_collapse_grid25_paper", "mode_collapse_stacked",
                 "mode_collapse_stacked_paper", "mode_collapse_stacked_quarter"]


@pytest.mark.parametrize("experiment", MODE_COLLAPSE)
def test_mode_collapse_arms_share_one_protocol_and_packs_follow_the_paper_batch(tmp_path, experiment):
    """Every arm of a mode-collapse sweep (and PacDCGAN2 / 4, the second command) is scored by one
    protocol (grid25: 2,500 samples; stacked digits: modes on 26,000, the classifier's features); in
    the papers' settings a PacDCGAN batch holds the paper's number of packs (pack x samples) and
    WGAN-GP makes a fifth of the generator updates; the quarter setting's D is a quarter as wide as G."""
    params = _sweep_params(experiment)
    key = next(iter(params))
    dcgan = next(v for v in params[key] if v.endswith("dcgan"))  # the second command: its arm and packs
    jobs = [[f"{key}={v}"] for v in params[key]] + [[f"{key}={dcgan}", f"model.pack={m}"] for m in (2, 4)]
    protocol, steps, batch = set(), {}, {}
    for job in jobs:
        cfg = compose_train([f"experiment={experiment}", *job], tmp_path)
        resolved = OmegaConf.to_container(cfg, resolve=True)
        stacked = resolved["data"]["name"] == "stacked_digits"
        s = settings_from(cfg.eval).for_data("image" if stacked else "toy2d")  # num_samples=auto resolved
        protocol.add((resolved["data"]["name"], s.extractor, s.num_samples,
                      s.modes.count(s.num_samples, 1000 if stacked else 25), s.modes.confidence))
        name = resolved["model"]["name"] + str(resolved["model"].get("pack", 1))
        steps[name], batch[name] = resolved["trainer"]["max_steps"], resolved["data"]["batch_size"]
        if "quarter" in experiment:
            nets = resolved["model"]["nets"]["image"]
            d = nets.get("discriminator", nets.get("critic"))
            assert 4 * d["base_channels"] == nets["generator"]["base_channels"]
    assert len(protocol) == 1, protocol
    assert next(iter(protocol))[3] == (26_000 if "stacked" in experiment else 2500)
    assert params["seed"] == ["0", "1", "2"]
    if "paper" in experiment or "quarter" in experiment:
        assert batch["dcgan2"] == 2 * batch["dcgan1"] and batch["dcgan4"] == 4 * batch["dcgan1"]
        assert steps["wgan_gp1"] * 5 == steps["dcgan1"] == steps["dcgan4"]
    else:  # gen-bench's defaults: the same batch for every arm, equal real samples (budget.images)
        assert len(set(batch.values())) == 1 and cfg.budget.images > 0
