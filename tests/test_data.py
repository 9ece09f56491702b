"""The datamodule and the offline datasets: shapes, ranges, labels, splits and batch order."""

from __future__ import annotations

import math
import re
import shlex

import pytest
import torch
from hydra.utils import instantiate

from gen_bench.data import ArrayDataset, GenerativeDataModule, StepBatchSampler
from gen_bench.data.digits import Digits, StackedDigits, load_sklearn_digits
from gen_bench.data.shapes import PALETTE, SHAPES, Shapes
from gen_bench.data.toy import GaussianMixture2D, grid_centers, ring_centers

from conftest import compose_train


def test_ring_and_grid_follow_the_pacgan_protocol(tmp_path):
    ring = instantiate(compose_train(["data=ring8"], tmp_path).data)
    spec = ring.spec
    assert spec.kind == "toy2d" and spec.shape == (2,) and spec.num_modes == 8 and spec.mode_std == 0.01
    centers = torch.tensor(spec.mode_centers)
    assert torch.allclose(centers.norm(dim=1), torch.ones(8), atol=1e-6)  # radius 1
    angles = torch.atan2(centers[:, 1], centers[:, 0]).remainder(2 * math.pi).sort().values
    assert torch.allclose(angles.diff(), torch.full((7,), math.pi / 4), atol=1e-5)

    grid = instantiate(compose_train(["data=grid25"], tmp_path).data)
    got = {tuple(round(v) for v in c) for c in grid.spec.mode_centers}
    assert got == {(a, b) for a in (-4, -2, 0, 2, 4) for b in (-4, -2, 0, 2, 4)}
    assert grid.spec.mode_std == 0.05


@pytest.mark.parametrize("layout,std", [("ring", 0.01), ("grid", 0.05), ("ring", 0.2)])
def test_mixture_samples_have_the_configured_std_around_their_label(layout, std):
    src = GaussianMixture2D("toy", layout=layout, radius=2.0, std=std, num_samples=40_000, seed=3)
    x, y = src.load()[torch.arange(40_000)]
    offsets = x - src.centers[y]
    assert offsets.mean(0).abs().max() < 4 * std / math.sqrt(40_000) * 3
    assert torch.allclose(offsets.std(0), torch.full((2,), std), rtol=0.03)
    counts = torch.bincount(y, minlength=src.centers.shape[0]).float()
    assert counts.min() / counts.mean() > 0.9  # equal weights
    if layout == "ring":
        assert torch.allclose(src.centers.norm(dim=1), torch.full((8,), 2.0))


def test_centre_helpers():
    assert ring_centers(4, 1.0).round(decimals=6).tolist() == [[1, 0], [0, 1], [-1, 0], [0, -1]]
    assert grid_centers(3, 1.0).tolist()[0] == [-1.0, -1.0]


def test_digits_are_resized_to_the_configured_size_and_keep_labels():
    x, y = load_sklearn_digits(32)
    assert x.shape == (1797, 1, 32, 32) and x.dtype == torch.uint8 and y.shape == (1797,)
    assert set(y.tolist()) == set(range(10))
    # Pooling back to 8x8 recovers the original digits (the resize is a smooth interpolation).
    from sklearn.datasets import load_digits

    orig = torch.from_numpy(load_digits().images).float() / 16
    back = torch.nn.functional.adaptive_avg_pool2d(x.float() / 255, 8).squeeze(1)
    assert torch.corrcoef(torch.stack([back.flatten(), orig.flatten()]))[0, 1] > 0.95
    nearest = torch.cdist(back.flatten(1), orig.flatten(1)).argmin(1)
    assert (nearest == torch.arange(1797)).float().mean() > 0.99  # each image is still itself
    ds = Digits(image_size=16).load()
    xb, yb = ds[[0, 1, 2]]
    assert xb.shape == (3, 1, 16, 16) and xb.dtype == torch.float32 and 0 <= xb.min() and xb.max() <= 1


def test_stacked_digits_channels_are_independent_digits_with_their_labels():
    digits, labels = load_sklearn_digits(16)
    src = StackedDigits(image_size=16, num_samples=500, seed=1, heldout_fraction=0.0)
    assert src.spec.num_modes == 1000 and src.spec.label_shape == (3,)
    x, y = src.load().train[torch.arange(500)]
    assert x.shape == (500, 3, 16, 16) and y.shape == (500, 3)
    flat = (digits.float() / 255).flatten(1)  # (M, S*S)
    for c in range(3):
        # every channel is exactly one of the digits, and the label is that digit's class
        d = torch.cdist(x[:, c].flatten(1), flat, compute_mode="donot_use_mm_for_euclid_dist")
        best = d.argmin(1)
        assert torch.all(d.min(1).values < 1e-4)
        assert torch.equal(labels[best], y[:, c])
    triples = (y[:, 0] * 100 + y[:, 1] * 10 + y[:, 2]).unique()
    assert len(triples) > 350  # 500 draws over 1000 modes hit ~394 of them


def _channel_digits(x: torch.Tensor) -> set[bytes]:
    """The distinct single-channel images of (N, 3, S, S) stacks."""
    return {img.numpy().tobytes() for img in x.flatten(0, 1)}


def test_stacked_digits_heldout_stacks_use_only_heldout_source_digits(tmp_path):
    """The held-out stacks must not show any digit of the training stacks: the classifier's held-out
    accuracy and the memorization baseline are measured on them."""
    over = ["data=stacked_digits", "data.image_size=8", "data.source.num_samples=4000"]
    dm = instantiate(compose_train(over, tmp_path).data)
    x_train, _ = dm.tensors("train")
    x_held, y_held = dm.tensors("heldout")
    assert (len(x_train), len(x_held)) == (3600, 400)
    train_digits, held_digits = _channel_digits(x_train), _channel_digits(x_held)
    assert not train_digits & held_digits
    # the split is of the 1797 source digits: 180 held out (about 18 per class), the rest for training
    digits, _ = load_sklearn_digits(8)
    source = _channel_digits(digits.float().div(255))
    assert held_digits <= source and train_digits <= source
    assert 150 < len(held_digits) <= 180 and len(train_digits) > 1500
    assert set(y_held.flatten().tolist()) == set(range(10))
    # a held-out share set on the datamodule as well is a clear error (the source decides)
    with pytest.raises(ValueError, match="comes with its own held-out split.*data.heldout_fraction=null"):
        instantiate(compose_train([*over, "data.heldout_fraction=0.1"], tmp_path).data).setup()


def test_shapes_colour_and_label_agree():
    src = Shapes(image_size=32, num_samples=200, seed=0)
    assert src.spec.num_classes == len(SHAPES) * len(PALETTE)
    x, y = src.load()[torch.arange(200)]
    palette = torch.tensor(list(PALETTE.values()))
    for img, label in zip(x, y, strict=True):
        fg = img.flatten(1)[:, img.flatten(1).sum(0) > 0.5]  # (3, P) foreground pixels
        colour = fg.mean(1)
        cos = torch.nn.functional.cosine_similarity(colour[None], palette, dim=1)
        assert cos.argmax().item() == label.item() % len(PALETTE)
        assert fg.shape[1] > 20  # the shape is visible


def _dm(source, **kw) -> GenerativeDataModule:
    return GenerativeDataModule(source=source, name="t", **kw)


def test_split_is_deterministic_disjoint_and_complete():
    src = GaussianMixture2D("toy", num_samples=1000)
    a, b = _dm(src, heldout_fraction=0.2, split_seed=5), _dm(src, heldout_fraction=0.2, split_seed=5)
    xa, _ = a.tensors("train")
    xb, _ = b.tensors("train")
    assert torch.equal(xa, xb)
    ha, _ = a.tensors("heldout")
    assert len(xa) == 800 and len(ha) == 200
    full, _ = src.load()[torch.arange(1000)]
    both = torch.cat([xa, ha])
    assert torch.equal(both[both[:, 0].argsort()], full[full[:, 0].argsort()])  # a partition
    c = _dm(src, heldout_fraction=0.2, split_seed=6)
    assert not torch.equal(c.tensors("heldout")[0], ha)


def test_training_batches_are_float_in_unit_range_for_images():
    dm = _dm(Digits(image_size=16), batch_size=8)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 1, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.long
    assert 0 <= x.min() and x.max() <= 1


def test_step_sampler_is_a_function_of_the_batch_number():
    full = list(iter_n(StepBatchSampler(100, 8, seed=1), 40))
    resumed = list(iter_n(StepBatchSampler(100, 8, seed=1, start_batch=17), 23))
    assert resumed == full[17:]
    per_epoch = 100 // 8
    epoch0 = sorted(i for b in full[:per_epoch] for i in b)
    assert len(set(epoch0)) == len(epoch0) == per_epoch * 8  # no repeats within an epoch
    assert full[:per_epoch] != full[per_epoch: 2 * per_epoch]  # reshuffled every epoch


def test_step_sampler_shards_the_global_batch_across_ranks():
    ranks = [list(iter_n(StepBatchSampler(64, 4, seed=0, rank=r, world_size=2), 5)) for r in range(2)]
    single = list(iter_n(StepBatchSampler(64, 8, seed=0), 5))
    for step in range(5):
        assert set(ranks[0][step]).isdisjoint(ranks[1][step])
        assert ranks[0][step] + ranks[1][step] == single[step]


def test_too_small_dataset_is_a_clear_error():
    with pytest.raises(ValueError, match="fewer than one batch"):
        StepBatchSampler(10, 16, seed=0)


def test_array_dataset_rejects_other_dtypes():
    with pytest.raises(TypeError, match="uint8 images or float32"):
        ArrayDataset(torch.zeros(3, 2, dtype=torch.float64))


def iter_n(sampler, n):
    it = iter(sampler)
    for _ in range(n):
        yield next(it)


def test_the_hint_for_a_folder_without_the_usual_image_endings_is_an_override_that_works(tmp_path):
    from PIL import Image

    for i in range(4):  # grey-level PGM, not among the default endings
        Image.new("L", (8, 8), 60 * i).save(tmp_path / f"scan{i}.pgm")
    overrides = ["data=image_folder", f"data.path={tmp_path}", "data.image_size=8"]
    with pytest.raises(FileNotFoundError, match="no image files") as missing:
        instantiate(compose_train(overrides, tmp_path / "run").data.source).load()
    (hint,) = re.findall(r"\S*data\.source\.extensions=\S+", str(missing.value))
    (override,) = shlex.split(hint)  # as the shell passes it
    source = instantiate(compose_train([*overrides, override], tmp_path / "run").data.source)
    assert len(source.load()) == 4


def _rows_in(rows: torch.Tensor, pool: torch.Tensor) -> bool:
    """Whether every row of ``rows`` is a row of ``pool``."""
    return bool((rows.flatten(1)[:, None] == pool.flatten(1)[None]).all(-1).any(1).all())


def test_subset_is_n_training_samples_fixed_by_the_split_seed_nested_and_heldout_unchanged():
    """data.subset=N: N distinct samples of the training split, a function of split_seed only (the
    run seed, i.e. shuffle_seed, does not move them); the held-out split is the full run's; a
    smaller subset lies inside a larger one; training batches come from the subset only."""
    src = GaussianMixture2D("toy", num_samples=1000)
    full = _dm(src, heldout_fraction=0.2, split_seed=5)
    x_full, _ = full.tensors("train")
    h_full, _ = full.tensors("heldout")
    a = _dm(src, heldout_fraction=0.2, split_seed=5, subset=128, shuffle_seed=0)
    b = _dm(src, heldout_fraction=0.2, split_seed=5, subset=128, shuffle_seed=7, batch_size=16)
    xa, _ = a.tensors("train")
    assert len(a.train_set) == len(xa) == 128 and len(xa.unique(dim=0)) == 128
    assert _rows_in(xa, x_full)
    assert torch.equal(xa, b.tensors("train")[0])
    assert torch.equal(a.tensors("heldout")[0], h_full)
    small, _ = _dm(src, heldout_fraction=0.2, split_seed=5, subset=32).tensors("train")
    assert _rows_in(small, xa)  # nested: 32 within 128
    other, _ = _dm(src, heldout_fraction=0.2, split_seed=6, subset=128).tensors("train")
    assert not torch.equal(other, xa)
    batch, _ = next(iter(b.train_dataloader()))
    assert batch.shape == (16, 2) and _rows_in(batch, xa)
    # not simply the first 128 training samples
    assert not torch.equal(xa, x_full[:128])


def test_subset_from_config_is_the_same_for_every_run_seed_and_model(tmp_path):
    """data.subset from the command line; the subset of a source that splits itself (stacked digits,
    like CIFAR-10's official split) keeps the source's held-out split."""
    over = ["data=stacked_digits", "data.image_size=8", "data.source.num_samples=1000", "data.subset=64"]
    one = instantiate(compose_train([*over, "seed=1", "model=dcgan"], tmp_path).data)
    two = instantiate(compose_train([*over, "seed=2", "model=ddpm"], tmp_path).data)
    x1, y1 = one.tensors("train")
    x2, y2 = two.tensors("train")
    assert len(x1) == 64 and torch.equal(x1, x2) and torch.equal(y1, y2)
    full = instantiate(compose_train(over[:3], tmp_path).data)
    assert full.subset is None and _rows_in(x1, full.tensors("train")[0])
    assert torch.equal(one.tensors("heldout")[0], full.tensors("heldout")[0])


def test_subset_larger_than_the_training_split_is_a_clear_error():
    src = GaussianMixture2D("toy", num_samples=1000)
    with pytest.raises(ValueError, match=r"subset=801 is larger than the training split .*\(800 samples\); "
                                         r"set data.subset <= 800"):
        _dm(src, heldout_fraction=0.2, subset=801).setup()
    assert len(_dm(src, heldout_fraction=0.2, subset=800).train_set) == 800
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="data.subset must be a number of samples >= 1 or null"):
            _dm(src, subset=bad)


def test_subset_is_the_training_set_of_the_reference_and_memorization_metrics(tmp_path):
    """The fingerprint (the reference caches' key) changes with the subset; the reference statistics
    and the memorization metrics read the subset as the training set."""
    from gen_bench.metrics.extractors import ExtractorRequest, build_extractor
    from gen_bench.metrics.reference import reference_features, split_dataset
    from gen_bench.metrics.settings import EvalSettings

    src = GaussianMixture2D("toy", num_samples=1000)
    full, sub = _dm(src, heldout_fraction=0.2), _dm(src, heldout_fraction=0.2, subset=100)
    assert sub.fingerprint() != full.fingerprint()
    assert _dm(src, heldout_fraction=0.2, subset=800).fingerprint() == full.fingerprint()  # same samples
    extractor = build_extractor("identity", ExtractorRequest(sub.spec, sub, EvalSettings()))
    ref = reference_features(sub, extractor, "train", cache_dir=tmp_path)
    assert ref.fields["num_samples"] == 100 and ref.stats.n == 100
    assert ref.fields["fingerprint"] == sub.fingerprint()
    x_sub, _ = sub.tensors("train")
    assert torch.allclose(ref.stats.sum.float(), x_sub.double().sum(0).float(), atol=1e-4)
    # the memorization metrics' training set (gen_bench.metrics.suite) is the same split
    assert torch.equal(split_dataset(sub, "train")[torch.arange(100)][0], x_sub)
