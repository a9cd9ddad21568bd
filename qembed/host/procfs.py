"""What Linux's ``/proc`` tells qembed about processes and sockets, read in one place.

* process identity: :func:`read_stat` (the one parser of ``/proc/<pid>/stat``),
  :func:`process_start_time` (PID-reuse check), :func:`pid_alive` (zombies count as dead);
* process groups: :func:`group_members`;
* listening sockets: :func:`port_holder` (who listens on a port, for messages) and
  :func:`port_owned_by` (is it one of these processes: readiness proves it is SGLang).

Everything degrades to "cannot tell" (``None``) where ``/proc`` is missing or unreadable.
Only the standard library is imported.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def read_stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the ``comm`` field (index 0 = state)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ")".
    return raw[raw.rfind(")") + 2 :].split()


def process_start_time(pid: int) -> int | None:
    """The process start time in clock ticks since boot (``/proc/<pid>/stat`` field 22).

    Returns ``None`` when it cannot be read (no such process, or not Linux).
    """
    rest = read_stat(pid)
    if rest is None or len(rest) < 20:
        return None
    try:
        return int(rest[19])
    except ValueError:
        return None


def pid_alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    rest = read_stat(pid)
    return not (rest is not None and rest[0] in ("Z", "X"))


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid`` (Linux: scans /proc)."""
    members: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    for name in entries:
        if not name.isdigit():
            continue
        rest = read_stat(int(name))
        if rest is not None and len(rest) > 2 and rest[2] == str(pgid) and rest[0] not in ("Z", "X"):
            members.append(int(name))
    return members


def _listening_sockets(port: int) -> set[str]:
    """The fd link targets (``socket:[<inode>]``) of the sockets listening on ``port``."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) < 10:
                continue
            local, state, inode = cols[1], cols[3], cols[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A = LISTEN
                inodes.add(f"socket:[{inode}]")
    return inodes


def _holds_one_of(pid: int | str, sockets: set[str]) -> bool:
    """Whether an open file of ``pid`` is one of ``sockets`` (False where /proc does not say)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") in sockets:
                return True
        except OSError:
            continue
    return False


def port_holder(port: int) -> str | None:
    """``"pid 1234 (python3)"`` for the process listening on ``port``, when it can be seen.

    psutil when installed, else a /proc scan (Linux); processes of other users are usually
    not visible (then ``None``).
    """
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            for conn in psutil.net_connections(kind="inet"):
                if conn.laddr and conn.laddr.port == port and conn.status == "LISTEN" and conn.pid:
                    try:
                        name = psutil.Process(conn.pid).name()
                    except psutil.Error:
                        name = "?"
                    return f"pid {conn.pid} ({name})"
        except (psutil.Error, OSError):
            pass
    sockets = _listening_sockets(port)
    if not sockets:
        return None
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _holds_one_of(entry.name, sockets):
            try:
                return f"pid {entry.name} ({(entry / 'comm').read_text().strip()})"
            except OSError:
                continue
    return None


def port_owned_by(port: int, pids: Iterable[int]) -> bool | None:
    """Whether one of ``pids`` holds the listening socket on ``port`` (Linux: the socket inode
    from ``/proc/net/tcp{,6}`` among ``/proc/<pid>/fd``).

    Returns ``None`` when this system does not show it (no ``/proc/net/tcp``).
    """
    if not Path("/proc/net/tcp").exists():
        return None
    sockets = _listening_sockets(port)
    return bool(sockets) and any(_holds_one_of(pid, sockets) for pid in pids)


__all__ = ["group_members", "pid_alive", "port_holder", "port_owned_by", "process_start_time", "read_stat"]
