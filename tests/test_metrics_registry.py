"""The registries of metrics and extractors (one mechanism: duplicates refused, unknown names listed),
a metric defined in a test file alone and scored by the evaluator, and the cache's one door."""

from __future__ import annotations

import pytest
import torch

from gen_bench.data import GenerativeDataModule
from gen_bench.data.toy import GaussianMixture2D
from gen_bench.metrics.cache import cached
from gen_bench.metrics.engine import Evaluator
from gen_bench.metrics.extractors import register_extractor
from gen_bench.metrics.registry import EXTRACTORS, METRICS, VIDEO_EXTRACTORS, Registry
from gen_bench.metrics.settings import EvalSettings
from gen_bench.metrics.suite import EvalBatch, Score, SuiteContext, build_score, register_metric
from gen_bench.metrics.video import register_video_extractor


def test_a_registry_refuses_a_taken_name_and_lists_the_valid_ones_for_an_unknown_one():
    table: Registry = Registry("widget", also=("auto",))

    @table.register("b")
    def build_b():
        return "b"

    table.register("a")(lambda: "a")
    assert table.names() == ("b", "a") and "a" in table and len(table) == 2 and list(table) == ["b", "a"]
    assert table.lookup("b") is build_b
    with pytest.raises(ValueError, match=r"widget 'b' is already registered \(by .*build_b\)"):
        table.register("b")(lambda: "other")
    assert table.lookup("b") is build_b  # the first registration stays
    with pytest.raises(ValueError, match=r"unknown widget 'c'; valid: a, b \(or auto\)"):
        table.lookup("c")
    assert table.unregister("a")() == "a" and table.names() == ("b",)


def test_metrics_and_extractors_share_the_mechanism_and_every_builtin_is_registered():
    # a second "fid" silently replaced the first before the metric registry checked for duplicates
    for register, taken in ((register_metric, "fid"), (register_extractor, "random"),
                            (register_video_extractor, "random3d")):
        with pytest.raises(ValueError, match=f"'{taken}' is already registered"):
            register(taken)(lambda ctx: None)
    # importing the package registers every built-in one, from the module that defines it
    builtin = {"fid", "kid", "is", "mifid", "prdc", "memorization", "modes", "fwd", "fvd", "physics",
               "class_accuracy", "intra_fid", "bpd", "psnr", "ssim", "consistency", "sharpness", "diversity"}
    assert builtin <= set(METRICS)
    assert {"identity", "random", "classifier", "inception", "dinov2"} <= set(EXTRACTORS)
    assert {"i3d", "trained3d", "random3d"} <= set(VIDEO_EXTRACTORS)
    with pytest.raises(ValueError,
                       match=r"unknown metric 'lpips'; valid: bpd, class_accuracy, consistency, diversity, "
                             r"fid, fvd, fwd, intra_fid, is, kid, "):
        build_score("lpips", None)


class SampleCount(Score):
    """A throwaway metric: how many samples it was updated with, and their mean first coordinate."""

    name = "sample_count"

    def __init__(self, ctx: SuiteContext) -> None:
        self.n, self.total = 0, 0.0

    def update(self, batch: EvalBatch) -> None:
        self.n += batch.samples.shape[0]
        self.total += float(batch.samples[:, 0].double().sum())

    def compute(self) -> dict[str, float]:
        return {"sample_count": float(self.n), "sample_mean_x": self.total / self.n}

    def reset(self) -> None:
        self.n, self.total = 0, 0.0


@pytest.fixture
def sample_count():
    register_metric("sample_count")(SampleCount)
    yield
    METRICS.unregister("sample_count")


def test_a_metric_registered_in_a_test_file_is_valid_and_scored(sample_count, tmp_path):
    """Registering is all a new metric needs: eval.metrics accepts it (its default includes it) and the
    evaluator scores it, with no list of names to edit."""
    assert EvalSettings().metrics[-1] == "sample_count"
    dm = GenerativeDataModule(GaussianMixture2D("ring8", num_samples=200, std=0.01), "ring8")
    settings = EvalSettings(num_samples=96, batch_size=40, cache_dir=str(tmp_path),
                            metrics=["sample_count"], bootstrap={"num": 0})

    def draw(draw_index: int, first: int, n: int, g: torch.Generator) -> torch.Tensor:
        return torch.randn(n, 2, generator=g)

    result = Evaluator(settings, dm).evaluate_draws(draw, "cpu", dict)
    # the same draws, made independently: batches of 40, 40, 16 with the evaluator's batch seeds
    x = torch.cat([draw(0, 40 * b, n, torch.Generator().manual_seed(Evaluator.batch_seed(settings.seed, b)))
                   for b, n in enumerate((40, 40, 16))])
    assert result.values()["sample_count"] == 96
    assert result.values()["sample_mean_x"] == pytest.approx(float(x[:, 0].double().mean()), rel=1e-12)
    assert result.protocols[result.scores["sample_count"]["protocol_id"]]["metric"] == "sample_count"


def test_unknown_metrics_in_the_settings_list_the_registered_ones(sample_count):
    with pytest.raises(ValueError, match=r"unknown metric\(s\) \['lpips'\] in eval.metrics; valid: fid, kid, "
                                         r"is, .*, sample_count"):
        EvalSettings(metrics=["lpips"])


def test_the_cache_computes_once_and_says_where_and_whether_it_read(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"x": torch.arange(3)}

    fields = {"kind": "test", "n": 3}
    first = cached(tmp_path, "test", "entry", fields, compute)
    again = cached(tmp_path, "test", "entry", fields, compute)
    assert calls == [1] and not first.loaded and again.loaded and first.path == again.path
    assert first.path.is_file() and torch.equal(again["x"], torch.arange(3))
    other = cached(tmp_path, "test", "entry", {**fields, "n": 4}, compute)  # other fields: another entry
    assert calls == [1, 1] and other.path != first.path
    first.path.write_bytes(b"truncated")  # an unreadable entry is computed again, not an error
    assert not cached(tmp_path, "test", "entry", fields, compute).loaded and calls == [1, 1, 1]
