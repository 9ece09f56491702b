"""Downloadable and on-disk datasets, read from tiny files written in each dataset's real format.

Nothing here touches the network: the files are written by the tests in the layout torchvision
reads (MNIST idx files, CIFAR-10 python pickles, CelebA JPEGs + annotation txt files), and only
torchvision's md5 comparison is replaced (the fake files cannot match the real checksums).
"""

from __future__ import annotations

import os
import pickle
import re
import socket
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.celeba
import torchvision.datasets.cifar
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from gen_bench.data import ArrayDataset, GenerativeDataModule
from gen_bench.data.folder import ImageFileDataset, ImageFolderSource
from gen_bench.data.torchvision_sets import CIFAR10, MNIST, CelebA, DatasetNotFoundError

CONF = Path(__file__).resolve().parents[1] / "conf" / "data"


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a data test tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _exists_only(fpath, md5=None) -> bool:
    """torchvision's check_integrity without the md5 comparison."""
    return os.path.isfile(fpath)


@pytest.fixture
def skip_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", _exists_only)
    monkeypatch.setattr(torchvision.datasets.celeba, "check_integrity", _exists_only)


# ---------------------------------------------------------------- fake files in the real formats


def _write_idx(path: Path, array: np.ndarray) -> None:
    """An idx file (big-endian header: 0, 0, type 0x08 = ubyte, ndim; then the dims; then the bytes)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, n_train: int = 20, n_test: int = 10) -> dict[str, np.ndarray]:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) * 3 % 10).astype(np.uint8)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        out[f"{prefix}_x"], out[f"{prefix}_y"] = images, labels
    return out


def write_cifar10(root: Path, per_batch: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Five training batches and a test batch of ``per_batch`` images: (N, 3, 32, 32) and labels."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(1)
    xs, ys = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3 * 32 * 32), dtype=np.uint8)  # rows: R plane, G, B
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        entry = {"batch_label": name, "labels": labels, "data": data,
                 "filenames": [f"img_{i}.png" for i in range(per_batch)]}
        with open(base / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
        xs.append(data.reshape(-1, 3, 32, 32))
        ys += labels
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"num_cases_per_batch": per_batch, "label_names": names, "num_vis": 3072}, f, protocol=2)
    return np.concatenate(xs), np.array(ys)


CELEBA_COLORS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (220, 220, 60), (60, 200, 200), (128, 128, 128),
                 (30, 30, 30), (240, 240, 240), (180, 90, 30), (90, 30, 180), (30, 150, 90), (150, 150, 30)]
CELEBA_PARTITION = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 2]


def write_celeba(root: Path) -> None:
    """178x218 JPEGs, each one colour except 16-pixel bands at top and bottom that the 178x178
    center crop removes (the crop drops 20 rows at either end), and the five annotation files."""
    base = root / "celeba"
    (base / "img_align_celeba").mkdir(parents=True)
    names = [f"{i + 1:06d}.jpg" for i in range(len(CELEBA_COLORS))]
    for name, color in zip(names, CELEBA_COLORS, strict=True):
        img = np.empty((218, 178, 3), dtype=np.uint8)
        img[:] = color
        img[:16] = img[-16:] = (255, 0, 255)
        Image.fromarray(img).save(base / "img_align_celeba" / name, quality=95)
    n = len(names)
    attrs = [f"Attr_{k}" for k in range(40)]
    marks = ["lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y", "leftmouth_x",
             "leftmouth_y", "rightmouth_x", "rightmouth_y"]
    files = {
        "list_eval_partition.txt": [f"{m} {p}" for m, p in zip(names, CELEBA_PARTITION, strict=True)],
        "identity_CelebA.txt": [f"{m} {i % 3 + 1}" for i, m in enumerate(names)],
        "list_bbox_celeba.txt": [str(n), "image_id x_1 y_1 width height"]
        + [f"{m}    95  71 226 313" for m in names],
        "list_landmarks_align_celeba.txt": [str(n), " ".join(marks)]
        + [f"{m}  69  109  106  113   77  142   73  152  108  154" for m in names],
        "list_attr_celeba.txt": [str(n), " ".join(attrs) + " "]
        + [m + "".join(" -1" if (i + k) % 2 else "  1" for k in range(40)) for i, m in enumerate(names)],
    }
    for fname, lines in files.items():
        (base / fname).write_text("\n".join(lines) + "\n")


def _image(rgb_hw3: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb_hw3).save(path)


def _banded(color: tuple[int, int, int], w: int = 32, h: int = 16) -> np.ndarray:
    """A w x h image of one colour with 4-pixel red / blue bands at the left / right edges, which a
    short-side resize to 8 and center crop removes."""
    img = np.empty((h, w, 3), dtype=np.uint8)
    img[:] = color
    img[:, :4] = (255, 0, 0)
    img[:, -4:] = (0, 0, 255)
    return img


# ---------------------------------------------------------------- MNIST


def test_mnist_round_trip_native_size(tmp_path: Path) -> None:
    written = write_mnist(tmp_path)
    source = MNIST(path=tmp_path, image_size=28)
    ds = source.load()
    assert isinstance(ds, ArrayDataset) and len(ds) == 30
    x, y = ds[list(range(30))]
    assert x.shape == (30, 1, 28, 28) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1
    # split "all" is train then test, pixel for pixel
    expect = np.concatenate([written["train_x"], written["t10k_x"]])[:, None] / 255.0
    assert torch.equal(x, torch.from_numpy(expect).float())
    assert y.dtype == torch.int64
    assert y.tolist() == np.concatenate([written["train_y"], written["t10k_y"]]).tolist()


def test_mnist_resized_and_split(tmp_path: Path) -> None:
    written = write_mnist(tmp_path)
    source = MNIST(path=str(tmp_path), image_size=16, split="test")
    assert source.spec.shape == (1, 16, 16) and source.spec.num_classes == 10
    x, y = source.load()[list(range(10))]
    assert x.shape == (10, 1, 16, 16)
    assert 0 <= x.min() and x.max() <= 1
    # antialiased downscaling preserves the mean brightness of each image
    torch.testing.assert_close(x.mean(dim=(1, 2, 3)), torch.from_numpy(written["t10k_x"] / 255.0).float()
                               .mean(dim=(1, 2)), atol=2e-3, rtol=0)
    assert y.tolist() == written["t10k_y"].tolist()
    assert len(MNIST(path=tmp_path, image_size=16, split="train").load()) == 20


def test_mnist_missing_is_a_clear_error(tmp_path: Path) -> None:
    source = MNIST(path=tmp_path / "nowhere", image_size=16)
    assert source.spec.shape == (1, 16, 16)  # known without any file
    source.prepare()  # download=False: does nothing
    with pytest.raises(DatasetNotFoundError, match=re.escape(str(tmp_path / "nowhere"))) as err:
        source.load()
    message = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert "data.source.download=true" in message and "data.path=DIR" in message
    assert "MNIST/raw/train-images-idx3-ubyte" in message


def test_mnist_path_inside_dataset_gets_a_hint(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    with pytest.raises(DatasetNotFoundError, match=re.escape(f"try data.path={tmp_path}")):
        MNIST(path=tmp_path / "MNIST" / "raw", image_size=28).load()


# ---------------------------------------------------------------- CIFAR-10


def test_cifar10_round_trip_native_size(tmp_path: Path, skip_md5: None) -> None:
    images, labels = write_cifar10(tmp_path)
    source = CIFAR10(path=tmp_path, image_size=32)
    ds = source.load()
    assert isinstance(ds, ArrayDataset) and len(ds) == 12
    x, y = ds[list(range(12))]
    assert x.shape == (12, 3, 32, 32) and x.dtype == torch.float32
    # channel order: the pickle rows are R, G, B planes, and so are our channels
    assert torch.equal(x, torch.from_numpy(images / 255.0).float())
    assert y.dtype == torch.int64 and y.tolist() == labels.tolist()


def test_cifar10_resized_and_split(tmp_path: Path, skip_md5: None) -> None:
    write_cifar10(tmp_path)
    source = CIFAR10(path=tmp_path, image_size=8, split="train")
    assert source.spec.shape == (3, 8, 8) and source.spec.num_classes == 10
    x, _ = source.load()[list(range(10))]
    assert x.shape == (10, 3, 8, 8) and 0 <= x.min() and x.max() <= 1


def test_cifar10_config_trains_on_the_training_set_and_holds_out_the_test_set(tmp_path: Path,
                                                                            skip_md5: None) -> None:
    """Ho et al.'s protocol: the 50,000 training images for training and FID's reference, the
    10,000 test images held out; never a random share of train + test."""
    images, labels = write_cifar10(tmp_path, per_batch=3)  # 5 x 3 training images, then 3 test images
    cfg = OmegaConf.create({"seed": 0, "data": OmegaConf.load(CONF / "cifar10.yaml")})
    cfg.data.path = str(tmp_path)
    cfg.data.batch_size = 2
    dm = instantiate(cfg.data)
    pixels = torch.from_numpy(images / 255.0).float()
    x, y = dm.tensors("train")
    assert torch.equal(x, pixels[:15]) and y.tolist() == labels[:15].tolist()
    x, y = dm.tensors("heldout")
    assert torch.equal(x, pixels[15:]) and y.tolist() == labels[15:].tolist()
    # a split the datamodule should draw and a source that brings its own disagree clearly
    cfg.data.source.split = "all"
    with pytest.raises(ValueError, match="data.heldout_fraction is null.*set data.heldout_fraction"):
        instantiate(cfg.data).setup()
    official = CIFAR10(path=tmp_path, image_size=32, split="official")
    with pytest.raises(ValueError, match="comes with its own held-out split.*data.heldout_fraction=null"):
        GenerativeDataModule(source=official, name="cifar10", heldout_fraction=0.1).setup()


def test_cifar10_missing_and_corrupt_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path))) as err:
        CIFAR10(path=tmp_path, image_size=8).load()
    assert "cifar-10-batches-py/data_batch_1" in str(err.value)
    assert "data.source.download=true" in str(err.value)
    write_cifar10(tmp_path)  # real md5 check on: the fake files fail it
    with pytest.raises(DatasetNotFoundError, match="exist but fail torchvision's checksum test"):
        CIFAR10(path=tmp_path, image_size=8).load()
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DatasetNotFoundError, match="1 of the files torchvision reads are missing") as err:
        CIFAR10(path=tmp_path, image_size=8).load()
    assert str(tmp_path / "cifar-10-batches-py" / "test_batch") in str(err.value)


# ---------------------------------------------------------------- CelebA


def test_celeba_center_crop_resize(tmp_path: Path, skip_md5: None) -> None:
    write_celeba(tmp_path)
    source = CelebA(path=tmp_path, image_size=16)
    assert source.spec.shape == (3, 16, 16) and source.spec.num_classes is None
    ds = source.load()
    assert not isinstance(ds, ArrayDataset) and len(ds) == 12
    for i, color in enumerate(CELEBA_COLORS):
        x, y = ds[i]
        assert x.shape == (3, 16, 16) and x.dtype == torch.float32
        assert 0 <= x.min() and x.max() <= 1
        assert y.dtype == torch.int64 and y.item() == -1
        # the magenta bands are cropped away: every pixel is the image's colour (JPEG tolerance)
        expect = torch.tensor(color, dtype=torch.float32).div(255).view(3, 1, 1)
        assert (x - expect).abs().max() < 8 / 255, i


def test_celeba_split(tmp_path: Path, skip_md5: None) -> None:
    write_celeba(tmp_path)
    ds = CelebA(path=tmp_path, image_size=8, split="valid").load()
    assert len(ds) == 2
    x, _ = ds[1]
    expect = torch.tensor(CELEBA_COLORS[9], dtype=torch.float32).div(255).view(3, 1, 1)
    assert (x - expect).abs().max() < 8 / 255


def test_celeba_missing_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=re.escape(str(tmp_path))) as err:
        CelebA(path=tmp_path, image_size=8).load()
    assert "celeba/img_align_celeba" in str(err.value) and "data.path=DIR" in str(err.value)


# ---------------------------------------------------------------- image folders


def _write_folder(root: Path) -> None:
    _image(_banded((0, 255, 0)), root / "a.png")
    _image(_banded((10, 20, 30)), root / "sub" / "b.bmp")
    _image(_banded((200, 100, 0)).transpose(1, 0, 2), root / "sub" / "deeper" / "c.PNG")  # tall image
    Image.fromarray(np.full((12, 12), 77, dtype=np.uint8), mode="L").save(root / "sub" / "grey.webp",
                                                                           lossless=True)
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)  # fully transparent: composited onto white
    Image.fromarray(rgba, mode="RGBA").save(root / "z_alpha.png")
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(b"ignored")


FOLDER_EXPECT = {  # sorted relative paths -> expected uniform colour after resize + center crop
    "a.png": (0, 255, 0),
    "sub/b.bmp": (10, 20, 30),
    "sub/deeper/c.PNG": (200, 100, 0),  # tall: the bands at top and bottom are cropped away
    "sub/grey.webp": (77, 77, 77),
    "z_alpha.png": (255, 255, 255),
}


@pytest.mark.parametrize("preload", [True, False])
def test_image_folder_recursive(tmp_path: Path, preload: bool) -> None:
    _write_folder(tmp_path)
    source = ImageFolderSource(name="mine", path=tmp_path, image_size=8, preload=preload)
    assert source.spec.shape == (3, 8, 8) and not source.spec.labeled
    ds = source.load()
    assert isinstance(ds, ArrayDataset if preload else ImageFileDataset)
    assert len(ds) == len(FOLDER_EXPECT)
    for i, color in enumerate(FOLDER_EXPECT.values()):
        x, y = ds[i]
        assert x.shape == (3, 8, 8) and x.dtype == torch.float32 and y.item() == -1
        expect = torch.tensor(color, dtype=torch.float32).div(255).view(3, 1, 1)
        assert (x - expect).abs().max() <= 1 / 255, list(FOLDER_EXPECT)[i]


def test_image_folder_preload_matches_per_item(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    for i in range(6):
        _image(rng.integers(0, 256, (20 + i, 14, 3), dtype=np.uint8), tmp_path / f"{i}.png")
    eager = ImageFolderSource(path=tmp_path, image_size=8).load()  # auto: small, so preloaded
    lazy = ImageFolderSource(path=tmp_path, image_size=8, preload=False).load()
    assert isinstance(eager, ArrayDataset)
    for i in range(6):
        assert torch.equal(eager[i][0], lazy[i][0])


@pytest.mark.parametrize("preload", [True, False])
def test_image_folder_skips_corrupt_files_with_one_warning(tmp_path: Path, preload: bool) -> None:
    _write_folder(tmp_path)
    (tmp_path / "sub" / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable") as record:
        ds = ImageFolderSource(path=tmp_path, image_size=8, preload=preload).load()
    skipped = [w for w in record if "unreadable" in str(w.message)]
    assert len(skipped) == 1
    assert "sub/broken.jpg" in str(skipped[0].message) and "empty.png" in str(skipped[0].message)
    assert len(ds) == len(FOLDER_EXPECT)


def test_image_folder_warning_lists_ten_then_counts(tmp_path: Path) -> None:
    _image(_banded((1, 2, 3)), tmp_path / "good.png")
    for i in range(13):
        (tmp_path / f"bad{i:02d}.png").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match=r"skipped 13 unreadable .*bad09\.png and 3 more"):
        ds = ImageFolderSource(path=tmp_path, image_size=8).load()
    assert len(ds) == 1


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "absent"))):
        ImageFolderSource(path=tmp_path / "absent", image_size=8).load()
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match="no image files under " + re.escape(str(tmp_path / "empty"))):
        ImageFolderSource(path=tmp_path / "empty", image_size=8).load()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"garbage")
    with pytest.warns(UserWarning), pytest.raises(FileNotFoundError, match="could be read"):
        ImageFolderSource(path=tmp_path / "bad", image_size=8).load()
    with pytest.raises(ValueError, match="data.path"):
        ImageFolderSource(image_size=8)
    with pytest.raises(ValueError, match="valid crops"):
        ImageFolderSource(path=tmp_path, crop="random")


# ---------------------------------------------------------------- through the datamodule and configs


@pytest.fixture
def fake_sources(tmp_path: Path, skip_md5: None) -> dict[str, object]:
    write_mnist(tmp_path)
    write_cifar10(tmp_path)
    write_celeba(tmp_path)
    _write_folder(tmp_path / "folder")
    for i in range(6):
        _image(_banded((i * 40, 0, 0)), tmp_path / "folder" / "more" / f"{i}.png")
    return {
        "mnist": MNIST(path=tmp_path, image_size=16),
        "cifar10": CIFAR10(path=tmp_path, image_size=16),
        "celeba": CelebA(path=tmp_path, image_size=16),
        "image_folder": ImageFolderSource(path=tmp_path / "folder", image_size=16),
        "image_folder_lazy": ImageFolderSource(path=tmp_path / "folder", image_size=16, preload=False),
    }


@pytest.mark.parametrize("name", ["mnist", "cifar10", "celeba", "image_folder", "image_folder_lazy"])
def test_datamodule_draws_a_batch(fake_sources: dict[str, object], name: str) -> None:
    source = fake_sources[name]
    dm = GenerativeDataModule(source=source, name=name, batch_size=4)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, *source.spec.shape) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1
    assert y.shape == (4,) and y.dtype == torch.int64
    if source.spec.labeled:
        assert y.min() >= 0 and y.max() < source.spec.num_classes
    else:
        assert (y == -1).all()


@pytest.mark.parametrize("name", ["mnist", "cifar10", "celeba", "image_folder"])
def test_configs_instantiate(tmp_path: Path, skip_md5: None, name: str) -> None:
    write_mnist(tmp_path)
    write_cifar10(tmp_path)
    write_celeba(tmp_path)
    _write_folder(tmp_path)
    cfg = OmegaConf.create({"seed": 3, "data": OmegaConf.load(CONF / f"{name}.yaml")})
    cfg.data.path = str(tmp_path)
    cfg.data.image_size = 8
    cfg.data.num_workers = 0
    cfg.data.batch_size = 2
    dm = instantiate(cfg.data)
    assert dm.name == name and dm.shuffle_seed == 3 and dm.spec.shape[-1] == 8
    assert dm.source.path == str(tmp_path)
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape[1:] == dm.spec.shape


def test_image_folder_config_requires_a_path() -> None:
    from omegaconf.errors import MissingMandatoryValue

    cfg = OmegaConf.create({"seed": 0, "data": OmegaConf.load(CONF / "image_folder.yaml")})
    with pytest.raises(MissingMandatoryValue):
        instantiate(cfg.data)


def test_torchvision_configs_default_to_no_download() -> None:
    for name in ("mnist", "cifar10", "celeba"):
        assert OmegaConf.load(CONF / f"{name}.yaml").source.download is False
