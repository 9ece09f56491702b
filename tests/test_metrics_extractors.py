"""Feature extractors (registry, random, identity, the cached dataset classifier, the offline
Inception path) and the reference-statistics cache."""

from __future__ import annotations

import time

import pytest
import torch
from hydra.utils import instantiate

import gen_bench.metrics.classifier as classifier_module
from gen_bench.assets import sha256_of
from gen_bench.data.spec import DataSpec
from gen_bench.metrics import inception as inception_module
from gen_bench.metrics.engine import auto_extractor
from gen_bench.metrics.extractors import (
    ExtractorRequest,
    IdentityExtractor,
    build_extractor,
    register_extractor,
)
from gen_bench.metrics.fid import FeatureStats
from gen_bench.metrics.reference import reference_features
from gen_bench.metrics.settings import ClassifierOptions, EvalSettings
from gen_bench.metrics.video import build_video_extractor, register_video_extractor

from conftest import compose_train


@pytest.fixture(scope="session")
def eval_cache(tmp_path_factory):
    """One cache for the test session: the digits classifier is trained once."""
    return tmp_path_factory.getbasetemp() / "eval-cache"


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return instantiate(compose_train(["data.image_size=16"], tmp_path_factory.mktemp("run")).data)


def settings(cache, **kwargs) -> EvalSettings:
    return EvalSettings(cache_dir=str(cache), classifier=ClassifierOptions(steps=100), **kwargs)


@pytest.fixture
def no_inception_weights(tmp_path, monkeypatch):
    """A machine without the Inception file anywhere, where any download attempt fails the test."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv("GEN_BENCH_ASSETS", raising=False)

    def no_network(*args, **kwargs):
        raise AssertionError("the network was touched")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)


def test_unknown_extractor_lists_the_valid_ones(digits, tmp_path):
    valid = "valid: classifier, dinov2, identity, inception, random"
    with pytest.raises(ValueError, match=f"unknown feature extractor 'vgg'; {valid}"):
        build_extractor("vgg", ExtractorRequest(digits.spec, digits, settings(tmp_path)))
    video_valid = "valid: i3d, random3d, trained3d"
    with pytest.raises(ValueError, match=f"unknown video extractor 'c3d'; {video_valid}"):
        build_video_extractor("c3d", ExtractorRequest(digits.spec, digits, settings(tmp_path)))
    with pytest.raises(ValueError, match="video extractors need video data, got image"):
        build_video_extractor("random3d", ExtractorRequest(digits.spec, digits, settings(tmp_path)))
    for register, taken in ((register_extractor, "random"), (register_video_extractor, "random3d")):
        with pytest.raises(ValueError, match=f"'{taken}' is already registered"):
            register(taken)(lambda request: None)


def test_auto_picks_identity_classifier_or_random(digits, tmp_path, no_inception_weights):
    ring = instantiate(compose_train(["data=ring8"], tmp_path).data)
    folder_like = DataSpec(kind="image", shape=(3, 16, 16))
    s = settings(tmp_path)
    assert (auto_extractor(ring.spec, s), auto_extractor(digits.spec, s), auto_extractor(folder_like, s)) == (
        "identity", "classifier", "random")
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / inception_module.ASSET.filename).write_bytes(b"weights")
    assert auto_extractor(folder_like, settings(tmp_path, assets_dir=str(tmp_path / "assets"))) == "inception"


def test_random_extractor_is_seeded(digits, tmp_path):
    x = digits.tensors("train", limit=32)[0]
    build = lambda seed: build_extractor("random", ExtractorRequest(  # noqa: E731
        digits.spec, digits, EvalSettings(cache_dir=str(tmp_path), random={"seed": seed, "width": 8})))
    a, b, c = build(0), build(0), build(1)
    assert a(x)["pool"].shape == (32, 64)
    assert torch.equal(a(x)["pool"], b(x)["pool"]) and a.weights_sha256() == b.weights_sha256()
    assert not torch.allclose(a(x)["pool"], c(x)["pool"]) and a.weights_sha256() != c.weights_sha256()
    state = torch.get_rng_state()
    build(3)
    assert torch.equal(state, torch.get_rng_state())  # seeded from its own generator


def test_identity_passes_points_through():
    ext = IdentityExtractor(DataSpec(kind="toy2d", shape=(2,)))
    pts = torch.randn(10, 2)
    assert torch.equal(ext(pts)["pool"], pts) and ext.feature_dim == 2 and ext.num_logits is None


def test_classifier_is_trained_once_and_cached(digits, eval_cache, monkeypatch):
    s = settings(eval_cache)
    first = build_extractor("classifier", ExtractorRequest(digits.spec, digits, s))
    assert first.describe()["classifier_test_accuracy"] > 0.85
    assert first.describe()["classifier_test_split"] == "heldout"

    def no_training(*args, **kwargs):
        raise AssertionError("the cached classifier was trained again")

    monkeypatch.setattr(classifier_module, "train_classifier", no_training)
    again = build_extractor("classifier", ExtractorRequest(digits.spec, digits, s))
    x = digits.tensors("heldout", limit=40)[0]
    assert torch.equal(first(x)["logits"], again(x)["logits"])
    assert first.weights_sha256() == again.weights_sha256()
    assert len(list((eval_cache / "classifier").glob("*.pt"))) >= 1
    assert not list((eval_cache / "classifier").glob(".*tmp"))  # atomic writes leave no temporaries
    other = instantiate(compose_train(["data.image_size=8"], eval_cache).data)  # other preprocessing
    with pytest.raises(AssertionError, match="trained again"):
        build_extractor("classifier", ExtractorRequest(other.spec, other, s))


def test_classifier_refuses_unlabeled_or_2d_data(tmp_path):
    ring = instantiate(compose_train(["data=ring8"], tmp_path).data)
    with pytest.raises(ValueError, match="eval.extractor=identity"):
        build_extractor("classifier", ExtractorRequest(ring.spec, ring, settings(tmp_path)))


def test_reference_statistics_are_cached_by_content_split_and_extractor(digits, tmp_path):
    ext = build_extractor("random", ExtractorRequest(digits.spec, digits, EvalSettings(random={"width": 8})))
    calls = []
    original = ext.features
    ext.features = lambda x: calls.append(len(x)) or original(x)
    ref = reference_features(digits, ext, "train", None, cache_dir=tmp_path, batch_size=256)
    assert not ref.cached and sum(calls) == len(digits.train_set)
    stats = FeatureStats.of(ref.features)
    assert torch.allclose(ref.stats.cov_sum, stats.cov_sum) and ref.stats.n == len(digits.train_set)
    calls.clear()
    again = reference_features(digits, ext, "train", None, cache_dir=tmp_path, batch_size=64)
    assert again.cached and not calls and again.path == ref.path
    assert torch.equal(again.features, ref.features)
    sub = reference_features(digits, ext, "train", 100, subset_seed=1, cache_dir=tmp_path)
    held = reference_features(digits, ext, "heldout", None, cache_dir=tmp_path)
    assert len({ref.path, sub.path, held.path}) == 3 and sub.features.shape[0] == 100
    assert ref.fields["fingerprint"] == digits.fingerprint() and ref.fields["extractor"]["name"] == "random"
    assert not list(tmp_path.rglob(".*.tmp"))


def test_inception_offline_gives_the_clear_error_quickly(digits, tmp_path, no_inception_weights):
    start = time.perf_counter()
    with pytest.raises(inception_module.InceptionWeightsNotFound) as err:
        build_extractor("inception", ExtractorRequest(digits.spec, digits, settings(tmp_path)))
    assert time.perf_counter() - start < 5
    msg = str(err.value)
    for needle in (inception_module.ASSET.url, str(inception_module.hub_weights_path()),
                   "eval.inception_weights=PATH", "gen-bench assets fetch", "eval.extractor=classifier",
                   "eval.inception.download is false"):
        assert needle in msg, needle
    missing = settings(tmp_path, inception_weights=str(tmp_path / "nope.pth"))
    with pytest.raises(inception_module.InceptionWeightsNotFound, match="nope.pth is not a file"):
        build_extractor("inception", ExtractorRequest(digits.spec, digits, missing))


def test_inception_download_offline_fails_fast_with_the_same_advice(digits, tmp_path, no_inception_weights,
                                                                    monkeypatch):
    dead = inception_module.ASSET.__class__(**{**inception_module.ASSET.__dict__,
                                               "url": "http://127.0.0.1:9/weights-inception.pth"})
    monkeypatch.setattr(inception_module, "ASSET", dead)
    s = EvalSettings(cache_dir=str(tmp_path), inception={"download": True})
    start = time.perf_counter()
    with pytest.raises(inception_module.InceptionWeightsNotFound, match="unreachable") as err:
        build_extractor("inception", ExtractorRequest(digits.spec, digits, s))
    assert time.perf_counter() - start < 10 and "eval.extractor=classifier" in str(err.value)


def test_inception_runs_from_a_local_weights_file(digits, tmp_path, monkeypatch):
    """The real extractor path with a stand-in weights file (random weights of the right shapes)."""
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    with monkeypatch.context() as m:  # build an untrained network once, to get a state dict to save
        m.setattr(tfi, "load_state_dict_from_url", lambda *a, **k: {})
        m.setattr(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, strict=True: None)
        net = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    weights = tmp_path / "inception.pth"
    torch.save(net.state_dict(), weights)
    s = EvalSettings(cache_dir=str(tmp_path), inception_weights=str(weights))
    ext = build_extractor("inception", ExtractorRequest(digits.spec, digits, s))
    out = ext(digits.tensors("train", limit=2)[0])  # grey 16x16 -> RGB 299x299
    assert out["pool"].shape == (2, 2048) and out["logits"].shape == (2, 1008)
    info = ext.describe()
    assert info["weights_sha256"] == sha256_of(weights) and info["standard_weights"] is False
    assert "299" in info["preprocessing"]
