"""Video metrics: FVD ~0 for real vs real and growing with temporal shuffling (frame FID does not),
the video extractors (trained and cached, random, I3D from a local file), the physics check against
the simulator's ground truth, and the evaluator computing them for video data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import gen_bench.metrics.video as video_metrics
from gen_bench.data import GenerativeDataModule
from gen_bench.data.spec import DataSpec
from gen_bench.data.video import BouncingBalls, MovingDigits
from gen_bench.metrics.engine import Evaluator
from gen_bench.metrics.extractors import ExtractorRequest, RandomConvNet
from gen_bench.metrics.settings import EvalSettings
from gen_bench.metrics.suite import NotApplicable, SuiteContext, build_score
from gen_bench.metrics.video import (
    I3DExtractor,
    PhysicsCheck,
    build_video_extractor,
    conv3d,
    frame_fid,
    fvd,
    physics_statistics,
    summarise_physics,
    temporal_corruptions,
)
from gen_bench.models.base import GenerativeModule


@pytest.fixture(scope="module")
def balls():
    """400 clips of 1 x 6 x 16 x 16 balls, split 360 / 40."""
    source = BouncingBalls(image_size=16, frames=6, num_samples=400, seed=0)
    return GenerativeDataModule(source, "bouncing_balls", batch_size=16)


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return EvalSettings(cache_dir=str(tmp_path_factory.mktemp("cache")), num_samples=64, batch_size=32,
                        metrics=["fid", "fvd", "physics"],
                        video={"trained3d": {"steps": 40, "batch_size": 16},
                               "physics": {"num_reference": 100}})


def _shuffled(x: torch.Tensor, fraction: float, seed: int = 0) -> torch.Tensor:
    """The first ``fraction`` of the clips with their frames in a random order."""
    g = torch.Generator().manual_seed(seed)
    out = x.clone()
    for i in range(int(fraction * x.shape[0])):
        out[i] = x[i][:, torch.randperm(x.shape[2], generator=g)]
    return out


@pytest.mark.parametrize("name", ["random3d", "trained3d"])
def test_fvd_is_zero_for_real_clips_and_grows_with_shuffling_while_frame_fid_does_not(balls, settings, name):
    ext = build_video_extractor(name, ExtractorRequest(balls.spec, balls, settings))
    x, _ = balls.tensors("train")
    a, b = x[:180], x[180:360]
    assert fvd(a, a, ext) == pytest.approx(0, abs=1e-6)
    image = RandomConvNet(1, 16, 0)
    fvds = [fvd(a, _shuffled(b, f), ext) for f in (0.0, 0.5, 1.0)]
    fids = [frame_fid(a, _shuffled(b, f), image) for f in (0.0, 0.5, 1.0)]
    assert fvds[0] < fvds[1] < fvds[2] and fvds[2] > 1.2 * fvds[0]
    assert fids[0] == pytest.approx(fids[1], rel=1e-6) == pytest.approx(fids[2], rel=1e-6)  # the same frames
    if name == "trained3d":  # trained to see time: shuffling dwarfs the sampling noise of real vs real
        assert fvds[2] > 20 * fvds[0] and ext.info["test_accuracy"] > 0.6


def test_trained3d_is_cached_and_random3d_is_seeded(balls, settings, monkeypatch):
    request = ExtractorRequest(balls.spec, balls, settings)
    first = build_video_extractor("trained3d", request)  # trained by the test above, or now
    monkeypatch.setattr(conv3d, "train_conv3d", lambda *a: pytest.fail("retrained despite the cache"))
    again = build_video_extractor("trained3d", request)
    assert again.weights_sha256() == first.weights_sha256() and again.describe()["ssl_cache_file"]
    state = torch.get_rng_state()
    r1, r2 = (build_video_extractor("random3d", request) for _ in range(2))
    assert r1.weights_sha256() == r2.weights_sha256() and torch.equal(torch.get_rng_state(), state)
    with pytest.raises(ValueError, match="valid: i3d, random3d, trained3d"):
        build_video_extractor("c3d", request)


def test_ssl_corruptions_do_what_they_say():
    x = torch.arange(6.0)[None, None, :, None, None].expand(4, 1, 6, 5, 5).clone()
    x[:, :, :, 2, 2] += 100  # a bright pixel, to see jitter
    out = temporal_corruptions(x, torch.tensor([0, 1, 2, 3]), torch.Generator().manual_seed(0))
    assert torch.equal(out[0], x[0])
    order = out[1, 0, :, 0, 0]
    assert sorted(order.tolist()) == list(range(6)) and order.tolist() != list(range(6))
    assert (out[2, 0, :, 0, 0] == out[2, 0, 0, 0, 0]).all()
    assert torch.equal(out[3].amax((2, 3)), x[3].amax((2, 3))) and not torch.equal(out[3], x[3])


def test_i3d_needs_a_local_file_and_is_called_as_stylegan_v_does(balls, settings, tmp_path):
    request = ExtractorRequest(balls.spec, balls, EvalSettings(cache_dir=settings.cache_dir))
    with pytest.raises(FileNotFoundError, match="eval.video.i3d_weights=PATH"):
        build_video_extractor("i3d", request)
    missing = EvalSettings(video={"i3d_weights": str(tmp_path / "nope.pt")})
    with pytest.raises(FileNotFoundError, match="nope.pt does not exist"):
        build_video_extractor("i3d", ExtractorRequest(balls.spec, balls, missing))
    assert video_metrics.auto_video_extractor(missing) == "trained3d"

    class FakeI3D(nn.Module):  # the TorchScript interface of i3d_torchscript.pt
        def forward(self, x: torch.Tensor, rescale: bool, resize: bool,
                    return_features: bool) -> torch.Tensor:
            flags = torch.tensor([float(rescale), float(resize), float(return_features), float(x.shape[2]),
                                  float(x.shape[1])])
            return torch.cat([x.amin((1, 2, 3, 4))[:, None], x.amax((1, 2, 3, 4))[:, None],
                              flags.expand(x.shape[0], 5)], 1)

    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.script(FakeI3D()).save(str(path))
    with_file = EvalSettings(video={"i3d_weights": str(path), "i3d_min_frames": 9})
    assert video_metrics.auto_video_extractor(with_file) == "i3d"
    ext = build_video_extractor("auto", ExtractorRequest(balls.spec, balls, with_file))
    assert isinstance(ext, I3DExtractor) and ext.feature_dim == 7 and len(ext.weights_sha256()) == 64
    clips = torch.rand(3, 1, 6, 16, 16)
    clips[:, :, :, 0, 0] = torch.tensor([0.0, 1.0])[torch.arange(6) % 2]
    f = ext(clips)["pool"]
    assert f[:, 0].tolist() == [-1.0] * 3 and f[:, 1].tolist() == [1.0] * 3  # scaled to [-1, 1]
    assert f[0, 2:].tolist() == [0.0, 1.0, 1.0, 9.0, 3.0]  # rescale=False, resize, features; 9 frames; RGB


def test_physics_statistics_match_the_simulators_ground_truth():
    src = BouncingBalls(image_size=32, frames=8, num_samples=60, num_balls=2, radius=0.1, speed=(0.05, 0.08),
                        collisions=False, seed=5)
    clips = src.load()[torch.arange(60)][0]
    p = src.positions  # (N, T, B, 2)
    d = np.linalg.norm(p[:, :, 0] - p[:, :, 1], axis=-1)
    apart = d.min(1) > 2 * src.radius_px + 2  # clips whose balls never touch: two clean tracks
    got = summarise_physics(physics_statistics(clips[torch.from_numpy(apart)], num_balls=2))
    q = p[apart]
    speed = np.linalg.norm(np.diff(q, axis=1), axis=-1).mean()
    accel = np.linalg.norm(q[:, 2:] - 2 * q[:, 1:-1] + q[:, :-2], axis=-1).mean()
    assert apart.sum() > 20
    assert got["count_consistency"] == 1 and got["count_mean"] == 2 and got["count_error"] == 0
    assert got["speed"] == pytest.approx(speed, abs=0.03)
    assert got["acceleration"] == pytest.approx(accel, abs=0.03)
    # broken physics shows: shuffled frames jump about, frozen clips do not move, blank ones hold no balls
    shuffled = summarise_physics(physics_statistics(_shuffled(clips, 1.0), 2))
    assert shuffled["acceleration"] > 3 * got["acceleration"]
    frozen = summarise_physics(physics_statistics(clips[:, :, :1].expand_as(clips), 2))
    assert frozen["speed"] == 0 and frozen["acceleration"] == 0
    blank = summarise_physics(physics_statistics(torch.zeros(2, 1, 8, 32, 32), 2))
    assert blank["count_mean"] == 0 and blank["count_error"] == 2 and np.isnan(blank["speed"])
    # the metric's sums split across updates (processes) like one update
    m = PhysicsCheck(2)
    m.update(clips[:30])
    m.update(clips[30:])
    assert m.compute() == pytest.approx(summarise_physics(physics_statistics(clips, 2)), nan_ok=True)


class ClipBank(GenerativeModule):
    """Draws real clips from a bank (indices from the generator), optionally with shuffled frames."""

    def __init__(self, spec, bank: torch.Tensor, shuffle: bool = False) -> None:
        super().__init__(spec)
        self.bank, self.shuffle = bank, shuffle

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        x = self.bank[torch.randint(self.bank.shape[0], (n,), generator=generator)]
        if not self.shuffle:
            return x
        return _shuffled(x, 1.0, seed=int(torch.randint(1000, (1,), generator=generator)))


def test_the_evaluator_scores_video_with_frame_fid_fvd_and_physics(balls, settings):
    bank, _ = balls.tensors("heldout")
    evaluator = Evaluator(settings, balls)  # video extractor auto: trained3d (no I3D file here)
    real = evaluator.evaluate(ClipBank(balls.spec, bank)).values()
    shuffled = evaluator.evaluate(ClipBank(balls.spec, bank, shuffle=True)).values()
    assert {"fid", "fvd", "physics_count_consistency", "physics_acceleration_real"} <= set(real)
    assert not {"fvd", "physics"} & set(evaluator.skipped)
    fvd_score = next(score for score in evaluator.scores if score.name == "fvd")
    assert fvd_score.extractor.name == "trained3d" and shuffled["fvd"] > 10 * real["fvd"]
    assert shuffled["fid"] == pytest.approx(real["fid"], rel=0.05)  # per frame: the same frames
    assert shuffled["physics_acceleration"] > 3 * real["physics_acceleration"]
    assert real["physics_count_error"] < 0.05
    assert real["physics_acceleration"] == pytest.approx(real["physics_acceleration_real"], abs=0.2)


def test_video_metrics_do_not_apply_to_other_data(balls, settings):
    cpu = torch.device("cpu")
    image = SuiteContext(settings, DataSpec(kind="image", shape=(1, 8, 8)), balls, None, None, cpu, True)
    with pytest.raises(NotApplicable, match="FVD is for video"):
        build_score("fvd", image)
    digits = GenerativeDataModule(MovingDigits(num_samples=4), "moving_digits")
    with pytest.raises(NotApplicable, match="bouncing_balls"):
        build_score("physics", SuiteContext(settings, digits.spec, digits, None, None, cpu, True))
