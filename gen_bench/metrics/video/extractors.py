"""The video extractor registry (``eval.video.extractor``) and the FVD network, I3D.

Video extractors take whole clips (N, C, T, H, W) where image extractors take frames, so they have
a registry of their own; each registers itself where it is defined (``i3d`` here, ``random3d`` and
``trained3d`` in :mod:`gen_bench.metrics.video.conv3d`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from gen_bench.assets import ASSETS, assets_dirs, sha256_of
from gen_bench.metrics.extractors import ExtractorRequest, FeatureExtractor, construct
from gen_bench.metrics.registry import VIDEO_EXTRACTORS
from gen_bench.metrics.settings import EvalSettings

#: Decorator: register ``builder(request) -> FeatureExtractor`` as ``eval.video.extractor=name``.
register_video_extractor = VIDEO_EXTRACTORS.register


def clip_batch(x: Tensor) -> Tensor:
    """``x`` as float32 (N, C, T, H, W) clips, or a clear error."""
    if x.ndim != 5:
        raise ValueError(f"video extractors take (N, C, T, H, W) clips, got shape {tuple(x.shape)}")
    return x.float()


def find_i3d_weights(settings: EvalSettings) -> Path | None:
    """``eval.video.i3d_weights`` if set (whether or not it exists), else the file in an assets folder."""
    if settings.video.i3d_weights:
        return Path(settings.video.i3d_weights).expanduser()
    found = [d / ASSETS["i3d"].filename for d in assets_dirs(settings.assets_dir)]
    return next((p for p in found if p.is_file()), None)


def auto_video_extractor(settings: EvalSettings) -> str:
    """``i3d`` when its weights are on disk, else ``trained3d``."""
    path = find_i3d_weights(settings)
    return "i3d" if path is not None and path.is_file() else "trained3d"


def build_video_extractor(name: str, request: ExtractorRequest) -> FeatureExtractor:
    """Build a registered video extractor (``auto`` resolved) on ``request.device``, leaving the
    global RNG as it was.

    Raises:
        ValueError: For an unknown name, listing the registered ones.
    """
    if name == "auto":
        name = auto_video_extractor(request.settings)
    builder = VIDEO_EXTRACTORS.lookup(name)
    if request.spec.kind != "video":
        raise ValueError(f"video extractors need video data, got {request.spec.kind}")
    return construct(builder, request)


class I3DExtractor(FeatureExtractor):
    """The FVD network: Kinetics-400 I3D as a TorchScript file, called as StyleGAN-V does
    (``rescale=False, resize=True, return_features=True`` on clips in [-1, 1]).

    Args:
        weights: The ``i3d_torchscript.pt`` file.
        min_frames: Clips shorter than this are padded by repeating their first and last frames.
        max_batch: Clips per forward pass.
    """

    name = "i3d"

    def __init__(self, weights: str | Path, min_frames: int = 9, max_batch: int = 16) -> None:
        super().__init__()
        self.path = Path(weights)
        self.model = torch.jit.load(str(self.path), map_location="cpu").eval()
        self.min_frames = min_frames
        self.max_batch = max_batch
        self._sha = sha256_of(self.path)
        self.preprocessing = (f"x*2-1, grey->RGB, edge-padded to >= {min_frames} frames, "
                              "rescale=False resize=True return_features=True")
        with torch.no_grad():  # the feature size, from the network itself
            self.feature_dim = int(self._run(torch.zeros(1, 3, min_frames, 32, 32)).shape[1])

    def _run(self, x: Tensor) -> Tensor:
        return self.model(x, rescale=False, resize=True, return_features=True).float().flatten(1)

    def features(self, x: Tensor) -> dict[str, Tensor]:
        x = clip_batch(x) * 2 - 1
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1, -1)
        t = x.shape[2]
        if t < self.min_frames:
            before = (self.min_frames - t) // 2
            after = self.min_frames - t - before
            x = torch.cat([x[:, :, :1].expand(-1, -1, before, -1, -1), x,
                           x[:, :, -1:].expand(-1, -1, after, -1, -1)], 2)
        return {"pool": self._run(x.contiguous())}

    def weights_sha256(self) -> str:
        return self._sha


@register_video_extractor("i3d")
def _i3d(request: ExtractorRequest) -> FeatureExtractor:
    s = request.settings
    path = find_i3d_weights(s)
    if path is None or not path.is_file():
        where = f"{path} does not exist" if path is not None else "no file given"
        raise FileNotFoundError(
            f"the I3D weights for FVD are not available ({where}). Fetch {ASSETS['i3d'].url} "
            f"(the TorchScript I3D of StyleGAN-V) where there is internet and pass "
            f"eval.video.i3d_weights=PATH, or put it in an assets folder (gen-bench assets fetch --to DIR; "
            f"eval.assets_dir=DIR). Offline, use eval.video.extractor=trained3d (a 3-D CNN trained on the "
            f"data, cached) or random3d.")
    return I3DExtractor(path, s.video.i3d_min_frames, min(s.video.max_batch, 16))
