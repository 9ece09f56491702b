"""The feature extractor base class, its registry, and the extractors that need nothing else.

An extractor maps a batch of samples in gen-bench's format (float32 images N C H W in [0, 1], or
(N, 2) points) to a dict of features: ``"pool"`` (N, d) for the distance metrics and, for
classifiers, ``"logits"`` (N, k) for the Inception Score and mode counting. The evaluator runs each
extractor once per batch and hands the dict to every metric.

Registered extractors (each where it is defined; :mod:`gen_bench.metrics` imports them all):

* ``inception``: the standard FID Inception-v3 (torch-fidelity's weights through torchmetrics);
  2048-d pool features and 1008 logits (:mod:`gen_bench.metrics.inception`).
* ``classifier``: a small CNN trained on the dataset's own labels, cached; the offline default for
  labeled data (:mod:`gen_bench.metrics.classifier`).
* ``random``: a seeded, randomly initialised conv net; the last resort for unlabeled data offline.
* ``identity``: the samples themselves, flattened (2-D toy data).
* ``dinov2``: DINOv2 ViT class tokens, from weights and source on disk (:mod:`gen_bench.metrics.dinov2`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gen_bench.data.spec import DataSpec
from gen_bench.metrics.cache import state_sha256
from gen_bench.metrics.registry import EXTRACTORS
from gen_bench.metrics.settings import EvalSettings


class FeatureExtractor(nn.Module):
    """Base class: chunked, gradient-free, always in eval mode.

    Subclasses set :attr:`name`, :attr:`version`, :attr:`feature_dim`, :attr:`num_logits` and
    :attr:`preprocessing`, and implement :meth:`features` for one chunk.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    feature_dim: int
    num_logits: int | None = None
    preprocessing: str = "none"
    max_batch: int = 1024

    def features(self, x: Tensor) -> dict[str, Tensor]:
        """Features of one chunk of at most :attr:`max_batch` samples."""
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Features of any number of samples: ``{"pool": (N, d) float32[, "logits": (N, k)]}``."""
        self.eval()
        parts = [self.features(x[i : i + self.max_batch]) for i in range(0, x.shape[0], self.max_batch)]
        if not parts:
            out = {"pool": x.new_zeros(0, self.feature_dim)}
            if self.num_logits:
                out["logits"] = x.new_zeros(0, self.num_logits)
            return out
        return {k: torch.cat([p[k] for p in parts]).float() for k in parts[0]}

    def train(self, mode: bool = True) -> FeatureExtractor:
        return super().train(False)  # BatchNorm statistics never move

    @property
    def device(self) -> torch.device:
        """Where the extractor runs (CPU for one without parameters)."""
        return next(iter(self.parameters()), torch.empty(0)).device

    def weights_sha256(self) -> str:
        """sha256 identifying the weights (of the weights file where there is one)."""
        if getattr(self, "_sha", None) is None:
            self._sha = state_sha256(self.state_dict())
        return self._sha

    def describe(self) -> dict[str, Any]:
        """How features are made: the extractor part of every score's protocol."""
        return {"name": self.name, "version": self.version, "weights_sha256": self.weights_sha256(),
                "feature_dim": self.feature_dim, "num_logits": self.num_logits,
                "preprocessing": self.preprocessing}


@dataclass
class ExtractorRequest:
    """What a builder gets: the data spec, the datamodule (for a classifier's training data), the
    evaluation settings (each builder reads its own section) and the device."""

    spec: DataSpec
    datamodule: Any
    settings: EvalSettings
    device: torch.device = torch.device("cpu")


ExtractorBuilder = Callable[[ExtractorRequest], FeatureExtractor]

#: Decorator: register ``builder(request) -> FeatureExtractor`` as ``eval.extractor=name``.
register_extractor = EXTRACTORS.register


def construct(builder: ExtractorBuilder, request: ExtractorRequest) -> FeatureExtractor:
    """``builder(request)`` on ``request.device``, leaving the global RNG as it was (layer
    constructors draw default initialisations)."""
    with torch.random.fork_rng(devices=[]):
        return builder(request).to(request.device)


def build_extractor(name: str, request: ExtractorRequest) -> FeatureExtractor:
    """Build a registered extractor on ``request.device``, leaving the global RNG as it was.

    Raises:
        ValueError: For an unknown name, listing the registered ones.
    """
    return construct(EXTRACTORS.lookup(name), request)


def image_batch(x: Tensor) -> Tensor:
    """``x`` as float32 (N, C, H, W) images, or a clear error."""
    if x.ndim != 4:
        raise ValueError(f"expected (N, C, H, W) images, got shape {tuple(x.shape)}")
    return x.float()


def rgb_255(x: Tensor, network: str) -> Tensor:
    """(N, 1 or 3, H, W) images in [0, 1] as float32 RGB in [0, 255], rounded as an 8-bit file stores
    them: the input of networks trained on such files (Inception, DINOv2). Grey is repeated to RGB.

    Raises:
        ValueError: For other channel counts, naming ``network``.
    """
    x = image_batch(x)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[1] != 3:
        raise ValueError(f"{network} takes grey or RGB images, got {x.shape[1]} channels")
    return x.clamp(0, 1).mul(255).round()


def seeded_he_normal_(convs: Iterable[nn.Module], seed: int) -> None:
    """He-normal weights (std sqrt(2 / fan_in)) for ``convs``, drawn in the order given from one
    generator seeded with ``seed``, and zero biases: random feature nets that are the same on every
    machine and never touch the global RNG."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for conv in convs:
            fan_in = conv.in_channels * math.prod(conv.kernel_size)
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * math.sqrt(2 / fan_in))
            conv.bias.zero_()


# --- identity ------------------------------------------------------------------------------------
class IdentityExtractor(FeatureExtractor):
    """The samples themselves, flattened: (N, 2) points stay (N, 2)."""

    name = "identity"
    preprocessing = "flatten"

    def __init__(self, spec: DataSpec) -> None:
        super().__init__()
        self.feature_dim = math.prod(spec.shape[-3:]) if spec.kind == "video" else math.prod(spec.shape)

    def features(self, x: Tensor) -> dict[str, Tensor]:
        return {"pool": x.flatten(1).float()}

    def weights_sha256(self) -> str:
        return "none"


@register_extractor("identity")
def _identity(request: ExtractorRequest) -> FeatureExtractor:
    return IdentityExtractor(request.spec)


# --- random --------------------------------------------------------------------------------------
class RandomConvNet(FeatureExtractor):
    """A randomly initialised conv net with fixed seed (Naeem et al. 2020 study such embeddings).

    Four 3x3 convs (stride 1, 2, 2, 2; widths w, 2w, 4w, 8w) with LeakyReLU, He-normal weights from
    a seeded generator, then global average pooling: 8w features. Images are used at their native
    size, scaled to [-1, 1].

    Args:
        in_channels: Image channels.
        width: w.
        seed: Seed of the weights.
    """

    name = "random"

    def __init__(self, in_channels: int, width: int = 32, seed: int = 0) -> None:
        super().__init__()
        chans = [in_channels, width, 2 * width, 4 * width, 8 * width]
        pairs = zip(chans, chans[1:], strict=False)
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=1 if i == 0 else 2, padding=1)
                                   for i, (a, b) in enumerate(pairs))
        seeded_he_normal_(self.convs, seed)
        self.feature_dim = chans[-1]
        self.preprocessing = f"native size, x*2-1, random conv net w={width} seed={seed}"

    def features(self, x: Tensor) -> dict[str, Tensor]:
        h = image_batch(x) * 2 - 1
        for conv in self.convs:
            h = F.leaky_relu(conv(h), 0.2)
        return {"pool": h.mean((2, 3))}


@register_extractor("random")
def _random(request: ExtractorRequest) -> FeatureExtractor:
    if request.spec.kind == "toy2d":
        raise ValueError("the random conv net needs images; use eval.extractor=identity for 2-D data")
    opts = request.settings.random
    return RandomConvNet(request.spec.channels, opts.width, opts.seed)
