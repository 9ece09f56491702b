"""MNIST, CIFAR-10 and CelebA read by torchvision's own dataset classes, in torchvision's file layout.

Nothing is fetched unless ``download=True`` (then torchvision's own download code runs, in
``prepare()``). When the files are not under ``path`` the sources raise
:class:`DatasetNotFoundError`, whose message names the directory searched, the files missing and
the two ways to provide them, instead of torchvision's bare "Dataset not found or corrupted".

Which part of the dataset is used (``split``): by default all of it (``"all"``: MNIST train + test
= 70,000 images, CIFAR-10 train + test = 60,000, CelebA train + valid + test = 202,599), from which
:class:`~gen_bench.data.GenerativeDataModule` draws its own deterministic held-out split.
``split="train"`` restricts a source to the official training images. ``split="official"`` keeps
the official partition: the training images are the training split (and so the reference of FID,
as in the papers: CIFAR-10's 50,000) and the test images the held-out split (with
``data.heldout_fraction=null``); ``conf/data/cifar10.yaml`` uses it.

MNIST and CIFAR-10 are small and live in memory as uint8; CelebA is decoded per item.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import torch
import torchvision.datasets as tvd
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from gen_bench.data.arrays import ArrayDataset, resize_images
from gen_bench.data.spec import DataSpec, Splits

__all__ = ["CIFAR10", "MNIST", "CelebA", "CelebAImages", "DatasetNotFoundError"]

_MAX_LISTED = 10  # files named in an error message before "and N more"


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not under the configured path; the message says how to provide them."""


def _listing(paths: Sequence[Path | str], indent: str = "  ") -> str:
    shown = [f"{indent}{p}" for p in paths[:_MAX_LISTED]]
    if len(paths) > _MAX_LISTED:
        shown.append(f"{indent}... and {len(paths) - _MAX_LISTED} more")
    return "\n".join(shown)


class _TorchvisionSource:
    """Shared logic of the torchvision-backed sources: split choice, file checks, clear errors.

    Subclasses set the class attributes and implement ``_required(split)`` (paths relative to the
    root, for one torchvision split), ``_open(split, download)`` (the torchvision dataset),
    ``_load(split)`` (the dataset of one of our split names) and ``spec``.
    """

    title: ClassVar[str]  # name used in messages
    splits: ClassVar[dict[str, tuple[str, ...]]]  # our split name -> torchvision splits it covers
    source_note: ClassVar[str]  # where the files come from, for people copying them by hand
    # split "official": (our training split, our held-out split)
    official: ClassVar[tuple[str, str]] = ("train", "test")

    def __init__(self, name: str, path: str | os.PathLike[str], image_size: int, download: bool,
                 split: str) -> None:
        if image_size < 1:
            raise ValueError(f"{self.title}: data.image_size must be >= 1, got {image_size}")
        if split not in self.splits:
            raise ValueError(f"{self.title}: unknown split {split!r}; valid splits are "
                             f"{sorted(self.splits)} (set data.source.split)")
        self.name = name
        self.path = str(path)
        self.image_size = image_size
        self.download = download
        self.split = split

    @property
    def root(self) -> Path:
        """The directory torchvision reads (``path`` with ``~`` expanded, made absolute)."""
        return Path(self.path).expanduser().absolute()

    def _required(self, split: str) -> list[Path]:
        raise NotImplementedError

    def _open(self, split: str, download: bool = False) -> Dataset:
        raise NotImplementedError

    def _load(self, split: str) -> Dataset:
        raise NotImplementedError

    def load(self) -> Dataset | Splits:
        """The split's images; for ``split="official"`` the training and test images as
        :class:`Splits` (training, held-out)."""
        if self.split == "official":
            train, heldout = self.official
            return Splits(self._load(train), self._load(heldout))
        return self._load(self.split)

    def _required_files(self) -> list[Path]:
        files: list[Path] = []
        for split in self.splits[self.split]:
            files += [f for f in self._required(split) if f not in files]
        return files

    def _missing(self) -> list[Path]:
        return [rel for rel in self._required_files() if not (self.root / rel).exists()]

    def prepare(self) -> None:
        """Download with torchvision's own code when ``download=True`` and files are missing."""
        if not self.download or not self._missing():
            return
        try:
            for split in self.splits[self.split]:
                self._open(split, download=True)
        except Exception as e:
            raise RuntimeError(
                f"{self.title}: downloading into {self.root} failed ({type(e).__name__}: {e}).\n"
                f"On a machine without internet access, fetch the files elsewhere and set "
                f"data.path=DIR to a directory laid out as:\n{self._layout()}\n{self.source_note}"
            ) from e

    def _layout(self) -> str:
        return _listing([Path("DIR") / rel for rel in self._required_files()])

    def _hints(self, missing: list[Path]) -> list[str]:
        hints = []
        for rel in missing:
            gz = self.root / rel.with_name(rel.name + ".gz")
            if gz.exists():
                hints.append(f"found {gz}: decompress it (gunzip), or pass data.source.download=true, "
                             "which extracts it without downloading again")
        # data.path pointing inside the dataset (e.g. at cifar-10-batches-py itself)
        for rel in self._required_files():
            for k in range(1, len(rel.parts)):
                if k <= len(self.root.parents) and (self.root / Path(*rel.parts[k:])).exists():
                    return hints + [f"data.path seems to point inside the dataset: try "
                                    f"data.path={self.root.parents[k - 1]}"]
        return hints

    def _not_found(self, missing: list[Path]) -> DatasetNotFoundError:
        hints = "".join(f"\nHint: {h}" for h in self._hints(missing))
        if len(missing) == len(self._required_files()):
            what = "none of the files torchvision reads is there.\n"
        else:
            what = (f"{len(missing)} of the files torchvision reads are missing:\n"
                    f"{_listing([self.root / rel for rel in missing])}\n")
        return DatasetNotFoundError(
            f"{self.title} not found under data.path={self.root}: {what}"
            f"Fix: pass data.source.download=true on a machine with internet access (files are "
            f"written under data.path), or set data.path=DIR to the directory holding the extracted "
            f"files, laid out as:\n{self._layout()}\n{self.source_note}{hints}"
        )

    def _open_checked(self, split: str) -> Dataset:
        """The torchvision dataset of one split, with a clear error when its files are absent."""
        if self.download:
            self.prepare()  # a no-op when the files are there (Lightning already ran it)
        missing = self._missing()
        if missing:
            raise self._not_found(missing)
        try:
            return self._open(split, download=False)
        except RuntimeError as e:  # all files exist, so torchvision's integrity check failed
            raise DatasetNotFoundError(
                f"{self.title} files under data.path={self.root} exist but fail torchvision's checksum "
                f"test ({e}): a download was interrupted or the files are not the originals. Delete them "
                f"and pass data.source.download=true, or replace them with the original files, laid "
                f"out as:\n{self._layout()}\n{self.source_note}"
            ) from e


class MNIST(_TorchvisionSource):
    """MNIST handwritten digits (LeCun et al. 1998), one channel, resized to ``image_size``.

    Files: ``path/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (torchvision's layout).

    Args:
        name: Dataset name, as in ``data=NAME``.
        path: Root directory holding ``MNIST/raw``.
        image_size: Output size S (native 28; resized with antialiased bilinear interpolation).
        download: Download with torchvision when the files are missing.
        split: ``"all"`` (train + test, 70,000 images), ``"train"`` (60,000), ``"test"`` (10,000)
            or ``"official"`` (train for training, test held out).
    """

    title = "MNIST"
    splits: ClassVar[dict[str, tuple[str, ...]]] = {
        "all": ("train", "test"), "train": ("train",), "test": ("test",), "official": ("train", "test"),
    }
    source_note = (f"(the four .gz files at {tvd.MNIST.mirrors[0]}, gunzipped; torchvision also "
                   f"accepts the older MNIST/processed/{{training,test}}.pt)")

    def __init__(self, name: str = "mnist", path: str | os.PathLike[str] = "data_cache",
                 image_size: int = 32, download: bool = False, split: str = "all") -> None:
        super().__init__(name, path, image_size, download, split)

    @property
    def spec(self) -> DataSpec:
        return DataSpec(kind="image", shape=(1, self.image_size, self.image_size), num_classes=10,
                        num_modes=10)

    def _required(self, split: str) -> list[Path]:
        prefix = "train" if split == "train" else "t10k"
        return [Path("MNIST", "raw", Path(f).stem) for f, _ in tvd.MNIST.resources if f.startswith(prefix)]

    def _missing(self) -> list[Path]:
        legacy = self.root / "MNIST" / "processed"
        if all((legacy / f).is_file() for f in (tvd.MNIST.training_file, tvd.MNIST.test_file)):
            return []  # torchvision still reads the pre-0.9 processed files
        return super()._missing()

    def _open(self, split: str, download: bool = False) -> tvd.MNIST:
        return tvd.MNIST(str(self.root), train=split == "train", download=download)

    def _load(self, split: str) -> ArrayDataset:
        """All images of the split in memory: (N, 1, S, S) uint8, int64 labels 0..9."""
        xs, ys = [], []
        for part in self.splits[split]:
            ds = self._open_checked(part)
            xs.append(ds.data.unsqueeze(1))  # (N, 1, 28, 28) uint8
            ys.append(ds.targets.long())
        return ArrayDataset(resize_images(torch.cat(xs), self.image_size), torch.cat(ys))


class CIFAR10(_TorchvisionSource):
    """CIFAR-10 (Krizhevsky 2009): 32x32 colour images of 10 classes, resized to ``image_size``.

    Files: ``path/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}`` (the python
    version, as torchvision extracts it).

    Args:
        name: Dataset name, as in ``data=NAME``.
        path: Root directory holding ``cifar-10-batches-py``.
        image_size: Output size S (native 32; resized with antialiased bilinear interpolation).
        download: Download with torchvision when the files are missing.
        split: ``"all"`` (train + test, 60,000 images), ``"train"`` (50,000), ``"test"`` (10,000)
            or ``"official"`` (the 50,000 for training, the 10,000 test images held out).
    """

    title = "CIFAR-10"
    splits: ClassVar[dict[str, tuple[str, ...]]] = {
        "all": ("train", "test"), "train": ("train",), "test": ("test",), "official": ("train", "test"),
    }
    source_note = f"(the contents of {tvd.CIFAR10.url}, extracted)"

    def __init__(self, name: str = "cifar10", path: str | os.PathLike[str] = "data_cache",
                 image_size: int = 32, download: bool = False, split: str = "all") -> None:
        super().__init__(name, path, image_size, download, split)

    @property
    def spec(self) -> DataSpec:
        return DataSpec(kind="image", shape=(3, self.image_size, self.image_size), num_classes=10)

    def _required(self, split: str) -> list[Path]:
        files = tvd.CIFAR10.train_list if split == "train" else tvd.CIFAR10.test_list
        base = tvd.CIFAR10.base_folder
        return [Path(base, f) for f, _ in files] + [Path(base, tvd.CIFAR10.meta["filename"])]

    def _open(self, split: str, download: bool = False) -> tvd.CIFAR10:
        return tvd.CIFAR10(str(self.root), train=split == "train", download=download)

    def _load(self, split: str) -> ArrayDataset:
        """All images of the split in memory: (N, 3, S, S) uint8, int64 labels 0..9."""
        xs, ys = [], []
        for part in self.splits[split]:
            ds = self._open_checked(part)
            xs.append(torch.from_numpy(ds.data).permute(0, 3, 1, 2))  # (N, 32, 32, 3) -> (N, 3, 32, 32)
            ys.append(torch.as_tensor(ds.targets, dtype=torch.long))
        return ArrayDataset(resize_images(torch.cat(xs).contiguous(), self.image_size), torch.cat(ys))


class _CropResize:
    """PIL image -> center crop to ``crop_size`` squared -> resize to S x S -> float32 (3, S, S)."""

    def __init__(self, crop_size: int | None, image_size: int) -> None:
        self.crop_size = crop_size
        self.image_size = image_size

    def __call__(self, img: Image.Image) -> Tensor:
        img = img.convert("RGB")
        if self.crop_size is not None:
            img = TF.center_crop(img, [self.crop_size, self.crop_size])
        img = TF.resize(img, [self.image_size, self.image_size], antialias=True)  # PIL bilinear
        return TF.pil_to_tensor(img).float().div_(255.0)


class CelebAImages(Dataset):
    """Items of a torchvision CelebA, decoded per item: ``(x, -1)``.

    Args:
        celeba: The torchvision dataset (built with ``target_type=[]``).
        image_size: Output size S.
        crop_size: Side of the central square cropped before resizing (``None``: no crop).

    Items are ``x``: (3, S, S) float32 in [0, 1] and ``y``: int64 scalar -1 (unlabeled).
    """

    def __init__(self, celeba: tvd.CelebA, image_size: int, crop_size: int | None = 178) -> None:
        self.celeba = celeba
        self.celeba.transform = _CropResize(crop_size, image_size)

    def __len__(self) -> int:
        return len(self.celeba)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        x, _ = self.celeba[index]
        return x, torch.tensor(-1, dtype=torch.long)


class CelebA(_TorchvisionSource):
    """CelebA aligned faces (Liu et al. 2015), unlabeled, center-cropped to 178x178 and resized.

    The 178x178 center crop of the 178x218 aligned images, then resizing to ``image_size``, is the
    usual protocol for CelebA 64x64 (DCGAN, WGAN-GP, DDIM). Images are decoded per item (202,599
    JPEGs), so use ``data.num_workers > 0``.

    Files: ``path/celeba/img_align_celeba/*.jpg`` and ``path/celeba/{list_attr_celeba,
    identity_CelebA, list_bbox_celeba, list_landmarks_align_celeba, list_eval_partition}.txt``
    (torchvision reads all five annotation files even though the images are used unlabeled).

    Args:
        name: Dataset name, as in ``data=NAME``.
        path: Root directory holding ``celeba``.
        image_size: Output size S.
        download: Download with torchvision (needs ``pip install gdown``; Google Drive often refuses
            with a quota error, then fetch the files by hand).
        split: ``"all"`` (202,599 images), ``"train"`` (162,770), ``"valid"`` or ``"test"``
            (the official partition of ``list_eval_partition.txt``), or ``"official"`` (train for
            training, test held out).
        crop_size: Side of the central square cropped before resizing (``None``: resize the whole
            image, distorting the aspect ratio).
    """

    title = "CelebA"
    splits: ClassVar[dict[str, tuple[str, ...]]] = {
        **{s: (s,) for s in ("all", "train", "valid", "test")}, "official": ("train", "test"),
    }
    source_note = ("(from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html: Img/img_align_celeba.zip "
                   "extracted into celeba/, plus the Anno/*.txt and Eval/list_eval_partition.txt "
                   "files; the Kaggle copy ships .csv annotations, which torchvision cannot read)")

    def __init__(self, name: str = "celeba", path: str | os.PathLike[str] = "data_cache",
                 image_size: int = 64, download: bool = False, split: str = "all",
                 crop_size: int | None = 178) -> None:
        super().__init__(name, path, image_size, download, split)
        if crop_size is not None and crop_size < 1:
            raise ValueError(f"CelebA: data.source.crop_size must be >= 1 or null, got {crop_size}")
        self.crop_size = crop_size

    @property
    def spec(self) -> DataSpec:
        return DataSpec(kind="image", shape=(3, self.image_size, self.image_size))

    def _required(self, split: str) -> list[Path]:
        base = tvd.CelebA.base_folder
        txt = [Path(base, f) for _, _, f in tvd.CelebA.file_list if f.endswith(".txt")]
        return [Path(base, "img_align_celeba"), *txt]

    def _open(self, split: str, download: bool = False) -> tvd.CelebA:
        return tvd.CelebA(str(self.root), split=split, target_type=[], download=download)

    def _load(self, split: str) -> CelebAImages:
        """The split, decoded per item: (3, S, S) float32 in [0, 1], label -1."""
        ds = self._open_checked(split)
        image_dir = self.root / tvd.CelebA.base_folder / "img_align_celeba"
        absent = [f for f in (ds.filename[:1] + ds.filename[-1:]) if not (image_dir / f).is_file()]
        if absent:
            raise DatasetNotFoundError(
                f"CelebA: list_eval_partition.txt lists {absent[0]}, which is not in {image_dir}: "
                f"extract img_align_celeba.zip there (the folder must hold 000001.jpg..202599.jpg "
                f"directly, not in a nested img_align_celeba/ folder)"
            )
        return CelebAImages(ds, self.image_size, self.crop_size)
