"""Test-only callbacks, importable by training subprocesses (tests/ is put on PYTHONPATH)."""

from __future__ import annotations

import time

from lightning.pytorch.callbacks import Callback


class Throttle(Callback):
    """Sleep after every batch, so a test can kill a run while it is still training."""

    def __init__(self, seconds: float = 0.05) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, *args, **kwargs) -> None:
        time.sleep(self.seconds)
