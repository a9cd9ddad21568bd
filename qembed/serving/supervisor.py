"""One serving session: claim a name and a port, check, launch, wait, record, stop.

``qembed serve`` and ``qembed bench --profile`` run a server through :class:`ServingSession`, so
both get the same name and port claims (:func:`qembed.host.state.claim`), the same GPU checks
(:func:`qembed.serving.policy.require_launchable`; skipped for ``engine: reference``; for ``device: cpu`` the
plan of :mod:`qembed.serving.cpu`, whose explicit ``dtype`` and ``max_total_tokens`` the launch uses), the same record for
``qembed ps/stop/logs``, and the same cleanup: whatever fails after the launch stops the whole
process group, removes the record and releases the claim.

The steps, in order:

0. :meth:`ServingSession.plan` (any time; claims and starts nothing): the :class:`Plan`, what
   would launch and what the checks found (model path, exposure, GPU or CPU findings, profile
   settings); ``serve --dry-run`` renders it;
1. :meth:`ServingSession.prepare`: validate the name, claim the name and the port, refuse a name
   a live server already has, then refuse on the plan's first ``fail`` (and the reference
   engine's dependencies) and say its other findings, each as an :class:`Event`;
2. :meth:`ServingSession.launch`: spawn SGLang (it inherits the claim), save its record;
3. :meth:`ServingSession.wait_ready`: wait for readiness, complete the record;
4. then :meth:`~ServingSession.detach` (it keeps running), :meth:`~ServingSession.wait` (until it
   exits by itself) or :meth:`~ServingSession.stop` (drain, then kill the group);
5. :meth:`ServingSession.close` (idempotent; ``with`` calls it): nothing is left behind but a
   detached, ready server and its record.

Nothing here prints: findings and steps go to ``on_event`` as :class:`Event`, startup phases to
``on_phase``; :mod:`qembed.output` renders them. Signals are the foreground runner's
(:func:`qembed.serving.foreground.run_session` maps SIGTERM and SIGHUP to
:exc:`KeyboardInterrupt`, then calls :meth:`~ServingSession.stop`). Gateway and replica-group
sessions take the same steps (:mod:`qembed.serving.gateway_session`).

Example:
    >>> from qembed.serving.profiles.resolve import load_profile
    >>> with ServingSession(load_profile("a100"), name="emb", api_key=None) as s:   # doctest: +SKIP
    ...     server = s.start()
    ...     s.wait_ready().url
    'http://127.0.0.1:30000'
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from qembed.errors import ConfigError, NameInUse, PortInUse

if TYPE_CHECKING:
    from qembed.host.state import Claim, Record
    from qembed.serving.cpu import CPUPlan
    from qembed.serving.gpu import GPUSnapshot
    from qembed.serving.policy import Finding
    from qembed.serving.profiles.model import Profile
    from qembed.serving.readiness import ReadyInfo, Server
    from qembed.serving.sglang_args import LaunchCommand, ParserCheck

EventKind = Literal["warning", "notice", "download", "spawned", "stopping"]
#: seconds between SIGTERM and SIGKILL when a failed SGLang has nothing to drain
NO_DRAIN_GRACE = 3.0


@dataclass(frozen=True)
class Event:
    """Something a session says. ``warning``: a finding (``hint`` may say what to do);
    ``notice``: information (the reference engine's notice); ``download``: a step of the model's
    download (``fields``: :meth:`qembed.hub.Transfer.fields`); ``spawned``: SGLang started;
    ``stopping``: the session stops SGLang (``fields["reason"]`` is ``failed`` or ``requested``).
    ``fields`` carry the values for JSON events."""

    kind: EventKind
    message: str
    hint: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)


def check_name(name: str) -> None:
    """Refuse a server name that ``qembed ps/stop/logs`` could not use.

    Raises:
        ConfigError: not letters, digits, ``.``, ``_`` or ``-`` (at most 64).
    """
    from qembed.host import state

    if not state.valid_name(name):
        raise ConfigError(f"invalid server name `{name}`",
                          hint="use letters, digits, `.`, `_` or `-` (at most 64), e.g. `--name emb`")


def refuse_running(name: str) -> None:
    """Refuse a name a running server has recorded (``serve``, ``gateway`` and groups alike: exit 2).

    Raises:
        NameInUse: a live record holds ``name``.
    """
    from qembed.host import state

    existing = state.live(name)
    if existing is not None:
        raise NameInUse(f"a server named `{name}` is already running (pid {existing.pid}, {existing.url})",
                        hint=f"stop it with `qembed stop {name}`, or start another with `--name NAME` and `--port N`")
    other = state.load(name)
    if other is not None and other.elsewhere:  # a shared state dir: its record must not be overwritten
        raise NameInUse(f"a server named `{name}` is recorded on host `{other.hostname}` (pid {other.pid}, "
                        f"{other.url}) in this state directory, which that machine shares",
                        hint=f"start this one with `--name NAME`; stop that one on `{other.hostname}` "
                             f"(`qembed stop {name}`), or delete `{other.path}` if it no longer runs there")


def check_model_path(profile: Profile) -> None:
    """Refuse a local model path that does not exist: found before anything starts (by ``serve``
    and by its dry run alike), not after the engine has started and died on it.

    Raises:
        ConfigError: the path names no file or directory.
    """
    from qembed.hub import PATH_PREFIXES, missing_model_dir

    model = profile.model
    if model.startswith(PATH_PREFIXES) and not os.path.exists(os.path.expanduser(model)):
        raise missing_model_dir(model)


def exposure_warning(profile: Profile, api_key: str | None) -> Event | None:
    """The warning for a server on a network address without an API key: the exposure rule
    (:func:`qembed.serving.policy.exposure`) at ``warn``
    (:func:`qembed.serving.sglang_args.profile_warnings` leaves it out when asked)."""
    from qembed.serving.policy import exposure

    found = exposure(profile.host, keyed=bool(api_key), level="warn", listener="server",
                     port=profile.port, key_env=profile.api_key_env)
    return None if found is None else Event("warning", found.message, hint=found.hint)


@dataclass(frozen=True)
class Plan:
    """What a session would launch and what its checks found, with nothing claimed or started:
    ``serve --dry-run`` renders it, and :meth:`ServingSession.prepare` refuses on it.

    ``profile`` is the one that launches (``device: cpu``: the CPU plan's explicit ``dtype`` and
    KV pool). ``findings`` are the launch findings that are not ``info`` (the GPU checks of
    :func:`qembed.serving.policy.launch_findings`, or the CPU plan's); :attr:`refusal` is the
    first ``fail``, the one :meth:`require` raises. ``command`` is the engine's command (its
    ``redacted_argv``/``redacted_env`` for display). The reference engine has no findings and no
    flags; its dependencies are checked when the session prepares (:func:`reference_notice`).
    """

    profile: Profile
    python: str
    command: LaunchCommand
    exposure: Event | None = None
    findings: tuple[Finding, ...] = ()
    profile_warnings: tuple[str, ...] = ()
    cpu: CPUPlan | None = None
    #: SGLang's flags as its parser checks them (the API key as a placeholder); empty for the
    #: reference engine
    flags: tuple[str, ...] = ()
    #: the environment SGLang runs with (:func:`qembed.serving.sglang_args.resolve_sglang`)
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def refusal(self) -> Finding | None:
        """The first ``fail`` finding: a real ``serve`` refuses on it."""
        return next((f for f in self.findings if f.level == "fail"), None)

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warn"]

    def require(self) -> None:
        """Raise what ``serve`` raises for :attr:`refusal` (nothing when there is none).

        Raises:
            GPUError: a GPU check failed (or, on CPU, the model does not fit in RAM).
            MissingDependency: SGLang's CPU build is not installed. ConfigError: see
                :meth:`qembed.serving.cpu.CPUPlan.require`.
        """
        if self.cpu is not None:
            self.cpu.require()
        else:
            from qembed.serving.policy import refuse_failed

            refuse_failed(self.findings)

    def check_flags(self, on_import: Callable[[], None] | None = None) -> ParserCheck:
        """SGLang's own parser on :attr:`flags` (cached per target; see
        :func:`qembed.serving.sglang_args.ensure_accepted`).

        Raises:
            FlagsRejected: the parser rejects them. MissingDependency: no SGLang in ``python``.
        """
        from qembed.serving import sglang_args

        return sglang_args.ensure_accepted(list(self.flags), python=self.python, env=self.env, on_import=on_import)


def make_plan(profile: Profile, *, api_key: str | None, python: str, gpus: GPUSnapshot | None = None) -> Plan:
    """The :class:`Plan` for ``profile`` (``gpus``: the snapshot for the GPU checks; default a
    fresh one, taken only for a GPU profile).

    Raises:
        ConfigError: the profile names a local model directory that does not exist.
    """
    from qembed.serving import sglang_args

    check_model_path(profile)
    exposure = exposure_warning(profile, api_key)
    if profile.engine == "reference":
        from qembed.serving.engines import reference_command

        return Plan(profile=profile, python=python, command=reference_command(profile, api_key=api_key),
                    exposure=exposure,
                    profile_warnings=tuple(sglang_args.profile_warnings(profile, exposure=False)))
    cpu_plan: CPUPlan | None = None
    if profile.device == "cpu":  # SGLang's CPU backend: no NVML, no driver; SGLang's CPU build
        from qembed.serving import cpu

        cpu_plan = cpu.plan(profile, python=python)
        # the launch gets the plan's explicit dtype and KV pool (never `auto`, never 70 % of RAM)
        profile = cpu_plan.profile
        findings = tuple(f for f in cpu_plan.findings if f.level != "info")
    else:
        from qembed.serving import gpu, policy

        snap = gpus if gpus is not None else gpu.snapshot()
        version = sglang_args.installed_sglang_version(python)
        findings = tuple(f for f in policy.launch_findings(snap, profile, sglang_version=version)
                         if f.level != "info")
    _, env = sglang_args.resolve_sglang(profile, python)
    return Plan(profile=profile, python=python, command=sglang_args.build_command(profile, api_key=api_key, python=python),
                exposure=exposure, findings=findings,
                profile_warnings=tuple(sglang_args.profile_warnings(profile, exposure=False)), cpu=cpu_plan,
                flags=tuple(sglang_args.build_flags(profile, api_key="x" if api_key else None)), env=env)


class ServingSession:
    """One server from one profile, from its claim to its cleanup.

    Args:
        profile: the resolved profile (its ``port``, ``host``, ``ready_timeout``,
            ``shutdown_timeout`` and ``engine`` are used).
        name: the server name for ``qembed ps/stop/logs``.
        api_key: the key SGLang requires (``None``: none).
        python: SGLang's interpreter (default: :func:`qembed.serving.sglang_args.sglang_python`).
        detach: the server outlives this process (no parent-death signal, no owner pid).
        gpus: the GPU snapshot for the checks (default: a fresh one).
        on_event: receives each :class:`Event`.
        checks: run the checks in :meth:`prepare` (a replica of a group that was checked as
            a whole skips them).
        record_fields: more :func:`qembed.host.state.make_record` fields (``group``, ``role``).

    Raises (from :meth:`prepare` / :meth:`launch` / :meth:`wait_ready`):
        ConfigError: invalid name. NameInUse / PortInUse: claimed or held. GPUError: the GPU
        checks refuse. MissingDependency: the reference engine lacks sentence-transformers.
        LaunchError and its kinds: SGLang did not become a ready embedding server.
        StateDirError: the record could not be saved.
    """

    def __init__(self, profile: Profile, *, name: str, api_key: str | None, python: str | None = None,
                 detach: bool = False, gpus: GPUSnapshot | None = None,
                 on_event: Callable[[Event], None] | None = None, checks: bool = True,
                 record_fields: Mapping[str, Any] | None = None) -> None:
        self.profile = profile
        self.checks = checks
        self.record_fields = dict(record_fields or {})
        self.name = name
        self.api_key = api_key
        if python is None:
            from qembed.serving.sglang_args import sglang_python

            python = sglang_python(profile)
        self.python: str = python
        self.detached = detach
        self.gpus = gpus
        self._on_event = on_event
        self.claim: Claim | None = None
        self.server: Server | None = None
        self.record: Record | None = None
        self.info: ReadyInfo | None = None
        self.log_path: Path | None = None
        self._released_to_background = False
        self._plan: Plan | None = None

    # -- events ---------------------------------------------------------------------------------

    def _say(self, event: Event) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:  # a reporter that fails (a closed pipe) must never leave a child running
            if event.kind == "stopping":
                return
            raise

    # -- steps ----------------------------------------------------------------------------------

    @property
    def engine(self) -> str:
        """What is being served, in messages (:func:`qembed.serving.profiles.model.engine_name`)."""
        from qembed.serving.profiles.model import engine_name

        return engine_name(self.profile)

    def prepare(self) -> ServingSession:
        """Validate and claim the name and port, then run the checks (nothing is launched)."""
        from qembed.host import state

        check_name(self.name)
        # Claim the name and the port before anything loads: of two sessions racing for either,
        # exactly one gets past here. SGLang inherits the claim and holds it while it runs.
        self.claim = state.claim(self.name, self.profile.port)
        try:
            refuse_running(self.name)  # a server recorded by a qembed without claims
            if self.checks:
                self._check()
        except BaseException:
            self.close()
            raise
        return self

    def plan(self) -> Plan:
        """What this session would launch and what its checks find (:func:`make_plan`); nothing
        is claimed or started. :meth:`prepare` refuses on this same plan."""
        if self._plan is None:
            self._plan = make_plan(self.profile, api_key=self.api_key, python=self.python, gpus=self.gpus)
        return self._plan

    def _check(self) -> None:
        plan = self.plan()  # refuses a missing model directory
        if plan.exposure is not None:
            self._say(plan.exposure)
        if self.profile.engine == "reference":  # needs no GPU, but sentence-transformers
            for line in reference_notice(self.profile):
                self._say(Event("notice", line))
        plan.require()  # refuses before anything starts (GPU checks; no CPU build, no RAM for the model)
        self.profile = plan.profile
        if plan.cpu is not None:
            from qembed.serving import cpu

            for line in cpu.notice_lines(plan.cpu):
                self._say(Event("notice", line))
        for finding in plan.warnings:
            self._say(Event("warning", finding.message, finding.hint))
        for message in plan.profile_warnings:
            self._say(Event("warning", message))
        from qembed.hub import ensure_model
        from qembed.serving import sglang_args

        # last, so that no refusal waits for a download: the model is here, or refused in seconds
        # (offline, no Hub), or downloaded now with its progress said (not a silent minute in the
        # engine's log); the engine then finds it in the HF cache
        prof = self.profile
        ensure_model(prof.model, environ=sglang_args.resolve_sglang(prof, self.python).env,
                     on_progress=lambda t: self._say(Event("download", t.message, fields=t.fields())))

    def launch(self, *, check_flags: bool = True, check_port_free: bool = True) -> Server:
        """Spawn SGLang (holding the claim) and save its record; on failure nothing is left.

        ``check_flags`` / ``check_port_free``: as :func:`qembed.serving.launcher.launch` (a group checks
        the flags and every port once, before its first launch)."""
        from qembed.host import state
        from qembed.serving import launcher

        if self.claim is None:
            raise RuntimeError("ServingSession.launch() before prepare()")
        prof = self.profile
        try:
            self.log_path = state.new_log_path(self.name)
            # In the foreground SGLang gets SIGTERM if this process dies without cleaning up
            # (even SIGKILL); a detached server must outlive it.
            self.server = launcher.launch(prof, api_key=self.api_key, log_path=self.log_path, python=self.python,
                                          name=self.name, pass_fds=self.claim.fds, check_flags=check_flags,
                                          check_port_free=check_port_free,
                                          parent_death_signal=None if self.detached else signal.SIGTERM)
            self.claim.set_holder(self.server.pid)
            self.record = state.make_record(
                name=self.name, pid=self.server.pid, host=prof.host, port=prof.port, url=self.server.url,
                model=prof.model, log_path=self.log_path, profile=prof.name,
                served_model_name=prof.served_model_name, detached=self.detached,
                api_key_env=prof.api_key_env if self.api_key else None,
                owner_pid=None if self.detached else os.getpid(), shutdown_timeout=prof.shutdown_timeout,
                gpu_ids=prof.gpu_ids, **self.record_fields,
            )
            state.save(self.record)  # a failed save must not leave SGLang running
        except KeyboardInterrupt:
            self._stop(0, reason=None)
            self.close()
            raise
        except BaseException:
            self.abort()
            raise
        self._say(Event("spawned", f"{self.engine} pid {self.server.pid}, log {self.log_path}",
                        fields={"name": self.name, "pid": self.server.pid, "log_path": str(self.log_path),
                                "port": prof.port}))
        return self.server

    def start(self) -> Server:
        """:meth:`prepare`, then :meth:`launch`; returns the launched server."""
        self.prepare()
        return self.launch()

    def wait_ready(self, on_phase: Callable[[str, float], None] | None = None) -> ReadyInfo:
        """Wait for readiness (the profile's ``ready_timeout``) and complete the record.

        A failure stops the process group and removes the record before it is raised; a
        :exc:`KeyboardInterrupt` is left to the caller (which drains with :meth:`stop`).
        """
        from qembed.host import state

        server, record = self._launched()
        try:
            info = server.wait_ready(timeout=self.profile.ready_timeout, on_phase=on_phase)
            record.served_model_name = info.served_model_name
            record.dimensions = info.dimensions
            record.context_length = info.context_length
            state.save(record)
        except KeyboardInterrupt:
            raise
        except PortInUse:
            # Real SGLang 0.5.23 logs the bind error, then hangs in "Waiting for application
            # shutdown" for good (tests/logs/real): it serves nothing, so there is nothing to drain.
            self.abort(drain=False)
            raise
        except BaseException:
            self.abort()
            raise
        self.info = info
        return info

    def detach(self) -> None:
        """Leave the ready server running, with its record, after this process exits."""
        server, _ = self._launched()
        server.detach()
        self._released_to_background = True
        self.close()

    def wait(self) -> int | None:
        """Wait until SGLang exits by itself (or ``qembed stop`` from another shell), then kill
        what is left of its group and remove the record. Returns its exit status."""
        server, _ = self._launched()
        rc = server.wait()
        self._stop(0, reason=None)  # its children may still run: kill the group
        self.close()
        return rc

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM, drain up to ``timeout`` (default: the profile's ``shutdown_timeout``), then
        kill the group; remove the record and release the claim. Returns SGLang's exit status
        (``None``: nothing was launched)."""
        try:
            return self._stop(self.profile.shutdown_timeout if timeout is None else timeout, reason="requested")
        finally:
            self.close()

    def abort(self, *, drain: bool = True) -> None:
        """After a failure: stop SGLang (a drain if it still runs and ``drain``; else SIGTERM and
        SIGKILL after :data:`NO_DRAIN_GRACE` seconds), remove the record, release the claim.
        Idempotent."""
        try:
            server = self.server
            if server is not None:
                wait = 0.0
                if server.proc.poll() is None:
                    wait = self.profile.shutdown_timeout
                    if not drain:
                        wait = min(NO_DRAIN_GRACE, wait)
                self._stop(wait, reason="failed")
        finally:
            self.close()

    def close(self) -> None:
        """Remove the record (unless the server was detached ready) and release the claim.
        Idempotent; does not stop SGLang (see :meth:`stop`, :meth:`abort`)."""
        from qembed.host import state

        claim, self.claim = self.claim, None
        state.release(self.record, claim, keep_record=self._released_to_background)

    def __enter__(self) -> ServingSession:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.server is None or self._released_to_background:
            self.close()
        elif exc_type is None or issubclass(exc_type, KeyboardInterrupt):
            self.stop()
        else:
            self.abort()

    # -- helpers --------------------------------------------------------------------------------

    def _launched(self) -> tuple[Server, Record]:
        if self.server is None or self.record is None:
            raise RuntimeError("the session has not launched a server")
        return self.server, self.record

    def _stop(self, timeout: float, *, reason: str | None) -> int | None:
        server = self.server
        if server is None:
            return None
        if reason is not None and server.proc.poll() is None:
            self._say(Event("stopping", f"stopping {self.engine} (pid {server.pid}; draining requests for up to "
                            f"{timeout:.0f} s) ...",
                            fields={"pid": server.pid, "drain_timeout_s": timeout, "reason": reason}))
        try:
            return server.stop(timeout=timeout)
        except KeyboardInterrupt:  # a second Ctrl-C: stop() has already killed the group
            return server.proc.poll()


def reference_notice(profile: Profile) -> list[str]:
    """The reference engine's notice lines (model and vector size, then what it is for).

    Raises:
        MissingDependency: sentence-transformers is not installed (said before anything spawns).
    """
    import importlib.util

    from qembed import models
    from qembed.reference.server import NOTICE

    if importlib.util.find_spec("sentence_transformers") is None:
        from qembed.errors import MissingDependency
        from qembed.reference.engine import INSTALL_HINT

        raise MissingDependency("`engine: reference` needs sentence-transformers, which is not installed",
                                hint=INSTALL_HINT)
    shape = models.model_shape(profile.model)
    size = f": this server gives {shape.hidden_size}-d vectors" if shape is not None else ""
    return [f"{profile.model}{size}", NOTICE]


__all__ = ["Event", "EventKind", "Plan", "ServingSession", "check_model_path", "check_name", "exposure_warning", "make_plan", "reference_notice", "refuse_running"]
