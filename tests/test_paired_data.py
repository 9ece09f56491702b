"""Paired tasks (``task=superres`` / ``inpaint``): the degradation operators against independent
implementations (PIL's resampling), masks that cover exactly what they say, and training pairs that
are a function of the batch number (so a resumed run draws the same ones)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gen_bench.data import ArrayDataset, DataSpec, GenerativeDataModule
from gen_bench.data.paired import FILL, Inpainting, SuperResolution, downsample, upsample


def _pil_resize(x: torch.Tensor, size: int, resample) -> torch.Tensor:
    """PIL's own resize of every channel of (N, C, H, W) float images ('F' mode: no 8-bit rounding)."""
    out = [[np.array(Image.fromarray(ch.numpy(), mode="F").resize((size, size), resample)) for ch in img]
           for img in x]
    return torch.from_numpy(np.array(out))


@pytest.mark.parametrize("factor", [2, 4])
def test_box_downsampling_is_the_block_mean_and_bicubic_is_pils_antialiased_resize(factor):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 16, 16, generator=g) * 0.6 + 0.2  # away from 0 and 1: no clamping at the edges
    small = 16 // factor
    box = downsample(x, factor, "box")
    blocks = x.reshape(3, 3, small, factor, small, factor).mean((3, 5))  # the mean of each block
    assert torch.allclose(box, blocks, atol=1e-6)
    assert torch.allclose(box, F.avg_pool2d(x, factor), atol=0)
    assert torch.allclose(box, _pil_resize(x, small, Image.Resampling.BOX), atol=1e-6)
    bicubic = downsample(x, factor, "bicubic")
    assert torch.allclose(bicubic, _pil_resize(x, small, Image.Resampling.BICUBIC), atol=1e-6)
    assert torch.allclose(bicubic, F.interpolate(x, size=(small, small), mode="bicubic", antialias=True),
                          atol=0)
    # the antialiasing matters: without it bicubic samples a 4-pixel neighbourhood and aliases
    plain = F.interpolate(x, size=(small, small), mode="bicubic", antialias=False)
    assert (bicubic - plain).abs().max() > 0.05


def test_superres_pairs_their_shapes_and_consistency():
    task = SuperResolution(factor=4, filter="box")
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    x_in = task.degrade(x)
    assert x_in.shape == (2, 3, 4, 4) == (2, *task.input_shape((3, 16, 16)))
    assert task.estimate(x_in).shape == task.condition(x_in).shape == task.show(x_in).shape == x.shape
    assert torch.equal(task.show(x_in)[:, :, :4, :4], x_in[:, :, :1, :1].expand(-1, -1, 4, 4))  # nearest
    sq, count = task.consistency(x, x_in)  # the target itself is consistent with its input
    assert torch.allclose(sq, torch.zeros(2, dtype=torch.float64), atol=1e-12) and count.tolist() == [48, 48]
    shifted = x + 0.1
    mse = task.consistency(shifted, x_in)[0] / count
    assert torch.allclose(mse, torch.full((2,), 0.01, dtype=torch.float64))
    assert torch.allclose(upsample(x_in, 16, "nearest"), task.show(x_in))


def test_masks_cover_what_they_say():
    n, s = 6, 16
    x = torch.rand(n, 3, s, s, generator=torch.Generator().manual_seed(2))
    centre = Inpainting(mask="center", size=0.5)
    m = centre.masks(n, s, s)
    expected = torch.ones(s, s)
    expected[4:12, 4:12] = 0  # the centred 8 x 8 square
    assert torch.equal(m, expected.expand(n, 1, s, s))
    half = Inpainting(mask="half").masks(n, s, s)
    assert torch.equal(half[..., :8], torch.ones(n, 1, s, 8))
    assert torch.equal(half[..., 8:], torch.zeros(n, 1, s, 8))

    rnd = Inpainting(mask="random", boxes=2, box_min=0.25, box_max=0.5)
    m = rnd.masks(n, s, s, torch.Generator().manual_seed(3))
    assert torch.equal(m, rnd.masks(n, s, s, torch.Generator().manual_seed(3)))  # a function of the generator
    assert not torch.equal(m[0], m[1])  # each image its own boxes
    for mask in m[:, 0]:
        holes = (mask == 0).float()
        # the holes are the union of 2 boxes with sides in [4, 8]: between 16 and 2 * 64 pixels, and every
        # unknown row / column segment fits in the largest box side
        assert 16 <= holes.sum() <= 128
        rows, cols = holes.any(1).sum(), holes.any(0).sum()
        assert 4 <= rows <= 16 and 4 <= cols <= 16
    # the input: known pixels are the image, unknown ones mid grey, the mask its last channel
    x_in = centre.degrade(x)
    image, mask = Inpainting.split(x_in)
    assert x_in.shape == (n, 4, s, s) and torch.equal(mask, centre.masks(n, s, s))
    assert torch.equal(image[..., 4:12, 4:12], torch.full((n, 3, 8, 8), FILL))
    assert torch.equal(image * mask, x * mask)
    # compose puts the known pixels back exactly; consistency measures the known region only
    out = torch.rand(n, 3, s, s, generator=torch.Generator().manual_seed(4))
    composed = centre.compose(out, x_in)
    assert torch.equal(composed * mask, x * mask)
    assert torch.equal(composed[..., 4:12, 4:12], out[..., 4:12, 4:12])
    sq, count = centre.consistency(composed, x_in)
    assert sq.abs().max() == 0 and count.tolist() == [3 * (256 - 64)] * n
    sq, _ = centre.consistency(out, x_in)
    assert torch.allclose(sq, ((out - x).square() * mask).flatten(1).sum(1).double())


def test_tasks_refuse_what_they_cannot_pair():
    with pytest.raises(ValueError, match="integer >= 2"):
        SuperResolution(factor=1)
    with pytest.raises(ValueError, match="data.task.filter must be one of box, bicubic"):
        SuperResolution(filter="lanczos")
    with pytest.raises(ValueError, match="mask must be one of center, half, random"):
        Inpainting(mask="ring")
    image = DataSpec(kind="image", shape=(3, 12, 12))
    with pytest.raises(ValueError, match="divisible by 8; data.image_size is 12"):
        SuperResolution(factor=8).check(image)
    with pytest.raises(ValueError, match="turns images into pairs; this is toy2d data"):
        Inpainting().check(DataSpec(kind="toy2d", shape=(2,)))


class _Images:
    name = "images"

    def __init__(self, n: int = 40, size: int = 8) -> None:
        g = torch.Generator().manual_seed(5)
        self.x = (torch.rand(n, 1, size, size, generator=g) * 255).to(torch.uint8)

    @property
    def spec(self) -> DataSpec:
        return DataSpec(kind="image", shape=tuple(self.x.shape[1:]), num_classes=None)

    def prepare(self) -> None:
        pass

    def load(self) -> ArrayDataset:
        return ArrayDataset(self.x)


def test_training_pairs_are_a_function_of_the_batch_number_and_heldout_pairs_of_the_generator():
    task = Inpainting(mask="random", boxes=1)
    dm = GenerativeDataModule(_Images(), "images", batch_size=4, task=task, shuffle_seed=3)
    assert dm.spec.task == task and dm.spec.shape == (1, 8, 8)
    assert GenerativeDataModule(_Images(), "images").fingerprint() == dm.fingerprint()  # the real images
    dm.trainer = SimpleNamespace(training=True, global_rank=0, world_size=1)
    loader = iter(dm.train_dataloader())
    pairs = [dm.on_after_batch_transfer(next(loader), 0) for _ in range(3)]
    for b, (x_in, x, y) in enumerate(pairs):
        expected = task.degrade(x, torch.Generator().manual_seed(dm.pair_seed(b)))
        assert torch.equal(x_in, expected) and y.shape == (4,)
    # a resumed run (start_batch = 2) pairs its first batch as batch 2 was paired
    dm.start_batch = 2
    x_in, x, _ = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert torch.equal(x, pairs[2][1]) and torch.equal(x_in, pairs[2][0])
    # outside training: batches unchanged
    dm.trainer = SimpleNamespace(training=False, global_rank=0, world_size=1)
    batch = (x, torch.zeros(4))
    assert dm.on_after_batch_transfer(batch, 0) is batch

    idx = torch.tensor([0, 2, 2])
    a = dm.paired_batch(idx, torch.Generator().manual_seed(7))
    b = dm.paired_batch(idx, torch.Generator().manual_seed(7))
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert torch.equal(a[1], dm.heldout_set[idx][0])
    with pytest.raises(ValueError, match="has no paired task: add task=superres or task=inpaint"):
        GenerativeDataModule(_Images(), "images").paired_batch(idx)
