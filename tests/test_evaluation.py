"""The evaluator end to end: models that copy, collapse or generalise; protocol records; seeds; the
global RNG; evaluation during training; ``gen-bench eval``."""

from __future__ import annotations

import logging
import math
import random
import statistics

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from gen_bench.config import config_dir
from gen_bench.data import GenerativeDataModule
from gen_bench.data.toy import GaussianMixture2D
from gen_bench.eval import eval_command
from gen_bench.io import read_json
from gen_bench.metrics.engine import Evaluator, settings_from
from gen_bench.metrics.settings import EvalSettings
from gen_bench.models.base import GenerativeModule
from gen_bench.train import run_training

from conftest import QUIET, TINY_IMAGE, compose_train, run_cli


class BankModel(GenerativeModule):
    """Draws images from a fixed bank (plus Gaussian noise), indices and noise from the generator."""

    def __init__(self, spec, bank: torch.Tensor, noise: float = 0.0) -> None:
        super().__init__(spec)
        self.bank, self.noise = bank, noise

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        x = self.bank[torch.randint(self.bank.shape[0], (n,), generator=generator)]
        if self.noise:
            x = x + self.noise * torch.randn(x.shape, generator=generator)
        return x.clamp(0, 1)


@pytest.fixture(scope="session")
def eval_cache(tmp_path_factory):
    """One cache for the test session: the digits classifier is trained once."""
    return tmp_path_factory.getbasetemp() / "eval-cache"


@pytest.fixture(scope="module")
def fast(eval_cache, tmp_path_factory) -> EvalSettings:
    cfg = compose_train(["eval=fast", f"eval.cache_dir={eval_cache}"], tmp_path_factory.mktemp("cfg"))
    return settings_from(cfg.eval)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return instantiate(compose_train(["data.image_size=16"], tmp_path_factory.mktemp("run")).data)


@pytest.fixture(scope="module")
def evaluator(fast, digits, tmp_path_factory):
    return Evaluator(fast, digits, out_dir=tmp_path_factory.mktemp("eval"))


def test_copying_collapsed_and_generalising_models_are_told_apart(evaluator, digits):
    train, _ = digits.tensors("train")
    heldout, _ = digits.tensors("heldout")
    copier = evaluator.evaluate(BankModel(digits.spec, train, noise=0.01), tag="copier")
    fresh = evaluator.evaluate(BankModel(digits.spec, heldout), tag="fresh")
    collapsed = evaluator.evaluate(BankModel(digits.spec, train[:1]), tag="collapsed")
    c, f, k = copier.values(), fresh.values(), collapsed.values()
    assert c["copy_rate"] > 0.9 and c["ct"] < -3  # memorization is caught...
    assert f["copy_rate"] < 0.1 and abs(f["ct"]) < 2  # ...and fresh data is not flagged
    assert c["modes"] == f["modes"] == 10 and k["modes"] == 1  # the classifier sees one digit
    assert k["fid"] > 10 * max(c["fid"], f["fid"]) and k["recall"] < 0.05 < c["recall"]
    assert k["is"] < 1.5 < c["is"]
    grid = copier.artifacts["memorization_grid"]
    assert grid.endswith("memorization_copier.png")
    from PIL import Image

    with Image.open(grid) as im:  # 8 captioned sample / nearest-training pairs, 4 a row
        assert im.size[0] > im.size[1] > 0


def test_blurry_samples_hit_every_mode_but_are_rarely_confidently_classified(evaluator, digits):
    """Averages of two training digits of different classes still get a predicted digit each, so all
    10 modes are "hit"; the confident share (top probability >= eval.modes.confidence) tells them from
    real digits, whose share matches the real reference measured on held-out digits."""
    train, y = digits.tensors("train")
    heldout, _ = digits.tensors("heldout")
    g = torch.Generator().manual_seed(0)
    i, j = torch.randint(len(train), (2, 2000), generator=g)
    keep = y[i] != y[j]
    blurry = evaluator.evaluate(BankModel(digits.spec, (train[i[keep]] + train[j[keep]]) / 2), tag="blur")
    fresh = evaluator.evaluate(BankModel(digits.spec, heldout), tag="fresh")
    b, f = blurry.values(), fresh.values()
    assert b["modes"] == f["modes"] == 10
    assert b["confident_fraction"] < 0.1 < 0.5 < f["confident_fraction"] and b["modes_confident"] < 10
    assert f["modes_confident"] == f["modes_real"] == f["modes_confident_real"] == 10
    assert f["confident_fraction"] == pytest.approx(f["confident_fraction_real"], abs=0.1)  # 256 samples
    proto = fresh.protocols[fresh.scores["modes"]["protocol_id"]]
    assert proto["confidence"] == 0.9 and proto["real_reference"]["split"] == "heldout"
    hist = read_json(blurry.artifacts["mode_histogram"])  # samples per mode, and the confident ones
    assert sum(hist["hist"]) == hist["num_generated"] == 256 and sum(h > 0 for h in hist["hist"]) == 10
    assert sum(hist["confident_hist"]) == round(b["confident_fraction"] * 256)
    assert sum(h > 0 for h in hist["confident_hist"]) == b["modes_confident"]


def test_every_score_carries_its_protocol(evaluator, digits, fast):
    result = evaluator.evaluate(BankModel(digits.spec, digits.tensors("heldout")[0]))
    assert {"fid", "kid", "is", "mifid", "precision", "recall", "density", "coverage", "copy_rate", "ct",
            "nn_distance_mean", "modes", "mode_kl", "fwd"} <= set(result.scores)
    fwd = result.protocols[result.scores["fwd"]["protocol_id"]]
    assert (fwd["level"], fwd["packets"], fwd["packet_dim"]) == (1, 4, 64)  # 16 px: level 1, 1 x 8 x 8
    for name, score in result.scores.items():
        proto = result.protocols[score["protocol_id"]]
        assert proto["extractor"]["weights_sha256"] == evaluator.main.weights_sha256(), name
        assert proto["data_fingerprint"] == digits.fingerprint() and proto["reference_split"] == "train"
    fid = result.protocols[result.scores["fid"]["protocol_id"]]
    assert fid["num_generated"] == 256 and fid["num_reference"] == len(digits.train_set)
    assert fid["extractor"]["name"] == "classifier" and "16x16" in fid["extractor"]["preprocessing"]
    assert result.extractor["classifier_test_accuracy"] > 0.85
    assert result.draw["seed"] == fast.seed and result.draw["sampler"] is None
    assert result.protocols[result.scores["kid"]["protocol_id"]]["subset_size"] == 100


def test_protocol_ids_change_with_the_measurement_not_with_the_draw(fast, digits, tmp_path):
    model = BankModel(digits.spec, digits.tensors("heldout")[0])

    def fid_id(**changes) -> str:
        settings = EvalSettings(**{**fast.__dict__, "metrics": ["fid"], **changes})
        result = Evaluator(settings, digits).evaluate(model)
        return result.scores["fid"]["protocol_id"]

    base = fid_id()
    assert fid_id(seed=7) == base  # another draw of the same measurement
    assert fid_id(num_samples=200) != base
    assert fid_id(reference={"split": "heldout"}) != base
    assert fid_id(extractor="random") != base


def test_several_draws_give_mean_and_std(fast, digits):
    settings = EvalSettings(**{**fast.__dict__, "seeds": 3, "metrics": ["fid", "prdc"]})
    model = BankModel(digits.spec, digits.tensors("heldout")[0])
    result = Evaluator(settings, digits).evaluate(model)
    fid = result.scores["fid"]
    assert len(fid["values"]) == 3 and len(set(fid["values"])) == 3
    assert fid["value"] == pytest.approx(statistics.fmean(fid["values"]))
    assert fid["std"] == pytest.approx(statistics.stdev(fid["values"]))
    assert result.log_dict()["val/fid_std"] == fid["std"]
    # the interval of the mean of 3 draws is narrower than that of one draw
    one = Evaluator(EvalSettings(**{**settings.__dict__, "seeds": 1}), digits).evaluate(model).scores
    for k in ("fid", "precision", "recall", "density", "coverage"):
        s = result.scores[k]
        assert s["ci_low"] <= s["value"] <= s["ci_high"], k
        assert s["ci_high"] - s["ci_low"] < one[k]["ci_high"] - one[k]["ci_low"], k


def test_feature_spaces_intervals_and_fid_inf_in_one_evaluation(fast, digits):
    """eval.extractors=[random] scores fid, kid, prdc in the random net's features too, each under
    the protocol id (and with the values) of an evaluation whose main extractor is random; every
    score has its bootstrap interval; FID_inf has a protocol of its own and leaves fid's alone."""
    settings = EvalSettings(**{**fast.__dict__, "metrics": ["fid", "kid", "is", "prdc"],
                               "extractors": ["classifier", "random"], "fid_inf": {"points": 4}})
    model = BankModel(digits.spec, digits.tensors("heldout")[0], noise=0.02)
    result = Evaluator(settings, digits).evaluate(model)
    r, protocols = result.scores, result.protocols
    assert protocols[r["fid"]["protocol_id"]]["extractor"]["name"] == "classifier"  # listed main: once
    assert protocols[r["fid@random"]["protocol_id"]]["extractor"]["name"] == "random"
    assert "is" in r and "is@random" in result.skipped and not any("@classifier" in k for k in r)
    alone = Evaluator(EvalSettings(**{**settings.__dict__, "extractor": "random", "extractors": []}),
                      digits).evaluate(model).scores
    names = ("fid", "fid_inf", "fid_real_baseline", "kid", "precision", "recall", "density", "coverage")
    for k in names:
        assert r[f"{k}@random"]["protocol_id"] == alone[k]["protocol_id"], k
        assert r[f"{k}@random"]["value"] == pytest.approx(alone[k]["value"], rel=1e-6), k
    logged = result.log_dict()
    for k in ("fid", "kid", "precision", "recall", "density", "coverage"):
        for key in (k, f"{k}@random"):
            s = r[key]
            assert s["ci_low"] <= s["value"] <= s["ci_high"], key
            assert logged[f"val/{key}_ci_low"] == s["ci_low"] and logged[f"val/{key}_ci_high"] == s["ci_high"]
        assert r[f"{k}@random"]["ci_low"] == pytest.approx(alone[k]["ci_low"], rel=1e-6, abs=1e-12)
    assert result.draw["bootstrap"]["num"] == fast.bootstrap.num
    plain = Evaluator(EvalSettings(**{**fast.__dict__, "metrics": ["fid"], "bootstrap": {"num": 0}}),
                      digits).evaluate(model).scores
    assert plain["fid"]["protocol_id"] == r["fid"]["protocol_id"] and "ci_low" not in plain["fid"]
    assert plain["fid"]["value"] == pytest.approx(r["fid"]["value"], rel=1e-9)
    counts = settings.fid_inf.sizes(settings.num_samples)
    fit = r["fid_inf"]["fit"]
    assert fit["counts"] == counts == [51, 119, 188, 256] and len(fit["fid"]) == 4
    assert fit["fid"][-1] == pytest.approx(r["fid"]["value"], rel=1e-6)  # the largest subset: every row
    assert protocols[r["fid_inf"]["protocol_id"]]["fid_inf"]["counts"] == counts
    assert r["fid_inf"]["protocol_id"] != r["fid"]["protocol_id"]


def test_evaluation_leaves_every_global_rng_alone(fast, digits):
    model = BankModel(digits.spec, digits.tensors("heldout")[0], noise=0.05)  # (loaders draw seeds)
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    Evaluator(fast, digits).evaluate(model)  # set-up included
    assert torch.equal(before[0], torch.get_rng_state())
    assert np.array_equal(before[1], np.random.get_state()[1]) and before[2] == random.getstate()


def test_toy_data_counts_modes_and_skips_what_does_not_apply(tmp_path):
    dm = GenerativeDataModule(GaussianMixture2D("ring8", num_samples=2000, std=0.01), "ring8")

    class FiveModes(GenerativeModule):
        def sample(self, n, generator=None):
            centers = torch.tensor(self.spec.mode_centers)
            k = torch.randint(5, (n,), generator=generator)
            return centers[k] + 0.01 * torch.randn(n, 2, generator=generator)

    settings = EvalSettings(num_samples=500, batch_size=128, cache_dir=str(tmp_path),
                            kid={"subsets": 5, "subset_size": 100}, memorization={"ct_cells": 4})
    result = Evaluator(settings, dm, out_dir=tmp_path / "eval").evaluate(FiveModes(dm.spec), tag="end")
    values = result.values()
    assert values["modes"] == 5 and values["hq_fraction"] > 0.95
    assert values["mode_kl"] == pytest.approx(math.log(8 / 5), abs=0.02)
    hist = read_json(result.artifacts["mode_histogram"])  # eval/modes_end.json: high-quality samples per mode
    assert result.artifacts["mode_histogram"].endswith("modes_end.json") and hist["num_generated"] == 500
    assert sum(h > 0 for h in hist["hist"]) == 5 and sum(hist["hist"][5:]) == 0
    assert sum(hist["hist"]) == round(values["hq_fraction"] * 500)
    assert result.extractor["name"] == "identity" and "logits" in result.skipped["is"]
    assert "between images" in result.skipped["fwd"]
    assert values["precision"] > 0.9 and values["recall"] < 0.8


def test_mode_counting_draws_extra_samples_for_itself_only(tmp_path):
    """modes.min_samples_per_mode (stacked digits: 26 x 1000 = PacGAN's 26,000) makes the evaluator
    draw beyond eval.num_samples; every other score keeps the first eval.num_samples, unchanged."""
    dm = GenerativeDataModule(GaussianMixture2D("ring8", num_samples=2000, std=0.01), "ring8")

    class Ring(GenerativeModule):
        def sample(self, n, generator=None):
            centers = torch.tensor(self.spec.mode_centers)[torch.randint(8, (n,), generator=generator)]
            return centers + 0.01 * torch.randn(n, 2, generator=generator)

    def evaluate(per_mode: int):
        settings = EvalSettings(num_samples=100, batch_size=50, cache_dir=str(tmp_path),
                                metrics=["fid", "prdc", "modes"], prdc={"num_reference": 500},
                                modes={"num_samples": 100, "min_samples_per_mode": per_mode})
        return Evaluator(settings, dm).evaluate(Ring(dm.spec))

    plain, extra = evaluate(0), evaluate(50)
    assert (plain.draw["num_drawn"], extra.draw["num_drawn"]) == (100, 400)
    for name in ("fid", "precision", "recall"):  # the same first 100 samples, the same protocol
        assert extra.scores[name]["value"] == plain.scores[name]["value"], name
        assert extra.scores[name]["protocol_id"] == plain.scores[name]["protocol_id"], name
    counted = [r.protocols[r.scores["modes"]["protocol_id"]]["num_generated"] for r in (plain, extra)]
    assert counted == [100, 400]
    q = 1 - math.exp(-4.5)  # the share of a perfect generator's samples within 3 std
    for r, n in ((plain, 100), (extra, 400)):
        assert r.values()["modes_perfect"] == pytest.approx(8 * (1 - (1 - q / 8) ** n))
        assert r.values()["hq_fraction_perfect"] == pytest.approx(q)


def test_unlabeled_images_warn_of_random_features_and_record_a_real_baseline(tmp_path, caplog, monkeypatch):
    """With no Inception weights on disk, an image folder is scored with random conv-net features:
    the run says so when it starts, naming the fix, and records FID(held-out, training reference)."""
    from PIL import Image
    from scipy import linalg

    from gen_bench.metrics.extractors import ExtractorRequest, build_extractor

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # torch's hub cache: no weights there
    monkeypatch.delenv("GEN_BENCH_ASSETS", raising=False)
    folder = tmp_path / "pngs"
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(60):  # a bright disc at a random place on a random grey
        yy, xx = torch.meshgrid(torch.arange(20), torch.arange(20), indexing="ij")
        cy, cx = torch.randint(4, 16, (2,), generator=g).tolist()
        img = torch.rand(1, generator=g) * 0.5 + 0.6 * (((yy - cy) ** 2 + (xx - cx) ** 2) < 16)
        pixels = (img.clamp(0, 1) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).convert("RGB").save(folder / f"{i}.png")
    over = ["data=image_folder", f"data.path={folder}", *TINY_IMAGE, *QUIET, "trainer.max_steps=2",
            "data.batch_size=8", "eval=fast", f"eval.cache_dir={tmp_path / 'cache'}"]
    cfg = compose_train(over, tmp_path / "run")
    with caplog.at_level(logging.INFO, logger="gen_bench.metrics.engine"):
        summary = run_training(cfg)
    messages = [r.getMessage() for r in caplog.records]
    warned = [m for m in messages if "Inception weights are not on" in m]
    assert len(warned) == 1  # once, at the start of the run: before the (only, final) evaluation
    assert messages.index(warned[0]) < next(i for i, m in enumerate(messages) if m.startswith("eval set up"))
    assert "gen-bench assets fetch" in warned[0] and "eval.extractor=inception" in warned[0]
    ev = summary["eval"]
    assert ev["extractor"]["name"] == "random"
    baseline = ev["scores"]["fid_real_baseline"]
    assert baseline["protocol_id"] == ev["scores"]["fid"]["protocol_id"]
    assert ev["protocols"][baseline["protocol_id"]]["real_baseline"] == {"split": "heldout", "num_samples": 6}
    # the same number from the features, with scipy's matrix square root
    dm = instantiate(cfg.data)
    request = ExtractorRequest(dm.spec, dm, settings_from(cfg.eval), torch.device("cpu"))
    ext = build_extractor("random", request)
    with torch.no_grad():
        held, train = (ext(dm.tensors(split)[0])["pool"].double().numpy() for split in ("heldout", "train"))
    mu1, mu2, s1, s2 = held.mean(0), train.mean(0), np.cov(held, rowvar=False), np.cov(train, rowvar=False)
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert math.isfinite(baseline["value"]) and baseline["value"] == pytest.approx(expected, rel=1e-3)


def test_unknown_metric_or_key_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="unknown metric.*lpips.*valid: fid, kid, is"):
        EvalSettings(metrics=["fid", "lpips"])
    with pytest.raises(ValueError, match=r"unknown key\(s\) eval.kid.subset; valid: degree, subset_size"):
        settings_from(compose_train(["+eval.kid.subset=3"], tmp_path).eval)


def test_settings_a_metric_cannot_use_are_refused_and_a_capped_count_is_said():
    with pytest.raises(ValueError, match=r"PRDC needs more than k=5 generated samples.*uses 5"):
        EvalSettings(num_samples=5)
    with pytest.raises(ValueError, match=r"uses 4 \(eval.num_samples=2500, eval.prdc.max_samples=4\)"):
        EvalSettings(num_samples=2500, prdc={"max_samples": 4})
    auto = EvalSettings(prdc={"max_samples": 4})  # num_samples=auto: checked once the data kind is known
    with pytest.raises(ValueError, match=r"uses 4 \(eval.num_samples=1000, eval.prdc.max_samples=4\)"):
        auto.for_data("image")
    with pytest.raises(ValueError, match=r"eval.prdc.num_reference=3 must be > 4"):
        EvalSettings(prdc={"num_reference": 3, "k_dc": 4})
    with pytest.raises(ValueError, match="subset_size >= 2"):
        EvalSettings(kid={"subset_size": 1})
    assert EvalSettings(num_samples=5, metrics=["fid", "kid"]).num_samples == 5  # no PRDC: no need
    with pytest.warns(UserWarning, match=r"eval.modes.num_samples=10000 is capped by eval.num_samples=2500"):
        EvalSettings(num_samples=2500, modes={"num_samples": 10000})


def test_num_samples_auto_is_the_data_kinds_protocol_and_the_default_runs_evaluation_points(tmp_path):
    """auto: 1,000 samples for images, 2,500 for 2-D mixtures (VEEGAN / PacGAN) and video; the diffusion
    models' configs score at the end only, the others every 1,000 steps; the command line wins."""
    assert [EvalSettings().for_data(k).num_samples for k in ("image", "toy2d", "video")] == [1000, 2500, 2500]
    assert EvalSettings(num_samples=300).for_data("image").num_samples == 300
    with pytest.raises(ValueError, match="eval.num_samples must be an integer >= 2 or 'auto', got 'many'"):
        EvalSettings(num_samples="many")
    every = {m: compose_train([f"model={m}"], tmp_path).eval.every_n_steps
             for m in ("dcgan", "r3gan", "ddpm", "flow_matching")}
    assert every == {"dcgan": 1000, "r3gan": 1000, "ddpm": 0, "flow_matching": 0}
    assert compose_train(["model=ddpm", "eval.every_n_steps=250"], tmp_path).eval.every_n_steps == 250


@pytest.fixture(scope="module")
def trained(eval_cache, tmp_path_factory):
    """The same 4-step run with evaluation every 2 steps, and without any evaluation; both with a
    fast generator EMA (decay 0.5), so scores drawn from EMA weights one update behind would show."""
    runs = {}
    variants = {"with": ["eval=fast", "eval.every_n_steps=2"], "without": ["callbacks.evaluation=null"]}
    for name, extra in variants.items():
        run_dir = tmp_path_factory.mktemp(name)
        common = [*TINY_IMAGE, *QUIET, "trainer.max_steps=4", f"eval.cache_dir={eval_cache}",
                  "model.ema={_target_:gen_bench.ema.EMA,decay:0.5,warmup:0}"]
        cfg = compose_train([*common, *extra], run_dir)
        runs[name] = (run_dir, run_training(cfg))
    return runs


def test_training_evaluates_without_disturbing_training(trained):
    (with_dir, summary), (without_dir, plain) = trained["with"], trained["without"]
    a = torch.load(with_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    b = torch.load(without_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # same training, bit for bit
    assert "eval" not in plain
    ev = summary["eval"]
    assert [h["step"] for h in ev["history"]] == [2, 4] and ev["tag"] == "final" and ev["step"] == 4
    assert summary["final"]["val/fid"] == pytest.approx(ev["scores"]["fid"]["value"], rel=1e-6)
    assert 0 < ev["time"]["share_of_wall_time"] < 1
    header = (with_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val/fid", "val/precision", "val/copy_rate", "val/modes"} <= set(header)
    assert (with_dir / "eval" / "memorization_final.png").is_file()


def test_eval_command_reproduces_the_training_time_scores(trained, eval_cache, tmp_path):
    """``gen-bench eval`` of last.ckpt gives the final training-time scores: the EMA the evaluation
    read during training already had the last step's update (decay 0.5: one update apart differs)."""
    run_dir, summary = trained["with"]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("eval", overrides=[f"ckpt={run_dir}", "eval=fast", f"eval.cache_dir={eval_cache}",
                                         f"out_dir={tmp_path}"])
    out = eval_command(cfg)
    assert read_json(tmp_path / "metrics.json") == out
    assert out["steps"] == 4 and out["model"] == "dcgan" and out["config_digest"] == summary["config_digest"]
    for name, score in summary["eval"]["scores"].items():
        assert out["eval"]["scores"][name]["protocol_id"] == score["protocol_id"], name
        if score["value"] is not None:
            again = out["eval"]["scores"][name]["value"]
            assert again == pytest.approx(score["value"], rel=1e-6, abs=1e-9), name
    assert out["final"]["val/fid"] == pytest.approx(summary["final"]["val/fid"], rel=1e-6)


def test_eval_cli_writes_metrics_json_next_to_the_run(trained, eval_cache):
    run_dir, _ = trained["with"]
    proc = run_cli(["eval", f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}", "eval=fast",
                    f"eval.cache_dir={eval_cache}", "eval.metrics=[fid,kid]"], cwd=run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = read_json(run_dir / "eval" / "fast-last-dcgan-ema" / "metrics.json")  # protocol, ckpt, model
    assert set(written["eval"]["scores"]) == {"fid", "fid_real_baseline", "kid", "kid_subset_std"}
    assert "fid=" in proc.stdout and not (run_dir / "eval.log").exists()
