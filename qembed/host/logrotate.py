"""Rotate SGLang's log file by size while the server runs (``copytruncate``, as logrotate does).

SGLang writes its stdout and stderr straight into ``logs/<name>-<time>.log`` (opened with
``O_APPEND``), so the file can be cut under it: when it passes ``max_bytes``, ``PATH.1`` ..
``PATH.{backups-1}`` move up one, the file is copied to ``PATH.1`` (mode 0600: SGLang logs its
API key) and truncated to zero, and SGLang's next write lands at the new start. Lines SGLang
writes during the copy itself (milliseconds) can be lost, the known price of ``copytruncate``.

:func:`qembed.serving.launcher.spawn` starts ``python -m qembed.host.logrotate PATH --pid PID`` in its own
session; it checks the size every ``interval`` seconds and exits when that SGLang process is
gone (PID and start time, as :mod:`qembed.host.state` checks records), so it lives exactly as long as
a detached server does.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import time
from pathlib import Path

#: Rotate past this size by default: SGLang logs a line per batch at INFO, so a busy server
#: writes hundreds of MB a day.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
#: Rotated files kept by default (``PATH.1`` newest .. ``PATH.3`` oldest).
DEFAULT_BACKUPS = 3
#: Seconds between size checks.
DEFAULT_INTERVAL = 1.0


def backup_path(path: Path, n: int) -> Path:
    return path.with_name(f"{path.name}.{n}")


def rotate(path: Path, backups: int) -> None:
    """Move ``PATH.{n}`` to ``PATH.{n+1}`` (the oldest is dropped), copy ``PATH`` to ``PATH.1``
    and truncate ``PATH`` (``backups=0``: truncate only)."""
    if backups > 0:
        backup_path(path, backups).unlink(missing_ok=True)
        for n in range(backups - 1, 0, -1):
            older = backup_path(path, n)
            if older.exists():
                older.replace(backup_path(path, n + 1))
        first = backup_path(path, 1)
        fd = os.open(first, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "wb") as dst, open(path, "rb") as src:
            shutil.copyfileobj(src, dst, 1 << 20)
    os.truncate(path, 0)


def needs_rotation(path: Path, max_bytes: int) -> bool:
    try:
        return max_bytes > 0 and path.stat().st_size > max_bytes
    except OSError:
        return False


def watch(path: Path, pid: int, *, max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS,
          interval: float = DEFAULT_INTERVAL, start_time: int | None = None) -> None:
    """Rotate ``path`` whenever it passes ``max_bytes``, until process ``pid`` is gone."""
    from qembed.host.procfs import pid_alive, process_start_time

    start = start_time if start_time is not None else process_start_time(pid)

    def alive() -> bool:
        return pid_alive(pid) and (start is None or process_start_time(pid) in (None, start))

    while alive():
        if needs_rotation(path, max_bytes):
            with contextlib.suppress(OSError):  # disk full: keep the server, try again later
                rotate(path, backups)
        time.sleep(interval)  # a file has no wait-for-growth call; poll it


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m qembed.host.logrotate", description=__doc__.split("\n")[0])
    p.add_argument("path", type=Path)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES)
    p.add_argument("--backups", type=int, default=DEFAULT_BACKUPS)
    p.add_argument("--interval", type=float, default=DEFAULT_INTERVAL)
    args = p.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for SGLang; we end with it
    watch(args.path, args.pid, max_bytes=args.max_bytes, backups=args.backups, interval=args.interval)


if __name__ == "__main__":
    main()
