"""Conditional scores: class accuracy against the requested labels, intra-class FID against an
independent computation, and the guidance / truncation knob recorded with every score."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from hydra.utils import instantiate

from gen_bench.eval import eval_command
from gen_bench.io import read_json
from gen_bench.metrics.conditional import requested_labels
from gen_bench.metrics.engine import Evaluator, settings_from
from gen_bench.metrics.settings import EvalSettings
from gen_bench.models.base import GenerativeModule, knob_grid
from gen_bench.train import run_training

from conftest import QUIET, compose_train

METRICS = ["fid", "prdc", "class_accuracy", "intra_fid"]


class CentreModel(GenerativeModule):
    """A 'conditional model' of a 2-D mixture: class y is drawn at the centre of mode ``(y + shift) % K``
    plus N(0, std^2) noise; ``shift`` is its knob (``guidance``, to test that knobs are recorded)."""

    is_conditional = True
    knobs = ("guidance",)

    def __init__(self, spec, std: float, wrong_every: int = 0) -> None:
        super().__init__(spec)
        self.centres = torch.tensor(spec.mode_centers)
        self.std = std
        self.wrong_every = wrong_every  # every wrong_every-th class is drawn at the next mode
        self.guidance = 0.0

    def sample(self, n, generator=None, *, labels=None, sampler=None):
        return self.draw(n, self.labels_for(n, labels, generator), generator)

    def draw(self, n, labels, generator):
        k = len(self.centres)
        modes = labels.clone()
        if self.wrong_every:
            modes = torch.where(labels % self.wrong_every == 0, (labels + 1) % k, labels)
        noise = torch.randn(n, 2, generator=generator) * self.std * (1 + self.guidance)
        return self.centres[modes] + noise


@pytest.fixture(scope="module")
def ring8(tmp_path_factory):
    return instantiate(compose_train(["data=ring8"], tmp_path_factory.mktemp("run")).data)


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> EvalSettings:
    cfg = compose_train(["data=ring8", "eval=fast", f"eval.cache_dir={tmp_path_factory.mktemp('cache')}",
                         "eval.bootstrap.num=0", f"eval.metrics=[{','.join(METRICS)}]"],
                        tmp_path_factory.mktemp("cfg"))
    return settings_from(cfg.eval)


def test_an_evaluation_asks_for_every_class_equally_often():
    labels = requested_labels(torch.arange(1000), 8)
    assert torch.bincount(labels).tolist() == [125] * 8
    assert requested_labels(torch.tensor([7, 8, 9]), 8).tolist() == [7, 0, 1]


def test_class_accuracy_is_the_share_of_samples_of_their_requested_class(ring8, settings):
    evaluator = Evaluator(settings, ring8)
    right = evaluator.evaluate(CentreModel(ring8.spec, std=0.01)).values()
    assert right["class_accuracy"] == 1.0 and right["class_accuracy_worst"] == 1.0
    # classes 0 and 4 (every 4th) drawn at the neighbouring mode: 6 of 8 classes right, 2 always wrong
    half = evaluator.evaluate(CentreModel(ring8.spec, std=0.01, wrong_every=4)).values()
    assert half["class_accuracy"] == pytest.approx(6 / 8) and half["class_accuracy_worst"] == 0.0
    assert right["class_accuracy_real"] == 1.0  # ring8's modes (std 0.01) never overlap


def _fid(a: np.ndarray, b: np.ndarray) -> float:
    """FID of two (n, d) feature sets with scipy's matrix square root (an independent implementation)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * root))


def test_intra_fid_is_the_fid_of_each_class_against_its_real_samples(ring8, settings):
    model = CentreModel(ring8.spec, std=0.02)
    result = Evaluator(settings, ring8).evaluate(model)
    # by hand: the same draw, split by requested class, against the training split's samples of that class
    n, batch = settings.num_samples, settings.batch_size
    samples = torch.cat([model.sample(min(batch, n - i), torch.Generator().manual_seed(Evaluator.batch_seed(
        settings.seed, b)), labels=requested_labels(torch.arange(i, min(i + batch, n)), 8))
        for b, i in enumerate(range(0, n, batch))]).double().numpy()
    labels = requested_labels(torch.arange(n), 8).numpy()
    real, real_labels = (t.double().numpy() for t in ring8.tensors("train"))
    per_class = [_fid(samples[labels == k], real[real_labels == k]) for k in range(8)]
    values = result.values()
    assert values["intra_fid"] == pytest.approx(np.mean(per_class), rel=1e-4)
    assert values["intra_fid_worst"] == pytest.approx(max(per_class), rel=1e-4)
    # each class alone is far from the whole ring, so the pooled FID is much smaller than a class's
    # FID against all classes would be: intra-FID measures each class against its own real samples
    assert values["intra_fid"] > values["fid"] > 0


def test_class_scores_are_skipped_for_unconditional_models(ring8, settings):
    class Pooled(CentreModel):
        is_conditional = False

        def sample(self, n, generator=None, *, labels=None, sampler=None):
            self.check_labels(labels, n)
            return self.draw(n, torch.randint(8, (n,), generator=generator), generator)

    result = Evaluator(settings, ring8).evaluate(Pooled(ring8.spec, std=0.01))
    assert "class_accuracy" not in result.scores and "intra_fid" not in result.scores
    reason = "the model is not class-conditional"
    assert result.skipped["class_accuracy"] == result.skipped["intra_fid"] == reason
    assert "labels" not in result.draw and result.draw.get("knobs") == {"guidance": 0.0}


def test_every_score_records_its_knob_and_a_sweep_scores_each_value(ring8, settings):
    model = CentreModel(ring8.spec, std=0.01)
    knobs = {"guidance": [0.0, 3.0], "truncation": [0.5]}
    sweep_settings = EvalSettings(**{**settings.__dict__, "knobs": knobs})
    evaluator = Evaluator(sweep_settings, ring8)
    sweep = evaluator.evaluate_knobs(model)
    assert [r["knobs"] for r in sweep] == [{"guidance": 0.0}, {"guidance": 3.0}]  # no truncation knob here
    assert [r["draw"]["knobs"] for r in sweep] == [{"guidance": 0.0}, {"guidance": 3.0}]
    assert model.guidance == 0.0  # restored
    low, high = (r["scores"] for r in sweep)
    assert high["fid"]["value"] > low["fid"]["value"]  # 4x the spread
    plain = evaluator.evaluate(model)
    assert plain.scores["fid"]["value"] == low["fid"]["value"]  # the same draw at the same knob value
    assert plain.draw["labels"].startswith("class i mod K")
    assert knob_grid(model, {"truncation": [0.5]}) == []
    with pytest.raises(ValueError, match="eval.knobs maps a knob"):
        EvalSettings(knobs={"guidnce": [1.0]})


def test_training_and_gen_bench_eval_record_the_knob_sweep(tmp_path):
    run = tmp_path / "run"
    common = ["eval=fast", f"eval.cache_dir={tmp_path / 'cache'}", "eval.bootstrap.num=0",
              "eval.metrics=[fid,class_accuracy]"]
    run_training(compose_train(["data=ring8", "model=biggan", "data.batch_size=32", "trainer.max_steps=2",
                                "model.nets.toy2d.generator.hidden=8",
                                "model.nets.toy2d.discriminator.hidden=8",
                                "callbacks.sample_grid.num_points=16", *QUIET, *common,
                                "eval.knobs.truncation=[0.5,null]", "eval.knobs.guidance=[1.0]"], run))
    final = read_json(run / "metrics.json")["eval"]
    assert final["draw"]["knobs"] == {"truncation": None}
    assert [r["knobs"] for r in final["knob_sweep"]] == [{"truncation": 0.5}, {"truncation": None}]
    assert final["knob_sweep"][1]["scores"]["fid"]["value"] == final["scores"]["fid"]["value"]
    assert final["knob_sweep"][0]["scores"]["fid"]["value"] != final["scores"]["fid"]["value"]

    cfg = compose_train([], tmp_path)  # the eval command's config: ckpt, truncation, eval settings
    from hydra import compose, initialize_config_dir

    from gen_bench.config import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("eval", overrides=[f"ckpt={run}", "truncation=0.5", *common])
    summary = eval_command(cfg)
    assert summary["eval"]["draw"]["knobs"] == {"truncation": 0.5}
    assert summary["final"]["val/fid"] == pytest.approx(final["knob_sweep"][0]["scores"]["fid"]["value"])
    assert (run / "eval" / "fast-last-biggan-ema-truncation0.5" / "metrics.json").is_file()


class DigitBank(GenerativeModule):
    """A 'conditional model' of digits: class y draws a held-out digit of class ``(y + shift) % 10``."""

    is_conditional = True

    def __init__(self, spec, images: torch.Tensor, labels: torch.Tensor, shift: int = 0) -> None:
        super().__init__(spec)
        self.by_class = [images[labels == k] for k in range(10)]
        self.shift = shift

    def sample(self, n, generator=None, *, labels=None, sampler=None):
        labels = self.labels_for(n, labels, generator)
        out = []
        for y in labels.tolist():
            bank = self.by_class[(y + self.shift) % 10]
            out.append(bank[torch.randint(len(bank), (1,), generator=generator)])
        return torch.cat(out)


def test_class_accuracy_of_images_uses_the_dataset_classifier(tmp_path):
    cfg = compose_train(["data.image_size=16", "eval=fast", "eval.bootstrap.num=0",
                         "eval.metrics=[class_accuracy]"], tmp_path)
    digits = instantiate(cfg.data)
    evaluator = Evaluator(settings_from(cfg.eval), digits)
    images, labels = digits.tensors("heldout")
    right = evaluator.evaluate(DigitBank(digits.spec, images, labels)).values()
    wrong = evaluator.evaluate(DigitBank(digits.spec, images, labels, shift=1)).values()
    # real digits of the requested class: the classifier's own accuracy on them, about
    assert right["class_accuracy"] > 0.85
    assert abs(right["class_accuracy"] - right["class_accuracy_real"]) < 0.1
    assert wrong["class_accuracy"] < 0.1  # every digit is of the next class
