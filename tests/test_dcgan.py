"""DCGAN networks, objective and stabilizers: each switch must demonstrably change behaviour."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from gen_bench.data.spec import DataSpec
from gen_bench.models import build_model
from gen_bench.models.base import slerp
from gen_bench.models.gan import DCGAN, InstanceNoise, apply_spectral_norm
from gen_bench.models.nets import DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator

from conftest import compose_train

IMG = DataSpec(kind="image", shape=(3, 32, 32))
TOY = DataSpec(kind="toy2d", shape=(2,))


@pytest.mark.parametrize("size,channels", [(8, 1), (16, 3), (32, 1), (64, 3)])
def test_dcgan_nets_are_sized_from_the_data(size, channels):
    spec = DataSpec(kind="image", shape=(channels, size, size))
    g, d = DCGANGenerator(spec, latent_dim=10, base_channels=8), DCGANDiscriminator(spec, base_channels=8)
    x = g(torch.randn(5, 10))
    assert x.shape == (5, channels, size, size)
    assert x.min() >= -1 and x.max() <= 1  # tanh output
    assert d(x).shape == (5,)


def test_non_power_of_two_image_size_is_a_clear_error():
    with pytest.raises(ValueError, match="power-of-two image size"):
        DCGANGenerator(DataSpec(kind="image", shape=(1, 28, 28)))


def test_spectral_norm_makes_every_weight_have_unit_largest_singular_value():
    torch.manual_seed(0)
    d = apply_spectral_norm(DCGANDiscriminator(IMG, base_channels=8, norm="none"))
    x = torch.randn(4, 3, 32, 32)
    for _ in range(30):  # one power iteration per forward pass in train mode
        d(x)
    layers = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(layers) == 4
    for m in layers:
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
        assert sigma == pytest.approx(1.0, abs=0.02)
    # without the switch the largest singular values are far from 1
    plain = DCGANDiscriminator(IMG, base_channels=8, norm="none")
    sigmas = [torch.linalg.matrix_norm(m.weight.flatten(1), ord=2).item()
              for m in plain.modules() if isinstance(m, torch.nn.Conv2d)]
    assert max(abs(s - 1) for s in sigmas) > 0.3


def test_spectral_norm_switch_reaches_the_model_from_config(tmp_path):
    cfg = compose_train(["data=ring8", "model.spectral_norm=true"], tmp_path)
    model = build_model(cfg.model, TOY)
    assert all(hasattr(m, "parametrizations") for m in model.discriminator.modules()
               if isinstance(m, torch.nn.Linear))
    plain = build_model(compose_train(["data=ring8"], tmp_path).model, TOY)
    assert not any(hasattr(m, "parametrizations") for m in plain.discriminator.modules())


def test_spectral_norm_on_images_drops_batch_norm_from_d(tmp_path):
    """Batch norm rescales D's layers by batch statistics and undoes the Lipschitz bound: with
    spectral norm the image D has none (Miyato et al.), and every conv / linear is normalised."""
    spec = DataSpec(kind="image", shape=(1, 32, 32))

    def d_of(*over: str) -> torch.nn.Module:
        return build_model(compose_train(["data=digits", *over], tmp_path).model, spec).discriminator

    def batch_norms(d: torch.nn.Module) -> list[torch.nn.Module]:
        return [m for m in d.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]

    d = d_of("model.spectral_norm=true")
    assert not batch_norms(d)
    weighted = [m for m in d.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(weighted) == 4 and all(hasattr(m, "parametrizations") for m in weighted)
    assert batch_norms(d_of())  # vanilla DCGAN keeps its batch norm
    assert batch_norms(d_of("model.spectral_norm=true", "model.nets.image.discriminator.norm=batch"))  # asked
    arm = compose_train(["experiment=compare_stabilizers", "stabilizer=spectral_norm", "data=digits"],
                        tmp_path)
    assert arm.model.nets.image.discriminator.norm == "none"
    with pytest.raises(Exception, match="no option for 'maybe'.*valid: True, False"):
        d_of("model.spectral_norm=maybe")


def _toy_gan(**kw) -> DCGAN:
    opt = lambda p: torch.optim.SGD(p, lr=1.0)  # noqa: E731
    return DCGAN(TOY, MLPGenerator(TOY, latent_dim=4, hidden=16, depth=2),
                 MLPDiscriminator(TOY, hidden=16, depth=2), opt, opt, **kw)


def test_one_sided_label_smoothing_changes_only_the_real_target():
    logits_real, logits_fake = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([0.3, -2.0, 1.0])

    def closed_form(t):  # -[t log s(l) + (1-t) log(1-s(l))] on reals, -log(1-s(l)) on fakes
        s = torch.sigmoid
        real = -(t * s(logits_real).log() + (1 - t) * (1 - s(logits_real)).log()).mean()
        return real - (1 - s(logits_fake)).log().mean()

    for t in (1.0, 0.9):
        got = _toy_gan(real_label=t).discriminator_loss(logits_real, logits_fake)
        assert got.item() == pytest.approx(closed_form(t).item(), rel=1e-6)
    assert _toy_gan(real_label=0.9).discriminator_loss(logits_real, logits_fake) != \
        _toy_gan().discriminator_loss(logits_real, logits_fake)
    with pytest.raises(ValueError, match="real_label"):
        _toy_gan(real_label=1.5)


def test_generator_loss_is_non_saturating():
    logits = torch.tensor([-3.0, 0.0, 2.0])
    assert DCGAN.generator_loss(logits).item() == pytest.approx(-F.logsigmoid(logits).mean().item())


def test_instance_noise_sigma_anneals_linearly_to_zero():
    sched = InstanceNoise(sigma_start=0.5, anneal_steps=100)
    assert [sched.sigma(s) for s in (0, 25, 50, 100, 150)] == [0.5, 0.375, 0.25, 0.0, 0.0]
    assert InstanceNoise().sigma(10) == 0.0
    with pytest.raises(ValueError, match="anneal_steps"):
        InstanceNoise(sigma_start=0.1, anneal_steps=0)


class _Recorder(torch.nn.Module):
    """Wraps a network and keeps every (input, output) of its forward passes."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.calls = net, []
        self.latent_dim = getattr(net, "latent_dim", None)

    def forward(self, x):
        out = self.net(x)
        self.calls.append((x.detach().clone(), out.detach().clone()))
        return out


@pytest.mark.parametrize("step,sigma", [(0, 0.5), (3, 0.35), (10, 0.0)])
def test_instance_noise_reaches_d_on_real_and_fake_inputs(tmp_path, step, sigma):
    """D sees real + N(0, sigma^2) and G(z) + N(0, sigma^2), with fresh noise on each of its three
    calls (real, fake in the D step, fake in the G step), sigma following the schedule."""
    import lightning as L
    from hydra.utils import instantiate

    cfg = compose_train(["data=ring8", "data.batch_size=1024", "model.instance_noise.sigma_start=0.5",
                         "model.instance_noise.anneal_steps=10"], tmp_path)
    torch.manual_seed(0)
    datamodule = instantiate(cfg.data)
    model = build_model(cfg.model, datamodule.spec)
    model.generator, model.discriminator = _Recorder(model.generator), _Recorder(model.discriminator)
    trainer = L.Trainer(accelerator="cpu", max_steps=step + 1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress.total.completed = step  # at step
    real_batches = []

    class KeepBatch(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            real_batches.append(batch)

    trainer.callbacks.append(KeepBatch())
    trainer.fit(model, datamodule=datamodule)
    assert model.global_step == step + 1
    (real_in, _), (fake_in_d, _), (fake_in_g, _) = model.discriminator.calls
    (_, fake), = model.generator.calls
    real = real_batches[0][0]
    noises = [real_in - real, fake_in_d - fake, fake_in_g - fake]
    for noise in noises:  # 2048 draws each: 5 standard errors of the std (1.6%) and of the mean
        assert noise.std().item() == pytest.approx(sigma, rel=0.08, abs=1e-7)
        assert noise.mean().abs().item() <= 5 * sigma / noise.numel() ** 0.5 + 1e-7
    if sigma > 0:
        assert not torch.equal(noises[1], noises[2])  # fresh noise per call


def test_slerp_keeps_the_norm_between_equal_norm_latents_and_hits_the_ends():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, generator=g), torch.randn(64, generator=g)
    b = b / b.norm() * a.norm()
    path = slerp(a, b, torch.linspace(0, 1, 7))
    assert torch.allclose(path[0], a, atol=1e-5) and torch.allclose(path[-1], b, atol=1e-5)
    assert torch.allclose(path.norm(dim=1), torch.full((7,), a.norm().item()), rtol=1e-4)


def test_sample_and_interpolate_contract():
    spec = DataSpec(kind="image", shape=(1, 16, 16))
    opt = lambda p: torch.optim.Adam(p)  # noqa: E731
    gan = DCGAN(spec, DCGANGenerator(spec, latent_dim=8, base_channels=8),
                DCGANDiscriminator(spec, base_channels=8), opt, opt)
    rng_before = torch.get_rng_state()
    x1 = gan.sample(6, generator=torch.Generator().manual_seed(3))
    x2 = gan.sample(6, generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global RNG is untouched
    assert torch.equal(x1, x2) and x1.shape == (6, 1, 16, 16) and 0 <= x1.min() and x1.max() <= 1
    assert gan.training  # mode restored after sampling
    z0, z1 = torch.randn(8), torch.randn(8)
    path = gan.interpolate(z0, z1, steps=5)
    assert path.shape == (5, 1, 16, 16)
    assert torch.allclose(path[0], gan.decode(z0[None])[0])
    assert torch.allclose(path[-1], gan.decode(z1[None])[0])


def test_unknown_nets_for_a_data_kind_is_a_clear_error(tmp_path):
    cfg = compose_train([], tmp_path)
    video = DataSpec(kind="video", shape=(3, 8, 16, 16))
    with pytest.raises(ValueError, match="no networks for video data"):
        build_model(cfg.model, video)


def test_default_optimizers_follow_the_dcgan_paper(tmp_path):
    model = build_model(compose_train([], tmp_path).model, DataSpec(kind="image", shape=(1, 32, 32)))
    opt_g, opt_d = model.configure_optimizers()
    for opt in (opt_g, opt_d):
        assert isinstance(opt, torch.optim.Adam)
        assert opt.defaults["lr"] == 2e-4 and tuple(opt.defaults["betas"]) == (0.5, 0.999)
    cfg = OmegaConf.to_container(compose_train([], tmp_path).model)
    assert cfg["spectral_norm"] is False and cfg["real_label"] == 1.0
    assert cfg["instance_noise"]["sigma_start"] == 0.0 and cfg["grad_clip_d"] is None


def _sgd_overrides(net: str, clip: float | None) -> list[str]:
    """DCGAN on ring8 for one step, ``net`` trained by SGD(lr=1) (its update is minus its gradient)."""
    opt, clip_key = ("optimizer_g", "grad_clip_g") if net == "generator" else ("optimizer_d", "grad_clip_d")
    return ["data=ring8", "trainer.max_steps=1", "callbacks.sample_grid.every_n_steps=0",
            f"model.{opt}._target_=torch.optim.SGD", f"~model.{opt}.betas", f"model.{opt}.lr=1.0",
            "logger=csv", "trainer.enable_progress_bar=false", "eval.enabled=false",
            f"model.{clip_key}={'null' if clip is None else clip}", "overwrite=true"]


def _norm_of_change(before: dict, after: dict) -> float:
    delta = [after[k] - v for k, v in before.items() if v.is_floating_point()]
    return math.sqrt(sum(float((d.double() ** 2).sum()) for d in delta))


@pytest.mark.parametrize("net", ["generator", "discriminator"])
def test_gradient_clipping_bounds_the_update(tmp_path, net):
    """With SGD(lr=1) the update of a network equals minus its (clipped) gradient: its norm is the
    clip, for G (``grad_clip_g``) and for D (``grad_clip_d``)."""
    from gen_bench.train import run_training

    def update(clip: float | None) -> float:
        cfg = compose_train(_sgd_overrides(net, clip), tmp_path / f"clip{clip}")
        torch.manual_seed(0)
        before = getattr(build_model(cfg.model, TOY), net).state_dict()
        run_training(cfg)
        after = torch.load(tmp_path / f"clip{clip}" / "checkpoints" / "last.ckpt", weights_only=False)
        return _norm_of_change(before, {k.removeprefix(f"{net}."): v for k, v in after["state_dict"].items()})

    assert update(1e-4) == pytest.approx(1e-4, rel=1e-3)
    assert update(None) > 1e-3


@pytest.mark.parametrize("net", ["generator", "discriminator"])
def test_gradient_clipping_sees_unscaled_gradients_under_fp16_loss_scaling(tmp_path, net):
    """fp16 mixed precision multiplies the loss by the scaler's factor (65536 at the start): the
    clip must bound the true gradient, so the SGD(lr=1) update still has norm = clip (a clip of the
    scaled gradients would give clip / 65536)."""
    import lightning as L
    from hydra.utils import instantiate
    from lightning.pytorch.plugins.precision import MixedPrecision

    cfg = compose_train(_sgd_overrides(net, 1e-4), tmp_path)
    torch.manual_seed(0)
    datamodule = instantiate(cfg.data)
    model = build_model(cfg.model, datamodule.spec)
    before = {k: v.clone() for k, v in getattr(model, net).state_dict().items()}
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)])
    trainer.fit(model, datamodule=datamodule)
    assert scaler.get_scale() == 2.0**16  # finite gradients: the step was taken, not skipped
    assert _norm_of_change(before, getattr(model, net).state_dict()) == pytest.approx(1e-4, rel=1e-2)
