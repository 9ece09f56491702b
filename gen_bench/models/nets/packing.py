"""PacGAN packing (Lin, Khetan, Fanti and Oh 2018, "PacGAN: The power of two samples in generative
adversarial networks"): the discriminator scores ``m`` samples at once.

A pack is ``m`` samples of one source (all real or all generated) concatenated along channels
(images, videos) or features (2-D data), so a discriminator built with ``pack=m`` takes ``m`` times
the input channels and returns one score per pack. The paper shows that a discriminator judging
the joint distribution of ``m`` samples penalises mode collapse more strongly than one judging a
single sample.
"""

from __future__ import annotations

from torch import Tensor


def check_pack(m: int) -> int:
    """``m`` if it is a valid pack size (an integer >= 1), else a clear error."""
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise ValueError(f"model.pack must be an integer >= 1 (1: no packing), got {m!r}")
    return m


def pack_samples(x: Tensor, m: int) -> Tensor:
    """Group consecutive samples into packs of ``m``, concatenated along dimension 1.

    Args:
        x: (B, C, ...) samples of one source (real or generated), B a multiple of ``m``.
        m: Pack size (1: ``x`` itself).

    Returns:
        (B / m, m * C, ...): pack ``p`` holds samples ``p*m, ..., p*m + m - 1``, the channels
        (features) of sample ``p*m + j`` at ``j*C, ..., j*C + C - 1``.
    """
    if m == 1:
        return x
    b = x.shape[0]
    if b % m:
        raise ValueError(f"a batch of {b} samples does not split into packs of model.pack={m}; set "
                         f"data.batch_size to a multiple of {m}")
    return x.reshape(b // m, m * x.shape[1], *x.shape[2:])  # (B/m, m*C, ...), samples in order
