"""WGAN-GP: the gradient penalty, the paper's defaults, the n_critic schedule and exact resume."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from gen_bench.callbacks import read_logged_rows
from gen_bench.data.spec import DataSpec
from gen_bench.models import build_model
from gen_bench.models.nets import DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator
from gen_bench.models.wgan_gp import WGANGP, gradient_penalty
from gen_bench.train import run_training

from conftest import QUIET, compose_train

# Training runs here check models, not the evaluation suite (tests/test_evaluation.py does).
FAST = [*QUIET, "eval.enabled=false"]

TOY = DataSpec(kind="toy2d", shape=(2,))
IMG = DataSpec(kind="image", shape=(1, 16, 16))


def test_gradient_penalty_of_a_linear_critic_is_the_closed_form():
    """D(x) = w.x + b has gradient w everywhere: GP = (||w|| - 1)^2 whatever the interpolates."""
    critic = torch.nn.Linear(3, 1)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[2.0, -1.0, 2.0]]))  # ||w|| = 3
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(7, 3, generator=g), torch.randn(7, 3, generator=g)
    gp = gradient_penalty(lambda x: critic(x).squeeze(1), real, fake, generator=g)
    assert gp.item() == pytest.approx(4.0, rel=1e-6)


def test_gradient_penalty_equals_a_direct_per_sample_autograd_computation():
    torch.manual_seed(0)
    critic = MLPDiscriminator(TOY, hidden=16, depth=2)
    g = torch.Generator().manual_seed(1)
    real, fake = torch.randn(6, 2, generator=g), torch.randn(6, 2, generator=g)
    mix = torch.rand(6, generator=g)
    got = gradient_penalty(critic, real, fake, mix=mix)

    penalties = []
    for i in range(6):  # one sample at a time: no batch effects can hide here
        x = (mix[i] * real[i] + (1 - mix[i]) * fake[i]).unsqueeze(0).requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
        penalties.append((grad.norm() - 1) ** 2)
    expected = torch.stack(penalties).mean()
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)

    # the penalty is differentiable w.r.t. the critic (double backprop), with the same gradient
    # (biases of a piecewise-linear critic do not change its input gradient: weights only)
    params = [p for name, p in critic.named_parameters() if name.endswith("weight")]
    p_got = torch.autograd.grad(got, params)
    p_exp = torch.autograd.grad(expected, params)
    for a, b in zip(p_got, p_exp, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert all(a.abs().sum() > 0 for a in p_got)

    # drawn interpolation weights come from the generator only
    state = torch.get_rng_state()
    a = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(5))
    b = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(5))
    assert a == b and torch.equal(torch.get_rng_state(), state)


def test_defaults_follow_the_paper(tmp_path):
    cfg = compose_train(["model=wgan_gp"], tmp_path)
    assert cfg.model.n_critic == 5 and cfg.model.gp_weight == 10.0 and cfg.model.ema is None
    toy_cfg = compose_train(["model=wgan_gp", "data=ring8"], tmp_path)
    for c, spec, lr, gp_weight in ((cfg, IMG, 1e-4, 10.0), (toy_cfg, TOY, 5e-4, 1.0)):  # 2-D: own lr, lambda
        model = build_model(c.model, spec)
        assert isinstance(model, WGANGP) and model.gp_weight == gp_weight
        opt_g, opt_c = model.configure_optimizers()
        for opt in (opt_g, opt_c):
            assert isinstance(opt, torch.optim.Adam)
            assert opt.defaults["lr"] == lr and tuple(opt.defaults["betas"]) == (0.0, 0.9)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.critic.modules())
    image = build_model(cfg.model, IMG)
    assert isinstance(image.generator, DCGANGenerator) and isinstance(image.critic, DCGANDiscriminator)
    assert any(isinstance(m, torch.nn.GroupNorm) for m in image.critic.modules())  # layer norm
    # the same generator as DCGAN's
    dcgan = OmegaConf.to_container(compose_train(["model=dcgan"], tmp_path).model.nets)
    wgan = OmegaConf.to_container(cfg.model.nets)
    assert all(dcgan[k]["generator"] == wgan[k]["generator"] for k in ("image", "toy2d"))


def test_a_critic_with_batch_norm_is_rejected():
    opt = lambda p: torch.optim.Adam(p)  # noqa: E731
    with pytest.raises(ValueError, match="must not use batch norm"):
        WGANGP(IMG, DCGANGenerator(IMG, latent_dim=4, base_channels=4),
               DCGANDiscriminator(IMG, base_channels=4, norm="batch"), opt, opt)
    WGANGP(TOY, MLPGenerator(TOY, latent_dim=4), MLPDiscriminator(TOY), opt, opt)  # fine


TOY_RUN = ["data=ring8", "model=wgan_gp", "data.batch_size=32", "model.nets.toy2d.generator.hidden=16",
           "model.nets.toy2d.critic.hidden=16", "callbacks.sample_grid.num_points=64",
           "callbacks.sample_grid.every_n_steps=0", "callbacks.checkpoint.every_n_train_steps=1",
           "callbacks.checkpoint.save_top_k=-1",
           "model.ema={_target_:gen_bench.ema.EMA,decay:0.9,warmup:0}", *FAST]


def _ckpt(run_dir, name="last.ckpt"):
    return torch.load(run_dir / "checkpoints" / name, weights_only=False, map_location="cpu")


def test_n_critic_steps_per_generator_step_and_exact_resume_mid_run(tmp_path):
    """max_steps counts generator steps; a checkpoint taken at a generator step resumes with the
    right critic phase: the resumed run ends bit-identical to the uninterrupted one."""
    full = tmp_path / "full"
    summary = run_training(compose_train([*TOY_RUN, "trainer.max_steps=4"], full))
    assert summary["steps"] == 4 and summary["batches_seen"] == 20
    last = _ckpt(full)
    assert int(last["state_dict"]["critic_steps"]) == 20
    opt_g, opt_c = last["optimizer_states"]
    steps = lambda s: {int(v["step"]) for v in s["state"].values()}  # noqa: E731  Adam's own counters
    assert steps(opt_g) == {4} and steps(opt_c) == {20}
    assert last["ema"]["num_updates"] == 4  # the generator EMA moves with generator steps only
    rows = (full / "metrics.csv").read_text()
    for key in ("train/wasserstein", "train/gradient_penalty", "train/loss_critic", "train/loss_g"):
        assert key in rows
    # one unit everywhere: the CSV (and so the loss plot and wandb) counts generator steps, as
    # metrics.json does; the critic batches of one generator step share its row
    logged = read_logged_rows(full)
    assert [int(r["step"]) for r in logged] == [0, 1, 2, 3, 4]
    assert all("train/loss_g" in r for r in logged[1:])  # each generator step's own loss

    mid = _ckpt(full, "step0000002.ckpt")
    assert int(mid["state_dict"]["critic_steps"]) == 10  # saved right after the 2nd generator step

    resumed = tmp_path / "resumed"
    run_training(compose_train([*TOY_RUN, "trainer.max_steps=4",
                                f"resume={full / 'checkpoints' / 'step0000002.ckpt'}"], resumed))
    again = _ckpt(resumed)
    assert again["global_step"] == 4
    assert last["state_dict"].keys() == again["state_dict"].keys()
    for k, v in last["state_dict"].items():
        assert torch.equal(v, again["state_dict"][k]), k
    for k, v in last["ema"]["state_dict"].items():
        assert torch.equal(v, again["ema"]["state_dict"][k]), k
    # and the resume really continued (it did not start over): 10 more batches, not 20
    assert (resumed / "metrics.json").read_text().count('"batches_seen": 20') == 1


def test_the_three_models_share_one_command_on_images(tmp_path):
    """model= is the only change between the GANs on image data (tiny sizes for speed)."""
    for model in ("dcgan", "wgan_gp"):
        role = "critic" if model == "wgan_gp" else "discriminator"
        cfg = compose_train([f"model={model}", "data=digits", "data.image_size=16", "trainer.max_steps=2",
                             "model.nets.image.generator.base_channels=8",
                             f"model.nets.image.{role}.base_channels=8",
                             "callbacks.sample_grid.num_samples=4", *FAST], tmp_path / model)
        assert run_training(cfg)["status"] == "completed"
