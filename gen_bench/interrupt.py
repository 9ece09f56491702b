"""Graceful stops on Ctrl-C (SIGINT) and SIGTERM (what Slurm and most schedulers send).

Inside :func:`graceful_stop`, the first signal only records a request; the run stops at the next
safe point, where everything it has done can be saved: the end of a training step
(:class:`~gen_bench.callbacks.TrainingState`), a sampling step of a diffusion model, a batch of an
evaluation. :func:`check` raises :class:`Interrupted` there. A second Ctrl-C stops at once, without
a checkpoint. Outside the context, signals keep Python's behaviour.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_requested: int | None = None


class Interrupted(SystemExit):
    """A stop asked for by a signal, raised at a safe point.

    A ``SystemExit`` (as Lightning's own ``SIGTERMException``), so the process exits with the shell's
    code for a signal, 128 + its number (130 for Ctrl-C, 143 for SIGTERM), and no traceback.

    Args:
        signum: The signal received.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(128 + int(signum))
        self.signum = int(signum)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    def __str__(self) -> str:
        return f"interrupted by {self.signal_name}"


def requested() -> int | None:
    """The signal that asked for a stop (``None``: none did)."""
    return _requested


def check() -> None:
    """Raise :class:`Interrupted` when a stop was asked for; call it where stopping loses nothing."""
    if _requested is not None:
        raise Interrupted(_requested)


def _handler(signum: int, frame) -> None:
    global _requested
    if _requested is not None and signum == signal.SIGINT:
        raise KeyboardInterrupt  # Ctrl-C again: now
    _requested = signum
    print(f"\ngen-bench: received {signal.Signals(signum).name}: stopping at the next step to save a "
          "checkpoint (Ctrl-C again stops at once, without one)", file=sys.stderr, flush=True)


@contextmanager
def graceful_stop(signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Record ``signals`` instead of acting on them for the duration (main thread only; elsewhere a
    no-op). Handlers installed inside, Lightning's SIGTERM handler say, keep calling this one."""
    global _requested
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in signals}
    _requested = None
    for s in signals:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _requested = None
