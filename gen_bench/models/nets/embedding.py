"""Class embeddings of class-conditional networks, and the check that the data has the labels they need."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gen_bench.data.spec import DataSpec


def conditional_classes(spec: DataSpec, who: str) -> int:
    """The number of classes a class-conditional ``who`` conditions on: one label per sample.

    Raises:
        ValueError: The data has no labels, or more than one per sample (stacked digits), naming
            the datasets that have one.
    """
    if spec.num_classes is None or spec.label_shape != ():
        from gen_bench.config import labelled_datasets

        what = "no class labels" if spec.num_classes is None else f"labels of shape {spec.label_shape}"
        raise ValueError(f"a class-conditional {who} needs one class label per sample, but this dataset has "
                         f"{what}: use a labelled dataset (data={' | '.join(labelled_datasets())}), or "
                         "an unconditional model")
    return int(spec.num_classes)


class ClassEmbedding(nn.Module):
    """A learned vector per class, plus one for "no class" when ``null`` (classifier-free guidance's
    unconditional input, index ``num_classes``).

    Takes class indices (B,) or weights (B, K) / (B, K + 1) over the classes, whose embedding is the
    weighted sum of the class vectors: a path between two classes mixes their embeddings (BigGAN's
    class interpolation), and one-hot weights give exactly the class's vector.

    Args:
        num_classes: K.
        dim: Embedding size.
        null: Add the "no class" vector.
    """

    def __init__(self, num_classes: int, dim: int, null: bool = False) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.null_index = num_classes if null else None
        self.table = nn.Embedding(num_classes + int(null), dim)

    def forward(self, labels: Tensor) -> Tensor:
        """(B,) indices or (B, K[+1]) weights -> (B, dim)."""
        weight = self.table.weight  # the parametrized weight when spectral norm is on
        if not labels.dtype.is_floating_point:
            return F.embedding(labels, weight)
        if labels.shape[-1] < weight.shape[0]:  # weights over the K classes only: no null component
            labels = F.pad(labels, (0, weight.shape[0] - labels.shape[-1]))
        return labels.to(weight.dtype) @ weight


def add_class_embedding(temb: Tensor, embedding: ClassEmbedding | None, y: Tensor | None) -> Tensor:
    """``temb`` plus the class embedding of ``y`` (``None``: the "no class" vector) for a conditional
    network (``embedding`` set); ``temb`` itself for an unconditional one, which refuses labels."""
    if embedding is None:
        if y is not None:
            raise ValueError("this network is not class-conditional: call it without labels")
        return temb
    if y is None:
        y = torch.full((temb.shape[0],), embedding.null_index, dtype=torch.long, device=temb.device)
    return temb + embedding(y)
