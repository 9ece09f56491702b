"""The dataset classifier: a small CNN trained on a dataset's own labels, as LeNet features are used
for MNIST in the literature. Its penultimate layer serves FID/KID/PRDC, its logits the Inception
Score and mode counting.

Trained once per dataset and cached under ``<cache_dir>/classifier``, keyed by the dataset's
content hash (:meth:`GenerativeDataModule.fingerprint`), the image shape and the training settings.
Its accuracy on the held-out split is part of every score's protocol.

Stacked digits (``label_shape == (C,)``, one class per channel) get one single-channel classifier
applied to every channel: features are concatenated, and the joint logits over the K^C modes are
the sums of per-channel log-probabilities, numbered ``100 r + 10 g + b`` like the labels.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gen_bench.data.arrays import batch_at
from gen_bench.data.spec import DataSpec
from gen_bench.metrics.cache import cached
from gen_bench.metrics.extractors import ExtractorRequest, FeatureExtractor, register_extractor
from gen_bench.metrics.settings import ClassifierOptions

log = logging.getLogger(__name__)

ARCH_VERSION = "smallcnn-1"
MAX_JOINT_MODES = 100_000


class SmallCNN(nn.Module):
    """Three stride-2 3x3 convs (w, 2w, 4w channels) with BatchNorm and ReLU, global average
    pooling to 4w features, and a linear head.

    Args:
        in_channels: Image channels.
        num_classes: Classes of the head.
        width: w.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        chans = [in_channels, width, 2 * width, 4 * width]
        for a, b in zip(chans, chans[1:], strict=False):
            layers += [nn.Conv2d(a, b, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU()]
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(chans[-1], num_classes)
        self.feature_dim = chans[-1]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C, H, W) in [0, 1] -> features (B, 4w) and logits (B, num_classes)."""
        h = self.body(x * 2 - 1)
        return h, self.head(h)


def _per_channel(spec: DataSpec) -> bool:
    return spec.kind != "toy2d" and len(spec.label_shape) == 1 and spec.label_shape[0] == spec.channels > 1


def _shift(x: Tensor, max_shift: float, g: torch.Generator) -> Tensor:
    """Random per-image translation by up to ``max_shift`` of the size (border padding)."""
    if max_shift <= 0:
        return x
    t = (torch.rand(x.shape[0], 2, generator=g) * 2 - 1) * 2 * max_shift  # grid units: 2 = full size
    theta = torch.zeros(x.shape[0], 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, :, 2] = t
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="border", align_corners=False)


def _channel_batch(x: Tensor, y: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """One random channel of each stacked image, with that channel's label."""
    c = torch.randint(x.shape[1], (x.shape[0],), generator=g)
    rows = torch.arange(x.shape[0])
    return x[rows, c].unsqueeze(1), y[rows, c]


def train_seeded(build: Callable[[], nn.Module], batch: Callable[[torch.Generator], tuple[Tensor, Tensor]],
                 steps: int, lr: float, seed: int) -> tuple[nn.Module, float]:
    """Train a classifier ``build()`` (``forward(x) -> (features, logits)``) with cross-entropy on
    ``steps`` batches ``batch(g)``, Adam(lr) decayed linearly to 0.

    Deterministic given ``seed``: the initialisation (``torch.manual_seed(seed)``) and every batch
    (a generator seeded with ``seed``) depend on it alone; the global RNG state is the same
    afterwards (forked). Returns the network in eval mode and the training time in seconds.
    """
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build()
        g = torch.Generator().manual_seed(seed)
        optim = torch.optim.Adam(net.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: 1 - s / steps)
        net.train()
        for _ in range(steps):
            x, y = batch(g)
            loss = F.cross_entropy(net(x)[1], y)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            sched.step()
    return net.eval(), time.perf_counter() - start


def train_classifier(datamodule, spec: DataSpec, opts: ClassifierOptions) -> tuple[SmallCNN, dict[str, Any]]:
    """Train the dataset classifier on the training split; accuracy on the held-out split.

    Runs under a forked RNG: the global random state is the same afterwards.

    Returns:
        The network (eval mode, CPU) and ``{"test_accuracy", ["test_mode_accuracy"], "test_split",
        "train_seconds"}``.
    """
    per_channel = _per_channel(spec)
    train = datamodule.train_set
    n = len(train)

    def batch(g: torch.Generator) -> tuple[Tensor, Tensor]:
        x, y = batch_at(train, torch.randint(n, (opts.batch_size,), generator=g))
        if per_channel:
            x, y = _channel_batch(x, y, g)
        return _shift(x, opts.max_shift, g), y

    in_channels = 1 if per_channel else spec.channels
    net, seconds = train_seeded(lambda: SmallCNN(in_channels, spec.num_classes, opts.width),
                                batch, opts.steps, opts.lr, opts.seed)
    test_split = "heldout" if len(datamodule.heldout_set) > 0 else "train"
    x, y = datamodule.tensors(test_split)
    with torch.no_grad():
        if per_channel:
            pred = torch.stack([_predict(net, x[:, c : c + 1]) for c in range(x.shape[1])], 1)  # (N, C)
            acc = {"test_accuracy": (pred == y).double().mean().item(),
                   "test_mode_accuracy": (pred == y).all(1).double().mean().item()}
        else:
            acc = {"test_accuracy": (_predict(net, x) == y).double().mean().item()}
    return net, {**acc, "test_split": test_split, "train_seconds": round(seconds, 2)}


def _predict(net: SmallCNN, x: Tensor, chunk: int = 1024) -> Tensor:
    return torch.cat([net(x[i : i + chunk])[1].argmax(1) for i in range(0, x.shape[0], chunk)])


class ClassifierExtractor(FeatureExtractor):
    """Features and logits of a trained :class:`SmallCNN` (see the module docstring).

    Args:
        net: The trained network.
        spec: The dataset's spec.
        info: Accuracy and provenance, recorded in the protocol.
    """

    name = "classifier"
    version = ARCH_VERSION

    def __init__(self, net: SmallCNN, spec: DataSpec, info: dict) -> None:
        super().__init__()
        self.net = net
        self.per_channel = _per_channel(spec)
        self.channels = spec.channels
        k = spec.num_classes
        self.feature_dim = net.feature_dim * (spec.channels if self.per_channel else 1)
        self.num_logits = k ** spec.channels if self.per_channel else k
        self.info = info
        size = "x".join(str(s) for s in spec.shape[-2:])
        self.preprocessing = f"native {size}, x*2-1" + (", per channel" if self.per_channel else "")

    def features(self, x: Tensor) -> dict[str, Tensor]:
        x = x.float()
        if not self.per_channel:
            pool, logits = self.net(x)
            return {"pool": pool, "logits": logits}
        b, c = x.shape[:2]
        pool, logits = self.net(x.reshape(b * c, 1, *x.shape[2:]))
        logp = logits.log_softmax(1).reshape(b, c, -1)  # (B, C, K)
        joint = logp[:, 0]
        for i in range(1, c):  # joint log-probability, first channel most significant
            joint = (joint[:, :, None] + logp[:, i][:, None, :]).reshape(b, -1)
        return {"pool": pool.reshape(b, -1), "logits": joint}

    def describe(self) -> dict:
        return {**super().describe(), **{f"classifier_{k}": v for k, v in self.info.items()}}


@register_extractor("classifier")
def classifier_extractor(request: ExtractorRequest) -> ClassifierExtractor:
    """The cached classifier of the request's dataset, trained first if needed."""
    spec, dm, opts = request.spec, request.datamodule, request.settings.classifier
    if spec.kind == "toy2d" or not spec.labeled:
        what, other = (("2-D data", "identity") if spec.kind == "toy2d"
                       else ("unlabeled", "inception or random"))
        raise ValueError(f"the classifier extractor needs labeled images; {dm.name} is {what}. "
                         f"Use eval.extractor={other}")
    if spec.kind == "video":
        raise ValueError("the classifier extractor handles images, not video; use eval.extractor=random")
    if _per_channel(spec) and spec.num_classes ** spec.channels > MAX_JOINT_MODES:
        raise ValueError(f"{spec.num_classes}^{spec.channels} joint modes are too many for the classifier")
    fields = {"kind": "classifier", "arch": ARCH_VERSION, "data": dm.name, "fingerprint": dm.fingerprint(),
              "shape": list(spec.shape), "num_classes": spec.num_classes,
              "label_shape": list(spec.label_shape), "per_channel": _per_channel(spec),
              "options": asdict(opts)}
    in_ch = 1 if _per_channel(spec) else spec.channels

    def train() -> dict[str, Any]:
        log.info("training the %s classifier (%d steps; cached afterwards)", dm.name, opts.steps)
        net, info = train_classifier(dm, spec, opts)
        log.info("classifier for %s: test accuracy %.4f in %.1f s", dm.name, info["test_accuracy"],
                 info["train_seconds"])
        return {"state_dict": net.state_dict(), "info": info}

    entry = cached(request.settings.cache_path, "classifier", dm.name, fields, train)
    if entry.loaded:
        log.info("classifier for %s loaded from %s", dm.name, entry.path)
    net = SmallCNN(in_ch, spec.num_classes, opts.width)
    net.load_state_dict(entry["state_dict"])
    info = {**entry["info"], "cache_file": entry.path.name}
    ext = ClassifierExtractor(net.eval(), spec, info)
    if not math.isfinite(info["test_accuracy"]):
        raise RuntimeError("the dataset classifier's accuracy is not finite")
    return ext
