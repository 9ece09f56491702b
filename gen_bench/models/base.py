"""The contract every model meets: ``sample`` and, for latent models, ``interpolate``."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from torch import Tensor, nn

from gen_bench.data.spec import DataSpec

if TYPE_CHECKING:
    from gen_bench.data.paired import PairedTask
    from gen_bench.ema import EMAWeights


def quantise(x: Tensor, levels: int) -> Tensor:
    """[0, 1] images -> levels ``round(x * (levels - 1))`` (long): how likelihood models quantise."""
    return (x.clamp(0, 1) * (levels - 1)).round().long()


class GenerativeModule(L.LightningModule):
    """Base class of every model.

    The evaluator, the sample, eval and interpolate commands, the sample-grid callback and the
    leaderboard use only what this class declares: :meth:`sample` (and, for latent models,
    :meth:`sample_latent`, :meth:`decode` and :meth:`interpolate`), :meth:`sampler_label`,
    :attr:`spec`, :attr:`is_conditional` (with :meth:`check_labels` and :meth:`draw_labels`),
    :attr:`knobs`, :attr:`ema_weights`, :attr:`progress`, for likelihood models
    :meth:`likelihood_protocol` and :meth:`bits_per_dim`, and for image-to-image models
    (:attr:`image_to_image`) :attr:`task`, :meth:`use_data`, :meth:`draw_inputs` and
    :meth:`translate`. Each has a default that is right for a model without the feature, so callers
    never probe a model for it.

    Inside the model, images live in [-1, 1]; at its boundary they are float32 in [0, 1]
    (toy data: (N, 2) in data units).

    Attributes:
        is_conditional: Whether :meth:`sample` takes ``labels`` (a class-conditional model sets it):
            one class index per sample, in ``range(spec.num_classes)``.
        knobs: Names of the sampling-time settings of the model, attributes that change what
            :meth:`sample` draws without retraining (``guidance`` of a classifier-free-guided model,
            ``truncation`` of a GAN); set them with :meth:`knobs_applied`, read them with
            :meth:`knob_values` (recorded with every score).
        ema_weights: The averaged weights samples are drawn with (``None``: the live weights, and
            always for a model without weight EMA); setting it to ``None`` samples with the live ones.
        progress: Show a progress bar while sampling (models that sample in many network passes;
            ignored by models that sample in one).
        image_to_image: The model maps the inputs of a paired task (:attr:`task`: super-resolution,
            inpainting) to outputs; its :meth:`sample` translates inputs drawn from the held-out split.

    Args:
        spec: The dataset's spec.
    """

    is_conditional: bool = False
    knobs: tuple[str, ...] = ()
    ema_weights: EMAWeights | None = None
    progress: bool = False
    image_to_image: bool = False

    def __init__(self, spec: DataSpec) -> None:
        super().__init__()
        self.spec = spec
        self.channels_last = False

    # --- speed options (gen-bench train channels_last=true compile=true) ----------------------
    def networks(self) -> dict[str, nn.Module]:
        """The trainable networks (generator, discriminator, critic, denoiser...) by attribute name."""
        return {name: m for name, m in self.named_children() if any(True for _ in m.parameters())}

    def use_channels_last(self) -> None:
        """Store 4-D conv weights and image batches in NHWC order (faster convolutions with tensor
        cores under bf16 / fp16). Video (5-D) and 2-D data are left as they are."""
        if self.spec.kind != "image":
            return
        self.channels_last = True
        self.to(memory_format=torch.channels_last)

    def compile_networks(self, **kwargs) -> None:
        """``torch.compile`` each network in place (``nn.Module.compile``): parameter names, and so
        checkpoints, EMA weights and resume, are unchanged. ``kwargs`` go to ``torch.compile``."""
        for net in self.networks().values():
            net.compile(**kwargs)

    # --- data space <-> model space ---------------------------------------------------------
    def to_model_space(self, x: Tensor) -> Tensor:
        """[0, 1] images -> [-1, 1] (NHWC with :meth:`use_channels_last`); toy data unchanged."""
        if self.spec.kind == "toy2d":
            return x
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x * 2 - 1

    def to_data_space(self, x: Tensor) -> Tensor:
        """[-1, 1] images -> [0, 1] (clamped); toy data unchanged."""
        return x if self.spec.kind == "toy2d" else ((x + 1) / 2).clamp(0, 1)

    # --- the contract -----------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator | None = None, *, labels: Tensor | None = None,
               sampler: Any = None) -> Tensor:
        """Draw ``n`` samples without touching the global RNG when ``generator`` is given.

        Args:
            n: Number of samples.
            generator: Source of every random number of the draw (``None``: the global RNG).
            labels: (n,) class labels, for models whose :attr:`is_conditional` is true; an error
                for the others (:meth:`check_labels`). ``None`` for a conditional model: labels drawn
                uniformly by :meth:`draw_labels` from ``generator`` before anything else: a caller
                that must record the labels draws them itself, ``y = draw_labels(n, g)`` then
                ``sample(n, g, labels=y)``, and gets what ``sample(n, g)`` would have drawn.
            sampler: A sampler factory (``conf/sampler/``, Hydra ``_partial_``) that overrides the
                model's own sampler; ignored by models that sample in one pass (GANs), whose
                :meth:`sampler_label` is ``None``.

        Returns:
            (n, C, H, W) images in [0, 1], (n, C, T, H, W) video in [0, 1], or (n, 2) points.
        """
        raise NotImplementedError

    def sampler_label(self, sampler: Any = None) -> str | None:
        """The label of the sampler :meth:`sample` draws with given ``sampler`` (``ddim50``, ``heun50``;
        ``None`` for the model's own), recorded with every score; ``None`` for models that sample in
        one pass.

        Raises:
            ValueError: ``sampler`` cannot sample this model (a flow sampler for DDPM, say).
        """
        return None

    def deterministic_sampler(self, sampler: Any = None) -> Any:
        """The sampler factory :meth:`decode` runs for ``sampler``: one whose samples are a function of
        the starting noise alone (latent walks, path lengths). Iterative models: ``sampler`` (or
        their own) when it is deterministic, else a deterministic default (DDIM with eta 0), and a
        ValueError for a stochastic ``sampler``; ``None`` for models that sample in one pass."""
        return None

    def check_labels(self, labels: Tensor | None, n: int) -> None:
        """Refuse ``labels`` for an unconditional model, and labels that are not one per sample.

        Raises:
            ValueError: Naming the problem.
        """
        if labels is None:
            return
        if not self.is_conditional:
            raise ValueError(f"{type(self).__name__} is not class-conditional (is_conditional is false): "
                             "sample it without labels")
        if labels.shape != (n,):
            raise ValueError(f"labels must be one class per sample, shape ({n},); got {tuple(labels.shape)}")

    def draw_labels(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n,) class labels drawn uniformly from ``generator``, on the model's device (conditional
        models; what :meth:`sample` asks for when it is given no labels)."""
        if not self.is_conditional:
            raise ValueError(f"{type(self).__name__} is not class-conditional: it has no labels to draw")
        device = generator.device if generator is not None else self.device
        return torch.randint(self.spec.num_classes, (n,), generator=generator, device=device).to(self.device)

    def labels_for(self, n: int, labels: Tensor | None, generator: torch.Generator | None) -> Tensor | None:
        """The labels :meth:`sample` draws with: ``None`` for an unconditional model, ``labels`` (checked,
        on the model's device) when given, else :meth:`draw_labels`."""
        self.check_labels(labels, n)
        if not self.is_conditional:
            return None
        if labels is None:
            return self.draw_labels(n, generator)
        if labels.dtype.is_floating_point or (labels.numel() and (labels.min() < 0
                                                                  or labels.max() >= self.spec.num_classes)):
            raise ValueError(f"labels must be class indices in [0, {self.spec.num_classes}), got "
                             f"{labels.tolist()[:8]}")
        return labels.to(self.device)

    # --- sampling-time knobs (guidance, truncation) ---------------------------------------------
    def knob_values(self) -> dict[str, float | None]:
        """The current value of every knob of the model (``{}`` for a model without knobs)."""
        return {name: getattr(self, name) for name in self.knobs}

    @contextmanager
    def knobs_applied(self, **values: float | None) -> Iterator[None]:
        """Sample with the given knob values inside the block, restoring the previous ones afterwards.

        Raises:
            ValueError: A knob the model does not have, naming the ones it has.
        """
        unknown = [k for k in values if k not in self.knobs]
        if unknown:
            has = ", ".join(self.knobs) or "none"
            raise ValueError(f"{type(self).__name__} has no sampling knob {', '.join(map(repr, unknown))} "
                             f"(its knobs: {has}); guidance is for class-conditional diffusion and flow "
                             "models (model.conditional=true), truncation for GANs")
        before = self.knob_values()
        try:
            for name, value in values.items():
                setattr(self, name, self.check_knob(name, value))
            yield
        finally:
            for name, value in before.items():
                setattr(self, name, value)

    def check_knob(self, name: str, value: float | None) -> float | None:
        """``value`` as the knob ``name`` takes it, or a ValueError naming the valid range."""
        return value

    # --- latent models ----------------------------------------------------------------------------
    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, ...) latents, the randomness :meth:`sample` turns into samples through :meth:`decode`
        (latent models: a GAN's z, a diffusion model's starting noise)."""
        raise NotImplementedError(f"{type(self).__name__} has no latent space")

    def decode(self, latents: Tensor, labels: Tensor | None = None, sampler: Any = None) -> Tensor:
        """Latents (n, ...) -> samples in data space, deterministically (latent models).

        Args:
            latents: From :meth:`sample_latent` (or a path between such latents).
            labels: Conditional models: (n,) class indices, or (n, K) weights over the K classes
                (a path between two classes mixes their embeddings).
            sampler: Iterative models: a deterministic sampler factory (``None``: the model's own, or
                its deterministic counterpart); ignored by models that decode in one pass.
        """
        raise NotImplementedError(f"{type(self).__name__} has no latent space")

    def interpolate(self, z0: Tensor, z1: Tensor, steps: int, labels: Tensor | None = None,
                    mode: str = "slerp", sampler: Any = None) -> Tensor:
        """Decode ``steps`` latents on the path from z0 to z1 (latent models only).

        Args:
            z0, z1: Two latents of one sample each (shape of :meth:`sample_latent` without the batch).
            steps: Points on the path, ends included.
            labels: Conditional models: one label for the whole path ((), (1,) or (steps,) indices, or
                (steps, K) weights).
            mode: ``slerp`` (the path Gaussian latents prefer) or ``lerp``.
            sampler: See :meth:`decode`.

        Returns:
            (steps, ...) samples in data space, the first decoded from z0 and the last from z1.
        """
        t = torch.linspace(0, 1, steps, device=z0.device)
        path = latent_path(z0, z1, t, mode)
        if labels is not None and labels.ndim < 2:
            labels = labels.reshape(-1).expand(steps) if labels.numel() == 1 else labels
        return self.decode(path, labels, sampler)

    # --- image-to-image models ------------------------------------------------------------------
    @property
    def task(self) -> PairedTask | None:
        """The paired task an image-to-image model solves (``spec.task``); ``None`` for the others."""
        return self.spec.task if self.image_to_image else None

    def use_data(self, datamodule: Any) -> None:
        """Give the model the datamodule it was trained on: an image-to-image model draws the inputs of
        :meth:`sample` from its held-out split (training does this in ``setup``, ``load_model`` when it
        rebuilds a model). A no-op for the other models."""

    def draw_inputs(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``n`` (input, target) pairs of the held-out split, the samples chosen uniformly (with
        replacement) and any randomness of the task drawn from ``generator``: what :meth:`sample`
        translates. Inputs as :meth:`translate` takes them, targets (n, C, H, W) in [0, 1].

        Raises:
            NotImplementedError: For models that are not image-to-image.
        """
        raise NotImplementedError(f"{type(self).__name__} is not an image-to-image model")

    def translate(self, x_in: Tensor, generator: torch.Generator | None = None,
                  sampler: Any = None) -> Tensor:
        """Outputs (N, C, H, W) in [0, 1] for inputs ``x_in`` of the model's task in [0, 1]
        (super-resolution: the low-resolution images, (N, C, H / factor, W / factor); inpainting: the
        masked images with the mask as last channel, (N, C + 1, H, W)). ``sampler`` as in
        :meth:`sample`.

        Raises:
            NotImplementedError: For models that are not image-to-image.
        """
        raise NotImplementedError(f"{type(self).__name__} is not an image-to-image model")

    # KL terms a variational-bound likelihood (DDPM's) evaluates per image: None, all; K, an unbiased
    # stratified estimate from K (the bpd score sets it from eval.bpd.bound_terms)
    bound_terms: int | None = None

    def likelihood_protocol(self) -> dict[str, Any] | None:
        """What :meth:`bits_per_dim` measures, recorded with the ``bpd`` score: ``kind`` (``exact``, or
        ``bound`` for a variational bound), ``levels`` (the quantisation per channel the bits refer to)
        and how images are quantised. ``None`` (the default): the model has no likelihood."""
        return None

    def bits_per_dim(self, x: Tensor) -> Tensor:
        """(B,) negative log-likelihood of images ``x`` (B, C, H, W) in [0, 1], in bits per dimension of
        the quantised data (see :meth:`likelihood_protocol`), with the weights :meth:`sample` uses.

        Raises:
            NotImplementedError: For models whose :meth:`likelihood_protocol` is ``None``.
        """
        raise NotImplementedError(f"{type(self).__name__} has no likelihood")

    def randn(self, *shape: int, generator: torch.Generator | None = None) -> Tensor:
        """Standard normal noise on the model's device, drawn from ``generator`` when given."""
        device = generator.device if generator is not None else self.device
        return torch.randn(*shape, generator=generator, device=device).to(self.device)

    @contextmanager
    def sampling_mode(self) -> Iterator[None]:
        """Eval mode and no grad for the duration, restoring the previous mode afterwards."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.train(was_training)

    @staticmethod
    @contextmanager
    def uncounted_step(optimizer) -> Iterator[None]:
        """Step ``optimizer`` without advancing ``trainer.global_step``.

        Lightning counts every optimizer step in manual optimization, so a GAN with a D and a G
        step per batch would reach ``max_steps`` after half the iterations. gen-bench counts one
        step per generator (or main network) update, the unit of the GAN and diffusion papers:
        auxiliary steps (the discriminator's, the critic's) run inside this context.
        """
        before, after = optimizer._on_before_step, optimizer._on_after_step
        optimizer._on_before_step = optimizer._on_after_step = lambda: None
        try:
            yield
        finally:
            optimizer._on_before_step, optimizer._on_after_step = before, after


def slerp(z0: Tensor, z1: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation between latents (White 2016), the path Gaussian latents prefer.

    Args:
        z0, z1: (D,) latents.
        t: (S,) positions in [0, 1].

    Returns:
        (S, D) latents; falls back to linear interpolation when z0 and z1 are parallel.
    """
    a, b = z0.flatten(), z1.flatten()
    cos = torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1, 1))
    t = t[:, None]
    if omega.abs() < 1e-6:
        out = (1 - t) * a + t * b
    else:
        out = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)
    # the ends exactly: sin(omega) / sin(omega) is 1 only up to rounding
    out = torch.where(t == 0, a, torch.where(t == 1, b, out))
    return out.reshape(-1, *z0.shape)


def latent_path(z0: Tensor, z1: Tensor, t: Tensor, mode: str = "slerp") -> Tensor:
    """(S, ...) latents at positions ``t`` (S,) in [0, 1] from z0 to z1: ``slerp`` or ``lerp``."""
    if mode == "slerp":
        return slerp(z0, z1, t)
    if mode == "lerp":
        shape = [-1, *[1] * z0.ndim]
        return (1 - t.reshape(shape)) * z0 + t.reshape(shape) * z1
    raise ValueError(f"unknown interpolation mode {mode!r}; valid: 'slerp', 'lerp'")


def knob_grid(model: GenerativeModule,
              requested: dict[str, list[float | None]]) -> list[dict[str, float | None]]:
    """Every combination of the ``requested`` knob values that ``model`` has knobs for (in the order
    given, the first knob slowest); ``[]`` when it has none of them."""
    names = [k for k in requested if k in model.knobs]
    if not names:
        return []
    grid = itertools.product(*(requested[k] for k in names))
    return [dict(zip(names, values, strict=True)) for values in grid]


def labels_argument(model: GenerativeModule, labels: Any, n: int) -> Tensor | None:
    """The ``labels=`` of a command (``gen-bench sample``, ``inpaint``) as (n,) class indices: one class
    for every sample (an int), one per sample (a list of n, e.g. an OmegaConf ``ListConfig``); ``None``
    when not given. A conditional model checks them when it samples."""
    if labels is None:
        return None
    if not model.is_conditional:
        raise ValueError(f"labels={labels} given, but {type(model).__name__} is not class-conditional; "
                         "sample it without labels")
    values = list(labels) if isinstance(labels, Sequence) and not isinstance(labels, str) else [labels]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ValueError(f"labels must be a class index (labels=3) or a list of them, got {labels!r}")
    if len(values) not in (1, n):
        raise ValueError(f"labels lists {len(values)} classes for n={n} samples: give one class, or n of "
                         "them")
    return torch.tensor(values * (n if len(values) == 1 else 1), dtype=torch.long)


def knob_tag(values: dict[str, float | None]) -> str:
    """A name for a setting of knobs, for folders and pictures: ``guidance2``, ``truncation0.5``,
    ``truncationnone``."""
    return "-".join(f"{k}{'none' if v is None else f'{v:g}'}" for k, v in values.items())
