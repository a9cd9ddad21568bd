"""Start SGLang, watch it come up, and stop it without leaving processes behind.

The steps, in the order :func:`launch` runs them:

1. build the argv with :func:`qembed.sglang_args.build_command`;
2. check that the HTTP port is free (:func:`port_is_free`): SGLang only binds it after the model
   is loaded, finds it busy minutes later and then SIGKILLs itself;
3. run SGLang's own argument parser (:func:`qembed.sglang_args.ensure_accepted`) so a bad flag
   fails in seconds instead of after the model load;
4. spawn SGLang in its own process group (``start_new_session=True``) with stdout and stderr
   going straight to a per-server log file, and ``NO_PROXY`` covering loopback.

:meth:`Server.wait_ready` then follows the log (progress phases, and the last 8 KiB of lines
kept for diagnosis, as Ollama does) while it checks, in order: the process is alive, the port
accepts a TCP connection, ``GET /health`` answers 200 (``/v1/models`` answers 200 before warm-up
ends, so it is no readiness signal), and one probe ``POST /v1/embeddings`` returns a vector.
:meth:`Server.stop` sends SIGTERM, waits for SGLang's drain (which has no upper bound of its
own), then SIGKILLs the whole process group.

Nothing here prints: progress goes to the ``on_phase`` callback, failures are exceptions from
:mod:`qembed.errors` whose ``details`` carry the last log lines and the diagnosis.

Example:
    >>> from qembed.profiles import load_profile
    >>> from qembed.launcher import launch
    >>> server = launch(load_profile("a100"), api_key=None)
    >>> info = server.wait_ready(timeout=1800)
    >>> info.url, info.dimensions
    ('http://127.0.0.1:30000', 2560)
    >>> server.stop(timeout=30)
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .errors import LaunchError, NotReady, PortInUse, ServerExited
from .redact import redact

if TYPE_CHECKING:
    from .diagnose import Diagnosis
    from .profiles import Profile
    from .state import Record

logger = logging.getLogger(__name__)

#: Loopback names SGLang's warm-up (``requests``) must not send through a proxy.
#: How much of the log to keep in memory for diagnosis (Ollama keeps 8 KiB).
TAIL_BYTES = 8 * 1024
#: A healthy ``/health`` runs a 1-token forward after a 1 s sleep: allow well above that.
HEALTH_TIMEOUT = 10.0
#: How long one turn of the readiness loop waits on the process.
POLL_INTERVAL = 0.25
#: The text of the readiness probe embedding.
PROBE_TEXT = "qembed readiness probe"
_NOT_EMBEDDING = "does not appear to be an embedding model"


# -- phases -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    key: str
    label: str
    rank: int


#: Startup phases in order. Log patterns come from SGLang 0.5.23 (reference section 2.1).
PHASES: tuple[Phase, ...] = (
    Phase("starting", "starting SGLang", 0),
    Phase("loading", "loading weights", 1),
    Phase("loaded", "weights loaded", 2),
    Phase("memory_pool", "allocating the memory pool", 3),
    Phase("cuda_graphs", "capturing CUDA graphs", 4),
    Phase("graphs_done", "CUDA graphs captured", 5),
    Phase("scheduler", "scheduler ready", 6),
    Phase("warming_up", "port bound, warming up", 7),
    Phase("probe", "checking an embedding", 8),
    Phase("ready", "ready", 9),
)
_PHASE = {p.key: p for p in PHASES}
_PHASE_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"Load weight begin\b"), "loading"),
    (re.compile(r"Load weight end\b"), "loaded"),
    (re.compile(r"Memory pool end\b"), "memory_pool"),
    (re.compile(r"Capture .* CUDA graph begin\b"), "cuda_graphs"),
    (re.compile(r"Capture .* CUDA graph end\b"), "graphs_done"),
    (re.compile(r"\bmax_total_num_tokens="), "scheduler"),
    (re.compile(r"Uvicorn running on\b"), "warming_up"),
    (re.compile(r"The server is fired up and ready to roll!"), "warming_up"),
)


def phase_of(line: str) -> str | None:
    """The phase key a SGLang log line announces, or ``None``."""
    for pattern, key in _PHASE_PATTERNS:
        if pattern.search(line):
            return key
    return None


# -- log following ------------------------------------------------------------------------------


class LogTail:
    """The last lines of a log, bounded to ``max_bytes`` in total (oldest dropped first).

    Lines are stored redacted (:func:`redact`, plus ``secrets``): SGLang writes its API key
    into the log, and these lines end up in error messages.
    """

    def __init__(self, max_bytes: int = TAIL_BYTES, *, secrets: Iterable[str] = ()) -> None:
        self.max_bytes = max_bytes
        self.secrets = tuple(s for s in secrets if s)
        self._lines: collections.deque[tuple[int, str]] = collections.deque()
        self._size = 0
        self.line_count = 0  # lines seen in total (line numbers are 1-based)

    def add(self, line: str) -> None:
        line = redact(line.rstrip("\r\n"), self.secrets)
        if len(line) > self.max_bytes:  # one huge line (a tensor dump): keep its end
            line = line[-self.max_bytes :]
        self.line_count += 1
        self._lines.append((self.line_count, line))
        self._size += len(line) + 1
        while self._size > self.max_bytes and len(self._lines) > 1:
            _, old = self._lines.popleft()
            self._size -= len(old) + 1

    def lines(self, last: int | None = None) -> list[str]:
        items = [text for _, text in self._lines]
        return items if last is None else items[-last:]

    def numbered(self) -> list[tuple[int, str]]:
        return list(self._lines)


class LogFollower:
    """Reads a growing log file incrementally, feeding a :class:`LogTail` and the phases."""

    def __init__(self, path: Path, tail: LogTail | None = None) -> None:
        self.path = path
        self.tail = tail or LogTail()
        self._fh: IO[bytes] | None = None
        self._partial = b""

    def poll(self) -> list[str]:
        """New complete lines since the last call."""
        if self._fh is None:
            try:
                self._fh = open(self.path, "rb")  # noqa: SIM115 (kept open across calls)
            except FileNotFoundError:
                return []
        out: list[str] = []
        # In chunks: a server that ran for hours may have written a lot since the last call.
        while chunk := self._fh.read(1 << 20):
            *complete, self._partial = (self._partial + chunk).split(b"\n")
            for raw in complete:
                line = raw.decode("utf-8", "replace")
                self.tail.add(line)
                out.append(line)
            if len(out) > 10_000:  # callers only need the recent lines
                del out[:-10_000]
        return out

    def flush(self) -> list[str]:
        """Like :meth:`poll`, plus a last unterminated line."""
        out = self.poll()
        if self._partial:
            line = self._partial.decode("utf-8", "replace")
            self._partial = b""
            self.tail.add(line)
            out.append(line)
        return out

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


# -- ports --------------------------------------------------------------------------------------


def connect_host(host: str) -> str:
    """Where to connect to a server bound on ``host`` (wildcards map to loopback, as SGLang's
    own internal requests do)."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host in ("::", "[::]"):
        return "::1"
    return host


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def base_url(host: str, port: int) -> str:
    h = connect_host(host)
    if ":" in h and not h.startswith("["):
        h = f"[{h}]"
    return f"http://{h}:{port}"


def port_is_free(host: str, port: int) -> bool:
    """True when ``host:port`` can be bound now (with ``SO_REUSEADDR``, as uvicorn binds)."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return True  # an unresolvable host fails later with SGLang's own message
    for family, socktype, proto, _, addr in infos:
        with socket.socket(family, socktype, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(addr)
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    return False
                continue  # e.g. EADDRNOTAVAIL for an address this host lacks: not "busy"
    return True


def find_free_port(host: str, start: int, *, tries: int = 100) -> int | None:
    """The first free port after ``start`` (None if ``tries`` ports are all busy)."""
    for port in range(start + 1, min(start + 1 + tries, 65536)):
        if port_is_free(host, port):
            return port
    return None


def _listening_inodes(port: int) -> set[str]:
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
                inodes.add(inode)
    return inodes


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
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    targets = {f"socket:[{i}]" for i in inodes}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in targets:
                    comm = (entry / "comm").read_text().strip()
                    return f"pid {entry.name} ({comm})"
            except OSError:
                continue
    return None


def check_port(host: str, port: int) -> None:
    """Raise :class:`PortInUse` (naming the holder and a free port) when the port is busy."""
    if port_is_free(host, port):
        return
    holder = port_holder(port)
    free = find_free_port(host, port)
    who = f" by {holder}" if holder else ""
    hint = f"pass `--port {free}` (free now)" if free else "pass a free `--port`"
    hint += ", or stop what holds it (`qembed ps` lists qembed's servers)"
    raise PortInUse(
        f"port {port} on {host} is already in use{who}",
        hint=hint,
        details=["SGLang would only notice after loading the model, then kill itself minutes later"],
    )


# -- process groups -----------------------------------------------------------------------------


def _group_members(pgid: int) -> list[int]:
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
        try:
            raw = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        rest = raw[raw.rfind(")") + 2 :].split()
        if len(rest) > 2 and rest[2] == str(pgid) and rest[0] not in ("Z", "X"):
            members.append(int(name))
    return members


def _alive(pid: int) -> bool:
    from .state import pid_alive

    return pid_alive(pid)


def kill_group(pgid: int, *, wait: float = 5.0) -> None:
    """SIGKILL every process in the group and wait (up to ``wait`` s) until none is left."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + wait
    while _group_members(pgid) and time.monotonic() < deadline:
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
                if not _alive(pid):
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


# -- readiness ----------------------------------------------------------------------------------


@dataclass
class ReadyInfo:
    """What the readiness check learned. ``seconds`` is the time from spawn to ready."""

    url: str
    model: str
    served_model_name: str
    dimensions: int
    context_length: int | None
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "model": self.model,
            "served_model_name": self.served_model_name,
            "dimensions": self.dimensions,
            "context_length": self.context_length,
            "seconds": round(self.seconds, 2),
        }


def _exit_text(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"exit code {returncode}, killed by {name}"
    return f"exit code {returncode}"


def failure_details(
    tail: LogTail,
    *,
    profile: Profile | None,
    returncode: int | None,
    log_path: Path | None,
    last: int = 12,
) -> tuple[list[str], str | None, list[Diagnosis]]:
    """The detail lines (last log lines, diagnosis, log path) and hint for a failed launch."""
    numbered = tail.numbered()
    diagnoses: list[Diagnosis] = []
    try:
        from .diagnose import diagnose

        lines = [text for _, text in numbered]
        diagnoses = list(diagnose(lines, profile=profile, returncode=returncode))
        # Errors before warnings (a KV-pool warning is no cause of death); stable otherwise.
        diagnoses.sort(key=lambda d: getattr(d, "level", "error") != "error")
    except ImportError:
        logger.debug("qembed.diagnose is not available", exc_info=True)
    details: list[str] = []
    shown = [t for t in tail.lines(last) if t.strip()]
    if shown:
        details.append("last log lines:")
        details.extend(f"  {t}" for t in shown)
    hint: str | None = None
    for i, d in enumerate(diagnoses[:3]):
        details.append(f"diagnosis: {d.title}" + (f" ({d.cause})" if d.cause else ""))
        if d.evidence:
            details.append(f"  evidence: {d.evidence.strip()}")
        if i == 0:
            hint = d.fix
        elif d.fix:
            details.append(f"  fix: {d.fix}")
    if log_path is not None:
        details.append(f"full log: {log_path}")
    if hint is None and log_path is not None:
        hint = f"read the full log (`less {log_path}`), or run `qembed doctor`"
    return details, hint, diagnoses


class Server:
    """One SGLang process group started by :func:`launch` (or :func:`spawn`).

    Attributes:
        pid: the SGLang main process (also the process group id).
        log_path: where SGLang's stdout and stderr go.
        url: the base URL (``http://127.0.0.1:30000``; no ``/v1``).
        tail: the last 8 KiB of log lines seen so far.
    """

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        *,
        host: str,
        port: int,
        log_path: Path,
        api_key: str | None = None,
        profile: Profile | None = None,
    ) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.pgid = proc.pid  # start_new_session=True: the child leads its own group
        self.host = host
        self.port = port
        self.url = base_url(host, port)
        self.log_path = log_path
        self.profile = profile
        self._api_key = api_key
        self.started = time.monotonic()
        self.follower = LogFollower(log_path, LogTail(secrets=[api_key] if api_key else []))
        self.tail = self.follower.tail
        self.phase = "starting"
        self.ready: ReadyInfo | None = None

    def __repr__(self) -> str:
        return f"<Server pid={self.pid} url={self.url} log={self.log_path}>"

    # -- helpers --------------------------------------------------------------------------------

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def returncode(self) -> int | None:
        return self.proc.poll()

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def _advance(self, key: str, on_phase: Callable[[str, float], None] | None) -> None:
        if _PHASE[key].rank <= _PHASE[self.phase].rank:
            return
        self.phase = key
        if on_phase is not None:
            on_phase(_PHASE[key].label, self.elapsed())

    def _read_log(self, on_phase: Callable[[str, float], None] | None) -> None:
        for line in self.follower.poll():
            key = phase_of(line)
            if key is not None:
                self._advance(key, on_phase)

    def _pause(self, seconds: float) -> int | None:
        """Wait on the process rather than sleep, so an exit is seen at once."""
        try:
            return self.proc.wait(timeout=max(0.0, seconds))
        except subprocess.TimeoutExpired:
            return None

    def _exited(self, returncode: int) -> ServerExited:
        self.follower.flush()
        details, hint, _ = failure_details(
            self.tail, profile=self.profile, returncode=returncode, log_path=self.log_path
        )
        return ServerExited(
            f"SGLang exited before it was ready ({_exit_text(returncode)}, after {self.elapsed():.0f} s)",
            returncode=returncode,
            hint=hint,
            details=details,
        )

    # -- public ---------------------------------------------------------------------------------

    def wait_ready(
        self, *, timeout: float, on_phase: Callable[[str, float], None] | None = None
    ) -> ReadyInfo:
        """Block until the server answers ``/health`` with 200 and a probe embedding works.

        Args:
            timeout: seconds from now before giving up (the server keeps running: call
                :meth:`stop`).
            on_phase: called as ``on_phase(label, elapsed_seconds)`` each time the startup
                phase changes (from the log, the port, ``/health``), in this thread.

        Returns:
            A :class:`ReadyInfo` (URL, model, served name, vector size, context length).

        Raises:
            ServerExited: SGLang exited first; ``details`` hold the last log lines and the
                diagnosis, ``hint`` the fix.
            NotReady: ``timeout`` passed.
            LaunchError: the server answered but is not an embedding server.
        """
        import httpx

        deadline = time.monotonic() + timeout
        if on_phase is not None and self.phase == "starting":
            on_phase(_PHASE["starting"].label, self.elapsed())
        bound = False
        cfg = {"trust_env": False, "headers": self._headers()}  # no proxy for loopback
        with httpx.Client(**cfg) as http:  # type: ignore[arg-type]
            while True:
                self._read_log(on_phase)
                rc = self.proc.poll()
                if rc is not None:
                    raise self._exited(rc)
                now = time.monotonic()
                if now >= deadline:
                    raise self._not_ready(timeout)
                if not bound:
                    bound = self._can_connect(min(1.0, deadline - now))
                    if bound:
                        self._advance("warming_up", on_phase)
                if bound:
                    status = self._get_health(http, min(HEALTH_TIMEOUT, max(0.1, deadline - time.monotonic())))
                    if status == 200:
                        break
                rc = self._pause(min(POLL_INTERVAL, max(0.0, deadline - time.monotonic())))
                if rc is not None:
                    self._read_log(on_phase)
                    raise self._exited(rc)
            self._read_log(on_phase)
            self._advance("probe", on_phase)
            info = self._probe(http, deadline)
        self._advance("ready", on_phase)
        self.ready = info
        return info

    def _can_connect(self, timeout: float) -> bool:
        try:
            with socket.create_connection((connect_host(self.host), self.port), timeout=max(0.05, timeout)):
                return True
        except OSError:
            return False

    def _get_health(self, http: Any, timeout: float) -> int | None:
        import httpx

        try:
            return int(http.get(f"{self.url}/health", timeout=timeout).status_code)
        except httpx.HTTPError:
            return None

    def _not_ready(self, timeout: float) -> NotReady:
        self.follower.flush()
        details, _, _ = failure_details(self.tail, profile=self.profile, returncode=None, log_path=self.log_path)
        phase = _PHASE[self.phase].label
        return NotReady(
            f"SGLang was not ready after {timeout:.0f} s (last phase: {phase})",
            hint="raise `--ready-timeout` (profile key `ready_timeout`) if the model is still "
            "loading, or read the log",
            details=details,
        )

    def _probe(self, http: Any, deadline: float) -> ReadyInfo:
        """``/v1/models`` for the served name and context length, then one embedding."""
        import httpx

        def left() -> float:
            return max(1.0, min(60.0, deadline - time.monotonic()))

        served = self.profile.served_model_name if self.profile else None
        model = self.profile.model if self.profile else None
        context: int | None = None
        try:
            r = http.get(f"{self.url}/v1/models", timeout=left())
            entries = r.json().get("data") or [] if r.status_code == 200 else []
            if entries:
                served = entries[0].get("id") or served
                context = entries[0].get("max_model_len")
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            logger.debug("GET /v1/models failed: %s", exc)
        body = {"input": PROBE_TEXT, "model": served or "default"}
        try:
            r = http.post(f"{self.url}/v1/embeddings", json=body, timeout=left())
        except httpx.HTTPError as exc:
            rc = self.proc.poll()
            if rc is not None:
                raise self._exited(rc) from exc
            raise LaunchError(
                f"the probe embedding failed: {exc}",
                hint=f"read the log: `less {self.log_path}`",
            ) from exc
        text = r.text
        if r.status_code == 400 and _NOT_EMBEDDING in text:
            raise LaunchError(
                "SGLang started the model as a text generator, not an embedding model "
                "(the probe got 400 \"does not appear to be an embedding model\")",
                hint="SGLang needs `--is-embedding` for Qwen3-Embedding (its config says "
                "Qwen3ForCausalLM); do not remove it through `extra_args`",
            )
        if r.status_code == 401:
            raise LaunchError(
                "the probe embedding was refused with 401 Unauthorized",
                hint="the server expects an API key: set the variable named by `api_key_env`",
            )
        if r.status_code != 200:
            raise LaunchError(f"the probe embedding got HTTP {r.status_code}: {text[:300]}",
                              hint=f"read the log: `less {self.log_path}`")
        try:
            payload = r.json()
            vec = payload["data"][0]["embedding"]
            dims = len(vec)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise LaunchError(f"the probe embedding returned an unexpected body: {text[:300]}") from exc
        return ReadyInfo(
            url=self.url,
            model=str(payload.get("model") or model or ""),
            served_model_name=str(served or payload.get("model") or ""),
            dimensions=dims,
            context_length=int(context) if isinstance(context, int) else None,
            seconds=self.elapsed(),
        )

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for SGLang to exit (None on timeout), keeping the log tail current."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            rc = self._pause(step)
            self.follower.poll()
            if rc is not None or (deadline is not None and time.monotonic() >= deadline):
                return rc

    def stop(self, *, timeout: float, on_wait: Callable[[float], None] | None = None) -> int:
        """SIGTERM, wait up to ``timeout`` s for the drain, then SIGKILL the process group.

        Returns:
            SGLang's exit status (negative = killed by that signal).
        """
        rc = stop_process(self.pid, self.pgid, timeout=timeout, proc=self.proc, on_wait=on_wait)
        self.follower.flush()
        self.follower.close()
        return self.proc.returncode if rc is None else rc

    def detach(self) -> None:
        """Stop tracking the process: it keeps running after this interpreter exits."""
        self.follower.close()
        # Popen warns at garbage collection about a child still running; a detached server is
        # meant to outlive us (init reaps it), so tell Popen not to track it.
        self.proc.returncode = 0


# -- recorded servers ---------------------------------------------------------------------------


def health_status(url: str, *, timeout: float = HEALTH_TIMEOUT) -> str:
    """``ready`` (``/health`` 200), ``starting`` (503), ``unreachable`` or ``http <status>``.

    ``/health`` needs no API key in SGLang. It runs a 1-token forward, so allow seconds.
    """
    import httpx

    try:
        with httpx.Client(trust_env=False) as http:
            code = http.get(f"{url.rstrip('/')}/health", timeout=timeout).status_code
    except httpx.HTTPError:
        return "unreachable"
    return {200: "ready", 503: "starting"}.get(code, f"http {code}")


def stop_server(record: Record, *, timeout: float | None = None) -> bool:
    """Stop a recorded server (SIGTERM, wait, SIGKILL its group) and delete its record.

    ``timeout`` defaults to the record's ``shutdown_timeout``. Returns False when the server was
    already gone (the stale record is deleted all the same).
    """
    from .state import remove_if_owned

    if not record.is_alive():
        remove_if_owned(record)
        return False
    wait = record.shutdown_timeout if timeout is None else timeout
    stop_process(record.pid, record.pgid, timeout=wait)
    remove_if_owned(record)
    return True


# -- launching ----------------------------------------------------------------------------------


def merge_no_proxy(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with ``NO_PROXY``/``no_proxy`` both covering loopback (keeps existing entries)."""
    from .sglang_args import merge_no_proxy as merged_value

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
) -> Server:
    """Start ``argv`` in a new session (own process group), stdout+stderr to ``log_path``.

    ``env`` is added to this process's environment; ``NO_PROXY`` always covers loopback.
    ``header`` lines are written to the log first (e.g. the redacted command).
    ``parent_death_signal`` (Linux): the signal SGLang gets if this thread dies, even by
    SIGKILL, so a foreground server does not outlive ``qembed serve``. It uses ``preexec_fn``,
    which is unsafe when other threads run: the CLI passes it, :func:`launch` does not by default.
    """
    full_env = merge_no_proxy({**os.environ, **(env or {})})
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
                preexec_fn=_pdeathsig(parent_death_signal) if parent_death_signal else None,
            )
        except OSError as exc:
            raise LaunchError(
                f"could not start `{argv[0]}`: {exc.strerror or exc}",
                hint="check `--python` / profile key `python` / `QEMBED_SGLANG_PYTHON`",
            ) from exc
    logger.info("spawned pid %d: log %s", proc.pid, log_path)
    return Server(proc, host=host, port=port, log_path=log_path, api_key=api_key, profile=profile)


def _reference_command(profile: Profile, *, api_key: str | None, python: str | None) -> Any:
    """``engine: reference``: ``python -m qembed.refserver`` (this interpreter unless ``python``)."""
    from .refserver import build_command

    return build_command(profile, api_key=api_key, python=python)


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
) -> Server:
    """Check and start SGLang for ``profile``; returns at once (call :meth:`Server.wait_ready`).

    Args:
        profile: the resolved profile (:func:`qembed.profiles.load_profile`).
        api_key: the key SGLang should require (``--api-key``), or None.
        log_path: where the log goes (default: a new file in the state dir's ``logs/``).
        python: the interpreter with SGLang (default: :func:`qembed.sglang_args.sglang_python`).
        name: the server name used for the default log file name.
        check_flags: run SGLang's own parser on the flags first (about 3 s).
        check_port_free: raise :class:`PortInUse` when the port is taken.
        parent_death_signal: see :func:`spawn` (the CLI passes SIGTERM in the foreground).

    Raises:
        PortInUse, FlagsRejected, MissingDependency, LaunchError.
    """
    from . import sglang_args
    from .state import new_log_path

    reference = profile.engine == "reference"
    py = python or sglang_args.sglang_python(profile)
    cmd = (_reference_command(profile, api_key=api_key, python=python) if reference
           else sglang_args.build_command(profile, api_key=api_key, python=py))
    if check_port_free:
        check_port(profile.host, profile.port)
    if check_flags and not reference:  # SGLang's parser has nothing to say about the reference engine
        # The parser sees a placeholder key: no secret in that short-lived argv.
        flags = sglang_args.build_flags(profile, api_key="x" if api_key else None)
        sglang_args.ensure_accepted(flags, python=py)
    path = log_path or new_log_path(name or profile.name or "default")
    return spawn(
        cmd.argv,
        host=profile.host,
        port=profile.port,
        log_path=path,
        env=cmd.env,
        api_key=api_key,
        profile=profile,
        header=[f"command: {cmd.display()}"],
        parent_death_signal=parent_death_signal,
    )


__all__ = [
    "PHASES",
    "LogFollower",
    "LogTail",
    "ReadyInfo",
    "Server",
    "base_url",
    "check_port",
    "connect_host",
    "failure_details",
    "find_free_port",
    "health_status",
    "is_loopback",
    "kill_group",
    "launch",
    "merge_no_proxy",
    "phase_of",
    "port_holder",
    "port_is_free",
    "redact",
    "spawn",
    "stop_process",
    "stop_server",
]
