"""Perceptual path length (Karras, Laine and Aila 2019, sec. 3): how much a generator's output changes
along a small step of a path through its latent space.

For pairs of latents (z0, z1) and a position t ~ U(0, 1),

    PPL = E[ d(G(path(z0, z1, t)), G(path(z0, z1, t + eps))) / eps^2 ],

with ``path`` the spherical interpolation (Gaussian latents; ``lerp`` for linear) and ``d`` the squared
Euclidean distance of the samples' features. The paper's ``d`` is LPIPS (VGG features); here it is
the evaluation's feature extractor (``eval.extractor``: the dataset classifier for labelled images,
the points themselves for 2-D data), so the numbers compare models of one dataset, not papers. The
paper also reports the mean after discarding values outside the 1st and 99th percentiles
(``path_length_filtered``), as its reference code does, since a few pairs straddling a sharp edge of
the latent space dominate the plain mean.

For a diffusion or flow model the latent is the starting noise, decoded by a deterministic sampler,
so the same formula measures how smoothly its samples follow its noise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from gen_bench.models.base import latent_path

PERCENTILES = (1.0, 99.0)  # Karras et al.'s filter of the per-pair values


def path_length(decode: Callable[[Tensor, Tensor | None], Tensor],
                sample_latent: Callable[[int, torch.Generator], Tensor],
                features: Callable[[Tensor], Tensor], num_samples: int = 256, eps: float = 1e-4,
                mode: str = "slerp", seed: int = 0, batch_size: int = 128,
                draw_labels: Callable[[int, torch.Generator], Tensor] | None = None) -> dict[str, Any]:
    """The perceptual path length of a generator.

    Args:
        decode: ``(latents (n, ...), labels (n,) or None) -> samples``, deterministic.
        sample_latent: ``(n, generator) -> (n, ...)`` latents.
        features: Samples -> (n, d) features (the evaluation extractor's ``pool``).
        num_samples: Latent pairs.
        eps: Step along the path.
        mode: ``slerp`` or ``lerp``.
        seed: Seed of the latents, positions and labels (a CPU generator: the same on any device).
        batch_size: Samples decoded at once.
        draw_labels: Conditional models: ``(n, generator) -> (n,)`` labels, one fixed class per pair.

    Returns:
        ``path_length`` (the mean), ``path_length_filtered`` (the mean within the 1st-99th percentiles),
        ``values`` (per pair) and the settings.
    """
    if num_samples < 1 or not eps > 0:
        raise ValueError(f"path length needs num_samples >= 1 and eps > 0, got {num_samples} and {eps}")
    g = torch.Generator().manual_seed(seed)
    labels = draw_labels(num_samples, g).cpu() if draw_labels is not None else None
    z0, z1 = sample_latent(num_samples, g).cpu(), sample_latent(num_samples, g).cpu()
    t = torch.rand(num_samples, generator=g, dtype=torch.float64)
    # both ends of each step: rows 2i (at t_i) and 2i + 1 (at t_i + eps)
    ends = torch.stack([torch.stack([t_i, t_i + eps]) for t_i in t]).to(z0.dtype)  # (n, 2)
    points = torch.cat([latent_path(a, b, s, mode) for a, b, s in zip(z0, z1, ends, strict=True)])
    point_labels = labels.repeat_interleave(2) if labels is not None else None
    feats = []
    for i in range(0, points.shape[0], batch_size):
        y = point_labels[i : i + batch_size] if point_labels is not None else None
        feats.append(features(decode(points[i : i + batch_size], y)).double().cpu())
    f = torch.cat(feats).reshape(num_samples, 2, -1)
    values = (f[:, 1] - f[:, 0]).square().sum(dim=1) / eps**2  # (n,)
    lo, hi = torch.quantile(values, torch.tensor([p / 100 for p in PERCENTILES], dtype=values.dtype))
    kept = values[(values >= lo) & (values <= hi)]
    return {"path_length": float(values.mean()), "path_length_filtered": float(kept.mean()),
            "values": values.tolist(), "num_samples": num_samples, "eps": eps, "mode": mode, "seed": seed,
            "filter_percentiles": list(PERCENTILES),
            "distance": "squared Euclidean of the extractor's features"}
