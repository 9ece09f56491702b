"""R3GAN: the relativistic pairing loss, R1 and R2, one D step then one G step, defaults, exact resume."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from gen_bench.data.spec import DataSpec
from gen_bench.models import build_model
from gen_bench.models.nets import DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator
from gen_bench.models.r3gan import (
    R3GAN,
    logits_and_squared_gradient_norms,
    relativistic_discriminator_loss,
    relativistic_generator_loss,
)
from gen_bench.train import run_training

from conftest import QUIET, compose_train

FAST = [*QUIET, "eval.enabled=false"]
TOY = DataSpec(kind="toy2d", shape=(2,))
IMG = DataSpec(kind="image", shape=(1, 16, 16))


def test_relativistic_losses_on_given_logits():
    real, fake = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([1.0, 3.0, -1.0])
    softplus = lambda v: math.log1p(math.exp(v))  # noqa: E731
    d = (softplus(1 - 2) + softplus(3 - 0) + softplus(0.0)) / 3  # softplus(D(fake_i) - D(real_i))
    g = (softplus(2 - 1) + softplus(0 - 3) + softplus(0.0)) / 3  # softplus(D(real_i) - D(fake_i))
    assert relativistic_discriminator_loss(real, fake).item() == pytest.approx(d, rel=1e-6)
    assert relativistic_generator_loss(real, fake).item() == pytest.approx(g, rel=1e-6)
    # paired, not all-pairs: permuting the fakes against the reals changes the loss
    assert relativistic_discriminator_loss(real, fake.flip(0)).item() != pytest.approx(d, rel=1e-3)
    # and relativistic: adding a constant to every logit changes nothing
    assert relativistic_discriminator_loss(real + 5, fake + 5).item() == pytest.approx(d, rel=1e-6)


def test_r1_and_r2_of_a_linear_discriminator_are_the_squared_weight_norm():
    """D(x) = w.x + b has gradient w everywhere: ||grad||^2 = ||w||^2 for every sample (images too)."""
    d = nn.Sequential(nn.Flatten(), nn.Linear(12, 1))
    with torch.no_grad():
        d[1].weight.copy_(torch.arange(12.0).reshape(1, 12) / 10)
    x = torch.randn(5, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    logits, sq = logits_and_squared_gradient_norms(lambda v: d(v).squeeze(1), x)
    assert torch.allclose(sq, torch.full((5,), float((torch.arange(12.0) / 10).square().sum())))
    assert torch.allclose(logits, d(x).squeeze(1))
    # differentiable w.r.t. D: d/dw of mean ||w||^2 = 2 w
    (grad_w,) = torch.autograd.grad(sq.mean(), d[1].weight)
    assert torch.allclose(grad_w, 2 * d[1].weight)


def test_penalties_equal_a_direct_per_sample_autograd_computation():
    torch.manual_seed(0)
    d = MLPDiscriminator(TOY, hidden=16, depth=2)
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(1))
    _, sq = logits_and_squared_gradient_norms(d, x)
    expected = []
    for i in range(6):  # one sample at a time: no batch effects can hide here
        xi = x[i:i + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(d(xi).sum(), xi, create_graph=True)
        expected.append(g.square().sum())
    expected = torch.stack(expected)
    assert torch.allclose(sq, expected, atol=1e-6)
    weights = [p for name, p in d.named_parameters() if name.endswith("weight")]
    for a, b in zip(torch.autograd.grad(sq.mean(), weights), torch.autograd.grad(expected.mean(), weights),
                    strict=True):
        assert torch.allclose(a, b, atol=1e-6)


class _FixedLatents:
    """Replaces ``sample_latent``: hands out the given latents in order and records the calls."""

    def __init__(self, latents: list[torch.Tensor]) -> None:
        self.latents = list(latents)

    def __call__(self, n, generator=None):
        return self.latents.pop(0)


def test_one_training_step_is_the_papers_d_update_then_g_update():
    """With SGD, a linear D (R1 = R2 = ||w||^2) and known latents, one batch moves D by the gradient of
    softplus(D(G(z1)) - D(x)) + gamma/2 (R1 + R2), then G by that of softplus(D'(x) - D'(G(z2))) through
    the updated D'; the D step does not count towards global_step."""
    torch.manual_seed(0)
    gen = MLPGenerator(TOY, latent_dim=3, hidden=8, depth=1)
    disc = MLPDiscriminator(TOY, hidden=8, depth=0)  # depth 0: Linear(2, 1)
    lr, gamma = 0.1, 0.7
    sgd = lambda p: torch.optim.SGD(p, lr=lr)  # noqa: E731
    model = R3GAN(TOY, gen, disc, sgd, sgd, gamma=gamma)
    real = torch.randn(4, 2, generator=torch.Generator().manual_seed(1))
    z1, z2 = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(2))
    model.sample_latent = _FixedLatents([z1, z2])
    g0 = {k: v.clone() for k, v in gen.state_dict().items()}
    w0, b0 = disc.net[0].weight.detach().clone(), disc.net[0].bias.detach().clone()

    # the expected D update, by autograd on the formula with a copy of D
    w, b = w0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    with torch.no_grad():
        fake1 = torch.func.functional_call(gen, g0, (z1,))
    d_of = lambda x: (x @ w.T + b).squeeze(1)  # noqa: E731
    loss_d = torch.nn.functional.softplus(d_of(fake1) - d_of(real)).mean() + gamma / 2 * 2 * w.square().sum()
    gw, gb = torch.autograd.grad(loss_d, (w, b))
    w1, b1 = w0 - lr * gw, b0 - lr * gb
    # the expected G update through the updated D
    params = {k: v.clone().requires_grad_(True) for k, v in g0.items()}
    fake2 = torch.func.functional_call(gen, params, (z2,))
    d1 = lambda x: (x @ w1.T + b1).squeeze(1)  # noqa: E731
    loss_g = torch.nn.functional.softplus(d1(real) - d1(fake2)).mean()
    grads = torch.autograd.grad(loss_g, list(params.values()))
    g1 = {k: v - lr * gr for (k, v), gr in zip(params.items(), grads, strict=True)}

    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")
    trainer.fit(model, DataLoader(TensorDataset(real, torch.zeros(4)), batch_size=4))
    assert trainer.global_step == 1  # one G step; the D step is uncounted
    assert torch.allclose(disc.net[0].weight, w1, atol=1e-6)
    assert torch.allclose(disc.net[0].bias, b1, atol=1e-6)
    for k, v in gen.state_dict().items():
        assert torch.allclose(v, g1[k], atol=1e-6), k


def test_defaults_follow_the_paper(tmp_path):
    cfg = compose_train(["model=r3gan"], tmp_path)
    toy_cfg = compose_train(["model=r3gan", "data=ring8"], tmp_path)
    assert cfg.model.ema is None
    for c, spec, lr, gamma in ((cfg, IMG, 2e-4, 0.05), (toy_cfg, TOY, 2e-3, 0.1)):
        model = build_model(c.model, spec)
        assert isinstance(model, R3GAN) and model.gamma == gamma
        for opt in model.configure_optimizers():
            assert isinstance(opt, torch.optim.Adam)
            assert opt.defaults["lr"] == lr and tuple(opt.defaults["betas"]) == (0.0, 0.99)
    image = build_model(cfg.model, IMG)
    assert isinstance(image.generator, DCGANGenerator) and isinstance(image.discriminator, DCGANDiscriminator)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in image.discriminator.modules())  # layer norm


def test_batch_norm_and_negative_gamma_are_refused():
    opt = lambda p: torch.optim.Adam(p)  # noqa: E731
    with pytest.raises(ValueError, match="must not use batch norm"):
        R3GAN(IMG, DCGANGenerator(IMG, latent_dim=4, base_channels=4),
              DCGANDiscriminator(IMG, base_channels=4, norm="batch"), opt, opt)
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        R3GAN(TOY, MLPGenerator(TOY, latent_dim=4), MLPDiscriminator(TOY), opt, opt, gamma=-1)


TOY_RUN = ["data=ring8", "model=r3gan", "data.batch_size=32", "model.nets.toy2d.generator.hidden=16",
           "model.nets.toy2d.discriminator.hidden=16", "callbacks.sample_grid.num_points=64",
           "callbacks.sample_grid.every_n_steps=0", "callbacks.checkpoint.every_n_train_steps=1",
           "callbacks.checkpoint.save_top_k=-1",
           "model.ema={_target_:gen_bench.ema.EMA,decay:0.9,warmup:0}", *FAST]


def _ckpt(run_dir, name="last.ckpt"):
    return torch.load(run_dir / "checkpoints" / name, weights_only=False, map_location="cpu")


def test_max_steps_counts_g_steps_and_a_mid_run_resume_is_bit_identical(tmp_path):
    full = tmp_path / "full"
    summary = run_training(compose_train([*TOY_RUN, "trainer.max_steps=4"], full))
    assert summary["steps"] == 4 and summary["batches_seen"] == 4  # one D and one G step per batch
    last = _ckpt(full)
    steps = lambda s: {int(v["step"]) for v in s["state"].values()}  # noqa: E731  Adam's own counters
    assert [steps(s) for s in last["optimizer_states"]] == [{4}, {4}]
    assert last["ema"]["num_updates"] == 4
    rows = (full / "metrics.csv").read_text()
    for key in ("train/loss_d", "train/loss_g", "train/r1_penalty", "train/r2_penalty"):
        assert key in rows

    resumed = tmp_path / "resumed"
    run_training(compose_train([*TOY_RUN, "trainer.max_steps=4",
                                f"resume={full / 'checkpoints' / 'step0000002.ckpt'}"], resumed))
    again = _ckpt(resumed)
    assert again["global_step"] == 4
    for k, v in last["state_dict"].items():
        assert torch.equal(v, again["state_dict"][k]), k
    for k, v in last["ema"]["state_dict"].items():
        assert torch.equal(v, again["ema"]["state_dict"][k]), k
    for a, b in zip(last["optimizer_states"], again["optimizer_states"], strict=True):
        for pid, state in a["state"].items():
            for name, value in state.items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(b["state"][pid][name])), name
    assert (resumed / "metrics.json").read_text().count('"batches_seen": 4') == 1  # continued, not restarted


def test_trains_on_digits(tmp_path):
    cfg = compose_train(["model=r3gan", "data=digits", "data.image_size=16", "data.batch_size=8",
                         "trainer.max_steps=2", "model.nets.image.generator.base_channels=8",
                         "model.nets.image.discriminator.base_channels=8",
                         "callbacks.sample_grid.num_samples=4", *FAST], tmp_path)
    summary = run_training(cfg)
    assert summary["status"] == "completed" and summary["steps"] == 2
    assert (tmp_path / "samples" / "final.png").is_file()
