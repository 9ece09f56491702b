"""channels_last and compile: options that change speed, never the maths or the checkpoints."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from gen_bench.models import build_model
from gen_bench.train import run_training

from conftest import QUIET, TINY_IMAGE, compose_train

FAST = [*QUIET, "eval.enabled=false", "callbacks.sample_grid.num_samples=4"]


def _weights(run_dir):
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    return ckpt["state_dict"]


@pytest.mark.parametrize("model", ["dcgan", "wgan_gp"])
def test_channels_last_and_compiled_runs_train_the_same_weights(tmp_path, model):
    tiny = [o for o in TINY_IMAGE if "discriminator" not in o]
    over = [f"model={model}", "data=digits", *tiny, "data.batch_size=8", "trainer.max_steps=3", *FAST]
    d = "critic" if model == "wgan_gp" else "discriminator"
    over += [f"model.nets.image.{d}.base_channels=8"] + (["model.n_critic=2"] if model == "wgan_gp" else [])
    run_training(compose_train(over, tmp_path / "eager"))
    # aot_eager traces with dynamo and AOTAutograd like inductor does, with no C++ compiler to need
    fast = [*over, "channels_last=true", "compile=true", "compile_kwargs.backend=aot_eager"]
    summary = run_training(compose_train(fast, tmp_path / "fast"))
    assert summary["status"] == "completed" and summary["steps"] == 3
    a, b = _weights(tmp_path / "eager"), _weights(tmp_path / "fast")
    assert a.keys() == b.keys()  # compiled in place: the same parameter names in the checkpoint
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=1e-4, atol=1e-5), k


def test_channels_last_converts_conv_weights_and_image_batches(tmp_path):
    cfg = compose_train(["model=dcgan", "data=digits", *TINY_IMAGE], tmp_path)
    model = build_model(cfg.model, instantiate(cfg.data).spec)
    weights = [p for p in model.parameters() if p.ndim == 4]
    assert weights and not all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
    model.use_channels_last()
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
    x = torch.rand(4, 1, 16, 16)
    out = model.to_model_space(x)
    assert out.is_contiguous(memory_format=torch.channels_last) and torch.equal(out, x * 2 - 1)
    toy = build_model(compose_train(["model=dcgan", "data=ring8"], tmp_path).model,
                      instantiate(compose_train(["data=ring8"], tmp_path).data).spec)
    toy.use_channels_last()  # nothing to convert on 2-D data
    assert not toy.channels_last


def test_wgan_gp_compiles_its_generator_but_not_its_critic(tmp_path):
    cfg = compose_train(["model=wgan_gp", "data=ring8"], tmp_path)
    model = build_model(cfg.model, instantiate(cfg.data).spec)
    model.compile_networks(backend="aot_eager")
    assert model.generator._compiled_call_impl is not None
    assert model.critic._compiled_call_impl is None  # the gradient penalty needs double backward
    assert set(model.networks()) == {"generator", "critic"}
