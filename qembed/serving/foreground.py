"""The foreground runner: ``serve`` and ``gateway`` (and group sessions) in the foreground.

While a server runs in the foreground, SIGTERM and SIGHUP act like Ctrl-C: they raise
:class:`Terminated` (a ``KeyboardInterrupt``) in the main thread, so one ``except
KeyboardInterrupt`` drains and stops the engine whichever signal came. :func:`exit_code` is the
process's exit status for the signal that stopped it: 130 for Ctrl-C, 0 for a requested
SIGTERM/SIGHUP stop (a clean shutdown for a service manager).

:func:`run_session` runs a launched :class:`~qembed.serving.supervisor.ServingSession` until it
is detached, exits by itself or is stopped by a signal (an exit after readiness with a non-zero
status is :exc:`~qembed.errors.ServerExited`); :func:`run_until_stopped` watches a gateway and its
replicas the same way. Both return an :class:`Ending`; the caller renders it and exits with
:func:`exit_code` of its ``signum``. Nothing here prints.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from qembed.serving.readiness import ReadyInfo, Server
    from qembed.serving.supervisor import ServingSession

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


@dataclass(frozen=True)
class Ending:
    """How a foreground run ended. ``how``: ``detached`` (left running, ready), ``exited`` (the
    server exited by itself with ``returncode``), ``stopped`` (``signum`` stopped it; it drained
    and exited with ``returncode``). ``elapsed``: seconds since the launch."""

    how: Literal["detached", "exited", "stopped"]
    returncode: int | None = None
    signum: int | None = None
    elapsed: float = 0.0

    @property
    def exit_code(self) -> int:
        """The process's exit status: :func:`exit_code` of the signal, 0 otherwise."""
        return exit_code(self.signum) if self.signum is not None else 0


def run_session(session: ServingSession, *, on_phase: Callable[[str, float], None] | None = None,
                on_waited: Callable[[], None] | None = None,
                on_ready: Callable[[ReadyInfo], None] | None = None) -> Ending:
    """Wait until the launched ``session`` is ready (``on_waited`` is called when the wait ends,
    ready or not: a progress display closes), call ``on_ready`` (render, verify: what it
    raises stops the server), then detach it (a detached session) or wait until it exits.
    SIGTERM/SIGHUP/Ctrl-C stop it (drain, then kill the group; a second SIGTERM cuts the drain).

    Raises:
        ServerExited: it exited with a non-zero status after it was ready (its diagnosis in the
            details). LaunchError and its kinds: it never became ready (the session aborted it).
    """
    from qembed.errors import ServerExited
    from qembed.serving.profiles.model import engine_name
    from qembed.serving.readiness import diagnoses_json, failure_details

    server = session.server
    if server is None:
        raise RuntimeError("run_session() before the session launched")
    try:
        with stop_signals():
            try:
                info = session.wait_ready(on_phase=on_phase)
            finally:
                if on_waited is not None:
                    on_waited()
            if on_ready is not None:
                on_ready(info)
            if session.detached:
                session.detach()
                return Ending("detached", elapsed=server.elapsed())
            rc = session.wait()
            # the engine exited by itself (or `qembed stop` from another shell) after it was ready
            if rc == 0:
                return Ending("exited", returncode=0, elapsed=server.elapsed())
            details, hint, diags = failure_details(server.tail, profile=session.profile, returncode=rc,
                                                   log_path=server.log_path)
            raise ServerExited(f"{engine_name(session.profile, capital=True)} exited while serving (exit code {rc}, "
                               f"after {server.elapsed():.0f} s)",
                               returncode=rc, hint=hint, details=details, diagnoses=diagnoses_json(diags))
    except KeyboardInterrupt as exc:
        signum = stopped_by(exc)
    except BaseException:
        # not ready, not an embedding server, or qembed itself failed: leave nothing running
        session.abort()
        raise
    with stop_signals((signal.SIGTERM,)):
        rc = session.stop()
    return Ending("stopped", returncode=rc, signum=signum, elapsed=server.elapsed())


def run_until_stopped(front: Server, stop: Callable[[], object], *, others: Sequence[Server] = (),
                      on_front_exit: Callable[[int], None] | None = None,
                      on_other_exit: Callable[[int, Server], None] | None = None,
                      on_stopping: Callable[[], None] | None = None, poll: float = 1.0) -> Ending:
    """Serve until a stop signal or until ``front`` (a gateway) exits, then call ``stop`` (which
    stops everything and removes the records). An exit of one of ``others`` (a replica) is only
    reported, once, to ``on_other_exit(index, server)``: the gateway routes around it."""
    signum: int | None = None
    rc: int | None = None
    warned: set[int] = set()
    with stop_signals():
        try:
            while True:
                rc = front.wait(timeout=poll)
                if rc is not None:
                    if on_front_exit is not None:
                        on_front_exit(rc)
                    break
                for k, other in enumerate(others):
                    if k not in warned and other.proc.poll() is not None:
                        warned.add(k)
                        if on_other_exit is not None:
                            on_other_exit(k, other)
        except KeyboardInterrupt as exc:
            signum = stopped_by(exc)
        finally:
            if on_stopping is not None:
                on_stopping()
            stop()
    if signum is None:
        return Ending("exited", returncode=rc, elapsed=front.elapsed())
    return Ending("stopped", returncode=front.proc.returncode, signum=signum, elapsed=front.elapsed())


__all__ = ["STOP_SIGNALS", "Ending", "Terminated", "exit_code", "raise_terminated", "run_session", "run_until_stopped", "signal_name", "stop_signals", "stopped_by"]
