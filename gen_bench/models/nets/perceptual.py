"""A perceptual distance: how far two images are apart in the activations of a fixed network (Johnson
et al. 2016's feature reconstruction loss, with LPIPS's normalisation across channels).

The network is frozen and stays out of the model's state dict (a loss, like a metric's extractor).
Two feature networks: the offline dataset classifier of the evaluation (its three conv blocks; no
download, trained on the dataset's own labels, :mod:`gen_bench.metrics.classifier`) or VGG-16's
first three blocks (relu1_2, relu2_2, relu3_3) from a torchvision weights file on disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

# ImageNet statistics of torchvision's VGG weights
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGG16_STAGES = ((0, 4), (4, 9), (9, 16))  # layers of vgg16().features up to relu1_2, relu2_2, relu3_3


class FeatureDistance(nn.Module):
    """d(a, b) = sum over stages s of mean over positions of || n(f_s(a)) - n(f_s(b)) ||^2, where f_s is
    the activation after stage s and n normalises each position's feature vector to unit length (so
    every stage weighs about the same, in [0, 4]).

    Args:
        stages: The feature network cut into stages, applied in order.
        mean: Per-channel mean subtracted from [0, 1] images before the first stage.
        std: Per-channel divisor.
        name: What the features are, for the protocol and messages.
    """

    def __init__(self, stages: Sequence[nn.Module], mean: Sequence[float], std: Sequence[float],
                 name: str) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))
        self.name = name
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FeatureDistance:
        return super().train(False)  # batch-norm statistics never move

    def features(self, x: Tensor) -> list[Tensor]:
        """Each stage's activation of (B, C, H, W) images in [0, 1]."""
        if x.shape[1] == 1 and self.mean.shape[1] == 3:
            x = x.expand(-1, 3, -1, -1)
        h = (x - self.mean) / self.std
        out = []
        for stage in self.stages:
            h = stage(h)
            out.append(h)
        return out

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """The distance of (B, C, H, W) images ``a`` and ``b`` in [0, 1], averaged over the batch (0-dim);
        gradients flow to both."""
        total = a.new_zeros(())
        for fa, fb in zip(self.features(a), self.features(b), strict=True):
            fa = fa / fa.norm(dim=1, keepdim=True).clamp_min(1e-10)
            fb = fb / fb.norm(dim=1, keepdim=True).clamp_min(1e-10)
            total = total + (fa - fb).square().sum(1).mean()
        return total


def classifier_distance(body: nn.Sequential) -> FeatureDistance:
    """The distance in the dataset classifier's features (:class:`~gen_bench.metrics.classifier.SmallCNN`'s
    ``body``: three conv-BN-ReLU blocks, then pooling), with its own input scaling (x * 2 - 1)."""
    blocks = [body[i : i + 3] for i in range(0, 9, 3)]
    return FeatureDistance(blocks, mean=(0.5,), std=(0.5,), name="classifier")


def vgg16_distance(weights: str | Path) -> FeatureDistance:
    """The distance in VGG-16's relu1_2, relu2_2 and relu3_3 activations, from a torchvision weights file
    (the whole ``vgg16`` state dict, or that of its ``features`` up to relu3_3). Nothing is downloaded.

    Raises:
        FileNotFoundError: ``weights`` does not exist, naming it and the file torchvision uses.
    """
    from torchvision.models import vgg16

    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"VGG-16 weights not found at {path}: pass model.perceptual.weights=PATH to "
                                "torchvision's vgg16-397923af.pth (gen-bench never downloads), or use "
                                "model.perceptual.network=classifier")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k.removeprefix("features."): v for k, v in state.items() if not k.startswith("classifier.")}
    features = vgg16().features[: VGG16_STAGES[-1][1]]
    features.load_state_dict(state, strict=False)
    missing = set(features.state_dict()) - set(state)
    if missing:
        raise ValueError(f"{path} is not a VGG-16 weights file: it lacks {sorted(missing)[:4]}")
    stages = [features[a:b] for a, b in VGG16_STAGES]
    return FeatureDistance(stages, IMAGENET_MEAN, IMAGENET_STD, name="vgg16")
