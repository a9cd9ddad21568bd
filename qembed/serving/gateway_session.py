"""Gateway sessions: smg in front of workers (``qembed gateway``) or of a replica group
(``qembed serve --gpus ... --gateway``), with the steps of a
:class:`~qembed.serving.supervisor.ServingSession`.

Both claim their name and port before anything starts (:func:`qembed.host.state.claim`; a name
a live server has recorded is :exc:`~qembed.errors.NameInUse`, exit 2), hand the claim to smg,
save the records ``qembed ps/stop/logs`` read, and on any failure, or on :meth:`stop`, stop what
they started, remove those records and release the claim. :meth:`~GatewaySession.foreground`
serves until a stop signal (:func:`qembed.serving.foreground.run_until_stopped`).

Nothing here prints: progress and findings go to ``on_event`` as
:class:`~qembed.serving.supervisor.Event` (``notice``: a progress line; ``warning``).

Example:
    >>> s = GatewaySession(name="gw", host="127.0.0.1", port=30000, api_key=None)   # doctest: +SKIP
    >>> s.prepare().launch(s.probe(["http://gpu1:30000"]))                          # doctest: +SKIP
    >>> s.wait_ready().url                                                          # doctest: +SKIP
    'http://127.0.0.1:30000'
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from qembed.serving.supervisor import Event

if TYPE_CHECKING:
    from qembed.host.state import Claim, Record
    from qembed.serving.foreground import Ending
    from qembed.serving.gateway import GatewayInfo, Group, WorkerInfo
    from qembed.serving.gpu import GPUSnapshot
    from qembed.serving.profiles.model import Profile
    from qembed.serving.readiness import Server
    from qembed.serving.sglang_args import LaunchCommand, ParserCheck
    from qembed.serving.supervisor import ServingSession

#: seconds smg may drain on stop (``qembed gateway``; a group uses its profile's ``shutdown_timeout``)
GATEWAY_SHUTDOWN_TIMEOUT = 10.0


class _Front:
    """The common part: the claim, smg, its record, the events, the cleanup."""

    def __init__(self, *, name: str, detach: bool, on_event: Callable[[Event], None] | None) -> None:
        self.name = name
        self.detached = detach
        self._on_event = on_event
        self.claim: Claim | None = None
        self.server: Server | None = None  # smg
        self.record: Record | None = None  # smg's
        self.log_path: Path | None = None
        self._released_to_background = False
        self._finished = False  # stopped: nothing left to stop

    def _say(self, text: str) -> None:
        if self._on_event is not None:
            self._on_event(Event("notice", text))

    def _warn(self, text: str, hint: str) -> None:
        if self._on_event is not None:
            self._on_event(Event("warning", text, hint))

    def _gateway_event(self, text: str) -> None:
        self._say(f"gateway: {text}")

    def _claim(self, port: int) -> None:
        from qembed.host import state
        from qembed.serving.supervisor import check_name, refuse_running

        check_name(self.name)
        self.claim = state.claim(self.name, port)
        try:
            refuse_running(self.name)  # NameInUse: exit 2, as `serve` (issue 22)
        except BaseException:
            self.close()
            raise

    def _spawn_gateway(self, workers: Sequence[str], *, host: str, port: int, policy: str, api_key: str | None,
                       admin: str, ready_timeout: float, metrics_port: int | None = None) -> Server:
        from qembed.host import state
        from qembed.serving import gateway

        if self.claim is None:
            raise RuntimeError("the gateway session launched before prepare()")
        self.log_path = state.new_log_path(self.name)
        self.server = gateway.start_gateway(
            workers, host=host, port=port, policy=policy, api_key=api_key, admin=admin, log_path=self.log_path,
            metrics_port=metrics_port, ready_timeout=ready_timeout, pass_fds=self.claim.fds,
            parent_death_signal=None if self.detached else signal.SIGTERM)
        self.claim.set_holder(self.server.pid)
        return self.server

    def _save_record(self, record: Record) -> None:
        from qembed.host import state

        self.record = record
        state.save(record)

    def _stop_processes(self, timeout: float) -> None:
        if self.server is not None:
            self.server.stop(timeout=timeout)

    def stop(self, timeout: float | None = None) -> None:
        """Stop smg (and what is behind it that this session started), remove the records,
        release the claim."""
        try:
            self._stop_processes(self._shutdown_timeout() if timeout is None else timeout)
        finally:
            self._finished = True
            self.close()

    def abort(self) -> None:
        """After a failure: stop everything at once, remove the records, release the claim."""
        self.stop(0)

    def detach(self) -> None:
        """Leave smg (and the replicas) running, recorded, after this process exits."""
        if self.server is not None:
            self.server.detach()
        self._released_to_background = True
        self.close()

    def close(self) -> None:
        """Remove smg's record (unless detached ready) and release the claim. Idempotent."""
        from qembed.host import state

        claim, self.claim = self.claim, None
        state.release(self.record, claim, keep_record=self._released_to_background)

    def foreground(self, *, others: Sequence[Server] = (), on_stopping: Callable[[], None] | None = None) -> Ending:
        """Serve until Ctrl-C/SIGTERM/SIGHUP or until smg exits (a dying replica is only said),
        then :meth:`stop` (``on_stopping`` is called first). Returns how it ended."""
        from qembed.serving.foreground import run_until_stopped

        server = self.server
        if server is None:
            raise RuntimeError("the gateway session has not launched")

        def front_exit(rc: int) -> None:
            self._warn(f"the gateway exited (exit code {rc}); stopping the rest",
                       hint=f"read its log: `qembed logs {self.name}`")

        def other_exit(k: int, rep: Server) -> None:
            self._warn(f"replica {k} (pid {rep.pid}) exited with code {rep.proc.returncode}; "
                       "the gateway routes to the others", hint=f"read its log: `less {rep.log_path}`")

        return run_until_stopped(server, self.stop, others=others, on_front_exit=front_exit,
                                 on_other_exit=other_exit, on_stopping=on_stopping)

    def _shutdown_timeout(self) -> float:
        return GATEWAY_SHUTDOWN_TIMEOUT

    def _started(self) -> bool:
        return self.server is not None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Leaving the block: a launched, not detached, session is stopped (drained after
        success or Ctrl-C, at once after an error); the claim is always released."""
        if not self._started() or self._released_to_background or self._finished:
            self.close()
        elif exc_type is None or issubclass(exc_type, KeyboardInterrupt):
            self.stop()
        else:
            self.abort()


class GatewaySession(_Front):
    """``qembed gateway``: smg in front of running workers, on ``host:port``.

    Raises (from the steps): ConfigError (name, policy, exposure, admin key), NameInUse /
    PortInUse, MissingDependency (no smg), ServerUnreachable / LaunchError (a worker),
    ServerExited / NotReady / LaunchError (smg), StateDirError.
    """

    def __init__(self, *, name: str, host: str, port: int, api_key: str | None, admin: str | None = None,
                 policy: str = "round_robin", metrics_port: int | None = None, ready_timeout: float = 120.0,
                 detach: bool = False, on_event: Callable[[Event], None] | None = None) -> None:
        super().__init__(name=name, detach=detach, on_event=on_event)
        self.host, self.port, self.api_key, self.policy = host, port, api_key, policy
        self.metrics_port, self.ready_timeout = metrics_port, ready_timeout
        self._configured_admin = admin
        self.admin: str | None = None
        self.workers: list[WorkerInfo] = []

    def prepare(self) -> GatewaySession:
        """Claim the name and the port, then check smg, the policy, the exposure and the admin key."""
        from qembed.serving import gateway

        self._claim(self.port)
        try:
            gateway.require_smg()
            gateway.check_policy(self.policy)
            gateway.check_exposure(self.host, self.api_key)
            self.admin = gateway.admin_key(self.api_key, self._configured_admin)  # before anything starts
        except BaseException:
            self.close()
            raise
        return self

    def probe(self, urls: Sequence[str]) -> list[WorkerInfo]:
        """Check every worker (one model, one vector size); on failure the claim is released."""
        from qembed.serving import gateway

        try:
            self.workers = gateway.probe_workers(urls, api_key=self.api_key)
        except BaseException:
            self.close()
            raise
        return self.workers

    def launch(self, workers: Sequence[WorkerInfo] | None = None) -> Server:
        """Start smg in front of ``workers`` (default: the probed ones) and save its record."""
        from qembed import env as qenv
        from qembed.host import state

        infos = list(workers) if workers is not None else self.workers
        if self.admin is None or not infos:
            raise RuntimeError("GatewaySession.launch() before prepare() and probe()")
        try:
            server = self._spawn_gateway([w.url for w in infos], host=self.host, port=self.port, policy=self.policy,
                                         api_key=self.api_key, admin=self.admin, ready_timeout=self.ready_timeout,
                                         metrics_port=self.metrics_port)
            assert self.log_path is not None
            self._save_record(state.make_record(
                name=self.name, pid=server.pid, host=self.host, port=self.port, url=server.url,
                model=infos[0].model, log_path=self.log_path, profile=None,
                served_model_name=infos[0].served_model_name, dimensions=infos[0].dimensions,
                detached=self.detached, api_key_env=qenv.API_KEY.name if self.api_key else None,
                owner_pid=None if self.detached else os.getpid(), shutdown_timeout=GATEWAY_SHUTDOWN_TIMEOUT,
                role="gateway"))
        except BaseException:
            self.abort()
            raise
        return server

    def wait_ready(self) -> GatewayInfo:
        """Wait for smg and one healthy worker behind it; on failure everything is cleaned up."""
        from qembed.serving import gateway

        if self.server is None:
            raise RuntimeError("GatewaySession.wait_ready() before launch()")
        try:
            return gateway.wait_gateway(self.server, timeout=self.ready_timeout, on_event=self._gateway_event)
        except BaseException:
            self.abort()
            raise

    def __enter__(self) -> GatewaySession:
        return self


@dataclass(frozen=True)
class GroupPlan:
    """What a group would launch, with nothing claimed or started (``serve --gpus ... --gateway
    --dry-run`` renders it): each replica's profile and command, and smg's argv (its keys are
    handed over in memory, never on it)."""

    profiles: list[Profile]
    commands: list[LaunchCommand]
    gateway_argv: list[str]
    python: str
    #: SGLang's flags for the first replica as its parser checks them (the key as a placeholder)
    flags: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)

    def check_flags(self, on_import: Callable[[], None] | None = None) -> ParserCheck:
        """SGLang's own parser on :attr:`flags` (see :func:`qembed.serving.sglang_args.ensure_accepted`)."""
        from qembed.serving import sglang_args

        return sglang_args.ensure_accepted(list(self.flags), python=self.python, env=self.env, on_import=on_import)


class GroupSession(_Front):
    """``qembed serve --gpus ... --gateway``: one SGLang per GPU group (each a replica
    :class:`~qembed.serving.supervisor.ServingSession`), smg in front on the profile's port.

    :meth:`prepare` claims the group's name and the profile's port and runs the checks of a
    :class:`ServingSession` for the whole profile (GPU, profile settings, exposure warning);
    :meth:`launch` starts the replicas; :meth:`wait_ready` waits for them, then starts smg and
    waits until every replica is healthy in it.
    """

    def __init__(self, profile: Profile, *, name: str, api_key: str | None, python: str, detach: bool = False,
                 gpus: GPUSnapshot | None = None, admin: str | None = None, policy: str = "round_robin",
                 on_event: Callable[[Event], None] | None = None) -> None:
        super().__init__(name=name, detach=detach, on_event=on_event)
        self.profile, self.api_key, self.python, self.policy = profile, api_key, python, policy
        self.gpus = gpus
        self._configured_admin = admin
        self.admin: str | None = None
        self.checks: ServingSession | None = None  # the group-level claim and checks
        self.group: Group | None = None

    def plan(self) -> GroupPlan:
        """Each replica's command and smg's; nothing is claimed or started."""
        from qembed.serving import gateway, sglang_args

        prof = self.profile
        reps = gateway.replica_profiles(prof, prof.gpu_ids or [])
        cmds = [sglang_args.build_command(p, api_key=self.api_key, python=self.python) for p in reps]
        smg = gateway.gateway_flags([f"http://127.0.0.1:{p.port}" for p in reps], host=prof.host, port=prof.port)
        py, env = sglang_args.resolve_sglang(reps[0], self.python)
        return GroupPlan(profiles=reps, commands=cmds, gateway_argv=["smg", *smg], python=py,
                         flags=tuple(sglang_args.build_flags(reps[0], api_key="x" if self.api_key else None)), env=env)

    def prepare(self) -> GroupSession:
        """Claim the name and the port, run the checks, then check smg and the exposure."""
        from qembed.serving import gateway
        from qembed.serving.supervisor import ServingSession

        self.checks = ServingSession(self.profile, name=self.name, api_key=self.api_key, python=self.python,
                                     detach=self.detached, gpus=self.gpus, on_event=self._on_event)
        self.checks.prepare()
        self.claim, self.checks.claim = self.checks.claim, None  # the group holds it, then smg
        try:
            self.profile = self.checks.profile
            gateway.require_smg()
            gateway.check_exposure(self.profile.host, self.api_key)  # before minutes of model loading
            self.admin = gateway.admin_key(self.api_key, self._configured_admin)
        except BaseException:
            self.close()
            raise
        return self

    def launch(self) -> Group:
        """Start every replica (each claimed, checked once as a group, recorded)."""
        from qembed.serving import gateway

        if self.claim is None:
            raise RuntimeError("GroupSession.launch() before prepare()")
        prof = self.profile
        try:
            self.group = gateway.start_replicas(prof, prof.gpu_ids or [], name=self.name, api_key=self.api_key,
                                                python=self.python, detach=self.detached)
        except BaseException:
            self.close()
            raise
        for k, (s, p) in enumerate(zip(self.group.replicas, self.group.profiles, strict=True)):
            self._say(f"replica {k} on GPU {','.join(map(str, p.gpu_ids or []))}: SGLang pid {s.pid}, {s.url}, "
                      f"log {s.log_path}")
        return self.group

    @property
    def replica_records(self) -> list[Record]:
        return [s.record for s in self.group.sessions if s.record is not None] if self.group else []

    def wait_ready(self) -> GatewayInfo:
        """Wait for every replica, then start smg and wait until each replica is healthy in it."""
        from qembed.host import state
        from qembed.serving import gateway

        group, prof = self.group, self.profile
        if group is None or self.admin is None:
            raise RuntimeError("GroupSession.wait_ready() before launch()")
        try:
            infos = gateway.wait_replicas(group, timeout=prof.ready_timeout, on_event=self._say)
            for rec, ri in zip(self.replica_records, infos, strict=True):
                rec.served_model_name, rec.dimensions, rec.context_length = (ri.served_model_name, ri.dimensions,
                                                                             ri.context_length)
                state.save(rec)
            group.gateway = self._spawn_gateway([s.url for s in group.replicas], host=prof.host, port=prof.port,
                                                policy=self.policy, api_key=self.api_key, admin=self.admin,
                                                ready_timeout=prof.ready_timeout)
            assert self.log_path is not None
            self._save_record(state.make_record(
                name=self.name, pid=group.gateway.pid, host=prof.host, port=prof.port, url=group.gateway.url,
                model=prof.model, log_path=self.log_path, profile=prof.name,
                served_model_name=infos[0].served_model_name, dimensions=infos[0].dimensions,
                context_length=infos[0].context_length, detached=self.detached,
                api_key_env=prof.api_key_env if self.api_key else None,
                owner_pid=None if self.detached else os.getpid(), shutdown_timeout=prof.shutdown_timeout,
                gpu_ids=prof.gpu_ids, group=self.name, role="gateway"))
            # Readiness waits for every replica: all of them healthy in the gateway too.
            return gateway.wait_gateway(group.gateway, timeout=prof.ready_timeout, min_healthy=len(group.replicas),
                                        on_event=self._gateway_event)
        except BaseException:
            self.abort()
            raise

    def _stop_processes(self, timeout: float) -> None:
        if self.group is not None:
            self.group.stop(timeout)  # smg first, then every replica (their records and claims go)

    def _shutdown_timeout(self) -> float:
        return self.profile.shutdown_timeout

    def _started(self) -> bool:
        return self.group is not None

    def detach(self) -> None:
        if self.group is not None:
            self.group.detach()
        self._released_to_background = True
        self.close()

    def foreground(self, *, others: Sequence[Server] = (), on_stopping: Callable[[], None] | None = None) -> Ending:
        return super().foreground(others=others or (self.group.replicas if self.group else ()), on_stopping=on_stopping)

    def __enter__(self) -> GroupSession:
        return self


__all__ = ["GATEWAY_SHUTDOWN_TIMEOUT", "GatewaySession", "GroupPlan", "GroupSession"]
