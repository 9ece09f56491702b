"""Exponential moving average of the sampling network's weights (Polyak averaging).

Three pieces:

* :class:`EMAWeights`, the shadow copy of one network's floating-point parameters and buffers;
* :class:`EMASampling`, a mixin for models: it keeps the shadow (``model.ema_weights``), writes it
  into checkpoints under ``checkpoint["ema"]`` and reads it back in ``on_load_checkpoint`` (so
  a model rebuilt by :func:`gen_bench.checkpoint.load_model` has it too), and swaps it into the
  sampling network for the duration of ``sampling_mode()``: ``sample()`` uses the EMA weights
  whenever there are any, training always the live ones;
* :class:`EMA`, the callback that creates the shadow and updates it after every optimizer step of
  the sampling network (every ``trainer.global_step`` increment: gen-bench counts exactly those).

Lightning 2.6's ``EMAWeightAveraging`` does not replace it: it deep-copies the whole LightningModule into
an ``AveragedModel`` (a GAN's discriminator too; no hook names the sampling network), its constant-decay
``get_ema_avg_fn`` has no ``warmup`` (the scores would change) and it truncates the EMA of integer buffers
(BatchNorm's ``num_batches_tracked``) instead of copying them; it swaps the average in only around
validation epochs and copies it over the live weights at train end, and it saves the average as the
checkpoint's ``state_dict`` (live weights under ``current_model_state``). It would resume exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

CHECKPOINT_KEY = "ema"


class EMAWeights:
    """Shadow weights of one network: ``shadow <- decay * shadow + (1 - decay) * live`` per update.

    Integer buffers (BatchNorm's batch counter) are copied rather than averaged.

    Args:
        network: Attribute name of the network on its model (``generator``, ``denoiser``).
        shadow: The network's state dict entries (names as in ``network.state_dict()``).
        num_updates: Updates applied so far.
    """

    def __init__(self, network: str, shadow: dict[str, Tensor], num_updates: int = 0) -> None:
        self.network = network
        self.shadow = shadow
        self.num_updates = num_updates

    @classmethod
    def copy_of(cls, network: str, module: nn.Module) -> EMAWeights:
        return cls(network, {k: v.detach().clone() for k, v in module.state_dict().items()})

    def _pairs(self, module: nn.Module) -> list[tuple[str, Tensor]]:
        """(name, live tensor) for every shadowed entry, each tensor once (tied weights), with the
        shadow moved to the live tensor's device."""
        live = module.state_dict(keep_vars=True)
        missing = set(self.shadow) ^ set(live)
        if missing:
            raise KeyError(f"EMA weights do not match the {self.network} network: {sorted(missing)[:5]}")
        pairs, seen = [], set()
        for name, tensor in live.items():
            if id(tensor) in seen:
                continue
            seen.add(id(tensor))
            if self.shadow[name].device != tensor.device:
                self.shadow[name] = self.shadow[name].to(tensor.device)
            pairs.append((name, tensor))
        return pairs

    @torch.no_grad()
    def update(self, module: nn.Module, decay: float) -> None:
        """One EMA step towards ``module``'s current weights."""
        floats, live = [], []
        for name, tensor in self._pairs(module):
            if tensor.is_floating_point():
                floats.append(self.shadow[name])
                live.append(tensor.detach())
            else:
                self.shadow[name].copy_(tensor)
        if floats:
            torch._foreach_lerp_(floats, live, 1.0 - decay)
        self.num_updates += 1

    @contextmanager
    def applied(self, module: nn.Module) -> Iterator[None]:
        """Run ``module`` with the shadow weights inside the block (storage swaps, no copies)."""
        pairs = self._pairs(module)

        def swap() -> None:
            for name, tensor in pairs:
                tensor.data, self.shadow[name] = self.shadow[name], tensor.data

        with torch.no_grad():
            swap()
        try:
            yield
        finally:
            with torch.no_grad():
                swap()

    def state_dict(self) -> dict[str, Any]:
        return {"network": self.network, "num_updates": self.num_updates,
                "state_dict": {k: v.detach().cpu() for k, v in self.shadow.items()}}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> EMAWeights:
        return cls(state["network"], dict(state["state_dict"]), state["num_updates"])


class EMASampling:
    """Mixin for a :class:`~gen_bench.models.base.GenerativeModule` whose samples may come from EMA
    weights (the model's ``ema_weights``, declared ``None`` on the base class). Put it first in the
    bases; set :attr:`sampling_network_name`."""

    sampling_network_name: str = "generator"

    def sampling_network(self) -> nn.Module:
        """The network whose weights are averaged and used for sampling."""
        return getattr(self, self.sampling_network_name)

    @contextmanager
    def sampling_mode(self) -> Iterator[None]:
        """Eval mode, no grad and, when there are EMA weights, those in the sampling network."""
        with super().sampling_mode():  # type: ignore[misc]
            if self.ema_weights is None:
                yield
            else:
                with self.ema_weights.applied(self.sampling_network()):
                    yield

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)  # type: ignore[misc]
        if self.ema_weights is not None:
            checkpoint[CHECKPOINT_KEY] = self.ema_weights.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)  # type: ignore[misc]
        state = checkpoint.get(CHECKPOINT_KEY)
        if state is not None:
            if state["network"] != self.sampling_network_name:
                raise ValueError(f"checkpoint EMA weights are for {state['network']!r}, this model samples "
                                 f"with {self.sampling_network_name!r}")
            self.ema_weights = EMAWeights.from_state_dict(state)


class EMA(Callback):
    """Keeps an EMA of the model's sampling network, updated after each of its optimizer steps.

    decay_n = min(decay, (1 + n) / (warmup + n)) at the n-th update (n from 0) when ``warmup > 0``
    (TensorFlow's ``num_updates`` warm-up: early averages forget the random initialisation fast),
    ``decay`` otherwise. The shadow lives on the model (see :class:`EMASampling`), so it is saved in
    checkpoints, restored on resume and used by ``model.sample()``.

    Args:
        decay: Long-run decay (0.9999 in Ho et al. for 800k steps; ~0.999 suits runs of a few
            thousand steps: a 1000-step memory).
        warmup: The constant of the warm-up (10 in TensorFlow); 0 disables it.
    """

    def __init__(self, decay: float = 0.999, warmup: int = 0) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        if warmup < 0:
            raise ValueError(f"EMA warmup must be >= 0, got {warmup}")
        self.decay = decay
        self.warmup = warmup
        self._last_step = 0

    def decay_at(self, n: int) -> float:
        """Decay of the n-th update (n = 0 for the first)."""
        return min(self.decay, (1 + n) / (self.warmup + n)) if self.warmup > 0 else self.decay

    def setup(self, trainer, pl_module, stage: str) -> None:
        if not isinstance(pl_module, EMASampling):
            raise TypeError(f"model.ema needs a model that samples from EMA weights (an EMASampling); "
                            f"{type(pl_module).__name__} is not one. Set model.ema=null")

    def on_train_start(self, trainer, pl_module) -> None:
        if pl_module.ema_weights is None:  # a fresh run; on resume on_load_checkpoint restored it
            pl_module.ema_weights = EMAWeights.copy_of(pl_module.sampling_network_name,
                                                       pl_module.sampling_network())
        self._last_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # global_step counts the sampling network's steps only (critic steps are uncounted)
        if trainer.global_step > self._last_step:
            ema = pl_module.ema_weights
            ema.update(pl_module.sampling_network(), self.decay_at(ema.num_updates))
            self._last_step = trainer.global_step
