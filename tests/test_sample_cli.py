"""``gen-bench sample``: any saved model, the sampler chosen at sampling time, grids and scatters."""

from __future__ import annotations

import shutil

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf.errors import MissingMandatoryValue

from gen_bench.checkpoint import load_model
from gen_bench.cli import quote_paths
from gen_bench.config import config_dir
from gen_bench.diffusion import DDIMSampler
from gen_bench.io import read_json
from gen_bench.rundir import run_dir_of
from gen_bench.sample import sample_command
from gen_bench.train import run_training

from conftest import QUIET, compose_train, run_cli

# Training runs here check models, not the evaluation suite (tests/test_evaluation.py does).
FAST = [*QUIET, "eval.enabled=false"]


def compose_sample(overrides: list[str]):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("sample", overrides=overrides)


def test_ddpm_sampler_is_chosen_at_sampling_time(ddpm_run):
    sample_command(compose_sample([f"ckpt='{ddpm_run}'", "n=16", "sampler=ddim", "sampler.steps=2"]))
    out = ddpm_run / "samples" / "sample_ddim2_16"
    assert (out / "scatter.png").is_file()
    got = torch.load(out / "samples.pt")
    model, *_ = load_model(ddpm_run)
    expected = model.sample(16, generator=torch.Generator().manual_seed(0),
                            sampler=lambda d, **kw: DDIMSampler(d, steps=2, **kw))
    assert got.shape == (16, 2) and torch.equal(got, expected)

    sample_command(compose_sample([f"ckpt='{ddpm_run}/checkpoints/last.ckpt'", "n=16"]))  # its own: ancestral
    ancestral = torch.load(ddpm_run / "samples" / "sample_ddpm_16" / "samples.pt")
    assert torch.equal(ancestral, model.sample(16, generator=torch.Generator().manual_seed(0)))
    assert not torch.equal(ancestral, got)


def test_gan_sample_writes_a_grid_and_ignores_the_sampler(tmp_path, caplog):
    run = tmp_path / "gan"
    run_training(compose_train(["model=wgan_gp", "data=digits", "data.image_size=16", "trainer.max_steps=1",
                                "model.nets.image.generator.base_channels=8",
                                "model.nets.image.critic.base_channels=8",
                                "callbacks.sample_grid.num_samples=4", *FAST], run))
    sample_command(compose_sample([f"ckpt={run}", "n=9", "sampler=ddim", f"out={tmp_path / 'out'}",
                                   "seed=3"]))
    assert (tmp_path / "out" / "samples.png").is_file()
    x = torch.load(tmp_path / "out" / "samples.pt")
    assert x.shape == (9, 1, 16, 16) and 0 <= x.min() and x.max() <= 1
    assert "ignored" in caplog.text


def test_run_dir_of_a_checkpoint(tmp_path):
    (tmp_path / "r" / "checkpoints").mkdir(parents=True)
    assert run_dir_of(tmp_path / "r" / "checkpoints" / "last.ckpt") == (tmp_path / "r").resolve()
    assert run_dir_of(tmp_path / "r") == (tmp_path / "r").resolve()


def test_the_command_line(ddpm_run, tmp_path):
    run = tmp_path / "runs" / "data=ring8,model=ddpm"  # named like gen-bench runs: '=' and ','
    shutil.copytree(ddpm_run / "checkpoints", run / "checkpoints")
    r = run_cli(["sample", f"ckpt={run}", "n=8", "sampler=ddim", "sampler.steps=3", "sampler.eta=1.0",
                 f"out={tmp_path / 'cli'}"], cwd=tmp_path / "runs")  # unquoted: the command quotes it
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "cli" / "scatter.png").is_file() and "ddim3_eta1" in r.stdout
    assert list((tmp_path / "runs").iterdir()) == [run]  # nothing written in the working directory


def test_path_arguments_are_quoted_for_hydra_only_when_needed():
    assert quote_paths(["ckpt=runs/data=ring8,model=ddpm", "n=8", "out=a,b", "sampler.steps=3"]) == [
        "ckpt='runs/data=ring8,model=ddpm'", "n=8", "out='a,b'", "sampler.steps=3"]
    assert quote_paths(["ckpt='runs/a=b'", "ckpt=runs/plain", "out_dir=x/it's=1"]) == [
        "ckpt='runs/a=b'", "ckpt=runs/plain", "out_dir=\"x/it's=1\""]


def test_ckpt_is_mandatory():
    with pytest.raises(MissingMandatoryValue, match="ckpt"):
        sample_command(compose_sample(["n=8"]))


def test_ema_false_samples_and_scores_the_live_weights(ddpm_run, tmp_path):
    """``ema=false`` draws from the live weights in ``gen-bench sample`` and ``gen-bench eval``; the
    default draws from the EMA weights; the two differ (DDPM keeps an EMA by default)."""
    from gen_bench.eval import eval_command
    from gen_bench.metrics.engine import Evaluator

    model, datamodule, _, _ = load_model(ddpm_run)
    assert model.ema_weights is not None
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    with_ema = model.sample(8, generator=g())
    ema, model.ema_weights = model.ema_weights, None
    live = model.sample(8, generator=g())
    assert not torch.allclose(with_ema, live)
    for flag, expected in (("true", with_ema), ("false", live)):
        sample_command(compose_sample([f"ckpt={ddpm_run}", "n=8", "device=cpu", f"ema={flag}",
                                       f"out={tmp_path / flag}"]))
        assert torch.allclose(torch.load(tmp_path / flag / "samples.pt"), expected, atol=1e-6)

    settings = {"name": "fast", "num_samples": 64, "batch_size": 64, "metrics": ["fid"]}
    evaluator = Evaluator(settings, datamodule)
    by_hand = {}
    for flag, weights in (("true", ema), ("false", None)):
        model.ema_weights = weights
        by_hand[flag] = evaluator.evaluate(model).scores["fid"]["value"]
    assert by_hand["true"] != pytest.approx(by_hand["false"], rel=1e-6)
    for flag in ("true", "false"):
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose("eval", overrides=[f"ckpt={ddpm_run}", f"ema={flag}", "device=cpu",
                                             "eval.num_samples=64", "eval.batch_size=64",
                                             "eval.metrics=[fid]", f"out_dir={tmp_path / ('eval-' + flag)}"])
        out = eval_command(cfg)
        assert out["eval"]["draw"]["ema"] is (flag == "true")
        assert out["eval"]["scores"]["fid"]["value"] == pytest.approx(by_hand[flag], rel=1e-6)


def test_a_file_that_is_not_a_checkpoint_is_refused_in_one_line(tmp_path):
    junk = tmp_path / "notes.ckpt"
    junk.write_text("not a checkpoint\n")
    with pytest.raises(ValueError, match=r"notes.ckpt is not a gen-bench checkpoint \(torch.load: .*\)"):
        load_model(junk)
    plain = tmp_path / "tensor.ckpt"
    torch.save({"weights": torch.zeros(2)}, plain)  # loads, but is no Lightning checkpoint
    with pytest.raises(ValueError, match="tensor.ckpt is not a Lightning checkpoint"):
        load_model(plain)


def compose_eval(overrides: list[str]):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("eval", overrides=["eval=fast", "eval.num_samples=64", "eval.modes.num_samples=64",
                                          "eval.metrics=[fid,modes]", *overrides])


def test_evaluations_with_another_sampler_or_without_ema_keep_their_own_folders(ddpm_run):
    from gen_bench.eval import eval_command

    runs = {"ddim2": ["sampler=ddim", "sampler.steps=2"], "ddpm": [], "ddpm-raw": ["ema=false"]}
    out = {name: eval_command(compose_eval([f"ckpt={ddpm_run}", *extra])) for name, extra in runs.items()}
    folders = sorted(p.name for p in (ddpm_run / "eval").iterdir() if (p / "metrics.json").is_file())
    assert folders == ["fast-last-ddim2-ema", "fast-last-ddpm-ema", "fast-last-ddpm-raw"]
    for name, folder in zip(["ddim2", "ddpm", "ddpm-raw"], folders, strict=True):
        assert read_json(ddpm_run / "eval" / folder / "metrics.json") == out[name]
    assert out["ddim2"]["eval"]["draw"]["sampler"] == "ddim2"
    assert out["ddpm-raw"]["eval"]["draw"]["ema"] is False


def test_eval_says_a_read_only_run_folder_before_sampling(ddpm_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(ddpm_run / "checkpoints", run / "checkpoints")
    for path in [run, *run.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        r = run_cli(["eval", f"ckpt={run}", "eval=fast", "eval.num_samples=64", "eval.modes.num_samples=64"],
                    cwd=tmp_path, obey_permissions=True)
    finally:
        for path in [run, *run.rglob("*")]:
            path.chmod(0o755)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"gen-bench: error: cannot write the results to {run}/eval/fast-last-ddpm-ema")
    assert last.endswith("pass out_dir=DIR to write them elsewhere") and "sampling (" not in r.stderr
    ok = run_cli(["eval", f"ckpt={run}", "eval=fast", "eval.num_samples=64", "eval.modes.num_samples=64",
                  f"out_dir={tmp_path / 'elsewhere'}"], cwd=tmp_path, obey_permissions=True)
    assert ok.returncode == 0 and (tmp_path / "elsewhere" / "metrics.json").is_file()


def test_r3gan_and_flow_matching_sample_from_the_command_line(tmp_path):
    """The new models go through `gen-bench sample` like the others: R3GAN in one pass, flow matching
    with the flow sampler named on the command line (a diffusion sampler is refused by name)."""
    runs = {"r3gan": ["model.nets.toy2d.generator.hidden=16", "model.nets.toy2d.discriminator.hidden=16"],
            "flow_matching": ["model.nets.toy2d.velocity.hidden=16", "model.training_sampler.steps=2"]}
    for model, over in runs.items():
        cfg = compose_train([f"model={model}", "data=ring8", "data.batch_size=32", "trainer.max_steps=2",
                             "callbacks.sample_grid.num_points=16", *over, *FAST], tmp_path / model)
        run_training(cfg)
    r = run_cli(["sample", f"ckpt={tmp_path / 'r3gan'}", "n=8", f"out={tmp_path / 'r3gan-out'}"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert torch.load(tmp_path / "r3gan-out" / "samples.pt").shape == (8, 2)
    r = run_cli(["sample", f"ckpt={tmp_path / 'flow_matching'}", "n=8", "sampler=euler", "sampler.steps=4",
                 f"out={tmp_path / 'fm-out'}"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "euler4" in r.stdout and (tmp_path / "fm-out" / "scatter.png").is_file()
    r = run_cli(["sample", f"ckpt={tmp_path / 'flow_matching'}", "n=8", "sampler=ddim"])
    assert r.returncode != 0 and "use sampler=euler or sampler=heun" in r.stderr
