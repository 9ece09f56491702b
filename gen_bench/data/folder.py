"""Any folder of images as an unlabeled dataset (searched recursively, resized and cropped square)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF
from tqdm.auto import tqdm

from gen_bench.data.arrays import ArrayDataset
from gen_bench.data.spec import DataSpec

__all__ = ["IMAGE_EXTENSIONS", "ImageFileDataset", "ImageFolderSource", "load_image", "scan_images"]

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".ppm", ".tif", ".tiff", ".webp")
CROPS = ("center", "stretch")
PRELOAD_LIMIT_BYTES = 2 * 1024**3  # preload=None keeps the decoded images in memory below this size
PROGRESS_MIN_FILES = 500  # show a progress bar from this many files on
_MAX_NAMED = 10  # skipped files named in the warning before "and N more"

T = TypeVar("T")


def scan_images(root: Path, extensions: Iterable[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Image files under ``root``, recursively, sorted by relative path (the dataset order).

    Files and folders whose name starts with ``.`` (``.DS_Store``, macOS ``._x.jpg``) are ignored;
    symbolic links to folders are followed.

    Args:
        root: Folder to search.
        extensions: File name endings to keep, case-insensitive (``".jpg"`` or ``"jpg"``).
    """
    exts = tuple("." + e.lower().lstrip(".") for e in extensions)
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [Path(dirpath, f) for f in filenames if not f.startswith(".") and f.lower().endswith(exts)]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode to RGB: 16-bit grey scaled to 8 bits, transparency composited onto white."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        grey = np.asarray(img).astype(np.float64) / 257.0  # 16-bit range -> 8-bit range
        img = Image.fromarray(grey.round().clip(0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return img.convert("RGB")


def load_image(path: str | os.PathLike[str], image_size: int, crop: str = "center") -> Tensor:
    """Decode one image file, convert it to RGB and make it ``image_size`` squared.

    Args:
        path: Image file (the first frame of an animation is used).
        image_size: Output size S.
        crop: ``"center"``: resize so the short side is S (antialiased bilinear), then take the
            central S x S square. ``"stretch"``: resize to S x S, ignoring the aspect ratio.

    Returns:
        (3, S, S) uint8 image.
    """
    with Image.open(path) as img:
        rgb = _to_rgb(img)
    if crop == "center":
        rgb = TF.center_crop(TF.resize(rgb, [image_size], antialias=True), [image_size, image_size])
    else:
        rgb = TF.resize(rgb, [image_size, image_size], antialias=True)
    return TF.pil_to_tensor(rgb)


def _decode(path: Path, image_size: int, crop: str) -> Tensor | str:
    """The decoded image, or why it could not be decoded."""
    try:
        return load_image(path, image_size, crop)
    except Exception as e:  # PIL raises many types for broken files; all mean "skip this file"
        return f"{type(e).__name__}: {e}"


def _check_header(path: Path) -> str | None:
    """``None`` when PIL recognises the file (header and, for PNG, chunk checksums), else why not."""
    try:
        with Image.open(path) as img:
            img.verify()
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return None


def _map_files(fn: Callable[[Path], T], files: Sequence[Path], desc: str) -> Iterator[T]:
    """``fn`` over ``files`` in order, on threads (PIL decodes without the GIL), with progress."""
    workers = min(16, os.cpu_count() or 1, max(1, len(files) // 32))
    bar = tqdm(total=len(files), desc=desc, unit="img", disable=len(files) < PROGRESS_MIN_FILES)
    with bar, ThreadPoolExecutor(max_workers=workers) as pool:
        for result in pool.map(fn, files):
            bar.update()
            yield result


class ImageFileDataset(Dataset):
    """Image files decoded per item.

    Args:
        files: Image files.
        image_size: Output size S.
        crop: See :func:`load_image`.

    Items are ``x``: (3, S, S) float32 in [0, 1] and ``y``: int64 scalar -1 (unlabeled).
    """

    def __init__(self, files: Sequence[str | os.PathLike[str]], image_size: int,
                 crop: str = "center") -> None:
        self.files = [str(f) for f in files]
        self.image_size = image_size
        self.crop = crop

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        path = self.files[index]
        try:
            x = load_image(path, self.image_size, self.crop)
        except Exception as e:
            raise RuntimeError(
                f"could not decode {path} ({type(e).__name__}: {e}); the scan at load time checks only "
                f"headers of folders too large to preload: delete or replace the file"
            ) from e
        return x.float().div_(255.0), torch.tensor(-1, dtype=torch.long)


class ImageFolderSource:
    """Every image under a folder (recursively), RGB, ``image_size`` squared, unlabeled.

    Unreadable files are skipped with one ``UserWarning`` that counts and names them. Small folders
    (the decoded uint8 images under 2 GiB: about 170,000 images at 64 px) are decoded once, on all
    CPU cores, into an in-memory :class:`ArrayDataset`; larger ones are decoded per item (set
    ``data.num_workers > 0``), after a scan that checks each file's header.

    Args:
        name: Dataset name, as in ``data=NAME``.
        path: Folder to search.
        image_size: Output size S.
        crop: ``"center"`` (resize the short side to S, then take the central square) or
            ``"stretch"`` (resize to S x S, ignoring the aspect ratio).
        extensions: File name endings taken as images, case-insensitive.
        preload: Decode everything into memory at load (``True``), per item (``False``), or decide
            by size (``None``).
    """

    def __init__(self, name: str = "image_folder", path: str | os.PathLike[str] | None = None,
                 image_size: int = 64, crop: str = "center",
                 extensions: Sequence[str] = IMAGE_EXTENSIONS, preload: bool | None = None) -> None:
        if path is None:
            raise ValueError("ImageFolderSource needs a folder: set data.path=DIR")
        if image_size < 1:
            raise ValueError(f"data.image_size must be >= 1, got {image_size}")
        if crop not in CROPS:
            raise ValueError(f"unknown crop {crop!r}; valid crops are {list(CROPS)} (set data.source.crop)")
        if isinstance(extensions, str) or not extensions:
            raise ValueError(f"data.source.extensions must be a non-empty list such as [.jpg, .png], "
                             f"got {extensions!r}")
        self.name = name
        self.path = str(path)
        self.image_size = image_size
        self.crop = crop
        self.extensions = tuple(str(e) for e in extensions)
        self.preload = preload

    @property
    def root(self) -> Path:
        """The folder searched (``path`` with ``~`` expanded, made absolute)."""
        return Path(self.path).expanduser().absolute()

    @property
    def spec(self) -> DataSpec:
        return DataSpec(kind="image", shape=(3, self.image_size, self.image_size))

    def prepare(self) -> None:
        """Local files: nothing to download."""

    def _files(self) -> list[Path]:
        root = self.root
        if not root.is_dir():
            what = "is a file, not a folder" if root.exists() else "does not exist"
            raise FileNotFoundError(f"image folder {root} {what}: set data.path=DIR to a folder of images")
        files = scan_images(root, self.extensions)
        if not files:
            raise FileNotFoundError(
                f"no image files under {root} (searched recursively for {', '.join(self.extensions)}): "
                f"set data.path=DIR to a folder of images, or give their endings, e.g. "
                f"'++data.source.extensions=[.pgm,.jp2]'"
            )
        return files

    def _warn_skipped(self, skipped: list[tuple[Path, str]]) -> None:
        if not skipped:
            return
        names = ", ".join(p.relative_to(self.root).as_posix() for p, _ in skipped[:_MAX_NAMED])
        more = f" and {len(skipped) - _MAX_NAMED} more" if len(skipped) > _MAX_NAMED else ""
        warnings.warn(
            f"skipped {len(skipped)} unreadable image file(s) under {self.root}: {names}{more} "
            f"(first error: {skipped[0][1]}); delete or replace them to silence this warning",
            UserWarning, stacklevel=3,
        )

    def _no_readable(self, n: int) -> FileNotFoundError:
        return FileNotFoundError(f"none of the {n} image files under {self.root} could be read: "
                                 f"set data.path=DIR to a folder of readable images")

    def load(self) -> ArrayDataset | ImageFileDataset:
        """Scan the folder and return its images: in memory when small, else decoded per item."""
        files = self._files()
        s = self.image_size
        preload = self.preload
        if preload is None:
            preload = len(files) * 3 * s * s < PRELOAD_LIMIT_BYTES
        skipped: list[tuple[Path, str]] = []
        if preload:
            x = torch.empty((len(files), 3, s, s), dtype=torch.uint8)
            n = 0
            results = _map_files(lambda p: _decode(p, s, self.crop), files, f"decoding {self.root}")
            for path, result in zip(files, results, strict=True):
                if isinstance(result, str):
                    skipped.append((path, result))
                else:
                    x[n] = result
                    n += 1
            self._warn_skipped(skipped)
            if n == 0:
                raise self._no_readable(len(files))
            return ArrayDataset(x[:n].clone() if n < len(files) else x)
        errors = _map_files(_check_header, files, f"scanning {self.root}")
        good = []
        for path, error in zip(files, errors, strict=True):
            if error is None:
                good.append(path)
            else:
                skipped.append((path, error))
        self._warn_skipped(skipped)
        if not good:
            raise self._no_readable(len(files))
        return ImageFileDataset(good, s, self.crop)
