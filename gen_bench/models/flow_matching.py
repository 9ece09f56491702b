"""Flow matching (rectified flow; Liu et al. 2023, Lipman et al. 2023): velocity regression on the
straight path x_t = (1 - t) x + t eps; Euler or Heun integration chosen at sampling time.

The objective holds the network (``velocity(x_t, s) -> v``, the DDPM UNet or MLP denoiser, given
``s = t * time_scale`` so that t in [0, 1] spans the range of DDPM's integer timesteps in the
sinusoidal embedding), the path (:class:`~gen_bench.diffusion.RectifiedFlow`: time sampling, loss) and
a sampler factory (:class:`~gen_bench.diffusion.FlowSampler`: Euler or Heun, any number of steps,
swapped in with :meth:`sample`'s ``sampler`` argument or by assigning ``model.sampler``). Training,
EMA, toy-data scaling, batched sampling and class conditioning with classifier-free guidance (of the
velocity) are DDPM's (:class:`~gen_bench.models.iterative.IterativeModule`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from gen_bench import keys
from gen_bench.data.spec import DataSpec
from gen_bench.diffusion import FlowSampler, HeunSampler, RectifiedFlow, flow_sample_loop, sampler_class
from gen_bench.models.gan import OptimizerFactory
from gen_bench.models.iterative import IterativeModule

FlowSamplerFactory = Callable[[], FlowSampler]


class FlowMatching(IterativeModule):
    """Velocity-prediction model on the straight noise-data path.

    Args:
        spec: The dataset's spec.
        velocity: ``(x_t (B, ...), s (B,) float[, y (B,)]) -> v (B, ...)`` with ``s = t * time_scale``;
            takes class labels ``y`` when the model is ``conditional``.
        flow: The path and its time sampling.
        optimizer: Factory ``params -> Optimizer`` (Hydra ``_partial_``).
        sampler: Factory ``() -> FlowSampler`` used by :meth:`sample` (default: Heun, 50 steps).
        time_scale: Multiplier of t in [0, 1] before the network's timestep embedding.
        warmup_steps: Linear learning-rate warm-up from 0 over this many steps.
        grad_clip: Max gradient norm (``None``: no clipping).
        toy_scale: Divisor of 2-D toy data in model space; ``None``: the RMS of the mode centres.
        sample_batch_size: Largest batch the network sees while sampling.
        progress: Show a progress bar while sampling.
        hflip: Flip each training image left-right with probability 1/2; images only.
        conditional: Class-conditional with classifier-free guidance (the network built
            ``conditional`` too).
        p_uncond: Rate at which training labels become "no class".
        guidance: Guidance scale w of :meth:`sample`: v = (1 + w) v(x, t, y) - w v(x, t, no class).
    """

    sampling_network_name = "velocity"

    def __init__(
        self,
        spec: DataSpec,
        velocity: nn.Module,
        flow: RectifiedFlow,
        optimizer: OptimizerFactory,
        sampler: FlowSamplerFactory | None = None,
        time_scale: float = 999.0,
        warmup_steps: int = 0,
        grad_clip: float | None = 1.0,
        toy_scale: float | None = None,
        sample_batch_size: int = 1024,
        progress: bool = True,
        hflip: bool = False,
        conditional: bool = False,
        p_uncond: float = 0.1,
        guidance: float = 0.0,
    ) -> None:
        super().__init__(spec, optimizer, sampler or HeunSampler, warmup_steps, grad_clip, toy_scale,
                         sample_batch_size, progress, hflip, conditional, p_uncond, guidance)
        if time_scale <= 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale}")
        self.velocity = velocity
        self.flow = flow
        self.time_scale = time_scale

    def velocity_field(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """v(x, t[, y]) for (B,) times t in [0, 1]: the network at ``t * time_scale`` (labels ``y`` for
        a conditional model; ``None``: "no class")."""
        return self.network(x, t * self.time_scale, y)

    # --- training -----------------------------------------------------------------------------
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x0, y = self.training_input(batch), self.training_labels(batch)
        loss = self.flow.loss(lambda x, t: self.velocity_field(x, t, y), x0)
        self.log(keys.LOSS_DIFFUSION, loss.detach(), prog_bar=True)
        return loss

    # --- sampling -----------------------------------------------------------------------------
    def bind_sampler(self, sampler: FlowSamplerFactory | None = None) -> FlowSampler:
        """The flow sampler ``sampler`` (default: the model's own) builds."""
        factory = sampler or self.sampler
        cls = sampler_class(factory)
        if cls is not None and not issubclass(cls, FlowSampler):
            raise ValueError(f"flow matching integrates a velocity field: use sampler=euler or sampler=heun, "
                             f"not {cls.__name__} (a diffusion sampler, for model=ddpm)")
        bound = factory()
        if not isinstance(bound, FlowSampler):
            raise ValueError(f"flow matching needs a FlowSampler (sampler=euler | heun), "
                             f"got {type(bound).__name__}")
        return bound

    def integrate(self, sampler: FlowSampler, noise: Tensor, generator: torch.Generator | None,
                  labels: Tensor | None = None) -> Tensor:
        """x(1) = ``noise`` -> x(0) by the deterministic ODE of the (guided) velocity (``generator`` is not
        needed after the noise)."""
        return flow_sample_loop(self.prediction(labels, self.velocity_field), sampler, noise,
                                progress=self.progress)

    def deterministic_sampler(self, sampler: FlowSamplerFactory | None = None) -> FlowSamplerFactory:
        """``sampler`` or the model's own: every flow sampler integrates the ODE deterministically."""
        return sampler or self.sampler
