"""Start SGLang, watch it come up, and stop it without leaving processes behind.

This module spawns; the concerns it uses live in their own modules (import them from there):
:mod:`qembed.serving.readiness` (phases, :class:`~qembed.serving.readiness.Server`, the readiness
loop), :mod:`qembed.host.logfiles` (log reading), :mod:`qembed.host.ports` and
:mod:`qembed.host.procfs` (ports, ``/proc``), :mod:`qembed.host.procgroup` (stopping a process
group), :mod:`qembed.host.logrotate` (log rotation).

The steps, in the order :func:`launch` runs them:

1. build the argv with :func:`qembed.serving.sglang_args.build_command`;
2. check that the HTTP port is free (:func:`qembed.host.ports.check_port`): SGLang only binds it after the model
   is loaded, finds it busy minutes later and then SIGKILLs itself;
3. run SGLang's own argument parser (:func:`qembed.serving.sglang_args.ensure_accepted`) so a bad flag
   fails in seconds instead of after the model load;
4. spawn SGLang in its own process group (``start_new_session=True``) with stdout and stderr
   going straight to a per-server log file, and ``NO_PROXY`` covering loopback.

:meth:`Server.wait_ready <qembed.serving.readiness.Server.wait_ready>` then waits for readiness,
and :meth:`Server.stop <qembed.serving.readiness.Server.stop>` stops the whole process group.

Nothing here prints: progress goes to the ``on_phase`` callback, failures are exceptions from
:mod:`qembed.errors` whose ``details`` carry the last log lines and the diagnosis.

Example:
    >>> from qembed.serving.profiles.resolve import load_profile
    >>> from qembed.serving.launcher import launch
    >>> server = launch(load_profile("a100"), api_key=None)
    >>> info = server.wait_ready(timeout=1800)
    >>> info.url, info.dimensions
    ('http://127.0.0.1:30000', 2560)
    >>> server.stop(timeout=30)
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from qembed.errors import LaunchError
from qembed.host.ports import check_port
from qembed.host.procgroup import stop_process
from qembed.serving.readiness import Server

if TYPE_CHECKING:
    from qembed.host.state import Record
    from qembed.serving.profiles.model import Profile

logger = logging.getLogger(__name__)


def stop_server(record: Record, *, timeout: float | None = None) -> bool:
    """Stop a recorded server (SIGTERM, wait, SIGKILL its group) and delete its record.

    ``timeout`` defaults to the record's ``shutdown_timeout``. Returns False when the server was
    already gone (the stale record is deleted all the same).
    """
    from qembed.host.state import remove_if_owned

    if not record.is_alive():
        remove_if_owned(record)
        return False
    wait = record.shutdown_timeout if timeout is None else timeout
    # qembed starts every server as the leader of its own group (pgid == pid): kill that group,
    # never a recorded pgid that could be anyone's (this shell's own, after a bad record)
    stop_process(record.pid, record.pid, timeout=wait)
    remove_if_owned(record)
    return True


#: seconds `qembed ps` waits for one server's ``/health`` (all servers are probed at once). Short:
#: a hung server must not hold `ps` for the readiness loop's 10 s (it took 10.9 s; issue 19).
PS_HEALTH_TIMEOUT = 3.0


def server_status(record: Record, *, timeout: float | None = None) -> str:
    """What `qembed ps` shows for a live record.

    ``stopped (SIGSTOP)`` (from ``/proc``, without a probe: a stopped process can't answer),
    ``ready``; ``starting`` / ``loading`` (503 / closed port before the server was first ready);
    ``draining`` (503 after it was ready: SGLang answers so while it finishes its requests);
    ``not answering`` (closed port after it was ready, or no answer within ``timeout``);
    ``http <status>``.
    """
    import httpx

    from qembed.host.procfs import read_stat

    stat = read_stat(record.pid)
    if stat is not None and stat[0] in ("T", "t"):
        return "stopped (SIGSTOP)"
    was_ready = record.dimensions is not None  # written into the record once it was ready
    try:
        with httpx.Client(trust_env=False) as http:
            code = http.get(f"{record.url.rstrip('/')}/health",
                            timeout=PS_HEALTH_TIMEOUT if timeout is None else timeout).status_code
    except httpx.TimeoutException:
        return "not answering"
    except httpx.HTTPError:
        return "not answering" if was_ready else "loading"
    if code == 503:
        return "draining" if was_ready else "starting"
    return "ready" if code == 200 else f"http {code}"


# -- launching ----------------------------------------------------------------------------------


def with_no_proxy(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with ``NO_PROXY``/``no_proxy`` both covering loopback (keeps existing entries)."""
    from qembed.serving.sglang_args import merge_no_proxy as merged_value

    value = merged_value(env.get("NO_PROXY"), env.get("no_proxy"))
    return {**env, "NO_PROXY": value, "no_proxy": value}


def _pdeathsig(signum: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` setting ``PR_SET_PDEATHSIG`` (None where prctl is not available)."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def set_pdeathsig() -> None:
        prctl(1, signum)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signum)

    return set_pdeathsig


def spawn(
    argv: Sequence[str],
    *,
    host: str,
    port: int,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    api_key: str | None = None,
    profile: Profile | None = None,
    header: Iterable[str] = (),
    parent_death_signal: int | None = None,
    pass_fds: Sequence[int] = (),
    log_max_bytes: int | None = None,
    log_backups: int | None = None,
    drop_env: Sequence[str] = (),
) -> Server:
    """Start ``argv`` in a new session (own process group), stdout+stderr to ``log_path``.

    ``env`` is added to this process's environment, less the names in ``drop_env``;
    ``NO_PROXY`` always covers loopback.
    ``header`` lines are written to the log first (e.g. the redacted command).
    ``parent_death_signal`` (Linux): the signal SGLang gets if this thread dies, even by
    SIGKILL, so a foreground server does not outlive ``qembed serve``. It uses ``preexec_fn``,
    which is unsafe when other threads run: the CLI passes it, :func:`launch` does not by default.
    ``pass_fds`` stay open in SGLang (the :class:`qembed.host.state.Claim` locks, so a server holds
    its name and port for as long as it runs).
    ``log_max_bytes`` / ``log_backups`` (default :mod:`qembed.host.logrotate`'s 64 MiB, 3 backups):
    a watcher process rotates the log by size while SGLang runs (``log_max_bytes=0``: never).
    """
    full_env = with_no_proxy({k: v for k, v in {**os.environ, **(env or {})}.items() if k not in drop_env})
    log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # 0600: SGLang logs its server_args, API key included.
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with open(fd, "ab") as log:
        for line in header:
            log.write(f"[qembed] {line}\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=full_env,
                start_new_session=True,
                close_fds=True,
                pass_fds=tuple(pass_fds),
                preexec_fn=_pdeathsig(parent_death_signal) if parent_death_signal else None,
            )
        except OSError as exc:
            raise LaunchError(
                f"could not start `{argv[0]}`: {exc.strerror or exc}",
                hint="check `--python` / profile key `python` / `QEMBED_SGLANG_PYTHON`",
            ) from exc
    logger.info("spawned pid %d: log %s", proc.pid, log_path)
    server = Server(proc, host=host, port=port, log_path=log_path, api_key=api_key, profile=profile)
    server.rotator = _start_rotator(log_path, proc.pid, max_bytes=log_max_bytes, backups=log_backups)
    return server


def _start_rotator(log_path: Path, pid: int, *, max_bytes: int | None, backups: int | None) -> subprocess.Popen[bytes] | None:
    """``python -m qembed.host.logrotate`` for SGLang's log, in its own session (it outlives a
    detached ``qembed serve`` and ends with SGLang). None when rotation is off or fails to start:
    a log that is not rotated is no reason to refuse the server."""
    import sys

    from qembed.host import logrotate

    max_bytes = logrotate.DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
    if max_bytes <= 0:
        return None
    backups = logrotate.DEFAULT_BACKUPS if backups is None else backups
    package_parent = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))}
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "qembed.host.logrotate", str(log_path), "--pid", str(pid),
             "--max-bytes", str(max_bytes), "--backups", str(backups)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=env, start_new_session=True, close_fds=True,
        )
    except OSError as exc:
        logger.warning("could not start the log rotator for %s: %s", log_path, exc)
        return None


def launch(
    profile: Profile,
    *,
    api_key: str | None,
    log_path: Path | None = None,
    python: str | None = None,
    name: str | None = None,
    check_flags: bool = True,
    check_port_free: bool = True,
    parent_death_signal: int | None = None,
    pass_fds: Sequence[int] = (),
    log_max_bytes: int | None = None,
    log_backups: int | None = None,
) -> Server:
    """Check and start SGLang for ``profile``; returns at once (call :meth:`Server.wait_ready`).

    Args:
        profile: the resolved profile (:func:`qembed.serving.profiles.resolve.load_profile`).
        api_key: the key SGLang should require (``--api-key``), or None.
        log_path: where the log goes (default: a new file in the state dir's ``logs/``).
        python: the interpreter with SGLang (default: :func:`qembed.serving.sglang_args.sglang_python`).
        name: the server name used for the default log file name.
        check_flags: run SGLang's own parser on the flags first (about 3 s).
        check_port_free: raise :class:`PortInUse` when the port is taken.
        parent_death_signal: see :func:`spawn` (the CLI passes SIGTERM in the foreground).
        pass_fds: see :func:`spawn` (the CLI passes its :func:`qembed.host.state.claim` locks).
        log_max_bytes, log_backups: log rotation, see :func:`spawn`.

    Raises:
        PortInUse, FlagsRejected, MissingDependency, LaunchError.
    """
    from qembed.host.state import new_log_path
    from qembed.serving import sglang_args
    from qembed.serving.engines import reference_command

    reference = profile.engine == "reference"
    # the one SGLang target (interpreter + the full environment the child gets), as the dry run
    # and doctor resolve it: a profile `env.PYTHONPATH` reaches the parser check too (issue 22)
    py, target_env = sglang_args.resolve_sglang(profile, python)
    cmd = (reference_command(profile, api_key=api_key, python=python) if reference
           else sglang_args.build_command(profile, api_key=api_key, python=py))
    if check_port_free:
        check_port(profile.host, profile.port)
    pending: str | None = None
    if check_flags and not reference:  # SGLang's parser has nothing to say about the reference engine
        # The parser sees a placeholder key: no secret in that short-lived argv. A verdict cached
        # for this target is used; with none, the server's own parser decides (no import twice).
        flags = sglang_args.build_flags(profile, api_key="x" if api_key else None)
        pending = sglang_args.launch_verdict(flags, python=py, env=target_env)
    path = log_path or new_log_path(name or profile.name or "default")
    server = spawn(
        cmd.argv,
        host=profile.host,
        port=profile.port,
        log_path=path,
        env=cmd.env,
        api_key=api_key,
        profile=profile,
        header=[f"command: {cmd.display()}"],
        parent_death_signal=parent_death_signal,
        pass_fds=pass_fds,
        log_max_bytes=log_max_bytes,
        log_backups=log_backups,
    )
    server.pending_verdict = pending
    return server


__all__ = ["launch", "server_status", "spawn", "stop_server", "with_no_proxy"]
