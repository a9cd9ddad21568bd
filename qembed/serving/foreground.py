"""The foreground runner's signal rules, shared by ``serve`` and ``gateway`` (and group sessions).

While a server runs in the foreground, SIGTERM and SIGHUP act like Ctrl-C: they raise
:class:`Terminated` (a ``KeyboardInterrupt``) in the main thread, so one ``except
KeyboardInterrupt`` drains and stops the engine whichever signal came. :func:`exit_code` is the
process's exit status for the signal that stopped it: 130 for Ctrl-C, 0 for a requested
SIGTERM/SIGHUP stop (a clean shutdown for a service manager).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """SIGTERM/SIGHUP to qembed, handled like Ctrl-C (stop the engine, then exit)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def raise_terminated(signum: int, frame: FrameType | None) -> None:
    """A signal handler: raise :class:`Terminated` for ``signum``."""
    raise Terminated(signum)


@contextlib.contextmanager
def stop_signals(signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> Iterator[None]:
    """Inside the block, ``signals`` raise :class:`Terminated`; the old handlers come back after."""
    previous = {s: signal.signal(s, raise_terminated) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def stopped_by(exc: KeyboardInterrupt) -> int:
    """The signal behind a ``KeyboardInterrupt``: SIGTERM/SIGHUP for :class:`Terminated`, else SIGINT."""
    return exc.signum if isinstance(exc, Terminated) else int(signal.SIGINT)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def exit_code(signum: int) -> int:
    """130 after Ctrl-C; 0 after a requested SIGTERM/SIGHUP stop."""
    return 130 if signum == signal.SIGINT else 0


__all__ = ["STOP_SIGNALS", "Terminated", "exit_code", "raise_terminated", "signal_name", "stop_signals", "stopped_by"]
