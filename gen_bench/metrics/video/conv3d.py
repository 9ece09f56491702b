"""3-D CNN video extractors: ``random3d`` (seeded random weights) and ``trained3d`` (trained once
per dataset on a self-supervised temporal task, then cached), and that task's training loop."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor, nn

from gen_bench.data.arrays import batch_at
from gen_bench.data.spec import DataSpec
from gen_bench.metrics.cache import cached
from gen_bench.metrics.classifier import train_seeded
from gen_bench.metrics.extractors import ExtractorRequest, FeatureExtractor, seeded_he_normal_
from gen_bench.metrics.settings import Trained3DOptions
from gen_bench.metrics.video.extractors import clip_batch, register_video_extractor

log = logging.getLogger(__name__)

SSL_TASKS = ("natural", "shuffled", "frozen", "jittered")  # classes of the trained3d extractor's task
TRAINED_ARCH_VERSION = "conv3d-ssl-1"


class Conv3dNet(nn.Module):
    """Four 3x3x3 convs (widths w, 2w, 4w, 8w; the first stride 1, the others stride 2 in space and,
    while T > 1, in time), LeakyReLU(0.2), global average pooling: 8w features; an optional linear
    head. Clips in [0, 1] are scaled to [-1, 1] first.

    Args:
        in_channels: Clip channels.
        width: w.
        frames: T of the clips (fixes the time strides).
        num_classes: Outputs of the head (0: none).
        norm: BatchNorm after every conv but the first.
    """

    def __init__(self, in_channels: int, width: int = 16, frames: int = 8, num_classes: int = 0,
                 norm: bool = False) -> None:
        super().__init__()
        chans = [in_channels, width, 2 * width, 4 * width, 8 * width]
        layers: list[nn.Module] = []
        t = frames
        for i, (a, b) in enumerate(zip(chans, chans[1:], strict=False)):
            st = 1 if i == 0 or t == 1 else 2
            layers.append(nn.Conv3d(a, b, 3, stride=(st, 1 if i == 0 else 2, 1 if i == 0 else 2), padding=1))
            if norm and i > 0:
                layers.append(nn.BatchNorm3d(b))
            layers.append(nn.LeakyReLU(0.2))
            t = (t - 1) // st + 1
        self.body = nn.Sequential(*layers)
        self.feature_dim = chans[-1]
        self.head = nn.Linear(chans[-1], num_classes) if num_classes else None

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(B, C, T, H, W) in [0, 1] -> features (B, 8w) and logits (B, k) or ``None``."""
        h = self.body(x * 2 - 1).mean((2, 3, 4))
        return h, None if self.head is None else self.head(h)


class RandomConv3dExtractor(FeatureExtractor):
    """:class:`Conv3dNet` with He-normal weights from a seeded generator (no training)."""

    name = "random3d"

    def __init__(self, spec: DataSpec, width: int = 16, seed: int = 0, max_batch: int = 256) -> None:
        super().__init__()
        self.net = Conv3dNet(spec.shape[0], width, spec.shape[1])
        seeded_he_normal_((m for m in self.net.modules() if isinstance(m, nn.Conv3d)), seed)
        self.feature_dim = self.net.feature_dim
        self.max_batch = max_batch
        self.preprocessing = f"native size, x*2-1, random 3-D conv net w={width} seed={seed}"

    def features(self, x: Tensor) -> dict[str, Tensor]:
        return {"pool": self.net(clip_batch(x))[0]}


def temporal_corruptions(x: Tensor, labels: Tensor, generator: torch.Generator, max_shift: int = 2) -> Tensor:
    """Apply the self-supervised task's corruption ``SSL_TASKS[label]`` to every clip.

    natural: unchanged; shuffled: frames in a random order other than the identity; frozen: one
    random frame repeated T times; jittered: every frame rolled by its own random shift of up to
    ``max_shift`` pixels in x and y (motion that is not smooth).

    Args:
        x: (B, C, T, H, W) clips, T >= 2.
        labels: (B,) task indices.
        generator: Source of every random choice.
        max_shift: Largest jitter, in pixels.
    """
    b, _, t = x.shape[:3]
    out = x.clone()
    for i in range(b):
        task = SSL_TASKS[int(labels[i])]
        if task == "shuffled":
            perm = torch.randperm(t, generator=generator)
            while bool((perm == torch.arange(t)).all()):
                perm = torch.randperm(t, generator=generator)
            out[i] = x[i][:, perm]
        elif task == "frozen":
            k = int(torch.randint(t, (1,), generator=generator))
            out[i] = x[i][:, k : k + 1].expand_as(x[i])
        elif task == "jittered":
            shifts = torch.randint(-max_shift, max_shift + 1, (t, 2), generator=generator)
            for j in range(t):
                out[i, :, j] = torch.roll(x[i, :, j], (int(shifts[j, 0]), int(shifts[j, 1])), dims=(1, 2))
    return out


def train_conv3d(datamodule, spec: DataSpec, opts: Trained3DOptions) -> tuple[Conv3dNet, dict[str, Any]]:
    """Train :class:`Conv3dNet` on the self-supervised task (:data:`SSL_TASKS`) over the training
    split; accuracy on the held-out split with seeded corruptions. The global RNG is untouched."""
    if spec.shape[1] < 2:
        raise ValueError("the trained3d extractor needs clips of at least 2 frames")
    train = datamodule.train_set
    n = len(train)

    def batch(g: torch.Generator) -> tuple[Tensor, Tensor]:
        x = batch_at(train, torch.randint(n, (opts.batch_size,), generator=g))[0]
        y = torch.randint(len(SSL_TASKS), (x.shape[0],), generator=g)
        return temporal_corruptions(x, y, g), y

    net, seconds = train_seeded(
        lambda: Conv3dNet(spec.shape[0], opts.width, spec.shape[1], len(SSL_TASKS), norm=True),
        batch, opts.steps, opts.lr, opts.seed)
    split = "heldout" if len(datamodule.heldout_set) > 0 else "train"
    x, _ = datamodule.tensors(split, limit=1000)
    g = torch.Generator().manual_seed(opts.seed + 1)
    y = torch.randint(len(SSL_TASKS), (x.shape[0],), generator=g)
    with torch.no_grad():
        pred = torch.cat([net(c)[1].argmax(1) for c in temporal_corruptions(x, y, g).split(256)])
    acc = (pred == y).double().mean().item()
    return net, {"test_accuracy": acc, "test_split": split, "train_seconds": round(seconds, 2)}


class TrainedConv3dExtractor(FeatureExtractor):
    """Features of a :class:`Conv3dNet` trained on the self-supervised temporal task."""

    name = "trained3d"
    version = TRAINED_ARCH_VERSION

    def __init__(self, net: Conv3dNet, info: dict[str, Any], max_batch: int = 256) -> None:
        super().__init__()
        self.net = net
        self.info = info
        self.feature_dim = net.feature_dim
        self.max_batch = max_batch
        self.preprocessing = f"native size, x*2-1, self-supervised task {'/'.join(SSL_TASKS)}"

    def features(self, x: Tensor) -> dict[str, Tensor]:
        return {"pool": self.net(clip_batch(x))[0]}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **{f"ssl_{k}": v for k, v in self.info.items()}}


@register_video_extractor("trained3d")
def trained_conv3d_extractor(request: ExtractorRequest) -> TrainedConv3dExtractor:
    """The cached self-supervised 3-D CNN of the request's dataset, trained first if needed."""
    spec, dm, opts = request.spec, request.datamodule, request.settings.video.trained3d
    fields = {"kind": "video_extractor", "arch": TRAINED_ARCH_VERSION, "tasks": list(SSL_TASKS),
              "data": dm.name, "fingerprint": dm.fingerprint(), "shape": list(spec.shape),
              "options": asdict(opts)}

    def train() -> dict[str, Any]:
        log.info("training the %s 3-D CNN on its self-supervised task (%d steps; cached afterwards)", dm.name,
                 opts.steps)
        net, info = train_conv3d(dm, spec, opts)
        log.info("3-D CNN for %s: task accuracy %.4f in %.1f s", dm.name, info["test_accuracy"],
                 info["train_seconds"])
        return {"state_dict": net.state_dict(), "info": info}

    entry = cached(request.settings.cache_path, "video_extractor", f"{dm.name}-trained3d", fields, train)
    net = Conv3dNet(spec.shape[0], opts.width, spec.shape[1], len(SSL_TASKS), norm=True)
    net.load_state_dict(entry["state_dict"])
    info = {**entry["info"], "cache_file": entry.path.name}
    return TrainedConv3dExtractor(net.eval(), info, request.settings.video.max_batch)


@register_video_extractor("random3d")
def _random3d(request: ExtractorRequest) -> FeatureExtractor:
    opts = request.settings.video.random3d
    return RandomConv3dExtractor(request.spec, opts.width, opts.seed, request.settings.video.max_batch)
