"""DINOv2 ViT features (Oquab et al. 2023), for users with the weights on disk; Stein et al. (2023)
found FD in DINOv2 space to agree with human judgement better than FID.

The network is the official one, built by ``torch.hub.load(CODE_DIR, "dinov2_<model>",
source="local", pretrained=False)`` from a copy of the DINOv2 source (github.com/facebookresearch/
dinov2; torch's hub cache keeps one at ``<hub dir>/facebookresearch_dinov2_main`` after any
``torch.hub.load("facebookresearch/dinov2", ...)``), with the weights file
``dinov2_<model>_pretrain.pth`` loaded into it. Nothing is downloaded here: a missing file or
source folder stops the evaluation with an error naming it, its URL and what to pass.

Preprocessing follows torch-fidelity's ``dinov2-vit-*`` extractor: images quantised to uint8, grey
repeated to RGB, TF1-compatible bilinear resize to 224 x 224, ImageNet mean / std; the features are
the class token (384-d for ViT-S/14).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from gen_bench.assets import assets_dirs, sha256_of
from gen_bench.metrics.extractors import ExtractorRequest, FeatureExtractor, register_extractor, rgb_255
from gen_bench.metrics.settings import EvalSettings

MODELS = ("vits14", "vitb14", "vitl14", "vitg14")
URL = "https://dl.fbaipublicfiles.com/dinov2/dinov2_{model}/dinov2_{model}_pretrain.pth"
HUB_REPO_DIR = "facebookresearch_dinov2_main"  # where torch.hub keeps the source of facebookresearch/dinov2
INPUT_SIZE = 224
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class DinoV2NotFound(FileNotFoundError):
    """The DINOv2 weights or source are not on this machine."""


def weights_filename(model: str) -> str:
    return f"dinov2_{model}_pretrain.pth"


def _check_model(model: str) -> None:
    if model not in MODELS:
        raise ValueError(f"unknown eval.dinov2.model {model!r}; valid: {', '.join(MODELS)}")


def weight_candidates(settings: EvalSettings) -> list[Path]:
    """Every place searched for the weights file, in order."""
    model = settings.dinov2.model
    if settings.dinov2.weights:
        return [Path(settings.dinov2.weights).expanduser()]
    hub = Path(torch.hub.get_dir())
    return [*(d / weights_filename(model) for d in assets_dirs(settings.assets_dir)),
            hub / "checkpoints" / weights_filename(model)]


def code_candidates(settings: EvalSettings) -> list[Path]:
    """Every place searched for the DINOv2 source (a folder with ``hubconf.py``), in order."""
    if settings.dinov2.code_dir:
        return [Path(settings.dinov2.code_dir).expanduser()]
    hub = Path(torch.hub.get_dir()) / HUB_REPO_DIR
    return [*(d / HUB_REPO_DIR for d in assets_dirs(settings.assets_dir)), hub]


def require_dinov2(settings: EvalSettings) -> tuple[Path, Path]:
    """(weights file, source folder), or :class:`DinoV2NotFound` saying what to fetch and pass."""
    model = settings.dinov2.model
    _check_model(model)
    weights = next((p for p in weight_candidates(settings) if p.is_file()), None)
    code = next((p for p in code_candidates(settings) if (p / "hubconf.py").is_file()), None)
    missing = []
    if weights is None:
        searched = "\n".join(f"    {p}" for p in weight_candidates(settings))
        missing.append(f"the weights file {weights_filename(model)} (official: {URL.format(model=model)}; "
                       f"`gen-bench assets fetch --to DIR --only dinov2_vits14` fetches ViT-S/14), then "
                       f"eval.dinov2.weights=PATH or eval.assets_dir=DIR. Searched:\n{searched}")
    if code is None:
        searched = "\n".join(f"    {p}" for p in code_candidates(settings))
        missing.append(f"the DINOv2 source, a folder with hubconf.py (git clone "
                       f"https://github.com/facebookresearch/dinov2 DIR), then eval.dinov2.code_dir=DIR. "
                       f"Searched:\n{searched}")
    if missing:
        raise DinoV2NotFound("eval.extractor=dinov2 needs\n- " + "\n- ".join(missing)
                             + "\nNothing is downloaded during an evaluation.")
    return weights, code


class DinoV2Extractor(FeatureExtractor):
    """Class-token features of a DINOv2 ViT (see the module docstring).

    Args:
        weights: The ``dinov2_<model>_pretrain.pth`` file.
        code_dir: The DINOv2 source folder (``hubconf.py``).
        model: One of :data:`MODELS`.
        max_batch: Images per forward pass.
    """

    name = "dinov2"
    version = "dinov2-official-torchhub"
    preprocessing = ("uint8 (rounded), grey to RGB, TF1-compatible bilinear resize to 224x224, "
                     "ImageNet mean/std")

    def __init__(self, weights: str | Path, code_dir: str | Path, model: str = "vits14",
                 max_batch: int = 64) -> None:
        super().__init__()
        _check_model(model)
        self.model_name = model
        self.net = torch.hub.load(str(code_dir), f"dinov2_{model}", source="local", pretrained=False)
        self.net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.feature_dim = int(self.net.embed_dim)
        self.max_batch = max_batch
        self._sha = sha256_of(weights)
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1) * 255, persistent=False)

    def features(self, x: Tensor) -> dict[str, Tensor]:
        from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

        x = rgb_255(x, "DINOv2")  # as torch-fidelity's uint8 input
        x = interpolate_bilinear_2d_like_tensorflow1x(x, size=(INPUT_SIZE, INPUT_SIZE), align_corners=False)
        return {"pool": self.net((x - self.mean) / self.std).float()}

    def describe(self) -> dict:
        return {**super().describe(), "model": f"dinov2_{self.model_name}"}


@register_extractor("dinov2")
def dinov2_extractor(request: ExtractorRequest) -> DinoV2Extractor:
    """DINOv2 from the weights and source on disk (:func:`require_dinov2`)."""
    settings = request.settings
    weights, code = require_dinov2(settings)
    return DinoV2Extractor(weights, code, settings.dinov2.model, settings.dinov2.max_batch)
