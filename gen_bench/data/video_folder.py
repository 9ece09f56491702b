"""Clips from files: any folder of videos or of frame folders, and UCF101.

A *clip source* under a folder is either a video file (decoded with PyAV; animated GIFs with PIL)
or a folder holding frame images (its frames in file-name order). From each, ``clips_per_video``
windows of T frames are taken, frame ``start + w * T * stride + i * stride`` for window w and
frame i: decoding stops after the last frame needed. Frames are made RGB (or grey), their short
side resized to S (antialiased bilinear) and the central S x S square kept, as for image folders.

Unreadable sources, and those too short for one window, are skipped with one ``UserWarning`` that
counts and names them (as :class:`~gen_bench.data.folder.ImageFolderSource` does for images).

PyAV (``pip install av``) decodes video files: torchvision >= 0.25 has no ``read_video`` any more.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageSequence
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from gen_bench.data.arrays import ArrayDataset
from gen_bench.data.folder import _MAX_NAMED, CROPS, IMAGE_EXTENSIONS, _map_files, _to_rgb
from gen_bench.data.spec import DataSpec

__all__ = ["FRAME_EXTENSIONS", "VIDEO_EXTENSIONS", "UCF101", "VideoFolderSource", "decode_clips",
           "scan_clips"]

VIDEO_EXTENSIONS = (".avi", ".gif", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".webm")
FRAME_EXTENSIONS = tuple(e for e in IMAGE_EXTENSIONS if e != ".gif")  # an animated GIF is a video


def _has_ext(name: str, exts: Sequence[str]) -> bool:
    return not name.startswith(".") and name.lower().endswith(tuple(exts))


def scan_clips(root: Path, video_extensions: Sequence[str] = VIDEO_EXTENSIONS,
               frame_extensions: Sequence[str] = FRAME_EXTENSIONS) -> list[Path]:
    """Clip sources under ``root``, recursively, sorted by relative path: video files, and folders
    that directly hold frame images (their sub-folders are searched too). Hidden names are ignored."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [Path(dirpath, f) for f in filenames if _has_ext(f, video_extensions)]
        if any(_has_ext(f, frame_extensions) for f in filenames):
            found.append(Path(dirpath))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _fit(img: Image.Image, size: int, crop: str, channels: int) -> Tensor:
    """One frame -> (C, S, S) uint8, resized and cropped as ``gen_bench.data.folder.load_image``."""
    img = _to_rgb(img)
    if crop == "center":
        img = TF.center_crop(TF.resize(img, [size], antialias=True), [size, size])
    else:
        img = TF.resize(img, [size, size], antialias=True)
    if channels == 1:
        img = img.convert("L")
    return TF.pil_to_tensor(img)


def _frames_of_folder(path: Path, wanted: set[int], last: int, extensions: Sequence[str]):
    files = sorted(f for f in os.listdir(path) if _has_ext(f, extensions))
    for i, name in enumerate(files[: last + 1]):
        if i in wanted:
            with Image.open(path / name) as img:
                img.load()
                yield i, img.copy()


def _frames_of_gif(path: Path, wanted: set[int], last: int):
    with Image.open(path) as img:
        for i, frame in enumerate(ImageSequence.Iterator(img)):
            if i > last:
                break
            if i in wanted:
                yield i, frame.convert("RGB")


def _frames_of_video(path: Path, wanted: set[int], last: int):
    try:
        import av
    except ImportError as e:
        raise ImportError("decoding video files needs PyAV: pip install av (torchvision no longer "
                          "decodes video)") from e
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        for i, frame in enumerate(container.decode(video=0)):
            if i > last:
                break
            if i in wanted:
                yield i, frame.to_image()


def decode_clips(path: str | os.PathLike[str], frames: int, stride: int = 1, start: int = 0,
                 clips_per_video: int = 1, image_size: int = 64, crop: str = "center",
                 channels: int = 3, frame_extensions: Sequence[str] = FRAME_EXTENSIONS) -> Tensor:
    """Windows of ``frames`` frames, ``stride`` apart, from one video file or frame folder.

    Window w holds frames ``start + w * frames * stride + i * stride``, i < ``frames``; windows that
    run past the end of the clip are dropped.

    Returns:
        (W, C, T, S, S) uint8, W >= 1.

    Raises:
        ValueError: When the clip is too short for one window (or has no frames).
        Exception: Whatever the decoder raises for a broken file.
    """
    path = Path(path)
    span = frames * stride
    wanted = {start + w * span + i * stride for w in range(clips_per_video) for i in range(frames)}
    last = max(wanted)
    if path.is_dir():
        source = _frames_of_folder(path, wanted, last, frame_extensions)
    elif path.suffix.lower() == ".gif":
        source = _frames_of_gif(path, wanted, last)
    else:
        source = _frames_of_video(path, wanted, last)
    got = {i: _fit(img, image_size, crop, channels) for i, img in source}
    n_windows = 0
    while n_windows < clips_per_video and all(
            start + n_windows * span + i * stride in got for i in range(frames)):
        n_windows += 1
    if n_windows == 0:
        seen = max(got, default=-1) + 1
        raise ValueError(f"too short: {seen} frame(s) read, a window of {frames} frames at stride {stride} "
                         f"from frame {start} needs {start + (frames - 1) * stride + 1}")
    clips = [torch.stack([got[start + w * span + i * stride] for i in range(frames)], 1)  # (C, T, S, S)
             for w in range(n_windows)]
    return torch.stack(clips)


def _warn_skipped(skipped: list[tuple[Path, str]], root: Path) -> None:
    if not skipped:
        return
    names = ", ".join(p.relative_to(root).as_posix() for p, _ in skipped[:_MAX_NAMED])
    more = f" and {len(skipped) - _MAX_NAMED} more" if len(skipped) > _MAX_NAMED else ""
    warnings.warn(
        f"skipped {len(skipped)} unreadable video clip(s) under {root}: {names}{more} "
        f"(first error: {skipped[0][1]}); delete or replace them to silence this warning",
        UserWarning, stacklevel=3,
    )


def _decode_all(paths: Sequence[Path], root: Path, desc: str, **kwargs) -> tuple[list[Tensor], list[int]]:
    """Decode every source on threads; (windows per readable source, their indices in ``paths``)."""

    def decode(p: Path) -> Tensor | str:
        try:
            return decode_clips(p, **kwargs)
        except Exception as e:  # decoders raise many types for broken files; all mean "skip it"
            return f"{type(e).__name__}: {e}"

    clips, kept, skipped = [], [], []
    for i, (path, result) in enumerate(zip(paths, _map_files(decode, paths, desc), strict=True)):
        if isinstance(result, str):
            skipped.append((path, result))
        else:
            clips.append(result)
            kept.append(i)
    _warn_skipped(skipped, root)
    if not clips:
        raise FileNotFoundError(f"none of the {len(paths)} clip(s) under {root} could be read "
                                f"(first error: {skipped[0][1]})")
    return clips, kept


class VideoFolderSource:
    """Every clip under a folder (recursively): video files and folders of frame images, unlabeled.

    Decoded once into memory (uint8), on threads.

    Args:
        name: Dataset name, as in ``data=NAME``.
        path: Folder to search (``data.path``).
        image_size: Frame side S.
        frames: Frames per clip T.
        stride: Take every ``stride``-th frame.
        start: First frame taken.
        clips_per_video: Consecutive windows of T * stride frames taken from each source.
        channels: 3 (RGB) or 1 (grey).
        crop: ``center`` (short side to S, central square) or ``stretch``.
        video_extensions: File endings decoded as videos.
        frame_extensions: File endings of frame images in frame folders.
    """

    def __init__(self, name: str = "video_folder", path: str | os.PathLike[str] | None = None,
                 image_size: int = 32, frames: int = 16, stride: int = 1, start: int = 0,
                 clips_per_video: int = 1, channels: int = 3, crop: str = "center",
                 video_extensions: Sequence[str] = VIDEO_EXTENSIONS,
                 frame_extensions: Sequence[str] = FRAME_EXTENSIONS) -> None:
        if image_size < 1 or frames < 1 or stride < 1 or start < 0 or clips_per_video < 1:
            raise ValueError("video_folder needs image_size, frames, stride, clips_per_video >= 1 and "
                             "start >= 0")
        if channels not in (1, 3):
            raise ValueError(f"data.source.channels must be 1 or 3, got {channels}")
        if crop not in CROPS:
            raise ValueError(f"unknown crop {crop!r}; valid crops are {list(CROPS)}")
        self.name = name
        self.path = None if path is None else str(path)
        self.image_size = image_size
        self.frames = frames
        self.stride = stride
        self.start = start
        self.clips_per_video = clips_per_video
        self.channels = channels
        self.crop = crop
        self.video_extensions = tuple(str(e) for e in video_extensions)
        self.frame_extensions = tuple(str(e) for e in frame_extensions)

    @property
    def spec(self) -> DataSpec:
        return DataSpec(kind="video", shape=(self.channels, self.frames, self.image_size, self.image_size))

    @property
    def root(self) -> Path:
        if self.path is None:
            raise ValueError("video_folder needs a folder: set data.path=DIR")
        return Path(self.path).expanduser().absolute()

    def prepare(self) -> None:
        """Local files: nothing to download."""

    def decode_options(self) -> dict:
        return {"frames": self.frames, "stride": self.stride, "start": self.start,
                "clips_per_video": self.clips_per_video, "image_size": self.image_size, "crop": self.crop,
                "channels": self.channels, "frame_extensions": self.frame_extensions}

    def load(self) -> ArrayDataset:
        root = self.root
        if not root.is_dir():
            what = "is a file, not a folder" if root.exists() else "does not exist"
            raise FileNotFoundError(f"video folder {root} {what}: set data.path=DIR to a folder of clips")
        paths = scan_clips(root, self.video_extensions, self.frame_extensions)
        if not paths:
            raise FileNotFoundError(f"no clips under {root} (video files {', '.join(self.video_extensions)} "
                                    f"or folders of frame images), searched recursively")
        clips, _ = _decode_all(paths, root, f"decoding {root}", **self.decode_options())
        return ArrayDataset(torch.cat(clips))


class UCF101:
    """UCF101 (Soomro et al. 2012): 13,320 videos of 101 actions, labeled 0..100 by class.

    Expects ``path/UCF-101/<Class>/v_<Class>_gXX_cYY.avi`` and the official split lists in
    ``path/ucfTrainTestlist/`` (``classInd.txt``, ``trainlist0K.txt``, ``testlist0K.txt``).

    Backends:

    * ``torchvision``: ``torchvision.datasets.UCF101`` (one window per video, from its first frame);
      it needs torchcodec and FFmpeg's shared libraries.
    * ``pyav``: the same files and split lists decoded by :func:`decode_clips` with PyAV.
    * ``auto``: torchvision when torchcodec imports, else pyav.

    Args:
        name: Dataset name.
        path: Root holding ``UCF-101/`` and ``ucfTrainTestlist/``.
        image_size: Frame side S.
        frames: Frames per clip T.
        stride: Take every ``stride``-th frame.
        fold: Official split 1, 2 or 3.
        split: ``train``, ``test`` or ``all`` (the datamodule holds out its own split).
        channels: 3 or 1.
        backend: ``auto``, ``torchvision`` or ``pyav``.
        clips_per_video: Windows per video (pyav backend).
    """

    NUM_CLASSES = 101
    SPLITS = ("train", "test", "all")
    BACKENDS = ("auto", "torchvision", "pyav")

    def __init__(self, name: str = "ucf101", path: str | os.PathLike[str] | None = None, image_size: int = 32,
                 frames: int = 16, stride: int = 2, fold: int = 1, split: str = "all", channels: int = 3,
                 backend: str = "auto", clips_per_video: int = 1) -> None:
        if split not in self.SPLITS:
            raise ValueError(f"unknown UCF101 split {split!r}; valid: {list(self.SPLITS)}")
        if backend not in self.BACKENDS:
            raise ValueError(f"unknown UCF101 backend {backend!r}; valid: {list(self.BACKENDS)}")
        if fold not in (1, 2, 3):
            raise ValueError(f"UCF101 folds are 1, 2, 3; got {fold}")
        self.name = name
        self.path = path
        self.image_size = image_size
        self.frames = frames
        self.stride = stride
        self.fold = fold
        self.split = split
        self.channels = channels
        self.backend = backend
        self.clips_per_video = clips_per_video

    @property
    def spec(self) -> DataSpec:
        return DataSpec(kind="video", shape=(self.channels, self.frames, self.image_size, self.image_size),
                        num_classes=self.NUM_CLASSES)

    @property
    def video_root(self) -> Path:
        return Path(self.path or ".").expanduser().absolute() / "UCF-101"

    @property
    def list_root(self) -> Path:
        return Path(self.path or ".").expanduser().absolute() / "ucfTrainTestlist"

    def prepare(self) -> None:
        """Checks the files are there: UCF101 is not downloaded automatically (6.5 GB of .rar)."""
        missing = [p for p in (self.video_root, self.list_root) if not p.is_dir()]
        if self.path is None or missing:
            raise FileNotFoundError(
                f"UCF101 not found: expected {self.video_root} and {self.list_root}. Download UCF101.rar and "
                "UCF101TrainTestSplits-RecognitionTask.zip from https://www.crcv.ucf.edu/data/UCF101.php, "
                "unpack both into one folder and set data.path=FOLDER")

    def _resolved_backend(self) -> str:
        if self.backend != "auto":
            return self.backend
        try:
            import torchcodec  # noqa: F401
        except Exception:  # not installed, or FFmpeg's libraries missing
            return "pyav"
        return "torchvision"

    def _listed(self) -> list[str]:
        """Relative paths ``Class/v_....avi`` of the chosen split, in list order."""
        kinds = ("train", "test") if self.split == "all" else (self.split,)
        rel: list[str] = []
        for kind in kinds:
            with open(self.list_root / f"{kind}list0{self.fold}.txt") as f:
                rel += [line.split()[0] for line in f if line.strip()]
        return rel

    def _classes(self) -> list[str]:
        root = self.video_root
        classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if len(classes) != self.NUM_CLASSES:
            warnings.warn(f"{self.video_root} has {len(classes)} class folders, not {self.NUM_CLASSES}",
                          UserWarning, stacklevel=3)
        return classes

    def load(self) -> ArrayDataset:
        self.prepare()
        if self._resolved_backend() == "torchvision":
            return self._load_torchvision()
        classes = {c: i for i, c in enumerate(self._classes())}
        rel = self._listed()
        paths = [self.video_root / r for r in rel]
        opts = {"frames": self.frames, "stride": self.stride, "clips_per_video": self.clips_per_video,
                "image_size": self.image_size, "channels": self.channels}
        clips, kept = _decode_all(paths, self.video_root, f"decoding {self.video_root}", **opts)
        labels = [torch.full((c.shape[0],), classes[rel[i].split("/")[0]], dtype=torch.long)
                  for c, i in zip(clips, kept, strict=True)]
        return ArrayDataset(torch.cat(clips), torch.cat(labels))

    def _load_torchvision(self) -> ArrayDataset:
        from torchvision.datasets import UCF101 as TorchvisionUCF101

        span = (self.frames - 1) * self.stride + 1
        parts = [TorchvisionUCF101(str(self.video_root), str(self.list_root), frames_per_clip=span,
                                   step_between_clips=10**9, fold=self.fold, train=train,
                                   output_format="TCHW")  # one window per video, from frame 0
                 for train in ((True, False) if self.split == "all" else (self.split == "train",))]
        xs, ys = [], []
        for ds in parts:
            for i in range(len(ds)):
                video, _, label = ds[i]  # (span, C, H, W) uint8
                frames = [_fit(Image.fromarray(np.asarray(f.permute(1, 2, 0))), self.image_size, "center",
                               self.channels) for f in video[:: self.stride]]
                xs.append(torch.stack(frames, 1))
                ys.append(int(label))
        return ArrayDataset(torch.stack(xs), torch.tensor(ys, dtype=torch.long))
