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


class SleepyDenoiser(MLPDenoiser):
    """A denoiser whose sampling (eval-mode) passes take ``$SLEEPY_SECONDS`` each and announce themselves
    by creating the file ``$SLEEPY_MARKER``: a stand-in for minutes of DDPM sampling. From the
    environment, so a resumed run's config is the same."""

    def forward(self, x, t):
        if not self.training and os.environ.get("SLEEPY_MARKER"):
            Path(os.environ["SLEEPY_MARKER"]).touch()
            time.sleep(float(os.environ.get("SLEEPY_SECONDS", "0")))
        return super().forward(x, t)
