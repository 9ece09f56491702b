"""Weight EMA: the closed form, sampling with EMA weights, checkpoints and load_model."""

from __future__ import annotations

import copy

import pytest
import torch

from gen_bench.checkpoint import load_model
from gen_bench.data.spec import DataSpec
from gen_bench.diffusion import GaussianDiffusion, sample_loop
from gen_bench.ema import EMA, EMAWeights
from gen_bench.models.base import GenerativeModule
from gen_bench.models.ddpm import DDPM
from gen_bench.models.nets import DCGANGenerator, MLPDenoiser, MLPDiscriminator
from gen_bench.models.wgan_gp import WGANGP
from gen_bench.train import run_training

from conftest import QUIET, TINY_IMAGE, compose_train

# Training runs here check models, not the evaluation suite (tests/test_evaluation.py does).
FAST = [*QUIET, "eval.enabled=false"]

TOY = DataSpec(kind="toy2d", shape=(2,))


def _closed_form(decays: list[float], thetas: list[torch.Tensor]) -> torch.Tensor:
    """s_n = (prod_k d_k) theta_0 + sum_k (1 - d_k) (prod_{j > k} d_j) theta_k, in float64."""
    n = len(decays)
    out = torch.zeros_like(thetas[0], dtype=torch.float64)
    for k in range(n + 1):
        later = torch.tensor(decays[k:], dtype=torch.float64).prod()  # d_{k+1} ... d_n (1-based)
        weight = later if k == 0 else (1 - decays[k - 1]) * later
        out += weight * thetas[k].double()
    return out


@pytest.mark.parametrize("decay,warmup", [(0.9, 0), (0.99, 10)])
def test_ema_follows_the_closed_form_on_a_toy_update_sequence(decay, warmup):
    net = torch.nn.Linear(3, 2)
    g = torch.Generator().manual_seed(0)
    thetas = [net.weight.detach().clone()]
    ema = EMAWeights.copy_of("net", net)
    cb = EMA(decay=decay, warmup=warmup)
    decays = []
    for _ in range(25):
        with torch.no_grad():
            net.weight.copy_(torch.randn(2, 3, generator=g))
        thetas.append(net.weight.detach().clone())
        decays.append(cb.decay_at(ema.num_updates))
        ema.update(net, decays[-1])
    assert ema.num_updates == 25
    assert torch.allclose(ema.shadow["weight"].double(), _closed_form(decays, thetas), atol=1e-6)
    if warmup:  # TensorFlow's warm-up: min(decay, (1 + n) / (10 + n))
        assert decays[:3] == pytest.approx([1 / 10, 2 / 11, 3 / 12]) and cb.decay_at(10_000) == decay
    else:
        assert set(decays) == {decay}


def test_integer_buffers_are_copied_and_float_buffers_averaged():
    bn = torch.nn.BatchNorm1d(2)
    ema = EMAWeights.copy_of("bn", bn)
    bn.train()
    bn(torch.randn(8, 2) + 3)
    ema.update(bn, 0.5)
    assert ema.shadow["num_batches_tracked"].item() == 1
    assert torch.allclose(ema.shadow["running_mean"], 0.5 * bn.running_mean)


def _toy_ddpm() -> DDPM:
    torch.manual_seed(0)
    return DDPM(TOY, MLPDenoiser(TOY, hidden=16, depth=1), GaussianDiffusion(5), torch.optim.Adam,
                progress=False)


def test_ddpm_samples_with_the_ema_weights_and_keeps_training_with_the_live_ones():
    model = _toy_ddpm()
    live = copy.deepcopy(model.denoiser.state_dict())
    other = MLPDenoiser(TOY, hidden=16, depth=1)  # stands in for the averaged weights
    model.ema_weights = EMAWeights("denoiser", copy.deepcopy(other.state_dict()))
    got = model.sample(6, generator=torch.Generator().manual_seed(2))

    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        expected = sample_loop(other.eval(), model.bind_sampler(), torch.randn(6, 2, generator=g), g)
    assert torch.allclose(got, expected * model.toy_scale, atol=1e-6)
    for k, v in model.denoiser.state_dict().items():  # the live weights are back
        assert torch.equal(v, live[k])
    model.ema_weights = None
    assert not torch.allclose(model.sample(6, generator=torch.Generator().manual_seed(2)), got)


def test_gan_generator_ema_is_used_for_sampling():
    spec = DataSpec(kind="image", shape=(1, 8, 8))
    opt = lambda p: torch.optim.Adam(p)  # noqa: E731
    torch.manual_seed(0)
    gan = WGANGP(spec, DCGANGenerator(spec, latent_dim=4, base_channels=4), MLPDiscriminator(TOY), opt, opt)
    other = DCGANGenerator(spec, latent_dim=4, base_channels=4)
    gan.ema_weights = EMAWeights("generator", copy.deepcopy(other.state_dict()))
    z = torch.randn(3, 4)
    assert torch.allclose(gan.decode(z), ((other.eval()(z) + 1) / 2).clamp(0, 1), atol=1e-6)


def test_ema_callback_needs_a_model_that_samples_from_ema_weights():
    class NoEMA(GenerativeModule):
        pass

    with pytest.raises(TypeError, match="EMASampling"):
        EMA().setup(None, NoEMA(TOY), "fit")


def test_dcgan_generator_ema_is_updated_once_per_generator_step_and_sampled(tmp_path):
    """DCGAN with model.ema: one EMA update per G step (not per D step), BatchNorm buffers included,
    saved in the checkpoint and used by load_model's model.sample(); the live weights stay put."""
    over = ["data=digits", "model=dcgan", *TINY_IMAGE, "data.batch_size=8", "trainer.max_steps=5",
            "model.ema={_target_:gen_bench.ema.EMA,decay:0.5,warmup:0}", *FAST]
    run_training(compose_train(over, tmp_path / "ema"))
    model, _, _, ckpt = load_model(tmp_path / "ema")
    assert ckpt["global_step"] == 5 and ckpt["ema"]["num_updates"] == 5
    assert ckpt["ema"]["network"] == "generator"
    ema, live = ckpt["ema"]["state_dict"], ckpt["state_dict"]
    assert set(ema) == {k.removeprefix("generator.") for k in live if k.startswith("generator.")}
    assert any("running_mean" in k for k in ema)  # BatchNorm statistics are averaged too
    assert not all(torch.equal(v, live[f"generator.{k}"]) for k, v in ema.items())  # the EMA lags
    averaged = copy.deepcopy(model.generator)
    averaged.load_state_dict(ema)
    z = model.sample_latent(4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = ((averaged.eval()(z) + 1) / 2).clamp(0, 1)
    assert torch.allclose(model.decode(z), expected, atol=1e-6)
    for k, v in model.generator.state_dict().items():  # sampling swapped the live weights back
        assert torch.equal(v, live[f"generator.{k}"])


def test_checkpoint_carries_the_ema_and_load_model_samples_with_it(tmp_path):
    over = ["data=ring8", "model=ddpm", "data.batch_size=32", "model.nets.toy2d.denoiser.hidden=16",
            "model.diffusion.num_timesteps=5", "model.training_sampler=null", "trainer.max_steps=6",
            "callbacks.sample_grid.num_points=16",
            "model.ema.decay=0.5", "model.ema.warmup=0", "model.progress=false", *FAST]
    run_training(compose_train(over, tmp_path / "ema"))
    model, _, cfg, ckpt = load_model(tmp_path / "ema")
    assert ckpt["ema"]["num_updates"] == ckpt["global_step"] == 6 and cfg.model.ema.decay == 0.5
    assert model.ema_weights is not None and model.ema_weights.num_updates == 6
    averaged = copy.deepcopy(model.denoiser)
    averaged.load_state_dict(ckpt["ema"]["state_dict"])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        expected = sample_loop(averaged.eval(), model.bind_sampler(), torch.randn(8, 2, generator=g), g)
    got = model.sample(8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(got, expected * model.toy_scale, atol=1e-6)
    assert not torch.allclose(averaged.state_dict()["out.weight"], model.denoiser.state_dict()["out.weight"])
    live, *_ = load_model(tmp_path / "ema", ema=False)  # the live weights: gen-bench sample/eval ema=false
    assert live.ema_weights is None
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        expected = sample_loop(model.denoiser.eval(), model.bind_sampler(), torch.randn(8, 2, generator=g), g)
    got = live.sample(8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(got, expected * model.toy_scale, atol=1e-6)

    run_training(compose_train([*over, "model.ema=null"], tmp_path / "plain"))
    plain, _, _, ckpt = load_model(tmp_path / "plain")
    assert "ema" not in ckpt and plain.ema_weights is None
