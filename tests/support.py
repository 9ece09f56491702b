"""Test-only callbacks, importable by training subprocesses (tests/ is put on PYTHONPATH)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from gen_bench.models.nets import MLPDenoiser


class Throttle(Callback):
    """Sleep after every batch, so a test can kill a run while it is still training."""

    def __init__(self, seconds: float = 0.05) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, *args, **kwargs) -> None:
        time.sleep(self.seconds)


class SignalAt(Callback):
    """Send this process ``signal`` (SIGTERM) after training step ``step``: an interruption at a known
    step, in process."""

    def __init__(self, step: int, signal: int = 15) -> None:
        self.step, self.signal = step, signal

    def on_train_batch_end(self, trainer, *args, **kwargs) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signal)


class RankRecorder(Callback):
    """Record, per process, what each training batch drew: the real rows it trained on and the first
    latent of every fake batch; at the end, a digest of the weights. Written to
    ``<dirpath>/rank<R>.json`` (appended across resumed sessions)."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = dirpath

    def _path(self, trainer):
        from pathlib import Path

        return Path(self.dirpath) / f"rank{trainer.global_rank}.json"

    def _load(self, trainer) -> dict:
        import json

        path = self._path(trainer)
        return json.loads(path.read_text()) if path.is_file() else {"batches": [], "latents": [], "end": []}

    def _save(self, trainer, record: dict) -> None:
        import json

        self._path(trainer).parent.mkdir(parents=True, exist_ok=True)
        self._path(trainer).write_text(json.dumps(record))

    def on_train_start(self, trainer, pl_module) -> None:
        self.record = self._load(trainer)
        draw = pl_module.sample_latent

        def recorded(n, generator=None):
            z = draw(n, generator)
            if generator is None:  # training draws (sampling for grids passes its own generator)
                self.record["latents"].append([trainer.global_step, z[0].tolist()])
            return z

        pl_module.sample_latent = recorded

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.record["batches"].append([trainer.global_step, batch[0].tolist()])

    def on_train_end(self, trainer, pl_module) -> None:
        import hashlib

        h = hashlib.sha256()
        for k, v in sorted(pl_module.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().numpy().tobytes())
        self.record["end"].append([trainer.global_step, h.hexdigest()])
        self._save(trainer, self.record)


class SleepyDenoiser(MLPDenoiser):
    """A denoiser whose sampling (eval-mode) passes take ``$SLEEPY_SECONDS`` each and announce themselves
    by creating the file ``$SLEEPY_MARKER``: a stand-in for minutes of DDPM sampling. From the
    environment, so a resumed run's config is the same."""

    def forward(self, x, t):
        if not self.training and os.environ.get("SLEEPY_MARKER"):
            Path(os.environ["SLEEPY_MARKER"]).touch()
            time.sleep(float(os.environ.get("SLEEPY_SECONDS", "0")))
        return super().forward(x, t)
