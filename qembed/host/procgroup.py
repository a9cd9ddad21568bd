"""Stopping a process group: SIGTERM the leader, wait for its drain, SIGKILL the group.

Only the standard library is imported.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable

from qembed.host.procfs import group_members, pid_alive

logger = logging.getLogger(__name__)


def kill_group(pgid: int, *, wait: float = 5.0) -> None:
    """SIGKILL every process in the group and wait (up to ``wait`` s) until none is left."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + wait
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.02)


def stop_process(
    pid: int,
    pgid: int,
    *,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    on_wait: Callable[[float], None] | None = None,
) -> int | None:
    """SIGTERM ``pid``, wait up to ``timeout`` s for it to exit (SGLang drains in-flight
    requests first, with no upper bound of its own), then SIGKILL process group ``pgid``.

    The group is SIGKILLed in every case, so children that outlive a clean exit go too. A second
    Ctrl-C while waiting skips the rest of the wait. ``proc`` (when it is our child) is reaped.

    Returns:
        The exit status when ``proc`` was given (negative = killed by that signal), else None.
    """
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + max(0.0, timeout)
    try:
        while True:
            remaining = deadline - time.monotonic()
            if proc is not None:
                try:
                    proc.wait(timeout=max(0.0, min(remaining, 1.0)))
                    break
                except subprocess.TimeoutExpired:
                    pass
            else:
                if not pid_alive(pid):
                    break
                time.sleep(min(0.05, max(0.0, remaining)))
            if time.monotonic() >= deadline:
                logger.info("pid %d still running after %.0f s: SIGKILL to group %d", pid, timeout, pgid)
                break
            if on_wait is not None:
                on_wait(deadline - time.monotonic())
    finally:
        # Runs on a second Ctrl-C too: nothing in the group may outlive us.
        kill_group(pgid)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
    return proc.returncode if proc is not None else None


__all__ = ["kill_group", "stop_process"]
