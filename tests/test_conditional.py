"""Class-conditional models: classifier-free guidance (formula, every sampler, label dropout), BigGAN
(projection discriminator, truncation, spectral norm, exact resume), labels through ``gen-bench
sample``, the 2-D labelled toy check, and the clear error on data without labels."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from test_sample_cli import compose_sample
from torch import Tensor, nn
from torch.nn.utils.parametrize import is_parametrized

from gen_bench.checkpoint import load_model
from gen_bench.data.spec import DataSpec
from gen_bench.diffusion import (
    DDIMSampler,
    DDPMSampler,
    DPMSolverPP,
    EulerSampler,
    GaussianDiffusion,
    HeunSampler,
    RectifiedFlow,
    flow_sample_loop,
    sample_loop,
)
from gen_bench.metrics.conditional import nearest_centre
from gen_bench.models import build_model
from gen_bench.models.ddpm import DDPM
from gen_bench.models.flow_matching import FlowMatching
from gen_bench.models.gan import truncated_normal
from gen_bench.models.iterative import drop_labels, guided
from gen_bench.models.nets import (
    BigGANGenerator,
    ProjectionDiscriminator,
    ProjectionMLPDiscriminator,
)
from gen_bench.models.nets.embedding import ClassEmbedding
from gen_bench.sample import sample_command
from gen_bench.train import run_training

from conftest import QUIET, compose_train, run_cli

FAST = [*QUIET, "eval.enabled=false"]
K = 3
TOY = DataSpec(kind="toy2d", shape=(2,), num_classes=K, mode_centers=((1.0, 0.0), (0.0, 1.0), (-1.0, 0.0)),
               mode_std=0.05)
IMG = DataSpec(kind="image", shape=(1, 16, 16), num_classes=K)


class StubNet(nn.Module):
    """A labelled 'network' with a known output: 0.5 x + a class vector c_y + t / 1000 (c_K: "no class").

    Records the batch sizes it is called with."""

    def __init__(self, spec: DataSpec) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(K + 1, *spec.shape, generator=torch.Generator().manual_seed(0)))
        self.calls: list[int] = []

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        self.calls.append(x.shape[0])
        y = torch.full((x.shape[0],), K) if y is None else y
        c = self.table[y] if not y.dtype.is_floating_point else torch.einsum("bk,k...->b...", y, self.table)
        return 0.5 * x + c + t.float().reshape(-1, *[1] * (x.ndim - 1)) / 1000


def _opt(params):
    return torch.optim.Adam(params)


def test_guidance_zero_is_the_conditional_prediction_and_w_extrapolates_by_the_formula():
    net = StubNet(TOY)
    x, t, y = torch.randn(5, 2), torch.full((5,), 7), torch.tensor([0, 1, 2, 0, 1])
    null = torch.full((5,), K)
    assert torch.equal(guided(net, y, 0.0, K)(x, t), net(x, t, y))
    net.calls.clear()
    guided(net, y, 0.0, K)(x, t)
    assert net.calls == [5]  # w = 0: one pass, no unconditional half
    for w in (0.5, 1.0, 3.0, -1.0):
        expected = (1 + w) * net(x, t, y) - w * net(x, t, null)  # Ho and Salimans, eq. 6
        assert torch.allclose(guided(net, y, w, K)(x, t), expected, atol=1e-6)
    # weights over the K classes: one-hot weights are the class itself
    one_hot = torch.nn.functional.one_hot(y, K).float()
    assert torch.allclose(guided(net, one_hot, 2.0, K)(x, t), guided(net, y, 2.0, K)(x, t), atol=1e-6)


@pytest.mark.parametrize("make", [partial(DDPMSampler), partial(DDIMSampler, steps=4),
                                  partial(DDIMSampler, steps=4, eta=1.0), partial(DPMSolverPP, steps=4)],
                         ids=["ddpm", "ddim", "ddim_eta1", "dpmpp"])
def test_ddpm_samples_with_guidance_through_every_diffusion_sampler(make):
    diffusion = GaussianDiffusion(num_timesteps=8)
    model = DDPM(TOY, StubNet(TOY), diffusion, _opt, conditional=True, guidance=2.0, progress=False)
    labels = torch.tensor([0, 1, 2, 2])
    got = model.sample(4, torch.Generator().manual_seed(3), labels=labels, sampler=make)
    # by hand: the same noise, the sampler stepping on the formula's prediction
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(4, 2, generator=g)
    net = model.denoiser

    def formula(x, t):
        return 3.0 * net(x, t, labels) - 2.0 * net(x, t, torch.full_like(labels, K))

    expected = sample_loop(formula, make(diffusion, clip_x0=None), noise, g) * model.toy_scale
    assert torch.allclose(got, expected, atol=1e-5)
    with model.knobs_applied(guidance=0.0):
        plain = model.sample(4, torch.Generator().manual_seed(3), labels=labels, sampler=make)
    assert not torch.allclose(plain, got)
    assert model.guidance == 2.0  # restored


@pytest.mark.parametrize("make", [partial(EulerSampler, steps=3), partial(HeunSampler, steps=3)],
                         ids=["euler", "heun"])
def test_flow_matching_samples_with_guidance_through_every_flow_sampler(make):
    model = FlowMatching(TOY, StubNet(TOY), RectifiedFlow(), _opt, conditional=True, guidance=1.5,
                         progress=False, time_scale=10.0)
    labels = torch.tensor([2, 0, 1])
    got = model.sample(3, torch.Generator().manual_seed(1), labels=labels, sampler=make)
    noise = torch.randn(3, 2, generator=torch.Generator().manual_seed(1))
    net = model.velocity

    def formula(x, t):
        return 2.5 * net(x, t * 10.0, labels) - 1.5 * net(x, t * 10.0, torch.full_like(labels, K))

    assert torch.allclose(got, flow_sample_loop(formula, make(), noise) * model.toy_scale, atol=1e-5)


def test_label_dropout_happens_at_the_set_rate():
    labels = torch.randint(K, (200_000,), generator=torch.Generator().manual_seed(0))
    for p in (0.1, 0.3):
        out = drop_labels(labels, p, K, torch.Generator().manual_seed(1))
        dropped = out == K
        sd = math.sqrt(p * (1 - p) / len(labels))
        assert abs(dropped.double().mean().item() - p) < 4 * sd
        assert torch.equal(out[~dropped], labels[~dropped])  # the others are untouched
    assert torch.equal(drop_labels(labels, 0.0, K), labels)
    # the model drops the labels of its training batches at p_uncond
    model = DDPM(TOY, StubNet(TOY), GaussianDiffusion(8), _opt, conditional=True, p_uncond=0.25)
    torch.manual_seed(0)
    rate = (model.training_labels((torch.zeros(40_000, 2), labels[:40_000])) == K).double().mean().item()
    assert abs(rate - 0.25) < 4 * math.sqrt(0.25 * 0.75 / 40_000)


def test_the_class_embedding_mixes_class_vectors_and_adds_to_the_time_embedding():
    emb = ClassEmbedding(K, 4, null=True)
    y = torch.tensor([2, 0])
    assert torch.equal(emb(torch.nn.functional.one_hot(y, K).float()), emb(y))
    half = torch.tensor([[0.5, 0.5, 0.0]])
    assert torch.allclose(emb(half), (emb.table.weight[0] + emb.table.weight[1])[None] / 2)
    cfg = compose_train(["data=ring8", "model=ddpm", "model.conditional=true",
                         "model.nets.toy2d.denoiser.hidden=8"], "unused")
    spec = DataSpec(kind="toy2d", shape=(2,), num_classes=8, mode_centers=((0.0, 0.0),) * 8)
    net = build_model(cfg.model, spec).denoiser
    x, t = torch.randn(3, 2), torch.tensor([5, 5, 5])
    assert not torch.allclose(net(x, t, torch.tensor([0, 1, 2])), net(x, t, torch.tensor([3, 3, 3])))
    assert torch.equal(net(x, t), net(x, t, torch.full((3,), 8)))  # no labels: the "no class" vector


def test_truncated_latents_never_exceed_psi_and_follow_the_truncated_normal():
    for psi in (0.25, 0.5, 1.0, 2.0):
        z = truncated_normal((20_000, 8), psi, torch.Generator().manual_seed(0))
        assert z.abs().max().item() <= psi
        # variance of N(0, 1) truncated to [-psi, psi]: 1 - 2 psi phi(psi) / (2 Phi(psi) - 1)
        phi = math.exp(-psi**2 / 2) / math.sqrt(2 * math.pi)
        var = 1 - 2 * psi * phi / math.erf(psi / math.sqrt(2))
        assert z.var().item() == pytest.approx(var, rel=0.03)
    # only the values beyond the threshold are drawn again: the others are the first draw's
    first = torch.randn(1000, generator=torch.Generator().manual_seed(5))
    z = truncated_normal((1000,), 0.5, torch.Generator().manual_seed(5))
    inside = first.abs() <= 0.5
    assert torch.equal(z[inside], first[inside]) and not torch.equal(z, first)


def _biggan_toy():
    cfg = compose_train(["data=ring8", "model=biggan", "model.nets.toy2d.generator.hidden=16",
                         "model.nets.toy2d.discriminator.hidden=16"], "unused")
    return build_model(cfg.model, TOY)


def test_gan_truncation_is_a_sampling_knob():
    model = _biggan_toy()
    assert model.knobs == ("truncation",) and model.truncation is None
    with model.knobs_applied(truncation=0.3):
        z = model.sample_latent(500, torch.Generator().manual_seed(0))
        assert z.abs().max().item() <= 0.3
        truncated = model.sample(6, torch.Generator().manual_seed(0), labels=torch.arange(6) % K)
    assert model.truncation is None  # restored: training never truncates
    assert model.sample_latent(500, torch.Generator().manual_seed(0)).abs().max().item() > 2
    expected = model.decode(truncated_normal((6, model.latent_dim), 0.3, torch.Generator().manual_seed(0)),
                            torch.arange(6) % K)
    assert torch.allclose(truncated, expected)
    with pytest.raises(ValueError, match="threshold > 0"), model.knobs_applied(truncation=-1):
        pass
    with pytest.raises(ValueError, match="no sampling knob 'guidance'"), model.knobs_applied(guidance=2):
        pass


@pytest.mark.parametrize("spec", [TOY, IMG], ids=["toy2d", "image"])
def test_the_projection_term_is_the_inner_product_of_class_embedding_and_features(spec):
    torch.manual_seed(0)
    d = ProjectionMLPDiscriminator(spec, hidden=8) if spec.kind == "toy2d" else ProjectionDiscriminator(
        spec, base_channels=4)
    x = torch.randn(5, *spec.shape)
    y = torch.tensor([0, 1, 2, 1, 0])
    h = d.features(x)
    logits = d(x, y)
    projection = (d.embedding.table.weight[y] * h).sum(1)
    assert torch.allclose(logits - d.linear(h).squeeze(1), projection, atol=1e-5)
    # the class only enters through the projection: D(x, a) - D(x, b) = <e_a - e_b, phi(x)>
    other = (y + 1) % K
    e = d.embedding.table.weight
    assert torch.allclose(logits - d(x, other), ((e[y] - e[other]) * h).sum(1), atol=1e-5)


def test_biggan_puts_spectral_norm_on_every_layer_and_shares_one_class_embedding():
    cfg = compose_train(["model=biggan", "data.image_size=16", "model.nets.image.generator.base_channels=4",
                         "model.nets.image.discriminator.base_channels=4",
                         "model.nets.image.generator.latent_dim=12",
                         "model.nets.image.generator.shared_dim=8"], "unused")
    model = build_model(cfg.model, IMG)
    g, d = model.generator, model.discriminator
    assert isinstance(g, BigGANGenerator) and isinstance(d, ProjectionDiscriminator)
    layers = [m for net in (g, d) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers and all(is_parametrized(m, "weight") for m in layers)
    assert is_parametrized(d.embedding.table, "weight")  # D's class projection too
    assert [m for m in g.modules() if isinstance(m, ClassEmbedding)] == [g.shared]  # one, for every block
    assert sum(1 for m in g.modules() if type(m).__name__ == "ConditionalBatchNorm2d") == 2 * len(g.blocks)
    assert g.chunks == [4, 4, 4] and sum(g.chunks) == 12  # hierarchical z: linear layer + one chunk per block
    z = torch.randn(3, 12)
    a, b = model.decode(z, torch.tensor([0, 0, 0])), model.decode(z, torch.tensor([1, 1, 1]))
    assert a.shape == (3, 1, 16, 16) and not torch.allclose(a, b)
    assert model.ema_weights is None and cfg.model.ema.decay == 0.999  # EMA on by default (the callback)


def test_conditional_models_refuse_data_without_one_label_per_sample(tmp_path):
    unlabelled = DataSpec(kind="image", shape=(1, 16, 16))
    for overrides in (["model=biggan"], ["model=ddpm", "model.conditional=true"],
                      ["model=flow_matching", "model.conditional=true"]):
        cfg = compose_train(overrides, "unused")
        with pytest.raises(ValueError, match=r"one class label per sample.*data=cifar10 \| digits \| grid25"):
            build_model(cfg.model, unlabelled)
    with pytest.raises(ValueError, match=r"labels of shape \(3,\)"):  # stacked digits: three digits a sample
        run_training(compose_train(["model=biggan", "data=stacked_digits", *FAST], tmp_path))


def test_unconditional_models_refuse_labels_and_conditional_ones_check_them():
    model = _biggan_toy()
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\)"):
        model.sample(2, labels=torch.tensor([0, 3]))
    ddpm = DDPM(TOY, StubNet(TOY), GaussianDiffusion(8), _opt)
    assert not ddpm.is_conditional and ddpm.knobs == ()
    with pytest.raises(ValueError, match="not class-conditional"):
        ddpm.sample(2, labels=torch.tensor([0, 1]))


# --- the 2-D labelled toy check -----------------------------------------------------------------------
TOY_CHECK = {
    "ddpm": ["model=ddpm", "model.conditional=true", "model.diffusion.num_timesteps=50",
             "model.nets.toy2d.denoiser.hidden=64", "trainer.max_steps=400"],
    "flow_matching": ["model=flow_matching", "model.conditional=true", "model.nets.toy2d.velocity.hidden=64",
                      "trainer.max_steps=400"],
    "biggan": ["model=biggan", "model.nets.toy2d.generator.hidden=64",
               "model.nets.toy2d.discriminator.hidden=64", "model.d_steps=1", "trainer.max_steps=300"],
}


@pytest.mark.parametrize("name", list(TOY_CHECK))
def test_conditional_models_put_label_k_samples_near_mode_k_of_ring8(name, tmp_path):
    run_training(compose_train(["data=ring8", "data.batch_size=128", *TOY_CHECK[name], *FAST,
                                "callbacks.sample_grid.every_n_steps=0",
                                "callbacks.sample_grid.num_points=16"], tmp_path))
    model, dm, *_ = load_model(tmp_path)
    model.progress = False
    centres = torch.tensor(dm.spec.mode_centers)
    labels = torch.arange(8).repeat_interleave(50)
    kw = {"sampler": partial(DDIMSampler, steps=20)} if name == "ddpm" else {}
    x = model.sample(400, torch.Generator().manual_seed(0), labels=labels, **kw)
    accuracy = (nearest_centre(x, centres) == labels).double().mean().item()
    distance = (x - centres[labels]).norm(dim=1).median().item()
    print(f"{name}: label accuracy {accuracy:.3f}, median distance to its mode {distance:.3f}")
    assert accuracy >= 0.9 and distance < 0.2  # neighbouring modes are 0.77 apart


# --- BigGAN end to end: exact resume, gen-bench sample with labels and truncation, class grid ---------
TINY_BIGGAN = ["model=biggan", "data=digits", "data.image_size=16", "data.batch_size=8",
               "model.nets.image.generator.base_channels=4", "model.nets.image.discriminator.base_channels=4",
               "model.nets.image.generator.latent_dim=12", "model.nets.image.generator.shared_dim=8",
               "callbacks.sample_grid.num_samples=20", "callbacks.checkpoint.every_n_train_steps=2",
               "callbacks.checkpoint.save_top_k=-1", *FAST]


def _ckpt(run, name="last.ckpt"):
    return torch.load(run / "checkpoints" / name, weights_only=False, map_location="cpu")


@pytest.fixture(scope="module")
def biggan_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "biggan"
    summary = run_training(compose_train([*TINY_BIGGAN, "trainer.max_steps=4"], run))
    assert summary["status"] == "completed" and summary["steps"] == 4
    return run


def test_biggan_counts_g_steps_and_a_mid_run_resume_is_bit_identical(biggan_run, tmp_path):
    full = _ckpt(biggan_run)
    assert full["global_step"] == 4 and int(full["state_dict"]["d_steps_done"]) == 8  # d_steps = 2
    assert full["ema"]["num_updates"] == 4
    resumed = tmp_path / "resumed"
    run_training(compose_train([*TINY_BIGGAN, "trainer.max_steps=4",
                                f"resume={biggan_run / 'checkpoints' / 'step0000002.ckpt'}"], resumed))
    again = _ckpt(resumed)
    for k, v in full["state_dict"].items():
        assert torch.equal(v, again["state_dict"][k]), k
    for k, v in full["ema"]["state_dict"].items():
        assert torch.equal(v, again["ema"]["state_dict"][k]), k


def test_biggan_writes_a_class_grid_and_samples_labels_and_truncation(biggan_run):
    from PIL import Image

    with Image.open(biggan_run / "samples" / "class_grid_final.png") as im:  # 10 rows of 4 (20 // 10 < 4)
        assert im.size == (4 * 18 + 2, 10 * 18 + 2)
    sample_command(compose_sample([f"ckpt={biggan_run}", "n=6", "labels=[0,1,2,3,4,5]", "truncation=0.5",
                                   "seed=2"]))
    out = biggan_run / "samples" / "sample_biggan_6_truncation0.5"
    model, *_ = load_model(biggan_run)
    labels = torch.load(out / "labels.pt")
    assert labels.tolist() == [0, 1, 2, 3, 4, 5]
    with model.knobs_applied(truncation=0.5):
        expected = model.sample(6, torch.Generator().manual_seed(2), labels=labels)
    assert torch.equal(torch.load(out / "samples.pt"), expected)
    assert not torch.equal(expected, model.sample(6, torch.Generator().manual_seed(2), labels=labels))


@pytest.fixture(scope="module")
def cond_ddpm_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "ddpm"
    run_training(compose_train(["data=ring8", "model=ddpm", "model.conditional=true", "data.batch_size=32",
                                "trainer.max_steps=3", "model.nets.toy2d.denoiser.hidden=16",
                                "model.diffusion.num_timesteps=10", "model.training_sampler.steps=3",
                                "callbacks.sample_grid.num_points=16", *FAST], run))
    return run


def test_labels_round_trip_through_gen_bench_sample(cond_ddpm_run, tmp_path):
    r = run_cli(["sample", f"ckpt={cond_ddpm_run}", "labels=3", "n=16", "guidance=2", "sampler=ddim",
                 "sampler.steps=3", f"out={tmp_path / 'three'}"])
    assert r.returncode == 0, r.stderr[-3000:]
    model, *_ = load_model(cond_ddpm_run)
    labels = torch.load(tmp_path / "three" / "labels.pt")
    assert labels.tolist() == [3] * 16
    ddim = partial(DDIMSampler, steps=3)
    with model.knobs_applied(guidance=2.0):
        expected = model.sample(16, torch.Generator().manual_seed(0), labels=labels, sampler=ddim)
    assert torch.allclose(torch.load(tmp_path / "three" / "samples.pt"), expected, atol=1e-6)

    # no labels: drawn from the generator first and written, the same draw as model.sample(n, generator)
    sample_command(compose_sample([f"ckpt={cond_ddpm_run}", "n=8", "seed=4", f"out={tmp_path / 'drawn'}"]))
    drawn = torch.load(tmp_path / "drawn" / "labels.pt")
    assert torch.equal(drawn, model.draw_labels(8, torch.Generator().manual_seed(4)))
    assert torch.equal(torch.load(tmp_path / "drawn" / "samples.pt"),
                       model.sample(8, torch.Generator().manual_seed(4)))

    for args, message in ((["labels=[1,2]", "n=3"], "lists 2 classes for n=3"),
                          (["labels=9"], r"class indices in \[0, 8\)"),
                          (["truncation=0.5"], "no sampling knob 'truncation'")):
        with pytest.raises(ValueError, match=message):
            sample_command(compose_sample([f"ckpt={cond_ddpm_run}", *args, f"out={tmp_path / 'bad'}"]))
