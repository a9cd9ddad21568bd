"""Watch a spawned SGLang come up: startup phases from its log, the readiness loop, the
failure report, and the checks of recorded servers.

:meth:`Server.wait_ready` follows the log (progress phases, and the last 8 KiB of lines kept
for diagnosis, as Ollama does) while it checks, in order: the process is alive, the port
accepts a TCP connection, the listening socket belongs to this SGLang's process group (another
process that took the port while SGLang loaded is never trusted), ``GET /health`` answers 200
(``/v1/models`` answers 200 before warm-up ends, so it is no readiness signal), and one probe
``POST /v1/embeddings`` returns a vector. :meth:`Server.stop` sends SIGTERM, waits for SGLang's
drain (which has no upper bound of its own), then SIGKILLs the whole process group.

Nothing here prints: progress goes to the ``on_phase`` callback, failures are exceptions from
:mod:`qembed.errors` whose ``details`` carry the last log lines and the diagnosis. Spawning is
:mod:`qembed.serving.launcher`'s.
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qembed.errors import (
    BadReply,
    FlagsRejected,
    LaunchError,
    NotReady,
    PortInUse,
    ServerError,
    ServerExited,
    ServerUnreachable,
)
from qembed.host.logfiles import LogFollower, LogTail, summarize_server_args
from qembed.host.ports import connect_host, connect_url, find_free_port
from qembed.host.procfs import group_members, port_holder, port_owned_by
from qembed.host.procgroup import stop_process
from qembed.serving.diagnose import Diagnosis, diagnose

if TYPE_CHECKING:
    from qembed.serving.profiles.model import Profile

logger = logging.getLogger(__name__)

#: A healthy ``/health`` runs a 1-token forward after a 1 s sleep: allow well above that.
HEALTH_TIMEOUT = 10.0
#: How long one turn of the readiness loop waits on the process.
POLL_INTERVAL = 0.25
_BIND_FAILED = re.compile(r"\[Errno 98\].*address already in use")


# -- phases -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    key: str
    label: str  #: ``{engine}`` stands for :func:`qembed.serving.profiles.model.engine_name`
    rank: int

    def text(self, engine: str) -> str:
        """The label as said for ``engine`` (``starting the reference engine``)."""
        return self.label.format(engine=engine)


#: Startup phases in order. Log patterns come from SGLang 0.5.23 (reference section 2.1).
PHASES: tuple[Phase, ...] = (
    Phase("starting", "starting {engine}", 0),
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


_FRAME = re.compile(r'^\s*(Traceback \(most recent call last\):|File "[^"]*", line \d+|[\^~]+\s*$)')


def without_stack_frames(lines: Sequence[str]) -> list[str]:
    """``lines`` without Python traceback frames (``File "...", line N`` and the code and caret
    lines under it); the exception line itself stays."""
    out: list[str] = []
    in_frame = False
    for line in lines:
        if _FRAME.match(line):
            in_frame = line.lstrip().startswith("File ")
            continue
        if in_frame and line.startswith((" ", "\t")):
            continue  # the source line quoted under a frame
        in_frame = False
        out.append(line)
    return out


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
    lines = [text for _, text in numbered]
    diagnoses = list(diagnose(lines, profile=profile, returncode=returncode))
    # Errors before warnings (a KV-pool warning is no cause of death); stable otherwise.
    diagnoses.sort(key=lambda d: d.level != "error")
    details: list[str] = []
    raw = tail.lines(last * 3 if diagnoses else last)
    if any(d.level == "error" for d in diagnoses):
        # the diagnosis names the cause: quote SGLang's own lines, not Python's stack frames
        raw = without_stack_frames(raw)
    shown = [summarize_server_args(t) for t in raw[-last:] if t.strip()]
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


_ERROR_LINE = re.compile(r"(\b\w*(Error|Exception)\b|\berror:|\bFATAL\b|\bKilled\b)")


def last_error_line(lines: Sequence[str], *, width: int = 240) -> str | None:
    """The child's own last error line (``OSError: ...``, ``error: ...``), for the final message,
    so that the cause is on screen and not only in the log (issue 23)."""
    for line in reversed(lines):
        text = line.strip()
        if text and not text.startswith(("File \"", "Traceback", "^", "~")) and _ERROR_LINE.search(text):
            return text if len(text) <= width else text[: width - 3] + "..."
    return None


def diagnoses_json(diagnoses: Iterable[Diagnosis]) -> list[dict[str, Any]]:
    """Diagnoses as JSON-able dicts (for :attr:`qembed.errors.QembedError.diagnoses`)."""
    from dataclasses import asdict

    return [asdict(d) for d in diagnoses]


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
        self.url = connect_url(host, port)
        self.log_path = log_path
        self.profile = profile
        self._api_key = api_key
        self.started = time.monotonic()
        self.follower = LogFollower(log_path, LogTail(secrets=[api_key] if api_key else []))
        self.tail = self.follower.tail
        self.phase = "starting"
        self.ready: ReadyInfo | None = None
        #: the :mod:`qembed.host.logrotate` watcher of this server's log (None: not rotated)
        self.rotator: subprocess.Popen[bytes] | None = None
        #: ``"pid 123 (nginx)"`` once another process was seen answering on our port.
        self.foreign_holder: str | None = None
        #: the parser-verdict cache key of this argv when no verdict was known at launch
        #: (:func:`qembed.serving.sglang_args.launch_verdict`): stored as accepted once ready
        self.pending_verdict: str | None = None
        #: the Prometheus port, for a server that serves metrics on its own port (smg)
        self.metrics_port: int | None = None
        #: a gateway's control-plane key (qembed.serving.gateway.start_gateway), never a client key
        self.admin_key: str | None = None
        self._bind_failed: str | None = None  # uvicorn's "[Errno 98] ... address already in use"

    def __repr__(self) -> str:
        return f"<Server pid={self.pid} url={self.url} log={self.log_path}>"

    # -- helpers --------------------------------------------------------------------------------

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def engine(self) -> str:
        """The engine this process runs, in messages (:func:`qembed.serving.profiles.model.engine_name`)."""
        from qembed.serving.profiles.model import engine_name

        return engine_name(self.profile)

    @property
    def engine_title(self) -> str:
        """:attr:`engine` to start a sentence."""
        return self.engine[:1].upper() + self.engine[1:]

    def returncode(self) -> int | None:
        return self.proc.poll()

    def _advance(self, key: str, on_phase: Callable[[str, float], None] | None) -> None:
        if _PHASE[key].rank <= _PHASE[self.phase].rank:
            return
        self.phase = key
        if on_phase is not None:
            on_phase(_PHASE[key].text(self.engine), self.elapsed())

    def _read_log(self, on_phase: Callable[[str, float], None] | None) -> None:
        for line in self.follower.poll():
            key = phase_of(line)
            if key is not None:
                self._advance(key, on_phase)
            elif _BIND_FAILED.search(line):
                self._bind_failed = line

    def _owns_port(self) -> bool:
        """The listening socket on our port belongs to this SGLang (its process group).

        Until it does, ``/health`` may be another server's answer: SGLang binds only after the
        model loads, so a process that took the port meanwhile would answer for it. Where the
        system does not show socket owners (no ``/proc``), the answer is trusted as before.
        """
        owned = port_owned_by(self.port, [self.pid, *group_members(self.pgid)])
        return owned is not False

    def _note_foreign(self, on_phase: Callable[[str, float], None] | None) -> None:
        if self.foreign_holder is not None:
            return
        self.foreign_holder = port_holder(self.port) or "another process"
        logger.info("port %d answers, but it is held by %s, not %s pid %d",
                    self.port, self.foreign_holder, self.engine, self.pid)
        if on_phase is not None:
            on_phase(f"port {self.port} is held by {self.foreign_holder}, not by {self.engine} "
                     f"(pid {self.pid}): "
                     "not trusting its answers", self.elapsed())

    def _port_taken(self) -> PortInUse:
        """SGLang logged that it cannot bind, and another process holds the port."""
        self.follower.flush()
        details, _, diags = failure_details(self.tail, profile=self.profile, returncode=None,
                                            log_path=self.log_path)
        free = find_free_port(self.host, self.port)
        hint = f"pass `--port {free}` (free now)" if free else "pass a free `--port`"
        return PortInUse(
            f"{self.engine_title} could not bind port {self.port} after loading: it is held by "
            f"{self.foreign_holder}, which answered in its place (after {self.elapsed():.0f} s)",
            hint=hint + f", or stop {self.foreign_holder}",
            details=details,
            diagnoses=diagnoses_json(diags),
        )

    def _foreign_details(self) -> list[str]:
        if self.foreign_holder is None:
            return []
        return [f"port {self.port} was held by {self.foreign_holder} while {self.engine} started; "
                f"qembed did not take its answers as {self.engine}'s"]

    def _pause(self, seconds: float) -> int | None:
        """Wait on the process rather than sleep, so an exit is seen at once."""
        try:
            return self.proc.wait(timeout=max(0.0, seconds))
        except subprocess.TimeoutExpired:
            return None

    def _exited(self, returncode: int) -> ServerExited | FlagsRejected:
        self.follower.flush()
        details, hint, diags = failure_details(
            self.tail, profile=self.profile, returncode=returncode, log_path=self.log_path
        )
        if returncode == 2 and any(d.key == "flags_rejected" for d in diags):
            # SGLang's own parser, first thing in the server (no pre-check ran: issue 23): the
            # same error, and exit code, as the pre-check gives
            first = next(d for d in diags if d.key == "flags_rejected")
            return FlagsRejected(f"SGLang rejected the command line: {first.evidence.strip()}", hint=hint,
                                 details=details, diagnoses=diagnoses_json(diags))
        last = last_error_line(self.tail.lines(200))
        return ServerExited(
            f"{self.engine_title} exited before it was ready ({_exit_text(returncode)}, after {self.elapsed():.0f} s)"
            + (f": {last}" if last else ""),
            returncode=returncode,
            hint=hint,
            details=self._foreign_details() + details,
            diagnoses=diagnoses_json(diags),
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
        from qembed.probe import open_http

        deadline = time.monotonic() + timeout
        if on_phase is not None and self.phase == "starting":
            on_phase(_PHASE["starting"].text(self.engine), self.elapsed())
        bound = False
        http = open_http(self.url, self._api_key, timeout=HEALTH_TIMEOUT)  # no proxy for loopback
        try:
            while True:
                self._read_log(on_phase)
                rc = self.proc.poll()
                if rc is not None:
                    raise self._exited(rc)
                now = time.monotonic()
                if now >= deadline:
                    raise self._not_ready(timeout)
                if self._bind_failed and self.foreign_holder:
                    raise self._port_taken()
                if not bound and self._can_connect(min(1.0, deadline - now)):
                    # Trust nothing on the port until the listener is this SGLang.
                    bound = self._owns_port()
                    if bound:
                        self._advance("warming_up", on_phase)
                    else:
                        self._note_foreign(on_phase)
                if bound:
                    status = self._get_health(http, min(HEALTH_TIMEOUT, max(0.1, deadline - time.monotonic())))
                    if status == 200:
                        break
                rc = self._pause(min(POLL_INTERVAL, max(0.0, deadline - time.monotonic())))
                if rc is not None:
                    self._read_log(on_phase)
                    raise self._exited(rc)
            self._read_log(on_phase)
        finally:
            http.close()
        self._advance("probe", on_phase)
        info = self._probe(deadline)
        self._advance("ready", on_phase)
        self.ready = info
        if self.pending_verdict is not None:  # SGLang's parser accepted the argv: remember it
            from qembed.serving.sglang_args import remember_accepted

            remember_accepted(self.pending_verdict)
            self.pending_verdict = None
        return info

    def _can_connect(self, timeout: float) -> bool:
        try:
            with socket.create_connection((connect_host(self.host), self.port), timeout=max(0.05, timeout)):
                return True
        except OSError:
            return False

    def _get_health(self, http: Any, timeout: float) -> int | None:
        from qembed.probe import fetch
        from qembed.transport import TransportFailure

        try:
            return fetch(http, "GET", "/health", timeout=timeout).status
        except TransportFailure:
            return None

    def _not_ready(self, timeout: float) -> NotReady:
        self.follower.flush()
        details, _, diags = failure_details(self.tail, profile=self.profile, returncode=None, log_path=self.log_path)
        phase = _PHASE[self.phase].text(self.engine)
        return NotReady(
            f"{self.engine_title} was not ready after {timeout:.0f} s (last phase: {phase})",
            hint="raise `--ready-timeout` (profile key `ready_timeout`) if the model is still "
            "loading, or read the log",
            details=self._foreign_details() + details,
            diagnoses=diagnoses_json(diags),
        )

    def _probe(self, deadline: float) -> ReadyInfo:
        """``/v1/models`` for the served name and context length, then one checked embedding
        (:func:`qembed.probe.probe_server`, the probe every command uses)."""
        from qembed.probe import probe_server, serves_generator

        left = max(1.0, min(60.0, deadline - time.monotonic()))
        served = self.profile.served_model_name if self.profile else None
        facts = probe_server(self.url, self._api_key, health=False, model=served, timeout=left)
        err = facts.embedding_error
        if isinstance(err, ServerUnreachable):
            rc = self.proc.poll()
            if rc is not None:
                raise self._exited(rc) from err
            raise LaunchError(f"the probe embedding failed: {err.message}",
                              hint=f"read the log: `less {self.log_path}`") from err
        if isinstance(err, ServerError) and not isinstance(err, BadReply):
            if serves_generator(err):
                raise LaunchError(
                    "SGLang started the model as a text generator, not an embedding model "
                    "(the probe got 400 \"does not appear to be an embedding model\")",
                    hint="SGLang needs `--is-embedding` for Qwen3-Embedding (its config says "
                    "Qwen3ForCausalLM); do not remove it through `extra_args`",
                ) from err
            if err.status == 401:
                raise LaunchError(
                    "the probe embedding was refused with 401 Unauthorized",
                    hint="the server expects an API key: set the variable named by `api_key_env`",
                ) from err
            raise LaunchError(f"the probe embedding got HTTP {err.status}: {err.message}",
                              hint=f"read the log: `less {self.log_path}`") from err
        if err is not None:  # BadReply: wrong shape, non-finite or not unit length
            raise LaunchError(f"the probe embedding returned an unexpected body: {err.message}",
                              details=err.details) from err
        if facts.dimensions is None:  # pragma: no cover - probe_server sets an error instead
            raise LaunchError("the probe embedding returned no vector")
        model = self.profile.model if self.profile else None
        return ReadyInfo(
            url=self.url,
            model=str(facts.model_path or model or ""),
            served_model_name=str(facts.model or served or ""),
            dimensions=facts.dimensions,
            context_length=facts.max_model_len,
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
        self._stop_rotator()
        return self.proc.returncode if rc is None else rc

    def _stop_rotator(self) -> None:
        if self.rotator is None:
            return
        with contextlib.suppress(OSError):
            self.rotator.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.rotator.wait(timeout=5)

    def detach(self) -> None:
        """Stop tracking the process: it keeps running after this interpreter exits."""
        self.follower.close()
        # Popen warns at garbage collection about a child still running; a detached server is
        # meant to outlive us (init reaps it), so tell Popen not to track it.
        self.proc.returncode = 0
        if self.rotator is not None:  # it ends by itself when SGLang does
            self.rotator.returncode = 0


def health_status(url: str, *, timeout: float = HEALTH_TIMEOUT) -> str:
    """``ready`` (``/health`` 200), ``starting`` (503), ``unreachable`` or ``http <status>``.

    ``/health`` needs no API key in SGLang. It runs a 1-token forward, so allow seconds.
    """
    from qembed.probe import get
    from qembed.transport import TransportFailure

    try:
        code = get(url.rstrip("/"), "/health", timeout=timeout).status
    except TransportFailure:
        return "unreachable"
    return {200: "ready", 503: "starting"}.get(code, f"http {code}")


__all__ = ["HEALTH_TIMEOUT", "PHASES", "Phase", "ReadyInfo", "Server", "diagnoses_json", "failure_details",
           "health_status", "phase_of"]
