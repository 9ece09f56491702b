"""Latent walks (``gen-bench interpolate``) and the perceptual path length."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from hydra import compose, initialize_config_dir

from gen_bench.checkpoint import load_model
from gen_bench.config import config_dir
from gen_bench.diffusion import DDIMSampler
from gen_bench.interpolate import interpolate_command
from gen_bench.io import read_json
from gen_bench.metrics.path_length import path_length
from gen_bench.models.base import latent_path
from gen_bench.train import run_training
from gen_bench.viz_video import read_gif

from conftest import QUIET, compose_train, run_cli

FAST = [*QUIET, "eval.enabled=false"]


def compose_interpolate(overrides: list[str]):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("interpolate", overrides=overrides)


def test_path_ends_are_the_latents_themselves():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    for mode in ("slerp", "lerp"):
        path = latent_path(a, b, torch.linspace(0, 1, 5), mode)
        assert path.shape == (5, 3, 4) and torch.equal(path[0], a) and torch.equal(path[-1], b)


def test_path_length_is_zero_for_a_constant_generator():
    out = path_length(lambda z, y: torch.ones(z.shape[0], 2), lambda n, g: torch.randn(n, 8, generator=g),
                      lambda x: x, num_samples=16)
    assert out["path_length"] == 0.0 and out["path_length_filtered"] == 0.0 and out["values"] == [0.0] * 16


def test_path_length_of_a_linear_generator_follows_the_derivative_of_the_path():
    a = torch.randn(3, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def sample_latent(n, g):
        return torch.randn(n, 5, generator=g, dtype=torch.float64)

    # replay the draws of path_length: z0, z1, then t, from one generator seeded alike
    g = torch.Generator().manual_seed(7)
    z0, z1 = sample_latent(32, g), sample_latent(32, g)
    t = torch.rand(32, generator=g, dtype=torch.float64)
    lerp = path_length(lambda z, y: z @ a.T, sample_latent, lambda x: x, num_samples=32, mode="lerp", seed=7)
    # lerp: G(z(t + eps)) - G(z(t)) = eps A (z1 - z0), so every value is ||A (z1 - z0)||^2
    values = torch.tensor(lerp["values"], dtype=torch.float64)
    assert torch.allclose(values, ((z1 - z0) @ a.T).square().sum(1), rtol=1e-6)
    # slerp: d/dt z(t) = omega / sin(omega) (cos(t omega) z1 - cos((1 - t) omega) z0)
    slerp = path_length(lambda z, y: z @ a.T, sample_latent, lambda x: x, num_samples=32, eps=1e-6, seed=7)
    cos = (z0 * z1).sum(1) / (z0.norm(dim=1) * z1.norm(dim=1))
    omega = torch.arccos(cos)[:, None]
    s = t[:, None]
    deriv = omega / torch.sin(omega) * (torch.cos(s * omega) * z1 - torch.cos((1 - s) * omega) * z0)
    values = torch.tensor(slerp["values"], dtype=torch.float64)
    assert torch.allclose(values, (deriv @ a.T).square().sum(1), rtol=1e-3)
    lo, hi = torch.quantile(values, torch.tensor([0.01, 0.99], dtype=values.dtype))
    kept = values[(values >= lo) & (values <= hi)]
    assert slerp["path_length_filtered"] == pytest.approx(kept.mean().item())


def test_ddpm_walks_through_its_noise_and_its_ends_are_samples(ddpm_run, tmp_path):
    out = tmp_path / "walks"
    r = run_cli(["interpolate", f"ckpt={ddpm_run}", "walks=2", "steps=5", "seed=3", "sampler=ddim",
                 "sampler.steps=4", "path_length.num_samples=8", f"out={out}", "eval=fast"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "perceptual path length" in r.stdout
    frames = torch.load(out / "frames.pt")["walk"]
    assert frames.shape == (2, 5, 2) and (out / "walk.png").is_file()
    model, *_ = load_model(ddpm_run)
    ddim = partial(DDIMSampler, steps=4)
    for i in range(2):  # walk i: from the sample of seed 3 + i to that of seed 4 + i
        first = model.sample(1, torch.Generator().manual_seed(3 + i), sampler=ddim)[0]
        last = model.sample(1, torch.Generator().manual_seed(4 + i), sampler=ddim)[0]
        assert torch.allclose(frames[i, 0], first, atol=1e-5)
        assert torch.allclose(frames[i, -1], last, atol=1e-5)
    assert not torch.allclose(frames[0, 2], frames[0, 0])
    record = read_json(out / "interpolate.json")
    assert record["sampler"] == "ddim4"
    assert record["walks"][1] == {"from_seed": 4, "to_seed": 5, "label": None}
    ppl = record["path_length"]
    assert ppl["extractor"]["name"] == "identity" and ppl["path_length"] > 0

    # the model's own ancestral sampler adds noise along the way: refused when asked for, else DDIM
    with pytest.raises(ValueError, match="adds noise at every step"):
        interpolate_command(compose_interpolate([f"ckpt={ddpm_run}", "sampler=ddpm",
                                                 f"out={tmp_path / 'x'}"]))
    assert model.deterministic_sampler().keywords == {"steps": 10, "eta": 0.0}  # all T = 10 steps


TINY_BIGGAN = ["model=biggan", "data=digits", "data.image_size=16", "data.batch_size=8",
               "trainer.max_steps=2",
               "model.nets.image.generator.base_channels=4", "model.nets.image.discriminator.base_channels=4",
               "model.nets.image.generator.latent_dim=12", "model.nets.image.generator.shared_dim=8",
               "callbacks.sample_grid.num_samples=8", *FAST]


def test_biggan_walks_through_z_and_between_two_classes_at_a_fixed_latent(tmp_path):
    run = tmp_path / "run"
    run_training(compose_train(TINY_BIGGAN, run))
    cfg = compose_interpolate([f"ckpt={run}", "walks=3", "steps=4", "seed=0", "classes=[2,7]",
                               "truncation=0.8", "path_length.num_samples=8", "eval=fast"])
    record = interpolate_command(cfg)
    out = run / "interpolate" / "biggan_slerp_truncation0.8"
    frames = torch.load(out / "frames.pt")
    walk, classes = frames["walk"], frames["class_walk"]
    assert walk.shape == classes.shape == (3, 4, 1, 16, 16)
    model, *_ = load_model(run)
    with model.knobs_applied(truncation=0.8):
        for i in range(3):  # walk i: class i (i mod 10), from the sample of seed i to that of seed i + 1
            y = torch.tensor([i])
            first = model.sample(1, torch.Generator().manual_seed(i), labels=y)[0]
            last = model.sample(1, torch.Generator().manual_seed(i + 1), labels=y)[0]
            assert torch.allclose(walk[i, 0], first, atol=1e-5)
            assert torch.allclose(walk[i, -1], last, atol=1e-5)
            # the class walk: the latent of seed i, from class 2 to class 7
            for end, c in ((0, 2), (-1, 7)):
                expected = model.sample(1, torch.Generator().manual_seed(i), labels=torch.tensor([c]))[0]
                assert torch.allclose(classes[i, end], expected, atol=1e-5)
    assert read_gif(out / "walk.gif").shape[0] == 4 and (out / "walk.png").is_file()
    assert (out / "class_walk.gif").is_file() and (out / "class_walk.png").is_file()
    assert record["knobs"] == {"truncation": 0.8} and record["class_walk"]["classes"] == [2, 7]
    assert [w["label"] for w in record["walks"]] == [0, 1, 2]
    ppl = record["path_length"]
    assert ppl["extractor"]["name"] == "classifier" and ppl["path_length"] > 0 and ppl["num_samples"] == 8
