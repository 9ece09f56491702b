"""Exact nearest neighbours in chunks: the one distance routine behind PRDC and memorization.

Distances are Euclidean and computed in float64 through the matrix-product expansion, chunk by
chunk, so memory stays bounded (``chunk x ref_chunk`` at a time) and near-duplicates are resolved:
float32 ``|a|^2 + |b|^2 - 2ab`` loses ~1e-3 of a distance between 32x32 images, enough to blur
the line between a copy with tiny noise and an exact one.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

QUERY_CHUNK = 1024
REF_CHUNK = 16384


def distance_chunks(query: Tensor, ref: Tensor, chunk: int = QUERY_CHUNK) -> Iterator[tuple[int, Tensor]]:
    """Yield ``(start, D)`` with ``D = dist(query[start:start + chunk], ref)`` in float64.

    Args:
        query: (M, d) points.
        ref: (N, d) points.
        chunk: Query rows per block.
    """
    ref64 = ref.to(torch.float64)
    for start in range(0, query.shape[0], chunk):
        q = query[start : start + chunk].to(torch.float64)
        yield start, torch.cdist(q, ref64).clamp_min_(0)


def knn(query: Tensor, ref: Tensor, k: int, chunk: int = QUERY_CHUNK,
        ref_chunk: int = REF_CHUNK) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest rows of ``ref`` for every row of ``query``.

    Args:
        query: (M, d) points.
        ref: (N, d) points, N >= k.
        k: Number of neighbours.

    Returns:
        (M, k) float64 distances in ascending order and (M, k) int64 indices into ``ref``.
        A point of ``query`` that is also in ``ref`` finds itself at distance 0.
    """
    if ref.shape[0] < k:
        raise ValueError(f"need at least {k} reference points for {k} neighbours, got {ref.shape[0]}")
    if query.shape[0] == 0:
        return (torch.empty(0, k, dtype=torch.float64, device=query.device),
                torch.empty(0, k, dtype=torch.long, device=query.device))
    dists, idxs = [], []
    for start in range(0, query.shape[0], chunk):
        q = query[start : start + chunk].to(torch.float64)
        best_d = best_i = None
        for r0 in range(0, ref.shape[0], ref_chunk):
            d = torch.cdist(q, ref[r0 : r0 + ref_chunk].to(torch.float64)).clamp_min_(0)
            dd, ii = d.topk(min(k, d.shape[1]), dim=1, largest=False)
            ii = ii + r0
            if best_d is not None:  # merge with the best of the earlier reference chunks
                dd, order = torch.cat([best_d, dd], 1).topk(k, dim=1, largest=False)
                ii = torch.cat([best_i, ii], 1).gather(1, order)
            best_d, best_i = dd, ii
        dists.append(best_d)
        idxs.append(best_i)
    return torch.cat(dists), torch.cat(idxs)


def kth_neighbour_radii(x: Tensor, k: int) -> Tensor:
    """(N,) distance from each row of ``x`` to its k-th nearest *other* row (the k-NN ball radius)."""
    return knn(x, x, k + 1)[0][:, k]  # column 0 is the point itself
