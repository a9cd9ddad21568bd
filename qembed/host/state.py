"""Records of running servers, in the user's state directory.

``qembed serve`` writes one JSON record per server (``servers/<name>.json``) and the SGLang log
(``logs/<name>-<timestamp>.log``) under :func:`state_dir`: ``$QEMBED_STATE_DIR`` when set, else
``platformdirs.user_state_dir("qembed")``. ``qembed ps``/``stop``/``logs`` and the client's
default URL read them back.

A record is only trusted while its process is alive *and* has the start time that was recorded
(read from ``/proc/<pid>/stat``), so a PID reused by another program is not mistaken for the
server. Stale records are removed when listed. The API key itself is never written; only the
name of the environment variable that holds it.

Example:
    >>> from qembed.host import state
    >>> rec = state.default_server()
    >>> rec.url if rec else None
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qembed import env as qenv
from qembed.host.procfs import pid_alive, process_start_time

if TYPE_CHECKING:
    from qembed.errors import StateDirError

logger = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def state_dir() -> Path:
    """Where records and logs live: ``$QEMBED_STATE_DIR``, else the platform state dir."""
    override = qenv.STATE_DIR.get()
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_state_dir("qembed"))


def servers_dir() -> Path:
    return state_dir() / "servers"


def logs_dir() -> Path:
    return state_dir() / "logs"


def claims_dir() -> Path:
    return state_dir() / "claims"


def state_dir_error(path: Path, exc: OSError) -> StateDirError:
    """The user-facing error for a state directory that cannot be created or written."""
    from qembed.errors import StateDirError

    why = exc.strerror or str(exc) or type(exc).__name__
    return StateDirError(
        f"the qembed state directory is not usable: `{path}`: {why}",
        hint="point `QEMBED_STATE_DIR` at a writable directory (it holds server records, "
        f"claims and SGLang logs; now `{state_dir()}`), or fix its permissions",
    )


def ensure_dir(path: Path) -> Path:
    """Create ``path`` (mode 0700: logs can hold the API key) and check it takes files.

    Raises:
        StateDirError: it cannot be created, is not a directory, or is not writable.
    """
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.is_dir():
            raise NotADirectoryError(20, "not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(13, "permission denied (not writable)")
    except OSError as exc:
        raise state_dir_error(path, exc) from exc
    return path


def valid_name(name: str) -> bool:
    """Server names become file names: letters, digits, ``.``, ``_``, ``-`` (max 64)."""
    return bool(_NAME_RE.match(name))


def new_log_path(name: str, *, now: datetime | None = None) -> Path:
    """A fresh ``logs/<name>-<YYYYmmdd-HHMMSS>.log`` path (the directory is created)."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    d = ensure_dir(logs_dir())  # 0700: logs can hold the API key (SGLang logs it)
    path = d / f"{name}-{stamp}.log"
    n = 1
    while path.exists():  # two launches in the same second
        n += 1
        path = d / f"{name}-{stamp}-{n}.log"
    return path


def latest_log(name: str | None = None) -> Path | None:
    """The newest log file of a server name (any server's when ``name`` is None), even when
    its record is gone."""
    d = logs_dir()
    if not d.is_dir():
        return None
    stem = re.escape(name) if name else r"[^/]+"
    candidates = [p for p in d.glob(f"{name or '*'}-*.log") if re.fullmatch(rf"{stem}-\d{{8}}-\d{{6}}(-\d+)?\.log", p.name)]
    return max(candidates, key=lambda p: p.stat().st_mtime, default=None)


# -- records ------------------------------------------------------------------------------------


@dataclass
class Record:
    """One server started by ``qembed serve`` (foreground or ``--detach``).

    ``api_key_env`` names the environment variable the key came from (``None`` when the server
    has no key); the key itself is never stored.
    """

    name: str
    pid: int
    pgid: int
    host: str
    port: int
    url: str
    profile: str | None
    model: str
    log_path: str
    started_at: str  # ISO 8601, UTC
    proc_start_time: int | None  # /proc/<pid>/stat starttime, to detect PID reuse
    served_model_name: str | None = None
    dimensions: int | None = None
    context_length: int | None = None
    detached: bool = False
    api_key_env: str | None = None
    owner_pid: int | None = None  # the qembed process that waits on a foreground server
    shutdown_timeout: float = 30.0  # seconds `qembed stop` waits for the drain
    gpu_ids: list[int] | None = None  # the GPUs it runs on (None: SGLang's default)
    group: str | None = None  # `serve --gpus ... --gateway`: the gateway record's name
    role: str | None = None  # "gateway" or "replica" in a group; None for a plain server
    cwd: str | None = None  # the directory `qembed serve` ran in: tells checkouts and jobs apart
    hostname: str | None = None  # the machine it runs on (a state dir on a shared home is seen from several)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Record:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    @property
    def path(self) -> Path:
        return servers_dir() / f"{self.name}.json"

    @property
    def elsewhere(self) -> bool:
        """Recorded on another machine (a state dir on a shared home): its PID means nothing here,
        so it is never checked, cleaned or signalled from this machine."""
        return self.hostname is not None and self.hostname != this_host()

    def is_alive(self) -> bool:
        """The recorded process still runs, and it is provably the same process: its start time
        matches the recorded one. A record without a start time, or a process whose start time
        can't be read, proves nothing, so it counts as gone (and is never signalled: a reused
        PID may belong to anything; issue 19)."""
        if self.proc_start_time is None or not pid_alive(self.pid):
            return False
        return process_start_time(self.pid) == self.proc_start_time

    def uptime(self) -> float | None:
        try:
            started = datetime.fromisoformat(self.started_at)
        except ValueError:
            return None
        return max(0.0, (datetime.now(UTC) - started).total_seconds())


def make_record(
    *,
    name: str,
    pid: int,
    host: str,
    port: int,
    url: str,
    model: str,
    log_path: Path,
    profile: str | None = None,
    served_model_name: str | None = None,
    dimensions: int | None = None,
    context_length: int | None = None,
    detached: bool = False,
    api_key_env: str | None = None,
    owner_pid: int | None = None,
    shutdown_timeout: float = 30.0,
    gpu_ids: list[int] | None = None,
    group: str | None = None,
    role: str | None = None,
) -> Record:
    """Build a record for a live process, reading its pgid and start time now, with this
    process's working directory and host name."""
    try:
        pgid = os.getpgid(pid)
    except OSError:
        pgid = pid
    try:
        cwd: str | None = os.getcwd()
    except OSError:  # the directory was removed
        cwd = None
    return Record(
        name=name, pid=pid, pgid=pgid, host=host, port=port, url=url, profile=profile,
        model=model, log_path=str(log_path), started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        proc_start_time=process_start_time(pid), served_model_name=served_model_name,
        dimensions=dimensions, context_length=context_length, detached=detached,
        api_key_env=api_key_env, owner_pid=owner_pid, shutdown_timeout=shutdown_timeout,
        gpu_ids=gpu_ids, group=group, role=role, cwd=cwd, hostname=this_host(),
    )


def save(record: Record) -> Path:
    """Write the record atomically (``servers/<name>.json``, mode 0600)."""
    d = ensure_dir(servers_dir())
    path = d / f"{record.name}.json"
    tmp = d / f".{record.name}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(record.to_json(), fh, indent=2)
        os.replace(tmp, path)
    except OSError as exc:  # disk full, read-only file system
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise state_dir_error(d, exc) from exc
    return path


def load(name: str) -> Record | None:
    """The record named ``name``, alive or not (``None`` if there is none or it is unreadable)."""
    if not valid_name(name):
        return None
    path = servers_dir() / f"{name}.json"
    try:
        return Record.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as exc:
        if path.exists():
            logger.warning("ignoring unreadable server record %s: %s", path, exc)
        return None


def remove(name: str) -> bool:
    """Delete a record; True when one was deleted."""
    try:
        (servers_dir() / f"{name}.json").unlink()
    except FileNotFoundError:
        return False
    return True


def remove_if_owned(record: Record) -> bool:
    """Delete ``record``'s file only if it still describes the same process (pid + start)."""
    current = load(record.name)
    if current is None or (current.pid, current.proc_start_time) != (record.pid, record.proc_start_time):
        return False
    return remove(record.name)


def release(record: Record | None, claim: Claim | None, *, keep_record: bool) -> None:
    """The end of a session: remove its record (unless ``keep_record``: a server left running in
    the background) if it is still this process's, then release the name and port claim, even
    when the removal fails."""
    try:
        if record is not None and not keep_record:
            remove_if_owned(record)
    finally:
        if claim is not None:
            claim.release()


def this_host() -> str:
    """This machine's name, as records store it."""
    import socket

    return socket.gethostname()


def list_records(*, clean: bool = True, other_hosts: bool = False) -> list[Record]:
    """This machine's records, oldest first. With ``clean``, records of dead (or reused) PIDs are
    deleted and left out. Records of other machines (:attr:`Record.elsewhere`) are never checked
    or deleted here; ``other_hosts`` lists them too, as recorded."""
    d = servers_dir()
    if not d.is_dir():
        return []
    out: list[Record] = []
    for path in sorted(d.glob("*.json")):
        rec = load(path.stem)
        if rec is None:
            if clean:
                with contextlib.suppress(OSError):
                    path.unlink()
            continue
        if rec.elsewhere:
            if other_hosts:
                out.append(rec)
            continue
        if clean and not rec.is_alive():
            logger.info("removing stale server record %s (pid %d is gone)", path, rec.pid)
            remove_if_owned(rec)
            continue
        out.append(rec)
    out.sort(key=lambda r: r.started_at)
    return out


def live(name: str) -> Record | None:
    """The record named ``name`` if its server is alive here; a stale record is deleted (one of
    another machine is left alone: ``None``)."""
    rec = load(name)
    if rec is None or rec.elsewhere:
        return None
    if not rec.is_alive():
        remove_if_owned(rec)
        return None
    return rec


def default_server() -> Record | None:
    """The server a client should talk to by default: the most recently started live one.

    Returns ``None`` when no recorded server is alive.
    """
    records = [r for r in list_records(clean=True) if r.role != "replica"]  # a group's front door
    return records[-1] if records else None


def with_members(record: Record) -> list[Record]:
    """``record`` and, for a group's gateway, its live replicas (what `qembed stop NAME` stops)."""
    if record.role != "gateway":
        return [record]
    members = [r for r in list_records(clean=True) if r.group == record.name and r.role == "replica"]
    return [record, *members]


def wait_gone(record: Record, timeout: float) -> bool:
    """Wait until the recorded process is gone; True if it is."""
    deadline = time.monotonic() + timeout
    while record.is_alive():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


# -- claims -------------------------------------------------------------------------------------


@dataclass
class Claim:
    """Exclusive claims on a server name and a port: ``flock`` on ``claims/name-<name>.lock``
    and ``claims/port-<port>.lock``.

    The kernel drops a lock when the last descriptor of it closes, so a claimant that dies (even
    by SIGKILL) never blocks a later one. ``qembed serve`` passes :attr:`fds` to SGLang, so a
    detached server holds its claims for as long as it runs. :meth:`release` only closes this
    process's descriptors: ``LOCK_UN`` would also unlock the copy SGLang inherited.
    """

    name: str
    port: int
    fds: tuple[int, ...]

    def set_holder(self, pid: int) -> None:
        """Record who holds the claims (shown to a loser; the lock itself decides)."""
        info = json.dumps({"pid": pid, "start_time": process_start_time(pid), "name": self.name,
                           "port": self.port}).encode()
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.pwrite(fd, info, 0)

    def release(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = ()

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holder(fd: int) -> dict[str, Any]:
    try:
        raw = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def _holder_alive(info: dict[str, Any]) -> bool:
    pid = info.get("pid")
    if not isinstance(pid, int) or not pid_alive(pid):
        return False
    start = info.get("start_time")
    return start is None or process_start_time(pid) in (None, start)


def _take(path: Path) -> tuple[int, bool]:
    """``(fd, True)`` holding ``flock(LOCK_EX)`` on ``path``, or ``(fd, False)`` when another
    process holds the lock (the fd is still open, to read the holder)."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise state_dir_error(path.parent, exc) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return fd, False
    except OSError as exc:
        os.close(fd)
        raise state_dir_error(path.parent, exc) from exc
    return fd, True


def claim(name: str, port: int) -> Claim:
    """Claim server ``name`` and ``port`` for this process, atomically, before anything loads.

    Of two ``qembed serve`` with the same name or port, exactly one gets the claim.

    Raises:
        NameInUse: another live process holds the name.
        PortInUse: another live process holds the port.
        StateDirError: the state directory is not usable.
    """
    from qembed.errors import NameInUse, PortInUse

    d = ensure_dir(claims_dir())
    held: list[int] = []
    try:
        for kind, key in (("name", name), ("port", str(port))):
            fd, locked = _take(d / f"{kind}-{key}.lock")
            if not locked:
                info = _holder(fd)
                os.close(fd)
                pid = info.get("pid")
                who = f"pid {pid}" if pid else "another qembed"
                details = [] if _holder_alive(info) else [
                    f"the recorded holder ({who}) is gone, but a process it left behind still holds "
                    f"`{d / f'{kind}-{key}.lock'}` (`fuser -v` on that file names it)"]
                if kind == "name":
                    raise NameInUse(
                        f"a server named `{name}` is already running or starting ({who})",
                        hint=f"stop it with `qembed stop {name}`, or start another with `--name NAME` "
                        "and `--port N`",
                        details=details,
                    )
                other = info.get("name")
                raise PortInUse(
                    f"port {port} is already claimed by qembed server `{other or '?'}` ({who}), "
                    "running or starting",
                    hint="pass another `--port`, or stop that server"
                    + (f" (`qembed stop {other}`)" if other else " (`qembed ps`)"),
                    details=details,
                )
            held.append(fd)
    except BaseException:
        for fd in held:
            os.close(fd)
        raise
    out = Claim(name=name, port=port, fds=tuple(held))
    out.set_holder(os.getpid())
    return out


__all__ = [
    "Claim",
    "Record",
    "claim",
    "claims_dir",
    "default_server",
    "ensure_dir",
    "latest_log",
    "list_records",
    "live",
    "load",
    "logs_dir",
    "make_record",
    "new_log_path",
    "release",
    "remove",
    "remove_if_owned",
    "save",
    "servers_dir",
    "state_dir",
    "state_dir_error",
    "this_host",
    "valid_name",
    "with_members",
]
