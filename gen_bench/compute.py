"""Compute accounting: parameters, training FLOPs per step (measured once), budgets, sampling cost.

The unit of a fair GAN-versus-diffusion comparison is compute, not steps: a WGAN-GP generator step
holds ``n_critic`` critic steps with a double backward each, a DDPM step one UNet forward and
backward. gen-bench measures the FLOPs of one real training step of every run with
``torch.utils.flop_counter.FlopCounterMode`` (matrix products and convolutions of every network's
forward and backward passes, the gradient penalty's double backward included; elementwise work such
as optimizer updates and weight EMA is not counted) on the run's first step, then accumulates them
per step. The ledger lands in ``metrics.json`` (``compute``), the CSV and
wandb (``compute/train_flops``, ``compute/images_seen``, ``compute/wall_s``).

A budget (``budget.train_flops=X`` or ``budget.images=X``) turns into each model's ``max_steps``
from that measurement, with evaluations, sample grids and checkpoints at the same fractions of it.
The measurement is made on the run's first step, so a budgeted run ignores ``trainer.max_steps`` in
its ``config.yaml``; ``metrics.json`` records the budget's (``compute.budget.max_steps``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.utils.flop_counter import FlopCounterMode

from gen_bench.callbacks import Periodic, TrainingState, find_callback

log = logging.getLogger(__name__)

COUNTED = ("FlopCounterMode: matrix products and convolutions of every network, forward and backward, "
           "auxiliary steps included; optimizer updates and EMA not counted")
TRAIN_FLOPS = "compute/train_flops"
IMAGES_SEEN = "compute/images_seen"
WALL_S = "compute/wall_s"
SAMPLING_FLOPS = "compute/sampling_flops_per_sample"  # logged with every evaluation


class _GlobalOnly:
    """A stand-in for FlopCounterMode's module tracker: every count goes to ``Global``."""

    parents = frozenset({"Global"})

    def __enter__(self) -> _GlobalOnly:
        return self

    def __exit__(self, *args: Any) -> None:
        return None


class FlopCounter(FlopCounterMode):
    """``FlopCounterMode`` without the per-module breakdown.

    Its module tracker puts gradient hooks on every module's inputs, which ``torch.autograd.grad``
    refuses ("A leaf node was passed to _will_engine_execute_node"): the gradient penalties of
    WGAN-GP and R1/R2 differentiate through a gradient. The counting itself (torch's FLOP registry,
    forward and backward, higher-order gradients included) is unchanged; only the total is kept.
    """

    def __init__(self) -> None:
        super().__init__(display=False)
        self.mod_tracker = _GlobalOnly()


def count_flops(fn: Callable[[], Any]) -> tuple[int, Any]:
    """(FLOPs, result) of ``fn()``: torch's count of matrix products and convolutions (forward and
    backward; one multiply-add = 2 FLOPs)."""
    with FlopCounter() as counter:
        out = fn()
    return int(counter.get_total_flops()), out


def count_parameters(model) -> dict[str, int]:
    """Trainable parameters of each network of ``model`` (``model.networks()``) and their total."""
    counts = {name: sum(p.numel() for p in net.parameters() if p.requires_grad)
              for name, net in model.networks().items()}
    return {**counts, "total": sum(counts.values())}


@dataclass(frozen=True)
class StepCost:
    """What one training step (one update of the main network) costs in one process.

    Attributes:
        flops: FLOPs of the step (every network's forward and backward, auxiliary steps included).
        batches: Real batches the step draws (WGAN-GP: ``n_critic``; DCGAN, DDPM: 1).
        batch_size: Real samples per batch in one process.
    """

    flops: int
    batches: int
    batch_size: int


def world_size_of(trainer_cfg: Mapping[str, Any]) -> int:
    """Processes of a run from its trainer config (devices x nodes; 1 where ``devices`` is not a
    number, e.g. ``auto`` on a CPU machine)."""
    devices, nodes = trainer_cfg.get("devices", 1), trainer_cfg.get("num_nodes", 1) or 1
    devices = devices if isinstance(devices, int) and devices > 0 else 1
    return devices * (nodes if isinstance(nodes, int) and nodes > 0 else 1)


@dataclass(frozen=True)
class Budget:
    """A training budget and where to evaluate within it.

    Attributes:
        train_flops: Total training FLOPs (all processes); ``None``: not budgeted by FLOPs.
        images: Real samples drawn (all processes); ``None``: not budgeted by images.
        points: Evaluations (and sample grids, checkpoints) at ``k / points`` of the budget.
        fractions: Evaluate (and draw sample grids) at these fractions of the budget instead, e.g.
            ``[0.111, 0.333, 1]``: one run then scores three budgets spaced 3x apart, as three runs
            would with a constant learning rate. Checkpoints stay every ``1 / points``.
    """

    train_flops: float | None = None
    images: float | None = None
    points: int = 10
    fractions: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.train_flops is not None and self.images is not None:
            raise ValueError("set budget.train_flops or budget.images, not both")
        for name in ("train_flops", "images"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"budget.{name} must be > 0, got {value}")
        if self.points < 1:
            raise ValueError(f"budget.points must be >= 1, got {self.points}")
        if self.fractions is not None:
            object.__setattr__(self, "fractions", tuple(float(f) for f in self.fractions))
            if not self.fractions or not all(0 < f <= 1 for f in self.fractions):
                raise ValueError(f"budget.fractions must be in (0, 1], got {list(self.fractions)}")

    @property
    def active(self) -> bool:
        return self.train_flops is not None or self.images is not None

    def max_steps(self, cost: StepCost, world_size: int = 1) -> int:
        """The most whole steps that fit in the budget.

        Raises:
            ValueError: When not even one step fits; the message names the minimum budget.
        """
        if self.train_flops is not None:
            per_step, what, value = cost.flops * world_size, "train_flops", self.train_flops
        else:
            per_step, what, value = cost.batches * cost.batch_size * world_size, "images", self.images
        steps = math.floor(value / per_step)
        if steps < 1:
            raise ValueError(f"budget.{what}={value:.4g} is smaller than one training step of this model "
                             f"({per_step:.4g}); pass budget.{what}={per_step:.4g} or more")
        return steps

    def interval(self, max_steps: int) -> int:
        """Steps between evaluations: ``points`` of them over ``max_steps`` (at least 1)."""
        return max(1, max_steps // self.points)

    def at_steps(self, max_steps: int) -> frozenset[int] | None:
        """The steps of ``fractions`` (each at least 1), or ``None`` without fractions."""
        if self.fractions is None:
            return None
        return frozenset(max(1, round(f * max_steps)) for f in self.fractions)


class ComputeLedger(Callback):
    """Measures one training step's FLOPs at the start of the run and accumulates the run's compute.

    The first step (from its first batch to the batch where ``global_step`` advances: ``n_critic``
    batches for WGAN-GP) runs under ``FlopCounterMode``; put this callback first, so the other
    callbacks' work at that step (EMA, grids, evaluations) is not counted. A resumed run takes the
    measurement from the checkpoint.

    Logged with every row (CSV, wandb; in ``metrics.json``'s ``final``): ``compute/train_flops`` (all
    processes), ``compute/images_seen`` (real samples drawn by all processes), ``compute/wall_s``.
    ``metrics.json`` gets a ``compute`` section with parameter counts and the per-step cost.

    With an active :class:`Budget`, the run's ``max_steps`` is set from the measurement, and the
    evaluation, the sample grid and the periodic checkpoint run every ``max_steps // points`` steps.

    Args:
        parameters: Parameter counts (:func:`count_parameters`).
        world_size: Processes of the run.
        budget: The training budget (inactive: ``trainer.max_steps`` stands).
    """

    def __init__(self, parameters: Mapping[str, int], world_size: int = 1,
                 budget: Budget | None = None) -> None:
        self.parameters = dict(parameters)
        self.world_size = world_size
        self.budget = budget or Budget()
        self.cost: StepCost | None = None
        self.max_steps: int | None = None
        self._counter: FlopCounter | None = None
        self._start_step = 0
        self._batches = 0
        self._trainer = None

    # --- measurement ------------------------------------------------------------------------------
    def _stop_counting(self) -> int:
        counter, self._counter = self._counter, None
        counter.__exit__(None, None, None)
        return int(counter.get_total_flops())

    def on_train_start(self, trainer, pl_module) -> None:
        self._trainer = trainer
        if self.cost is not None:  # resumed: measured in an earlier session
            self._apply_budget(trainer)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.cost is None and self._counter is None:
            self._start_step, self._batches = trainer.global_step, 0
            self._counter = FlopCounter()
            self._counter.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._counter is not None:
            self._batches += 1
            if trainer.global_step > self._start_step:
                flops = self._stop_counting()
                self.cost = StepCost(flops=flops, batches=self._batches, batch_size=len(batch[0]))
                self._apply_budget(trainer)
        if self.cost is not None:
            # plain floats: no device sync; Lightning writes them with the row of each logged step
            pl_module.log_dict(self.current(trainer), logger=True, prog_bar=False)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self._counter is not None:
            self._stop_counting()

    def _apply_budget(self, trainer) -> None:
        if not self.budget.active:
            return
        self.max_steps = self.budget.max_steps(self.cost, self.world_size)
        every = self.budget.interval(self.max_steps)
        trainer.fit_loop.epoch_loop.max_steps = self.max_steps
        at = self.budget.at_steps(self.max_steps)
        for cb in trainer.callbacks:
            if isinstance(cb, Periodic):
                cb.every_n_steps, cb.at_steps = every, at
            elif isinstance(cb, ModelCheckpoint) and cb._every_n_train_steps > 0:
                cb._every_n_train_steps = every
        log.info("budget: %s per step -> max_steps %d, evaluations %s",
                 f"{self.cost.flops * self.world_size:.4g} FLOPs" if self.budget.train_flops is not None
                 else f"{self.cost.batches * self.cost.batch_size * self.world_size} images",
                 self.max_steps, f"at steps {sorted(at)}" if at else f"every {every} steps")

    # --- the ledger ---------------------------------------------------------------------------------
    def totals(self, step: int) -> dict[str, float]:
        """Training FLOPs and real samples drawn after ``step`` steps, all processes together."""
        assert self.cost is not None
        return {TRAIN_FLOPS: float(self.cost.flops * step * self.world_size),
                IMAGES_SEEN: float(step * self.cost.batches * self.cost.batch_size * self.world_size)}

    def current(self, trainer) -> dict[str, float]:
        state = find_callback(trainer, TrainingState)
        out = self.totals(trainer.global_step)
        if state is not None:
            out[WALL_S] = float(state.wall_time)
        return out

    def summary_fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {"parameters": self.parameters, "world_size": self.world_size}
        if self.cost is not None:
            out.update({"flops_per_step": self.cost.flops * self.world_size,
                        "flops_per_step_per_process": self.cost.flops,
                        "batches_per_step": self.cost.batches,
                        "images_per_step": self.cost.batches * self.cost.batch_size * self.world_size,
                        "counted": COUNTED})
            if self._trainer is not None:
                out.update({k.removeprefix("compute/"): v for k, v in self.current(self._trainer).items()})
        if self.budget.active:
            out["budget"] = {**asdict(self.budget), "max_steps": self.max_steps}
        return {"compute": out}

    def state_dict(self) -> dict[str, Any]:
        return {"cost": asdict(self.cost) if self.cost is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("cost") is not None:
            self.cost = StepCost(**state["cost"])


def sampling_flops_per_sample(sample: Callable[[int], torch.Tensor], n: int) -> tuple[float, torch.Tensor]:
    """(FLOPs per sample, samples) of one call ``sample(n)``: every network pass of the sampler."""
    flops, x = count_flops(lambda: sample(n))
    return flops / max(1, n), x
