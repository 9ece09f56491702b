"""PacGAN packing (model.pack) on every GAN objective: input widths, one source per pack, the
gradient reaching every packed sample, one step against the formulas, pack=1 unchanged, exact resume."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from gen_bench.data.spec import DataSpec
from gen_bench.models import build_model
from gen_bench.models.dvdgan import DVDGAN
from gen_bench.models.gan import DCGAN
from gen_bench.models.nets import MLPDiscriminator, MLPGenerator
from gen_bench.models.nets.packing import pack_samples
from gen_bench.models.r3gan import R3GAN
from gen_bench.models.wgan_gp import WGANGP
from gen_bench.train import run_training

from conftest import QUIET, compose_train

TOY = DataSpec(kind="toy2d", shape=(2,))
IMG = DataSpec(kind="image", shape=(3, 8, 8))
ROLE = {"dcgan": "discriminator", "wgan_gp": "critic", "r3gan": "discriminator"}
OBJECTIVES = tuple(ROLE)


def _first_layer(net: nn.Module) -> nn.Module:
    return next(m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("data,backbone", [("ring8", "dcgan"), ("digits", "dcgan"), ("digits", "resnet")])
def test_with_pack_2_the_discriminator_takes_twice_the_channels(tmp_path, objective, data, backbone):
    """model.pack reaches the discriminator nets through the configs: 2x the input channels (images)
    or features (2-D data), one score per pack; the generator is unchanged."""
    base = [f"model={objective}", f"data={data}", f"backbone={backbone}", "data.image_size=16"]
    spec = TOY if data == "ring8" else DataSpec(kind="image", shape=(1, 16, 16))
    one = build_model(compose_train(base, tmp_path).model, spec)
    two = build_model(compose_train([*base, "model.pack=2"], tmp_path).model, spec)
    d1, d2 = getattr(one, ROLE[objective]), getattr(two, ROLE[objective])
    width = lambda layer: layer.in_channels if isinstance(layer, nn.Conv2d) else layer.in_features  # noqa: E731
    assert width(_first_layer(d1)) == spec.shape[0] and width(_first_layer(d2)) == 2 * spec.shape[0]
    assert d2.pack == two.pack == 2 and d1.pack == one.pack == 1
    d2.eval()
    assert d2(torch.zeros(3, 2 * spec.shape[0], *spec.shape[1:])).shape == (3,)
    assert [p.shape for p in one.generator.parameters()] == [p.shape for p in two.generator.parameters()]


class _Recorder(nn.Module):
    """Wraps a network and keeps its inputs (discriminators) or outputs (the generator)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.inputs, self.outputs = net, [], []
        self.latent_dim = getattr(net, "latent_dim", None)

    def forward(self, x):
        out = self.net(x)
        self.inputs.append(x.detach().clone())
        if out.requires_grad:
            out.retain_grad()  # d loss / d sample, read after the step
        self.outputs.append(out)
        return out


def _one_packed_step(objective: str, spec: DataSpec, pack: int, batch: int = 8):
    """One training step of ``objective`` with packs of ``pack`` and recording nets; returns
    (model, real batch in model space)."""
    overrides = [f"model={objective}", f"data={'ring8' if spec.kind == 'toy2d' else 'digits'}",
                 "data.image_size=8", f"model.pack={pack}",
                 f"model.nets.image.{ROLE[objective]}.base_channels=4",
                 "model.nets.image.generator.base_channels=4",
                 f"model.nets.toy2d.{ROLE[objective]}.hidden=8", "model.nets.toy2d.generator.hidden=8"]
    if objective == "wgan_gp":
        overrides.append("model.n_critic=1")  # a generator step in this one batch
    cfg = compose_train(overrides, "unused")
    torch.manual_seed(0)
    model = build_model(cfg.model, spec)
    role = ROLE[objective]
    model.generator = _Recorder(model.generator)
    setattr(model, role, _Recorder(getattr(model, role)))
    real = torch.rand(batch, *spec.shape, generator=torch.Generator().manual_seed(1))
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")
    trainer.fit(model, DataLoader(TensorDataset(real, torch.zeros(batch)), batch_size=batch))
    return model, model.to_model_space(real)


KINDS = [pytest.param(TOY, id="toy2d"), pytest.param(IMG, id="image")]


def _source_of(sample: torch.Tensor, real: torch.Tensor, fake: torch.Tensor) -> tuple[str, int]:
    for name, pool in (("real", real), ("fake", fake)):
        hits = [i for i in range(pool.shape[0]) if torch.equal(pool[i], sample)]
        if hits:
            return name, hits[0]
    return "neither", -1


@pytest.mark.parametrize("spec", KINDS)
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_real_and_fake_packs_never_mix(objective, spec):
    """Every discriminator input is packs of pack=2 samples, concatenated along channels (features);
    each pack's parts all come from the real batch or all from the generator's output, and each real
    sample of the batch is in exactly one real pack per pass. WGAN-GP's penalty pass sees
    interpolates e * real pack + (1 - e) * fake pack, one e per pack."""
    m, c = 2, spec.shape[0]
    model, real = _one_packed_step(objective, spec, m)
    fake = torch.cat([o.detach() for o in model.generator.outputs])
    d = getattr(model, ROLE[objective])
    passes = d.inputs
    if objective == "wgan_gp":
        interpolates = passes.pop(1)  # critic(real + fake packs), critic(x_hat) in the penalty, G step
        real_packs, fake_packs = passes[0].chunk(2)
        diff = (real_packs - fake_packs).flatten(1)
        e = ((interpolates - fake_packs).flatten(1) * diff).sum(1) / diff.square().sum(1)
        e_ = e.reshape(-1, *[1] * (real.ndim - 1))
        expected = e_ * real_packs + (1 - e_) * fake_packs
        assert torch.allclose(interpolates, expected, atol=1e-5) and ((0 <= e) & (e <= 1)).all()
    assert len(passes) >= 2
    for x in passes:
        assert x.shape[1] == m * c and x.shape[2:] == real.shape[2:]
        real_seen = []
        for p in range(x.shape[0]):
            parts = [x[p, j * c:(j + 1) * c] for j in range(m)]
            sources = [_source_of(part, real, fake) for part in parts]
            kinds = {s for s, _ in sources}
            assert len(kinds) == 1 and kinds != {"neither"}, (objective, p, sources)
            if kinds == {"real"}:
                real_seen += [i for _, i in sources]
        if real_seen:  # a pass with real packs holds the whole batch, each sample once
            assert sorted(real_seen) == list(range(real.shape[0]))


@pytest.mark.parametrize("spec", KINDS)
@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("m", [2, 4])
def test_the_generator_gradient_reaches_every_packed_sample(objective, m, spec):
    """d loss_g / d G(z)_i is non-zero for every sample i of the batch: no sample is left out of a pack."""
    model, _ = _one_packed_step(objective, spec, m)
    graded = [o for o in model.generator.outputs if o.requires_grad]
    assert len(graded) == 1  # the G step's fakes
    grad = graded[0].grad
    assert grad is not None and grad.shape[0] == 8
    assert (grad.flatten(1).norm(dim=1) > 0).all()


def test_a_batch_not_divisible_by_the_pack_is_a_clear_error():
    with pytest.raises(ValueError, match=r"6 samples .* model.pack=4; set data.batch_size to a multiple"):
        pack_samples(torch.zeros(6, 2), 4)
    assert torch.equal(pack_samples(torch.arange(8.0).reshape(4, 2), 2),
                       torch.tensor([[0.0, 1, 2, 3], [4, 5, 6, 7]]))


def test_pack_mismatch_and_dvdgan_packing_are_refused(tmp_path):
    opt = lambda p: torch.optim.SGD(p, lr=0.1)  # noqa: E731
    gen = MLPGenerator(TOY, latent_dim=3, hidden=8, depth=1)
    for cls in (DCGAN, WGANGP, R3GAN):
        with pytest.raises(ValueError, match="packs of 1 samples but model.pack=2; build it with pack=2"):
            cls(TOY, gen, MLPDiscriminator(TOY, hidden=8, depth=1), opt, opt, pack=2)
        with pytest.raises(ValueError, match="model.pack must be an integer >= 1"):
            cls(TOY, gen, MLPDiscriminator(TOY, hidden=8, depth=1), opt, opt, pack=0)
    cfg = compose_train(["model=dvdgan", "data=bouncing_balls", "model.pack=2"], tmp_path)
    with pytest.raises(ValueError, match="DVD-GAN does not support packing"):
        build_model(cfg.model, DataSpec(kind="video", shape=(1, 8, 16, 16)))
    assert isinstance(build_model(compose_train(["model=dvdgan", "data=bouncing_balls"], tmp_path).model,
                                  DataSpec(kind="video", shape=(1, 8, 16, 16))), DVDGAN)


class _FixedLatents:
    def __init__(self, latents):
        self.latents = list(latents)

    def __call__(self, n, generator=None):
        return self.latents.pop(0)


def _packs(x: torch.Tensor, m: int) -> torch.Tensor:
    """Pack p = [x_{pm}, ..., x_{pm+m-1}] along features, written independently of pack_samples."""
    return torch.cat([x[j::m] for j in range(m)], dim=1)


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("m", [1, 2])
def test_one_step_matches_the_packed_objective_and_pack_1_the_unpacked_one(objective, m):
    """With SGD, a linear D on packs (so WGAN-GP's and R3GAN's penalties have closed forms) and known
    latents, one batch moves D and G by the gradients of the paper's losses on packs built here by
    hand; with m = 1 these are the unpacked losses, so pack=1 is the code path without packing."""
    torch.manual_seed(0)
    gen = MLPGenerator(TOY, latent_dim=3, hidden=8, depth=1)
    disc = MLPDiscriminator(TOY, hidden=8, depth=0, pack=m)  # Linear(2m, 1)
    lr, weight = 0.1, 0.7
    sgd = lambda p: torch.optim.SGD(p, lr=lr)  # noqa: E731
    extra = {"dcgan": {}, "wgan_gp": {"n_critic": 1, "gp_weight": weight}, "r3gan": {"gamma": weight}}
    cls = {"dcgan": DCGAN, "wgan_gp": WGANGP, "r3gan": R3GAN}[objective]
    model = cls(TOY, gen, disc, sgd, sgd, pack=m, **extra[objective])
    real = torch.randn(4, 2, generator=torch.Generator().manual_seed(1))
    z1, z2 = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(2))
    if objective == "dcgan":
        z2 = z1  # one draw: the G step reuses the D step's fakes
    model.sample_latent = _FixedLatents([z1] if objective == "dcgan" else [z1, z2])
    g0 = {k: v.clone() for k, v in gen.state_dict().items()}
    w0, b0 = disc.net[0].weight.detach().clone(), disc.net[0].bias.detach().clone()

    w, b = w0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    with torch.no_grad():
        fake1 = torch.func.functional_call(gen, g0, (z1,))
    d_of = lambda x: (x @ w.T + b).squeeze(1)  # noqa: E731
    rp, fp = _packs(real, m), _packs(fake1, m)
    loss_d = {
        "dcgan": lambda: F.softplus(-d_of(rp)).mean() + F.softplus(d_of(fp)).mean(),
        "wgan_gp": lambda: d_of(fp).mean() - d_of(rp).mean() + weight * (w.norm() - 1) ** 2,
        "r3gan": lambda: F.softplus(d_of(fp) - d_of(rp)).mean() + weight / 2 * 2 * w.square().sum(),
    }[objective]()
    gw, gb = torch.autograd.grad(loss_d, (w, b))
    w1, b1 = w0 - lr * gw, b0 - lr * gb
    params = {k: v.clone().requires_grad_(True) for k, v in g0.items()}
    fp2 = _packs(torch.func.functional_call(gen, params, (z2,)), m)
    d1 = lambda x: (x @ w1.T + b1).squeeze(1)  # noqa: E731
    loss_g = {
        "dcgan": lambda: F.softplus(-d1(fp2)).mean(),
        "wgan_gp": lambda: -d1(fp2).mean(),
        "r3gan": lambda: F.softplus(d1(rp) - d1(fp2)).mean(),
    }[objective]()
    grads = torch.autograd.grad(loss_g, list(params.values()))
    g1 = {k: v - lr * gr for (k, v), gr in zip(params.items(), grads, strict=True)}

    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")
    trainer.fit(model, DataLoader(TensorDataset(real, torch.zeros(4)), batch_size=4))
    assert torch.allclose(disc.net[0].weight, w1, atol=1e-6)
    assert torch.allclose(disc.net[0].bias, b1, atol=1e-6)
    for k, v in gen.state_dict().items():
        assert torch.allclose(v, g1[k], atol=1e-6), k


TOY_RUN = ["data=ring8", "model=dcgan", "model.pack=2", "data.batch_size=32",
           "model.nets.toy2d.generator.hidden=16", "model.nets.toy2d.discriminator.hidden=16",
           "callbacks.sample_grid.num_points=64", "callbacks.sample_grid.every_n_steps=0",
           "callbacks.checkpoint.every_n_train_steps=1", "callbacks.checkpoint.save_top_k=-1",
           *QUIET, "eval.enabled=false"]


def _ckpt(run_dir, name="last.ckpt"):
    return torch.load(run_dir / "checkpoints" / name, weights_only=False, map_location="cpu")


def test_packed_dcgan_resumes_bit_identically_mid_run(tmp_path):
    full = tmp_path / "full"
    assert run_training(compose_train([*TOY_RUN, "trainer.max_steps=4"], full))["steps"] == 4
    last = _ckpt(full)
    assert last["state_dict"]["discriminator.net.0.weight"].shape[1] == 4  # 2 packed 2-D samples
    resumed = tmp_path / "resumed"
    run_training(compose_train([*TOY_RUN, "trainer.max_steps=4",
                                f"resume={full / 'checkpoints' / 'step0000002.ckpt'}"], resumed))
    again = _ckpt(resumed)
    assert again["global_step"] == 4 and last["state_dict"].keys() == again["state_dict"].keys()
    for k, v in last["state_dict"].items():
        assert torch.equal(v, again["state_dict"][k]), k
    assert (resumed / "metrics.json").read_text().count('"batches_seen": 4') == 1  # continued, not restarted
