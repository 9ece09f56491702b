"""Paired image-to-image tasks made from any image dataset: super-resolution and inpainting.

A task turns a batch of real images (the targets) into the inputs an image-to-image model reads,
``degrade(x) -> x_in``, and knows how to read such inputs back: the first estimate of the target and
the condition a network concatenates to its input, a picture of the input for grids, the known
pixels an output must keep, and how far an output strays from its input (the consistency metric).

* :class:`SuperResolution`: the input is the target downsampled by ``factor`` with a stated
  antialiasing filter, ``box`` (the mean of each ``factor x factor`` block: ``avg_pool2d``) or
  ``bicubic`` (``F.interpolate(mode="bicubic", antialias=True)``, the filter of PIL's bicubic
  resize: its kernel widened by the factor, so nothing above the new Nyquist frequency aliases).
  Inputs are (N, C, H / factor, W / factor); networks read them upsampled back to H x W
  (``upsample``, bicubic by default).
* :class:`Inpainting`: the input is the target with a region removed (unknown pixels set to 0.5,
  mid grey) and the mask as one more channel (1: known, 0: to fill): (N, C + 1, H, W). Masks:
  ``center`` (a centred square of side ``size`` x H), ``half`` (the right half) or ``random``
  (``boxes`` rectangles, each side uniform in [``box_min``, ``box_max``] x H, their union).

Images are float32 N C H W in [0, 1] at every boundary, as everywhere in gen-bench. Randomness (the
random boxes) comes from the ``generator`` passed in, never from the global RNG.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from gen_bench.data.spec import DataSpec

FILTERS = ("box", "bicubic")
UPSAMPLING = ("bicubic", "bilinear", "nearest")
MASKS = ("center", "half", "random")
#: A map of images (to the models' [-1, 1] space, say).
Transform = Callable[[Tensor], Tensor]
#: The value unknown pixels take in an inpainting input (mid grey: 0 in the models' [-1, 1] space).
FILL = 0.5


def downsample(x: Tensor, factor: int, filter: str = "bicubic") -> Tensor:
    """(N, C, H, W) images -> (N, C, H / factor, W / factor), antialiased.

    Args:
        x: Images in [0, 1]; H and W divisible by ``factor``.
        factor: Integer scale factor (>= 1).
        filter: ``box``: the mean of each factor x factor block (``F.avg_pool2d``); ``bicubic``:
            ``F.interpolate(mode="bicubic", antialias=True)``, Keys' cubic (a = -0.5) widened by the
            factor, as PIL's bicubic resize. Bicubic can overshoot at edges: the result is clamped
            to [0, 1].
    """
    if filter not in FILTERS:
        raise ValueError(f"unknown downsampling filter {filter!r}; valid: {', '.join(FILTERS)}")
    h, w = x.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(f"images of {h}x{w} cannot be downsampled by {factor}: the size must be a multiple")
    if factor == 1:
        return x
    if filter == "box":
        return F.avg_pool2d(x, factor)
    size = (h // factor, w // factor)
    return F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def upsample(x: Tensor, size: int, mode: str = "bicubic") -> Tensor:
    """(N, C, h, w) images -> (N, C, size, size) by interpolation (``mode``), clamped to [0, 1]."""
    if mode not in UPSAMPLING:
        raise ValueError(f"unknown upsampling {mode!r}; valid: {', '.join(UPSAMPLING)}")
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    align = None if mode == "nearest" else False
    return F.interpolate(x, size=(size, size), mode=mode, align_corners=align).clamp(0, 1)


def _image_spec(spec: DataSpec, task: str) -> None:
    if spec.kind != "image":
        raise ValueError(f"task={task} turns images into pairs; this is {spec.kind} data: choose an image "
                         "dataset (shapes, image_folder, celeba, cifar10, ...) or drop task=")


@dataclass(frozen=True)
class PairedTask:
    """What every paired task provides (see the module docstring). Frozen: a value, part of the
    dataset's :class:`~gen_bench.data.spec.DataSpec` (``spec.task``) when a run has ``task=``."""

    name: ClassVar[str] = ""

    def check(self, spec: DataSpec) -> None:
        """Raise a ValueError naming the fix when the dataset cannot make pairs of this task."""
        _image_spec(spec, self.name)

    def input_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of one input for targets of ``shape`` (C, H, W)."""
        raise NotImplementedError

    def condition_channels(self, channels: int) -> int:
        """Channels of :meth:`condition` for targets of ``channels`` channels."""
        raise NotImplementedError

    def degrade(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Targets (N, C, H, W) in [0, 1] -> inputs, drawing any randomness from ``generator``."""
        raise NotImplementedError

    def estimate(self, x_in: Tensor) -> Tensor:
        """The first estimate of the target an input gives, (N, C, H, W) in [0, 1] (super-resolution:
        the upsampled input; inpainting: the input with grey holes)."""
        raise NotImplementedError

    def condition(self, x_in: Tensor) -> Tensor:
        """What a network reads of an input, at the target's size: (N, condition_channels, H, W) in
        [0, 1]."""
        raise NotImplementedError

    def show(self, x_in: Tensor) -> Tensor:
        """A picture of inputs at the target's size, (N, C, H, W), for grids."""
        raise NotImplementedError

    def compose(self, output: Tensor, x_in: Tensor, transform: Transform | None = None) -> Tensor:
        """An output with what the input fixes put back (inpainting: the known pixels, exactly), the
        input's pixels passed through ``transform`` first (e.g. to the models' [-1, 1] space)."""
        return output

    def consistency(self, output: Tensor, x_in: Tensor) -> tuple[Tensor, Tensor]:
        """Per image, the squared error between what the task measures of ``output`` and the input
        itself, summed, and the number of values summed: ((N,), (N,)) float64."""
        raise NotImplementedError

    def default_cutoff(self) -> float:
        """The spatial frequency (cycles per pixel) above which the sharpness metric compares spectral
        energy, unless ``eval.paired.sharpness_cutoff`` says otherwise."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """The task's settings, recorded in every score's protocol."""
        raise NotImplementedError


@dataclass(frozen=True)
class SuperResolution(PairedTask):
    """Super-resolution by ``factor`` (see the module docstring).

    Args:
        factor: Downsampling factor (the input is H / factor pixels wide).
        filter: Antialiasing filter of the downsampling: ``box`` or ``bicubic``.
        upsample: How networks see the input at the target size: ``bicubic``, ``bilinear`` or
            ``nearest`` (grids always show it ``nearest``, pixel for pixel).
    """

    factor: int = 4
    filter: str = "bicubic"
    upsample: str = "bicubic"

    name: ClassVar[str] = "superres"

    def __post_init__(self) -> None:
        if isinstance(self.factor, bool) or not isinstance(self.factor, int) or self.factor < 2:
            raise ValueError(f"data.task.factor must be an integer >= 2, got {self.factor!r}")
        if self.filter not in FILTERS:
            raise ValueError(f"data.task.filter must be one of {', '.join(FILTERS)}, got {self.filter!r}")
        if self.upsample not in UPSAMPLING:
            raise ValueError(f"data.task.upsample must be one of {', '.join(UPSAMPLING)}, "
                             f"got {self.upsample!r}")

    def check(self, spec: DataSpec) -> None:
        super().check(spec)
        if spec.image_size % self.factor:
            raise ValueError(f"task=superres with data.task.factor={self.factor} needs an image size "
                             f"divisible by {self.factor}; data.image_size is {spec.image_size}")

    def input_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        c, h, w = shape
        return (c, h // self.factor, w // self.factor)

    def condition_channels(self, channels: int) -> int:
        return channels

    def degrade(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return downsample(x, self.factor, self.filter)

    def _size(self, x_in: Tensor) -> int:
        return x_in.shape[-1] * self.factor

    def estimate(self, x_in: Tensor) -> Tensor:
        return upsample(x_in, self._size(x_in), self.upsample)

    def condition(self, x_in: Tensor) -> Tensor:
        return self.estimate(x_in)

    def show(self, x_in: Tensor) -> Tensor:
        return upsample(x_in, self._size(x_in), "nearest")

    def consistency(self, output: Tensor, x_in: Tensor) -> tuple[Tensor, Tensor]:
        """The output downsampled with the task's own filter against the low-resolution input."""
        err = (downsample(output, self.factor, self.filter) - x_in).double().square().flatten(1)
        return err.sum(1), torch.full_like(err[:, 0], err.shape[1])

    def default_cutoff(self) -> float:
        return 0.5 / self.factor  # the input's Nyquist frequency: what lies above it the model invents

    def describe(self) -> dict[str, Any]:
        return {"task": self.name, "factor": self.factor, "filter": self.filter, "upsample": self.upsample}


@dataclass(frozen=True)
class Inpainting(PairedTask):
    """Inpainting: fill a removed region (see the module docstring).

    Args:
        mask: ``center``, ``half`` or ``random``.
        size: ``center``: side of the square removed, as a fraction of the image side.
        boxes: ``random``: number of rectangles removed.
        box_min: ``random``: smallest side of a rectangle, as a fraction of the image side.
        box_max: ``random``: largest side.
    """

    mask: str = "center"
    size: float = 0.5
    boxes: int = 3
    box_min: float = 0.2
    box_max: float = 0.4

    name: ClassVar[str] = "inpaint"

    def __post_init__(self) -> None:
        if self.mask not in MASKS:
            raise ValueError(f"mask must be one of {', '.join(MASKS)}, got {self.mask!r}")
        if not 0 < self.size < 1:
            raise ValueError(f"the centre mask's size must be a fraction in (0, 1), got {self.size}")
        if self.boxes < 1 or not 0 < self.box_min <= self.box_max < 1:
            raise ValueError(f"random masks need boxes >= 1 and 0 < box_min <= box_max < 1, got boxes="
                             f"{self.boxes}, box_min={self.box_min}, box_max={self.box_max}")

    def input_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        c, h, w = shape
        return (c + 1, h, w)

    def condition_channels(self, channels: int) -> int:
        return channels + 1

    def masks(self, n: int, height: int, width: int, generator: torch.Generator | None = None,
              device: torch.device | str | None = None) -> Tensor:
        """(n, 1, H, W) float masks, 1 where a pixel is known and 0 where it is to be filled."""
        known = torch.ones(n, 1, height, width)
        if self.mask == "center":
            h, w = max(1, round(self.size * height)), max(1, round(self.size * width))
            top, left = (height - h) // 2, (width - w) // 2
            known[:, :, top : top + h, left : left + w] = 0
        elif self.mask == "half":
            known[:, :, :, width // 2 :] = 0
        else:
            lo = max(1, round(self.box_min * min(height, width)))
            hi = max(lo, round(self.box_max * min(height, width)))
            # every draw from the generator, in a fixed order: (n, boxes) sides, then positions
            sides = torch.randint(lo, hi + 1, (n, self.boxes, 2), generator=generator)
            pos = torch.rand(n, self.boxes, 2, generator=generator)
            for i in range(n):
                for b in range(self.boxes):
                    h, w = int(sides[i, b, 0]), int(sides[i, b, 1])
                    top = int(pos[i, b, 0] * (height - h + 1))
                    left = int(pos[i, b, 1] * (width - w + 1))
                    known[i, :, top : top + h, left : left + w] = 0
        return known.to(device)

    def degrade(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        m = self.masks(x.shape[0], x.shape[-2], x.shape[-1], generator, x.device).to(x.dtype)
        return torch.cat([x * m + FILL * (1 - m), m], dim=1)

    @staticmethod
    def split(x_in: Tensor) -> tuple[Tensor, Tensor]:
        """An input's (image with grey holes (N, C, H, W), mask (N, 1, H, W))."""
        return x_in[:, :-1], x_in[:, -1:]

    def estimate(self, x_in: Tensor) -> Tensor:
        return self.split(x_in)[0]

    def condition(self, x_in: Tensor) -> Tensor:
        return x_in

    def show(self, x_in: Tensor) -> Tensor:
        return self.split(x_in)[0]

    def compose(self, output: Tensor, x_in: Tensor, transform: Transform | None = None) -> Tensor:
        image, m = self.split(x_in)
        image = transform(image) if transform is not None else image
        return torch.where(m > 0.5, image, output)  # the known pixels exactly, not up to rounding

    def consistency(self, output: Tensor, x_in: Tensor) -> tuple[Tensor, Tensor]:
        """The output's known region against the input's (0 for a model that pastes it back)."""
        image, m = self.split(x_in)
        err = ((output - image).square() * m).double().flatten(1)
        count = m.double().flatten(1).sum(1) * image.shape[1]
        return err.sum(1), count

    def default_cutoff(self) -> float:
        return 0.25  # the upper half of the frequency band (Nyquist: 0.5 cycles per pixel)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"task": self.name, "mask": self.mask, "fill": FILL}
        if self.mask == "center":
            out["size"] = self.size
        elif self.mask == "random":
            out.update(boxes=self.boxes, box_min=self.box_min, box_max=self.box_max)
        return out
