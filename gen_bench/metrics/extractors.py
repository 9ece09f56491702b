"""Feature extractors and their registry.

An extractor maps a batch of samples in gen-bench's format (float32 images N C H W in [0, 1], or
(N, 2) points) to a dict of features: ``"pool"`` (N, d) for the distance metrics and, for
classifiers, ``"logits"`` (N, k) for the Inception Score and mode counting. The evaluator runs each
extractor once per batch and hands the dict to every metric.

Registered extractors:

* ``inception``: the standard FID Inception-v3 (torch-fidelity's weights through torchmetrics);
  2048-d pool features and 1008 logits.
* ``classifier``: a small CNN trained on the dataset's own labels, cached; the offline default for
  labeled data.
* ``random``: a seeded, randomly initialised conv net; the last resort for unlabeled data offline.
* ``identity``: the samples themselves, flattened (2-D toy data).
* ``dinov2``: DINOv2 ViT class tokens, from weights and source on disk (:mod:`gen_bench.metrics.dinov2`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gen_bench.data.spec import DataSpec
from gen_bench.metrics.cache import state_sha256
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
EXTRACTORS: dict[str, ExtractorBuilder] = {}


def registrar(table: dict[str, ExtractorBuilder], what: str) -> Callable[[str], Callable]:
    """``register(name)``, a decorator that adds a builder to ``table`` under a new ``name``."""

    def register(name: str) -> Callable[[ExtractorBuilder], ExtractorBuilder]:
        def decorate(builder: ExtractorBuilder) -> ExtractorBuilder:
            if name in table:
                raise ValueError(f"{what} {name!r} is already registered")
            table[name] = builder
            return builder

        return decorate

    return register


def lookup(table: dict[str, ExtractorBuilder], what: str, name: str) -> ExtractorBuilder:
    """The builder registered as ``name``; a ValueError listing the registered ones otherwise."""
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; valid: {', '.join(sorted(table))} (or auto)")
    return table[name]


def construct(builder: ExtractorBuilder, request: ExtractorRequest) -> FeatureExtractor:
    """``builder(request)`` on ``request.device``, leaving the global RNG as it was (layer
    constructors draw default initialisations)."""
    with torch.random.fork_rng(devices=[]):
        return builder(request).to(request.device)


#: Decorator: register ``builder(request) -> FeatureExtractor`` as ``eval.extractor=name``.
register_extractor = registrar(EXTRACTORS, "feature extractor")


def build_extractor(name: str, request: ExtractorRequest) -> FeatureExtractor:
    """Build a registered extractor on ``request.device``, leaving the global RNG as it was.

    Raises:
        ValueError: For an unknown name, listing the registered ones.
    """
    return construct(lookup(EXTRACTORS, "feature extractor", name), request)


def auto_extractor(spec: DataSpec, settings: EvalSettings) -> str:
    """The default for a dataset: ``identity`` for 2-D data, ``classifier`` for labeled images,
    ``inception`` for unlabeled ones (and for the frames of video) when its weights are on disk,
    else ``random``."""
    if spec.kind == "toy2d":
        return "identity"
    if spec.labeled and spec.kind == "image":
        return "classifier"
    from gen_bench.metrics.inception import find_inception_weights

    return "inception" if find_inception_weights(settings) is not None else "random"


def image_batch(x: Tensor) -> Tensor:
    """``x`` as float32 (N, C, H, W) images, or a clear error."""
    if x.ndim != 4:
        raise ValueError(f"expected (N, C, H, W) images, got shape {tuple(x.shape)}")
    return x.float()


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
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for conv in self.convs:
                fan_in = conv.in_channels * 9
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * math.sqrt(2 / fan_in))
                conv.bias.zero_()
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


# --- classifier / inception: defined in their own modules ------------------------------------------
@register_extractor("classifier")
def _classifier(request: ExtractorRequest) -> FeatureExtractor:
    from gen_bench.metrics.classifier import classifier_extractor

    return classifier_extractor(request)


@register_extractor("inception")
def _inception(request: ExtractorRequest) -> FeatureExtractor:
    from gen_bench.metrics.inception import InceptionExtractor, require_inception_weights

    weights = require_inception_weights(request.settings)
    return InceptionExtractor(weights, request.settings.inception.max_batch)


@register_extractor("dinov2")
def _dinov2(request: ExtractorRequest) -> FeatureExtractor:
    from gen_bench.metrics.dinov2 import dinov2_extractor

    return dinov2_extractor(request.settings)
