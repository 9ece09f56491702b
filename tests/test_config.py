"""Configs: every combination composes, bad names fail with Hydra's list, configs ship in the wheel."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from gen_bench.config import config_dir
from gen_bench.models import build_model
from gen_bench.rundir import run_slug

from conftest import REPO, compose_train, run_cli

DATA = sorted(p.stem for p in (config_dir() / "data").glob("*.yaml"))
MODELS = sorted(p.stem for p in (config_dir() / "model").glob("*.yaml"))
CONDITIONAL = {"biggan"}  # class-conditional models: labelled data only
PAIRED = {m for m in MODELS if m.startswith("i2i_")}  # image-to-image models: a paired task of image data


def test_config_groups_are_present():
    assert {"ring8", "grid25", "digits", "stacked_digits", "shapes", "mnist", "cifar10", "celeba",
            "image_folder"} <= set(DATA)
    assert {"dcgan", "wgan_gp", "r3gan", "ddpm", "flow_matching", "biggan"} <= set(MODELS)
    assert PAIRED == {"i2i_regression", "i2i_perceptual", "i2i_gan", "i2i_diffusion"}


def test_a_paired_task_needs_an_image_to_image_model_and_back(tmp_path):
    cfg = compose_train(["model=ddpm", "data=shapes", "task=inpaint"], tmp_path)
    with pytest.raises(ValueError, match="generates from noise, but the data has a paired task"):
        build_model(cfg.model, instantiate(cfg.data).spec)
    cfg = compose_train(["model=i2i_gan", "data=shapes"], tmp_path)
    with pytest.raises(Exception, match="reads a paired task's condition: add task=superres or task=inpaint"):
        build_model(cfg.model, instantiate(cfg.data).spec)
    over = ["model=i2i_regression", "data=shapes", "task=superres", "data.task.factor=3"]
    cfg = compose_train(over, tmp_path)
    with pytest.raises(Exception, match="data.task.factor=3 needs an image size divisible by 3"):
        instantiate(cfg.data)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("data", DATA)
def test_every_model_and_dataset_config_composes_and_builds(tmp_path, model, data):
    over = [f"model={model}", f"data={data}"] + (["data.path=/nonexistent"] if data == "image_folder" else [])
    paired = model in PAIRED
    if paired:  # image-to-image models train on a paired task of the data
        over += ["task=superres"]
    cfg = compose_train(over, tmp_path)
    if paired and instantiate(cfg.data.source).spec.kind != "image":
        with pytest.raises(Exception, match="task=superres turns images into pairs; this is"):
            instantiate(cfg.data)
        return
    dm = instantiate(cfg.data)  # lazy: nothing is loaded or downloaded here
    assert dm.name == data
    kinds = list(cfg.model.nets)
    single_label = dm.spec.num_classes is not None and dm.spec.label_shape == ()
    if dm.spec.kind in kinds and model in CONDITIONAL and not single_label:
        with pytest.raises(ValueError, match="needs one class label per sample.*use a labelled dataset"):
            build_model(cfg.model, dm.spec)
    elif dm.spec.kind in kinds:
        net = build_model(cfg.model, dm.spec)
        assert net.spec == dm.spec
    else:  # a model with no networks for this kind of data: one clear error naming what it supports
        expected = (f"model '{cfg.model.name}' has no networks for {dm.spec.kind} data; it supports: "
                    f"{', '.join(kinds)}. Choose another data= or model=")
        with pytest.raises(ValueError, match=re.escape(expected)):
            build_model(cfg.model, dm.spec)


@pytest.mark.parametrize("model,keys,toy,image", [
    ("dcgan", ("optimizer_g.lr", "optimizer_d.lr"), 2e-3, 2e-4),
    ("wgan_gp", ("optimizer_g.lr", "optimizer_critic.lr"), 5e-4, 1e-4),
    ("wgan_gp", ("gp_weight",), 1.0, 10.0),
    ("ddpm", ("optimizer.lr",), 1e-3, 2e-4),
    ("r3gan", ("optimizer_g.lr", "optimizer_d.lr"), 2e-3, 2e-4),
    ("r3gan", ("gamma",), 0.1, 0.05),
    ("flow_matching", ("optimizer.lr",), 1e-3, 2e-4),
])
def test_per_kind_settings_follow_data_kind_and_the_command_line_wins(tmp_path, model, keys, toy, image):
    for data, want in (("ring8", toy), ("grid25", toy), ("digits", image), ("mnist", image)):
        cfg = compose_train([f"model={model}", f"data={data}"], tmp_path)
        assert [OmegaConf.select(cfg.model, k) for k in keys] == [want] * len(keys), data
    # a value set on the command line replaces the per-kind choice for every kind
    over = [f"model.{k}=0.125" for k in keys]
    for data in ("ring8", "digits"):
        cfg = compose_train([f"model={model}", f"data={data}", *over], tmp_path)
        assert [OmegaConf.select(cfg.model, k) for k in keys] == [0.125] * len(keys)


def test_per_kind_settings_need_a_data_kind_and_the_kind_must_match_the_source(tmp_path):
    cfg = compose_train(["model=dcgan", "data=ring8", "~data.kind"], tmp_path)
    with pytest.raises(Exception, match="data config has no `kind:`"):
        OmegaConf.select(cfg.model, "optimizer_g.lr")
    cfg = compose_train(["model=dcgan", "data=ring8", "data.kind=image"], tmp_path)
    with pytest.raises(Exception, match="says kind: image but its source gives toy2d data; set kind: toy2d"):
        instantiate(cfg.data)
    image_only = "model.optimizer_g.lr='${per_kind:{image: 1}}'"
    cfg = compose_train(["model=dcgan", "data=ring8", "data.kind=video", image_only], tmp_path)
    with pytest.raises(Exception, match="no value for data kind 'video'"):
        OmegaConf.select(cfg.model, "optimizer_g.lr")


def test_unknown_names_and_typos_fail_in_one_line_with_the_options(tmp_path):
    r = run_cli(["train", "model=nosuchmodel", "--cfg", "job"], cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.startswith("gen-bench: error: no model config named 'nosuchmodel' "
                               "(options: biggan, dcgan, ddpm,")
    r = run_cli(["train", "data=nosuchdata", "--cfg", "job"], cwd=tmp_path)
    assert r.returncode == 1 and "no data config named 'nosuchdata' (options:" in r.stderr
    assert "ring8" in r.stderr
    r = run_cli(["train", "model.spectral_nrom=true", "--cfg", "job"], cwd=tmp_path)
    assert r.returncode == 1 and r.stderr == (
        "gen-bench: error: model has no key 'spectral_nrom': did you mean model.spectral_norm? (a + prefix "
        "would add it as a new key)\n")


def test_configs_are_found_from_any_directory(tmp_path):
    r = run_cli(["train", "data=ring8", "--cfg", "job"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "name: ring8" in r.stdout and "_target_: gen_bench.models.gan.DCGAN" in r.stdout


def test_cli_usage_and_unknown_command():
    r = run_cli(["--help"])
    assert r.returncode == 0 and "gen-bench train" in r.stdout
    r = run_cli(["trian"])
    assert r.returncode != 0 and "unknown command 'trian'" in r.stderr


def test_run_directory_names_come_from_the_overrides():
    assert run_slug("") == "default"
    assert run_slug("data=ring8,model=dcgan") == "data=ring8,model=dcgan"
    assert "/" not in run_slug("data.path=/home/me/thumbs")
    long = run_slug("x=" + "a" * 300)
    assert len(long) <= 113 and long != run_slug("x=" + "a" * 299)


def test_the_wheel_ships_the_configs(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (wheel,) = Path(tmp_path).glob("gen_bench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for group in ("train.yaml", "model/dcgan.yaml", "data/digits.yaml", "trainer/default.yaml",
                  "callbacks/default.yaml", "logger/csv.yaml"):
        assert f"gen_bench/conf/{group}" in names, group
    assert "gen_bench/cli.py" in names
    # Installed from the wheel (ahead of the clone on the path), the CLI composes from the wheel's copy.
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                        str(wheel)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    probe = "from gen_bench.config import config_dir; print(config_dir())"
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.stdout.strip().startswith(str(site)), r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-m", "gen_bench.cli", "train", "data=grid25", "--cfg", "job"],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert r.returncode == 0 and "name: grid25" in r.stdout, r.stderr


def test_where_the_perceptual_loss_s_classifier_is_cached_changes_no_result(tmp_path):
    from gen_bench.rundir import config_digest

    over = ["model=i2i_perceptual", "data=shapes", "task=superres"]
    digests = {config_digest(OmegaConf.to_container(compose_train([*over, f"eval.cache_dir={d}"], tmp_path),
                                                    resolve=True))
               for d in ("/cache/a", "/cache/b")}
    assert len(digests) == 1
