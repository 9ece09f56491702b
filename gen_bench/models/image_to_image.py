"""Image-to-image models of a paired task (``task=superres`` / ``inpaint``, :mod:`gen_bench.data.paired`):
the base class and the loss ladder of one network, pixel -> + perceptual -> + adversarial.

Every such model is a :class:`~gen_bench.models.base.GenerativeModule` whose :meth:`sample` draws
inputs from the held-out split (:meth:`draw_inputs`) and translates them (:meth:`translate`), so the
evaluation, the sample grids, ``gen-bench sample`` and the leaderboard treat it as any other model;
its outputs are scored against the real images like any samples (FID) and against their own targets
(PSNR, SSIM, consistency, sharpness: :mod:`gen_bench.metrics.paired`). For inpainting the known pixels
are put back into every output (:meth:`PairedTask.compose <gen_bench.data.paired.PairedTask.compose>`).

:class:`ImageTranslator` trains one conditioned UNet (``UNet(condition=true)``, the network SR3's
denoiser also is) with a weighted sum of

* a pixel loss, L2 (the blurry baseline: the mean of the plausible targets) or L1;
* a perceptual loss (``perceptual_weight``): the distance of output and target in the features of the
  offline dataset classifier, or of VGG-16 with its weights on disk
  (:mod:`gen_bench.models.nets.perceptual`);
* an adversarial loss (``adversarial_weight``): non-saturating GAN loss from a PatchGAN
  discriminator that sees the pair (condition, output) against (condition, target), as pix2pix and
  SRGAN; the discriminator steps once per batch before the network, uncounted.

So ``model=i2i_regression`` (pixel only), ``i2i_perceptual`` and ``i2i_gan`` differ only in two weights.
The network reads the task's first estimate of the target (the upsampled input; the masked image)
and the condition, with a constant timestep (0), and predicts the residual to that estimate.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gen_bench import keys
from gen_bench.data.spec import DataSpec
from gen_bench.ema import EMASampling
from gen_bench.models.base import GenerativeModule
from gen_bench.models.gan import ManualSteps, OptimizerFactory
from gen_bench.models.nets.perceptual import FeatureDistance, classifier_distance, vgg16_distance

PIXEL_LOSSES = ("l2", "l1")


class ImageToImageModule(EMASampling, GenerativeModule):
    """Base of the image-to-image models: held-out inputs for :meth:`sample`, translation in batches with
    the EMA weights if any, the known pixels composed back.

    Subclasses implement :meth:`generate` (inputs -> outputs in model space) and training.

    Args:
        spec: The dataset's spec, with its paired task (``spec.task``).
        sample_batch_size: Largest batch translated at once.
        progress: Show a progress bar while sampling (iterative models).
    """

    image_to_image = True
    sampling_network_name = "net"

    def __init__(self, spec: DataSpec, sample_batch_size: int = 256, progress: bool = False) -> None:
        super().__init__(spec)
        if spec.task is None:
            raise ValueError(f"{type(self).__name__} is an image-to-image model: add a paired task, "
                             "task=superres or task=inpaint")
        if spec.kind != "image":
            raise ValueError(f"{type(self).__name__} translates images, not {spec.kind} data")
        self.sample_batch_size = sample_batch_size
        self.progress = progress
        self._data: Any = None  # the datamodule whose held-out split sample() draws from (use_data)

    # --- inputs -----------------------------------------------------------------------------------
    def use_data(self, datamodule: Any) -> None:
        if datamodule.spec.task != self.spec.task:
            raise ValueError(f"the datamodule's task {datamodule.spec.task} is not the model's "
                             f"{self.spec.task}")
        self._data = datamodule

    def setup(self, stage: str) -> None:
        if self._trainer is not None and self.trainer.datamodule is not None:
            self.use_data(self.trainer.datamodule)

    def draw_inputs(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        if self._data is None:
            raise RuntimeError(f"{type(self).__name__} draws its inputs from a held-out split but has no "
                               "data: build it with gen_bench.checkpoint.load_model, or call "
                               "model.use_data(datamodule)")
        device = generator.device if generator is not None else torch.device("cpu")
        size = len(self._data.heldout_set)
        if size == 0:
            raise ValueError("the held-out split is empty: image-to-image models draw their inputs from it; "
                             "set data.heldout_fraction > 0")
        index = torch.randint(size, (n,), generator=generator, device=device).cpu()
        x_in, target, _ = self._data.paired_batch(index, generator)
        return x_in.to(self.device), target.to(self.device)

    def condition(self, x_in: Tensor) -> Tensor:
        """What the network reads of inputs ``x_in`` (data space), in model space."""
        return self.to_model_space(self.task.condition(x_in))

    def estimate(self, x_in: Tensor) -> Tensor:
        """The task's first estimate of the targets of inputs ``x_in`` (data space), in model space."""
        return self.to_model_space(self.task.estimate(x_in))

    def compose(self, output: Tensor, x_in: Tensor) -> Tensor:
        """Model-space outputs with the input's known pixels put back (inpainting), in model space."""
        return self.task.compose(output, x_in, self.to_model_space)

    # --- the contract -----------------------------------------------------------------------------
    def generate(self, x_in: Tensor, generator: torch.Generator | None, sampler: Any) -> Tensor:
        """Outputs in model space for one batch of inputs (data space, on the model's device)."""
        raise NotImplementedError

    def translate(self, x_in: Tensor, generator: torch.Generator | None = None,
                  sampler: Any = None) -> Tensor:
        expected = self.task.input_shape(self.spec.shape)
        if x_in.ndim != 4 or tuple(x_in.shape[1:]) != expected:
            raise ValueError(f"{type(self).__name__} ({self.task.describe()}) translates inputs of shape "
                             f"(N, {', '.join(map(str, expected))}), got {tuple(x_in.shape)}")
        out = []
        with self.sampling_mode():
            for i in range(0, x_in.shape[0], self.sample_batch_size):
                xb = x_in[i : i + self.sample_batch_size].to(self.device)
                y = self.generate(xb, generator, sampler)
                out.append(self.task.compose(self.to_data_space(y), xb))
        return torch.cat(out) if out else x_in.new_zeros(0, *self.spec.shape)

    def sample(self, n: int, generator: torch.Generator | None = None, *, labels: Tensor | None = None,
               sampler: Any = None) -> Tensor:
        """Outputs for ``n`` inputs drawn from the held-out split (:meth:`draw_inputs`), everything random
        from ``generator``. Image-to-image models take no labels."""
        self.check_labels(labels, n)
        x_in, _ = self.draw_inputs(n, generator)
        return self.translate(x_in, generator, sampler)


@dataclass
class PerceptualSettings:
    """The perceptual loss's feature network.

    Attributes:
        network: ``classifier`` (the offline dataset classifier of the evaluation, trained and cached as
            ``eval.extractor=classifier`` is: labelled datasets) or ``vgg16`` (``weights`` on disk).
        weights: ``vgg16``: torchvision's ``vgg16-397923af.pth`` (never downloaded).
        cache_dir: Where the classifier is cached (the evaluation's, ``eval.cache_dir``).
        classifier: The classifier's training settings (the evaluation's, ``eval.classifier``).
    """

    network: str = "classifier"
    weights: str | None = None
    cache_dir: str = "~/.cache/gen-bench"
    classifier: dict[str, Any] | None = None


def build_perceptual(settings: PerceptualSettings, datamodule: Any) -> FeatureDistance:
    """The perceptual distance ``settings`` asks for, for the data of ``datamodule``.

    Raises:
        ValueError: An unknown network, or the classifier on data without class labels.
    """
    if settings.network == "vgg16":
        if settings.weights is None:
            raise ValueError("model.perceptual.network=vgg16 needs model.perceptual.weights=PATH "
                             "(torchvision's vgg16-397923af.pth; never downloaded)")
        return vgg16_distance(settings.weights)
    if settings.network != "classifier":
        raise ValueError(f"unknown model.perceptual.network {settings.network!r}; valid: classifier, vgg16")
    from gen_bench.metrics.classifier import classifier_extractor  # the evaluation's classifier, cached
    from gen_bench.metrics.extractors import ExtractorRequest
    from gen_bench.metrics.settings import ClassifierOptions, EvalSettings

    spec = datamodule.spec
    if not spec.labeled or spec.label_shape != ():
        raise ValueError(f"the perceptual loss in the dataset classifier's features needs one class label "
                         f"per image; {datamodule.name} has none: set model.perceptual.network=vgg16 with "
                         "model.perceptual.weights=PATH, or model.perceptual_weight=0")
    options = ClassifierOptions(**(settings.classifier or {}))
    settings_ = EvalSettings(cache_dir=settings.cache_dir, classifier=options)
    request = ExtractorRequest(spec, datamodule, settings_)
    return classifier_distance(classifier_extractor(request).net.body)


class ImageTranslator(ManualSteps, ImageToImageModule):
    """One conditioned network trained with pixel, perceptual and adversarial losses (see the module).

    Args:
        spec: The dataset's spec, with its paired task.
        net: ``UNet(condition=true)``: (estimate and condition (B, C + K, H, W), t (B,)) -> (B, C, H, W).
        optimizer: Factory ``params -> Optimizer`` for ``net`` (Hydra ``_partial_``).
        discriminator: A :class:`~gen_bench.models.nets.patchgan.PatchDiscriminator`; needed when
            ``adversarial_weight > 0`` (trained only then).
        optimizer_d: Its optimizer factory.
        pixel_loss: ``l2`` or ``l1``.
        pixel_weight: Weight of the pixel loss.
        perceptual_weight: Weight of the perceptual loss (0: none, no feature network built).
        adversarial_weight: Weight of the generator's adversarial loss (0: no GAN).
        perceptual: The feature network (:class:`PerceptualSettings` or its fields).
        grad_clip: Max gradient norm of the network and the discriminator (``None``: no clipping).
        sample_batch_size: Largest batch translated at once.
        progress: Ignored (one network pass).
    """

    def __init__(self, spec: DataSpec, net: nn.Module, optimizer: OptimizerFactory,
                 discriminator: nn.Module | None = None, optimizer_d: OptimizerFactory | None = None,
                 pixel_loss: str = "l2", pixel_weight: float = 1.0, perceptual_weight: float = 0.0,
                 adversarial_weight: float = 0.0, perceptual: PerceptualSettings | dict | None = None,
                 grad_clip: float | None = None, sample_batch_size: int = 256,
                 progress: bool = False) -> None:
        super().__init__(spec, sample_batch_size, progress)
        if pixel_loss not in PIXEL_LOSSES:
            raise ValueError(f"model.pixel_loss must be one of {', '.join(PIXEL_LOSSES)}, got {pixel_loss!r}")
        weights = {"pixel_weight": pixel_weight, "perceptual_weight": perceptual_weight,
                   "adversarial_weight": adversarial_weight}
        if any(not math.isfinite(w) or w < 0 for w in weights.values()) or not any(weights.values()):
            raise ValueError(f"the loss weights must be >= 0 and not all 0, got {weights}")
        if adversarial_weight > 0 and (discriminator is None or optimizer_d is None):
            raise ValueError("model.adversarial_weight > 0 needs a discriminator "
                             "(model.nets.image.discriminator) and model.optimizer_d: model=i2i_gan has both")
        self.automatic_optimization = False
        self.net = net
        self.discriminator = discriminator if adversarial_weight > 0 else None
        self.optimizer, self.optimizer_d = optimizer, optimizer_d
        self.pixel_loss = pixel_loss
        self.pixel_weight, self.perceptual_weight = pixel_weight, perceptual_weight
        self.adversarial_weight = adversarial_weight
        self.perceptual_settings = (perceptual if isinstance(perceptual, PerceptualSettings)
                                    else PerceptualSettings(**(perceptual or {})))
        self.grad_clip = grad_clip
        # a loss, not part of the model: kept out of the module tree, so out of checkpoints (built in setup)
        object.__setattr__(self, "perceptual", None)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and self.perceptual_weight > 0 and self.perceptual is None:
            object.__setattr__(self, "perceptual", build_perceptual(self.perceptual_settings, self._data))

    def perceptual_protocol(self) -> dict[str, Any]:
        """The feature network of the perceptual loss (recorded with the run's config)."""
        return asdict(self.perceptual_settings)

    # --- the network ----------------------------------------------------------------------------
    def predict(self, x_in: Tensor) -> Tensor:
        """Outputs in model space, known pixels composed back: the task's estimate plus the network's
        residual."""
        estimate = self.estimate(x_in)
        t = torch.zeros(x_in.shape[0], dtype=torch.long, device=x_in.device)
        out = estimate + self.net(torch.cat([estimate, self.condition(x_in)], dim=1), t)
        return self.compose(out, x_in)

    def generate(self, x_in: Tensor, generator: torch.Generator | None, sampler: Any) -> Tensor:
        return self.predict(x_in)

    # --- training -----------------------------------------------------------------------------------
    def configure_optimizers(self):
        opt = self.optimizer(self.net.parameters())
        if self.discriminator is None:
            return opt
        return opt, self.optimizer_d(self.discriminator.parameters())

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        x_in, target = batch[0], batch[1]
        real = self.to_model_space(target)
        fake = self.predict(x_in)
        opts = self.optimizers()
        opt, opt_d = (opts[0], opts[1]) if isinstance(opts, (list, tuple)) else (opts, None)
        logged: dict[str, Tensor] = {}
        if self.discriminator is not None:  # D step on (condition, target) vs (condition, output)
            cond = self.condition(x_in)
            self.toggle_optimizer(opt_d)
            logits_real = self.discriminator(cond, real)
            logits_fake = self.discriminator(cond, fake.detach())
            loss_d = (F.binary_cross_entropy_with_logits(logits_real, torch.ones_like(logits_real))
                      + F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake)))
            with self.uncounted_step(opt_d):
                self.update(opt_d, loss_d, self.grad_clip)
            self.untoggle_optimizer(opt_d)
            logged.update({keys.LOSS_D: loss_d.detach(),
                           keys.D_REAL: torch.sigmoid(logits_real.detach()).mean(),
                           keys.D_FAKE: torch.sigmoid(logits_fake.detach()).mean()})
        if opt_d is not None:
            self.toggle_optimizer(opt)
        pixel = F.mse_loss(fake, real) if self.pixel_loss == "l2" else F.l1_loss(fake, real)
        loss = self.pixel_weight * pixel
        logged[keys.LOSS_PIXEL] = pixel.detach()
        if self.perceptual is not None:
            perceptual = self.perceptual.to(fake.device)(self.to_data_space_unclamped(fake), target)
            loss = loss + self.perceptual_weight * perceptual
            logged[keys.LOSS_PERCEPTUAL] = perceptual.detach()
        if self.discriminator is not None:
            logits = self.discriminator(self.condition(x_in), fake)
            adversarial = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))  # -log D
            loss = loss + self.adversarial_weight * adversarial
            logged[keys.LOSS_ADVERSARIAL] = adversarial.detach()
        self.update(opt, loss, self.grad_clip)
        if opt_d is not None:
            self.untoggle_optimizer(opt)
        logged[keys.LOSS_G] = loss.detach()
        self.log_dict(logged)
        self.log("loss", loss.detach(), prog_bar=True, logger=False)
        return loss.detach()

    def to_data_space_unclamped(self, x: Tensor) -> Tensor:
        """[-1, 1] -> [0, 1] without clamping (the perceptual loss's gradient reaches every pixel)."""
        return (x + 1) / 2
