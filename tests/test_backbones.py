"""The residual GAN backbone: blocks against closed forms, SAGAN attention against an independent
implementation, the `backbone=` switch for every GAN, and the size preset against the DDPM UNet."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gen_bench.data.spec import DataSpec
from gen_bench.models import build_model
from gen_bench.models.nets import (
    DCGANDiscriminator,
    DCGANGenerator,
    MLPDiscriminator,
    MLPGenerator,
    ResNetDiscriminator,
    ResNetGenerator,
)
from gen_bench.models.nets.resnet import DiscriminatorBlock, GeneratorBlock, SelfAttention
from gen_bench.train import run_training

from conftest import QUIET, compose_train, run_cli

DIGITS = DataSpec(kind="image", shape=(1, 32, 32))


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("size,channels", [(8, 1), (16, 3), (32, 1), (64, 3)])
def test_shapes_ranges_and_per_sample_discriminator(size, channels):
    torch.manual_seed(0)
    spec = DataSpec(kind="image", shape=(channels, size, size))
    g = ResNetGenerator(spec, latent_dim=16, base_channels=8, attn_resolutions=(size // 2,))
    d = ResNetDiscriminator(spec, base_channels=8, attn_resolutions=(size // 2,))
    x = g(torch.randn(5, 16))
    assert x.shape == (5, channels, size, size) and x.abs().max() <= 1
    assert g.latent_dim == 16
    logits = d(x)
    assert logits.shape == (5,)
    # no batch statistics in D: a sample's logit does not depend on the rest of the batch
    assert not any(isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)) for m in d.modules())
    assert torch.allclose(d(x[:2]), logits[:2], atol=1e-5)
    with pytest.raises(ValueError, match="power-of-two image size"):
        ResNetGenerator(DataSpec(kind="image", shape=(1, 24, 24)))


def test_generator_block_with_zero_residual_is_the_upsampled_1x1_shortcut():
    torch.manual_seed(1)
    block = GeneratorBlock(4, 6)
    nn.init.zeros_(block.conv2.weight)
    nn.init.zeros_(block.conv2.bias)
    x = torch.randn(2, 4, 3, 3)
    w, b = block.shortcut.weight[:, :, 0, 0], block.shortcut.bias
    shortcut = torch.einsum("oc,bchw->bohw", w, x) + b[None, :, None, None]
    expected = shortcut.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # nearest upsampling
    assert torch.allclose(block(x), expected, atol=1e-6)
    assert block(x).shape == (2, 6, 6, 6)


@pytest.mark.parametrize("optimized", [False, True])
def test_discriminator_block_with_zero_residual_is_the_pooled_1x1_shortcut(optimized):
    torch.manual_seed(2)
    block = DiscriminatorBlock(3, 5, optimized=optimized)
    nn.init.zeros_(block.conv2.weight)
    nn.init.zeros_(block.conv2.bias)
    x = torch.randn(2, 3, 4, 4)
    w, b = block.shortcut.weight[:, :, 0, 0], block.shortcut.bias
    pooled = x.reshape(2, 3, 2, 2, 2, 2).mean(dim=(3, 5))  # 2x2 average pooling by hand
    expected = torch.einsum("oc,bchw->bohw", w, pooled) + b[None, :, None, None]
    assert torch.allclose(block(x), expected, atol=1e-6)


def test_the_first_discriminator_block_sees_the_image_without_relu():
    """The optimized block convolves the image itself: negative pixels matter (a ReLU first would
    map an image and its positive part to the same logit)."""
    torch.manual_seed(3)
    block = DiscriminatorBlock(1, 4, optimized=True)
    x = torch.randn(1, 1, 4, 4)
    nn.init.zeros_(block.shortcut.weight)
    nn.init.zeros_(block.shortcut.bias)
    assert not torch.allclose(block(x), block(x.clamp_min(0)))
    plain = DiscriminatorBlock(1, 4, optimized=False)
    plain.load_state_dict(block.state_dict())
    assert torch.allclose(plain(x), plain(x.clamp_min(0)))  # the residual path starts with a ReLU


def test_self_attention_is_sagan_and_starts_as_the_identity():
    torch.manual_seed(4)
    attn = SelfAttention(16)
    x = torch.randn(2, 16, 4, 4)
    assert torch.equal(attn(x), x)  # gain starts at 0
    with torch.no_grad():
        attn.gain.fill_(0.7)
    # Zhang et al. 2019, eqs. 1-3 written out: beta_{j,i} = softmax_i(q(x_j) . k(x_i)) with no
    # temperature, o_j = sum_i beta_{j,i} v(x_i), y = x + gain * out(o)
    flat = x.flatten(2)  # (B, C, N)
    proj = lambda conv: torch.einsum("kc,bcn->bkn", conv.weight[:, :, 0, 0], flat)  # noqa: E731
    q, k, v = proj(attn.query), proj(attn.key), proj(attn.value)
    beta = torch.softmax(torch.einsum("bkj,bki->bji", q, k), dim=-1)
    o = torch.einsum("bji,bci->bcj", beta, v)
    expected = flat + 0.7 * torch.einsum("dc,bcn->bdn", attn.out.weight[:, :, 0, 0], o)
    assert torch.allclose(attn(x), expected.reshape_as(x), atol=1e-5)


def test_attention_sits_at_the_configured_resolutions():
    count = lambda net: sum(isinstance(m, SelfAttention) for m in net.modules())  # noqa: E731
    assert count(ResNetGenerator(DIGITS, attn_resolutions=())) == 0
    assert count(ResNetGenerator(DIGITS, attn_resolutions=(16,))) == 1
    assert count(ResNetGenerator(DIGITS, attn_resolutions=(8, 16, 32))) == 3
    assert count(ResNetDiscriminator(DIGITS, attn_resolutions=(16, 8))) == 2
    g = ResNetGenerator(DIGITS, base_channels=4, attn_resolutions=(16,))
    (attn,) = [m for m in g.modules() if isinstance(m, SelfAttention)]
    shapes = []
    attn.register_forward_hook(lambda mod, inp, out: shapes.append(tuple(out.shape)))
    g(torch.randn(1, g.latent_dim))
    assert shapes == [(1, 8, 16, 16)]


GANS = {"dcgan": ("generator", "discriminator"), "wgan_gp": ("generator", "critic"),
        "r3gan": ("generator", "discriminator")}


@pytest.mark.parametrize("model", sorted(GANS))
def test_one_switch_selects_the_backbone_of_every_gan(tmp_path, model):
    g_role, d_role = GANS[model]
    default = build_model(compose_train([f"model={model}"], tmp_path).model, DIGITS)
    resnet = build_model(compose_train([f"model={model}", "backbone=resnet"], tmp_path).model, DIGITS)
    assert isinstance(getattr(default, g_role), DCGANGenerator)
    assert isinstance(getattr(default, d_role), DCGANDiscriminator)
    assert isinstance(getattr(resnet, g_role), ResNetGenerator)
    assert isinstance(getattr(resnet, d_role), ResNetDiscriminator)
    batch_norm = lambda m: any(isinstance(x, nn.modules.batchnorm._BatchNorm) for x in m.modules())  # noqa: E731
    assert batch_norm(getattr(default, d_role)) == (model == "dcgan")  # critics: layer norm instead
    assert not batch_norm(getattr(resnet, d_role))
    # 2-D data keep their MLPs whatever the backbone
    toy = build_model(compose_train([f"model={model}", "data=ring8", "backbone=resnet"], tmp_path).model,
                      DataSpec(kind="toy2d", shape=(2,)))
    assert type(getattr(toy, g_role)).__name__ == "MLPGenerator"
    # and a network setting on the command line still reaches the chosen backbone's network
    small = compose_train([f"model={model}", "backbone=resnet", f"model.nets.image.{d_role}.base_channels=8"],
                          tmp_path)
    assert small.model.nets.image[d_role].base_channels == 8


def test_the_resnet_generator_has_the_parameters_of_the_default_ddpm_unet(tmp_path):
    """At the default digits size (1x32x32) the residual generator matches model=ddpm's UNet within 10%."""
    unet = build_model(compose_train(["model=ddpm", "data=digits"], tmp_path).model, DIGITS).denoiser
    cfg = compose_train(["model=dcgan", "data=digits", "backbone=resnet"], tmp_path)
    assert cfg.data.image_size == 32
    generator = build_model(cfg.model, DIGITS).generator
    print(f"resnet generator {n_params(generator):,} vs UNet {n_params(unet):,}")
    assert abs(n_params(generator) / n_params(unet) - 1) < 0.10


def test_spectral_norm_wraps_the_residual_discriminator(tmp_path):
    model = build_model(compose_train(["model=dcgan", "backbone=resnet", "model.spectral_norm=true"],
                                      tmp_path).model, DIGITS)
    convs = [m for m in model.discriminator.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert convs and all(hasattr(m, "parametrizations") for m in convs)
    x = torch.randn(2, 1, 32, 32)
    assert model.discriminator(x).shape == (2,)


FAST = [*QUIET, "eval.enabled=false"]


@pytest.mark.parametrize("model", sorted(GANS))
def test_every_gan_trains_with_the_residual_backbone(tmp_path, model):
    g_role, d_role = GANS[model]
    cfg = compose_train([f"model={model}", "backbone=resnet", "data=digits", "data.image_size=16",
                         "data.batch_size=8", "trainer.max_steps=2",
                         f"model.nets.image.{g_role}.base_channels=4",
                         f"model.nets.image.{g_role}.latent_dim=8",
                         f"model.nets.image.{d_role}.base_channels=4", "callbacks.sample_grid.num_samples=4",
                         *FAST], tmp_path)
    summary = run_training(cfg)
    assert summary["status"] == "completed" and summary["steps"] == 2
    assert (tmp_path / "samples" / "final.png").is_file()



def test_a_backbone_choice_that_picks_no_network_is_said_not_silently_ignored(tmp_path):
    """backbone=resnet on 2-D data: the MLPs train, and the run says the choice changed nothing."""
    r = run_cli(["train", "data=ring8", "model=dcgan", "backbone=resnet", "trainer.max_steps=2", *FAST,
                 "callbacks.sample_grid.every_n_steps=0", f"output_root={tmp_path}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "backbone=resnet changes nothing here" in r.stdout + r.stderr
    r = run_cli(["train", "data=ring8", "model=dcgan", "trainer.max_steps=2", *FAST,
                 "callbacks.sample_grid.every_n_steps=0", f"output_root={tmp_path}"], cwd=tmp_path)
    assert r.returncode == 0 and "changes nothing" not in r.stdout + r.stderr


def test_pacgan_2d_nets_batch_norm_generator_and_maxout_discriminator():
    """PacGAN's 2-D nets: G with batch norm before each ReLU and bias-free hidden layers (4 x 400),
    D of maxout units (3 x 200, 5 pieces) on packs; parameter counts by formula, each maxout unit the
    largest of its own 5 pieces (slices of the linear map), and the defaults unchanged."""
    toy = DataSpec(kind="toy2d", shape=(2,))
    g = MLPGenerator(toy, latent_dim=2, hidden=400, depth=4, batch_norm=True)
    assert n_params(g) == 2 * 400 + 3 * 400 * 400 + 4 * 2 * 400 + (400 * 2 + 2)
    assert sum(isinstance(m, nn.BatchNorm1d) for m in g.modules()) == 4
    d = MLPDiscriminator(toy, hidden=200, depth=3, pack=2, maxout=5)
    assert n_params(d) == (4 * 1000 + 1000) + 2 * (200 * 1000 + 1000) + (200 + 1)
    torch.manual_seed(0)
    x = torch.randn(7, 4)
    h = x
    for layer in d.net[:3]:
        pre = layer.linear(h)  # (7, 1000): unit j owns columns 5j .. 5j + 4
        h = torch.stack([pre[:, 5 * j : 5 * j + 5].max(1).values for j in range(200)], 1)
    assert torch.allclose(d(x), d.net[3](h).squeeze(1), atol=1e-6)
    assert isinstance(MLPDiscriminator(toy).net[1], nn.LeakyReLU)  # the default: linear + leaky ReLU
    assert not any(isinstance(m, nn.BatchNorm1d) for m in MLPGenerator(toy).modules())
    with pytest.raises(ValueError, match="maxout is the number of pieces"):
        MLPDiscriminator(toy, maxout=0)
