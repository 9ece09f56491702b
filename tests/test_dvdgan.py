"""DVD-GAN: what each discriminator sees, the hinge loss, the ablation switches, a short run that
writes GIFs and video metrics, exact resume with EMA, and ``gen-bench sample`` for video."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from lightning.pytorch.loggers import WandbLogger
from PIL import Image

from gen_bench.callbacks import SampleGrid
from gen_bench.checkpoint import load_model
from gen_bench.config import config_dir
from gen_bench.data.spec import DataSpec
from gen_bench.eval import eval_command
from gen_bench.io import read_json
from gen_bench.models import build_model
from gen_bench.models.dvdgan import DVDGAN, hinge_d_loss, hinge_g_loss
from gen_bench.models.nets import SpatialDiscriminator, TemporalDiscriminator, VideoGenerator
from gen_bench.sample import sample_command
from gen_bench.train import run_training
from gen_bench.viz_video import read_gif

from conftest import QUIET, compose_train

SPEC = DataSpec(kind="video", shape=(2, 6, 16, 16))


def _indexed_clips(b: int = 3) -> torch.Tensor:
    """Clips whose frame t of clip i is the constant 10 i + t: a frame tells where it came from."""
    c, t, h, w = SPEC.shape
    values = 10 * torch.arange(b)[:, None] + torch.arange(t)[None]  # (B, T)
    return values[:, None, :, None, None].float().expand(b, c, t, h, w).clone()


def _inputs_of(module: torch.nn.Module) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    module.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    return seen


@pytest.mark.parametrize("core", ["gru", "conv3d"])
def test_the_generator_makes_whole_clips_in_one_pass(core):
    torch.manual_seed(0)
    g = VideoGenerator(SPEC, latent_dim=8, base_channels=4, temporal_core=core)
    x = g(torch.randn(5, 8))
    assert x.shape == (5, 2, 6, 16, 16) and x.abs().max() <= 1
    assert not torch.allclose(x[:, :, 0], x[:, :, 1])  # frames differ: the core makes time
    decoded = _inputs_of(g.decoder)
    g(torch.randn(5, 8))
    assert len(decoded) == 1 and decoded[0].shape == (5 * 6, g.decoder[0].num_features, 4, 4)  # one pass
    with pytest.raises(ValueError, match="4 \\* 2\\^n"):
        VideoGenerator(DataSpec(kind="video", shape=(1, 4, 12, 12)))


@pytest.mark.parametrize("k", [2, 6])
def test_the_spatial_discriminator_sees_k_distinct_full_resolution_frames(k):
    torch.manual_seed(0)
    d = SpatialDiscriminator(SPEC, num_frames=k, base_channels=4)
    x = _indexed_clips()
    seen = _inputs_of(d.net)
    score = d(x, generator=torch.Generator().manual_seed(1))
    (frames,) = seen
    assert frames.shape == (3 * k, 2, 16, 16)  # k frames per clip, full resolution
    ids = frames[:, 0, 0, 0].view(3, k)  # which frame of which clip each one was
    for i in range(3):
        assert len(set(ids[i].tolist())) == k  # distinct
        assert {int(v) // 10 for v in ids[i]} == {i}  # from its own clip
    if k == SPEC.shape[1]:
        assert (ids % 10).sort(1).values.tolist() == [list(range(6))] * 3  # k = T: every frame
    # the clip's score is the sum of its frames' scores
    picked, index = d.sample_frames(x, torch.Generator().manual_seed(1))
    assert torch.equal(picked[:, :, 0, 0, 0], ids) and torch.allclose(score, d.score_frames(picked).sum(1))
    # the gradient reaches exactly the k chosen frames
    x.requires_grad_(True)
    d(x, generator=torch.Generator().manual_seed(1)).sum().backward()
    touched = x.grad.abs().sum((1, 3, 4)) > 0  # (B, T)
    assert touched.sum(1).tolist() == [k] * 3 and touched.gather(1, index).all()


@pytest.mark.parametrize("factor", [1, 2, 4])
def test_the_temporal_discriminator_sees_the_whole_clip_at_reduced_resolution(factor):
    torch.manual_seed(0)
    d = TemporalDiscriminator(SPEC, downsample=factor, base_channels=4)
    x = torch.rand(3, *SPEC.shape, generator=torch.Generator().manual_seed(2), requires_grad=True)
    seen = _inputs_of(d.net)
    d(x).sum().backward()
    (clip,) = seen
    assert clip.shape == (3, 2, 6, 16 // factor, 16 // factor)  # every frame, pooled
    expected = x.detach() if factor == 1 else F.avg_pool2d(x.detach().transpose(1, 2).flatten(0, 1), factor)\
        .view(3, 6, 2, 16 // factor, 16 // factor).transpose(1, 2)
    assert torch.allclose(clip, expected, atol=1e-6)
    assert (x.grad != 0).all()  # every pixel of every frame counts
    with pytest.raises(ValueError, match="downsample"):
        TemporalDiscriminator(SPEC, downsample=3)


def test_hinge_losses_follow_their_closed_form():
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-3.0, 0.0, 0.25])
    assert hinge_d_loss(real, fake).item() == pytest.approx((0 + 0.5 + 2) / 3 + (0 + 1 + 1.25) / 3)
    assert hinge_g_loss(fake).item() == pytest.approx(-(-3 + 0 + 0.25) / 3)


def test_config_builds_both_discriminators_with_spectral_norm_and_switches_them_off(tmp_path):
    cfg = compose_train(["model=dvdgan", "data=bouncing_balls"], tmp_path)
    assert list(cfg.model.discriminators) == ["spatial", "temporal"] and cfg.model.spectral_norm
    assert cfg.model.nets.video.spatial_discriminator.num_frames == 8
    assert cfg.model.nets.video.temporal_discriminator.downsample == 2
    spec = DataSpec(kind="video", shape=(1, 8, 16, 16))
    model = build_model(cfg.model, spec)
    assert isinstance(model, DVDGAN) and set(model.discriminators()) == {"spatial", "temporal"}
    for d in model.discriminators().values():
        convs = [m for m in d.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear))]
        assert convs and all(hasattr(m, "parametrizations") for m in convs)  # spectral norm everywhere
    x = model.sample(4, generator=torch.Generator().manual_seed(0))
    assert x.shape == (4, 1, 8, 16, 16) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1

    cfg.model.discriminators = ["spatial"]
    spatial_only = build_model(cfg.model, spec)
    assert spatial_only.temporal_discriminator is None and set(spatial_only.discriminators()) == {"spatial"}
    assert not any(k.startswith("temporal") for k in spatial_only.state_dict())
    _, opt_d = spatial_only.configure_optimizers()
    assert {id(p) for g in opt_d.param_groups for p in g["params"]} == \
        {id(p) for p in spatial_only.spatial_discriminator.parameters()}
    cfg.model.discriminators = ["temporal"]
    assert set(build_model(cfg.model, spec).discriminators()) == {"temporal"}
    for bad in ([], ["spatial", "spatial"], ["motion"]):
        cfg.model.discriminators = bad
        with pytest.raises(ValueError, match="at least one discriminator, each once"):
            build_model(cfg.model, spec)
    with pytest.raises(ValueError, match="no networks for image data"):
        build_model(compose_train(["model=dvdgan"], tmp_path).model, DataSpec(kind="image", shape=(1, 8, 8)))


def test_sampling_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(0)
    g = VideoGenerator(SPEC, latent_dim=8, base_channels=4)
    opt = lambda p: torch.optim.Adam(p)  # noqa: E731
    model = DVDGAN(SPEC, g, SpatialDiscriminator(SPEC, base_channels=4),
                   TemporalDiscriminator(SPEC, base_channels=4), opt, opt)
    state = torch.get_rng_state()
    a = model.sample(3, generator=torch.Generator().manual_seed(5))
    b = model.sample(3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and torch.equal(torch.get_rng_state(), state)
    path = model.interpolate(torch.randn(8), torch.randn(8), steps=4)
    assert path.shape == (4, 2, 6, 16, 16)


NETS = "model.nets.video"
TINY = ["model=dvdgan", "data=bouncing_balls", "data.source.num_samples=96", "data.source.frames=4",
        "data.batch_size=8", f"{NETS}.generator.base_channels=4", f"{NETS}.generator.latent_dim=8",
        f"{NETS}.spatial_discriminator.base_channels=4", f"{NETS}.spatial_discriminator.num_frames=2",
        f"{NETS}.temporal_discriminator.base_channels=4",
        "model.ema={_target_:gen_bench.ema.EMA,decay:0.9,warmup:0}",
        "callbacks.checkpoint.every_n_train_steps=1", "callbacks.checkpoint.save_top_k=-1",
        "callbacks.sample_grid.every_n_steps=2", "callbacks.sample_grid.num_samples=6", *QUIET]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """4 steps with EMA, sample grids at step 2 and the end, and the evaluation at the end."""
    root = tmp_path_factory.mktemp("dvdgan")
    cache = root / "cache"
    evaluation = ["eval=fast", "eval.every_n_steps=0", "eval.num_samples=24", "eval.batch_size=12",
                  f"eval.cache_dir={cache}", "eval.metrics=[fid,fvd,physics]",
                  "eval.video.extractor=random3d", "eval.video.physics.num_reference=24"]
    summary = run_training(compose_train([*TINY, *evaluation, "trainer.max_steps=4"], root / "full"))
    return root, summary


def test_a_short_run_writes_gifs_frame_grids_and_video_metrics(run):
    root, summary = run
    run_dir = root / "full"
    assert summary["status"] == "completed" and summary["steps"] == 4 and summary["batches_seen"] == 4
    for tag in ("step_0000002", "final"):
        gif = read_gif(run_dir / "samples" / f"{tag}.gif")
        assert gif.shape[0] == 4  # one GIF frame per clip frame (T = 4)
        assert (run_dir / "samples" / f"{tag}.png").is_file()
        grid = Image.open(run_dir / "samples" / f"{tag}_frames.png")
        assert grid.size == (2 + 4 * 66, 2 + 6 * 66)  # a clip per row, its 4 frames across (64 px + pad)
    final = summary["final"]
    for key in ("train/loss_d", "train/loss_g", "train/loss_d_spatial", "train/loss_d_temporal", "val/fid",
                "val/fvd", "val/physics_count_consistency_real", "val/physics_count_mean"):
        assert key in final, key
    both = final["train/loss_d_spatial"] + final["train/loss_d_temporal"]
    assert final["train/loss_d"] == pytest.approx(both, rel=1e-5)
    ev = summary["eval"]
    assert ev["scores"]["fvd"]["protocol_id"] != ev["scores"]["fid"]["protocol_id"]
    fvd_protocol = ev["protocols"][ev["scores"]["fvd"]["protocol_id"]]
    assert fvd_protocol["video_extractor"]["name"] == "random3d"
    header = (run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss_d_spatial", "train/loss_d_temporal", "val/fvd"} <= set(header)


def test_resume_mid_run_ends_bit_identical_with_ema(run):
    root, _ = run
    full = root / "full"
    last = torch.load(full / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert last["global_step"] == 4 and last["ema"]["num_updates"] == 4
    resumed = root / "resumed"
    run_training(compose_train([*TINY, "eval.enabled=false", "trainer.max_steps=4",
                                f"resume={full / 'checkpoints' / 'step0000002.ckpt'}"], resumed))
    again = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert again["global_step"] == 4 and last["state_dict"].keys() == again["state_dict"].keys()
    for k, v in last["state_dict"].items():
        assert torch.equal(v, again["state_dict"][k]), k
    for k, v in last["ema"]["state_dict"].items():
        assert torch.equal(v, again["ema"]["state_dict"][k]), k
    assert read_json(resumed / "metrics.json")["batches_seen"] == 4
    # and it really resumed: this session made updates 3 and 4 only (rows are at the updates done)
    rows = (resumed / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
    step = rows[0].split(",").index("step")
    assert sorted({int(r.split(",")[step]) for r in rows[1:]}) == [3, 4]


def test_gen_bench_sample_writes_a_gif_and_a_frame_grid(run, tmp_path):
    root, _ = run
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("sample", overrides=[f"ckpt={root / 'full'}", "n=5", f"out={tmp_path}", "seed=3"])
    sample_command(cfg)
    x = torch.load(tmp_path / "samples.pt")
    model, *_ = load_model(root / "full")
    assert model.ema_weights is not None  # sampled with the EMA generator
    assert x.shape == (5, 1, 4, 16, 16) and torch.equal(x, model.sample(5, torch.Generator().manual_seed(3)))
    gif = read_gif(tmp_path / "samples.gif")
    assert gif.shape[0] == 4
    for name in ("samples.png", "samples_frames.png"):
        assert (tmp_path / name).is_file()


def test_gen_bench_eval_scores_a_video_checkpoint(run, tmp_path):
    root, summary = run
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("eval", overrides=[f"ckpt={root / 'full'}", "eval=fast", "eval.num_samples=24",
                                         "eval.batch_size=12", f"eval.cache_dir={root / 'cache'}",
                                         "eval.metrics=[fid,fvd,physics]", "eval.video.extractor=random3d",
                                         "eval.video.physics.num_reference=24", f"out_dir={tmp_path}"])
    out = eval_command(cfg)
    for name in ("fid", "fvd", "physics_count_mean"):  # the same draw as at the end of training
        assert out["eval"]["scores"][name]["value"] == pytest.approx(summary["eval"]["scores"][name]["value"],
                                                                     rel=1e-6), name


class RecordingWandb(WandbLogger):
    """A WandbLogger that records what it is asked to log (no wandb run)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def log_image(self, key, images, step=None, **kwargs):
        self.calls.append(("image", {"key": key, "images": images, "step": step}))

    def log_video(self, key, videos, step=None, **kwargs):
        self.calls.append(("video", {"key": key, "videos": videos, "step": step, **kwargs}))


def test_sample_grids_of_video_go_to_wandb_as_video(run, tmp_path):
    model, *_ = load_model(run[0] / "full")
    wandb = RecordingWandb()
    trainer = SimpleNamespace(global_step=7, loggers=[wandb])
    paths = SampleGrid(tmp_path, num_samples=4).save(trainer, model, "step_0000007")
    assert [p.name for p in paths] == ["step_0000007.png", "step_0000007_frames.png"]
    (kind_i, image), (kind_v, video) = wandb.calls
    assert kind_i == "image" and image["images"] == [str(p) for p in paths] and image["step"] == 7
    assert kind_v == "video" and video["videos"] == [str(tmp_path / "step_0000007.gif")]
    assert video["format"] == ["gif"] and video["step"] == 7
