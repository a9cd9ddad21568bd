"""Scale out on SGLang's own engines: the SGLang model gateway (``smg``) and multi-GPU replicas.

Two shapes (``docs/scaling.md`` says why the first is the default for ``--gpus``):

* ``qembed serve --gpus 0,1,2,3``: one SGLang server with ``--dp-size 4`` (its
  DataParallelController: one HTTP server, one tokenizer process, four schedulers). That is a
  plain profile (``gpu_ids`` + ``dp_size``), launched by :mod:`qembed.serving.launcher` as usual.
* ``qembed serve --gpus 0,1,2,3 --gateway``: four independent SGLang servers on loopback ports
  after the profile's port, with ``smg`` in front on the profile's port (:func:`start_group`).
* ``qembed gateway --worker URL ...``: ``smg`` in front of servers on other machines
  (:func:`probe_workers`, :func:`start_gateway`).

``smg`` 1.13 (PyPI, extra ``qembed[gateway]``) runs in HTTP mode here: its gRPC mode joins a
batch ``input`` into one string and drops ``dimensions``. Flags come from ``smg launch --help``
of 1.13.0; :func:`gateway_flags` is checked against that parser by the tests. The API key never
goes on the command line: the child reads it from its environment (:data:`_ENTRY_CODE`) and
hands it to smg in memory, so ``ps`` and ``/proc/PID/cmdline`` do not show it. smg uses the same
key to check clients and to call the workers.

The control plane (``GET/POST/DELETE /workers``) has its own key (issue 20): with ``--api-key``
alone, smg 1.13 lets every client key ``POST /workers`` (HTTP 202), so any client could register a
worker and receive other clients' documents. qembed always passes smg's
``--control-plane-api-keys 'id:name:admin:KEY'`` (the same in-memory way): the admin key is
``QEMBED_GATEWAY_ADMIN_KEY``, or a random key per run when unset. With control-plane keys set,
smg answers 401 to a client key on ``/workers`` and the admin key cannot embed
(``tests/test_gateway.py::test_a_client_key_cannot_register_a_worker``).

Nothing here prints; progress goes to an ``on_event`` callback.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qembed.errors import (
    ConfigError,
    LaunchError,
    MissingDependency,
    NotReady,
    ServerExited,
    ServerUnreachable,
)
from qembed.net import PROXY_VARS

if TYPE_CHECKING:
    from qembed.serving.profiles.model import Profile
    from qembed.serving.readiness import Server
    from qembed.serving.supervisor import ServingSession

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'qembed[gateway]'"
#: smg 1.13 ``--policy`` choices that suit embeddings: every request costs about the same and
#: shares no prefix, so cache_aware (smg's default) buys nothing.
POLICIES: tuple[str, ...] = ("round_robin", "power_of_two")
DEFAULT_POLICY = "round_robin"
#: smg probes each worker's ``/health`` this often (its default is 60 s: too slow to notice a
#: dead worker; a SGLang ``/health`` is a 1-token forward, so 5 s costs nothing).
HEALTH_INTERVAL = 5
#: Where smg's Prometheus listener goes by default (smg's own default port).
METRICS_PORT = 29000
#: The environment variable the gateway child reads the API key from (set by qembed only).
_KEY_ENV = "QEMBED_GATEWAY_CHILD_API_KEY"
#: ... and the control-plane key, as smg's ``--control-plane-api-keys`` entry ``id:name:role:key``
#: (format from ``smg launch --help`` of 1.13.0).
_ADMIN_ENV = "QEMBED_GATEWAY_CHILD_ADMIN_KEY"
ADMIN_KEY_ID = "qembed-admin"
_ENTRY_CODE = (
    "import os, sys\n"
    "from smg.cli import main\n"
    f"key = os.environ.pop({_KEY_ENV!r}, '')\n"
    f"admin = os.environ.pop({_ADMIN_ENV!r}, '')\n"
    "main(sys.argv[1:] + (['--api-key', key] if key else [])\n"
    f"     + (['--control-plane-api-keys', {ADMIN_KEY_ID + ':qembed admin:admin:'!r} + admin] if admin else []))\n"
)


# -- smg ----------------------------------------------------------------------------------------


def smg_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("smg") is not None


def require_smg() -> None:
    """Raise :class:`MissingDependency` with the install command when smg is absent."""
    if not smg_available():
        raise MissingDependency(
            "the SGLang model gateway (`smg`) is not installed",
            hint=f"install it with `{INSTALL_HINT}`",
        )


def check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise ConfigError(f"unknown gateway policy `{policy}`",
                          hint=f"use one of: {', '.join(POLICIES)} (smg's cache_aware gains nothing "
                          "for embeddings, which share no prefixes)")


def gateway_flags(
    workers: Sequence[str], *, host: str, port: int, policy: str = DEFAULT_POLICY,
    metrics_port: int = METRICS_PORT, health_interval: int = HEALTH_INTERVAL,
    ready_timeout: float = 1800.0,
) -> list[str]:
    """``smg launch`` flags (HTTP mode; every flag from smg 1.13.0's own ``--help``)."""
    check_policy(policy)
    return [
        "launch", "--worker-urls", *workers, "--policy", policy, "--host", host, "--port", str(port),
        # smg binds its metrics on 0.0.0.0 unless told: keep it on the gateway's own address.
        "--prometheus-host", host, "--prometheus-port", str(metrics_port),
        "--health-check-interval-secs", str(health_interval),
        "--worker-startup-timeout-secs", str(max(1, int(ready_timeout))),
        # info logs a line per request (it costs smg about a third of its CPU); warn keeps
        # worker health changes and errors
        "--log-level", "warn",
    ]


def gateway_argv(flags: Sequence[str], *, python: str | None = None) -> list[str]:
    """The full command: this interpreter (where smg is installed) running smg's CLI."""
    return [python or sys.executable, "-c", _ENTRY_CODE, *flags]


# -- workers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerInfo:
    """What one worker said about itself: served name, model path, vector size."""

    url: str
    served_model_name: str
    model: str
    dimensions: int
    context_length: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "served_model_name": self.served_model_name, "model": self.model,
                "dimensions": self.dimensions, "context_length": self.context_length}


def normalize_url(url: str) -> str:
    """A worker's base URL, by the rule every URL in qembed follows (:func:`qembed.net.base_url`)."""
    from qembed.net import base_url

    return base_url(url, what="worker URL", example="--worker http://10.0.0.5:30000")


def probe_worker(url: str, *, api_key: str | None = None, timeout: float = 30.0) -> WorkerInfo:
    """Ask ``url`` for its model (``/v1/models``) and one checked embedding
    (:func:`qembed.probe.probe_server`); refuse anything else.

    Raises:
        ServerUnreachable: nothing answers at ``url``.
        ConfigError: it answers, but it is not a working embedding server.
    """
    from qembed.probe import probe_server, serves_generator

    f = probe_server(url, api_key, timeout=timeout, health=False)
    err = f.embedding_error
    if isinstance(err, ServerUnreachable):
        raise ServerUnreachable(
            f"worker `{url}` does not answer: {err.__cause__ or err.message}",
            hint="start it with `qembed serve --host 0.0.0.0` on that machine, wait for `ready`, "
            "and check the address and port",
        ) from err
    if f.models_status == 401:
        raise ConfigError(f"worker `{url}` refused the API key (401)",
                          hint="export the workers' key as `QEMBED_API_KEY` before starting the gateway")
    if f.model is None:
        raise ConfigError(f"worker `{url}` is not an embedding server (GET /v1/models answered "
                          f"HTTP {f.models_status} without a model)",
                          hint="start each worker with `qembed serve` and pass its base URL")
    if err is not None or f.dimensions is None:
        why = ("it serves a generator, not an embedding model" if serves_generator(err) else
               err.message if err is not None else "no vector")
        raise ConfigError(f"worker `{url}` is not an embedding server: {why}",
                          hint="start each worker with `qembed serve` (it passes `--is-embedding`)") from err
    return WorkerInfo(url=url, served_model_name=f.model, model=str(f.model_path or f.model), dimensions=f.dimensions,
                      context_length=f.max_model_len)


def check_same_space(infos: Sequence[WorkerInfo]) -> None:
    """Refuse workers that would mix vector spaces (another model or vector size)."""
    if not infos:
        raise ConfigError("no workers given", hint="pass `--worker URL` once per server")
    first = infos[0]
    odd = [w for w in infos[1:] if (w.served_model_name, w.model, w.dimensions)
           != (first.served_model_name, first.model, first.dimensions)]
    if odd:
        raise ConfigError(
            "the workers serve different models or vector sizes; a gateway must not mix vector spaces",
            hint="start every worker with the same `--model` (and profile), then pass their URLs",
            details=[f"{w.url}: {w.served_model_name} ({w.model}), {w.dimensions} dimensions" for w in infos],
        )


def probe_workers(urls: Sequence[str], *, api_key: str | None = None, timeout: float = 30.0) -> list[WorkerInfo]:
    """:func:`probe_worker` on every URL (in parallel), then :func:`check_same_space`."""
    from concurrent.futures import ThreadPoolExecutor

    norm = [normalize_url(u) for u in urls]
    if len(set(norm)) != len(norm):
        dup = sorted({u for u in norm if norm.count(u) > 1})
        raise ConfigError(f"worker URL listed twice: {', '.join(dup)}", hint="pass each `--worker` once")
    if not norm:
        raise ConfigError("no workers given", hint="pass `--worker URL` once per server")
    with ThreadPoolExecutor(max_workers=min(16, len(norm))) as pool:
        futures = [pool.submit(probe_worker, u, api_key=api_key, timeout=timeout) for u in norm]
        infos = [f.result() for f in futures]
    check_same_space(infos)
    return infos


@dataclass(frozen=True)
class WorkerHealth:
    url: str
    healthy: bool
    status: str

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "healthy": self.healthy, "status": self.status}


def worker_health(gateway_url: str, *, api_key: str | None = None, timeout: float = 5.0) -> list[WorkerHealth]:
    """Which workers the gateway counts as healthy (smg's ``GET /workers``, a control-plane
    route: ``api_key`` is the gateway's admin key, ``server.admin_key``); [] if unreadable."""
    import orjson

    from qembed.probe import get
    from qembed.transport import TransportFailure

    try:
        r = get(gateway_url, "/workers", api_key=api_key, timeout=timeout)
        rows = orjson.loads(r.content).get("workers") or [] if r.status == 200 else []
        return [WorkerHealth(url=str(w.get("url")), healthy=bool(w.get("is_healthy")),
                             status=str(w.get("status") or "")) for w in rows if isinstance(w, dict)]
    except (TransportFailure, ValueError, AttributeError):
        return []


# -- the gateway process ------------------------------------------------------------------------


@dataclass
class GatewayInfo:
    """A ready gateway: its URL, the model behind it, and the workers' health."""

    url: str
    served_model_name: str
    model: str
    dimensions: int
    workers: list[WorkerHealth]
    seconds: float
    metrics_port: int | None = None

    @property
    def healthy(self) -> int:
        return sum(w.healthy for w in self.workers)

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "served_model_name": self.served_model_name, "model": self.model,
                "dimensions": self.dimensions, "seconds": round(self.seconds, 2),
                "metrics_port": self.metrics_port, "workers": [w.to_json() for w in self.workers],
                "healthy_workers": self.healthy}


def check_exposure(host: str, api_key: str | None) -> None:
    """Refuse a gateway on a network address without a key.

    smg without a key leaves its control plane open: anyone who reaches the port could register
    or remove workers (smg's own start-up "SECURITY POSTURE" warning says so). The exposure rule
    (:func:`qembed.serving.policy.exposure`) at ``fail``.
    """
    from qembed.serving.policy import exposure

    found = exposure(host, keyed=bool(api_key), level="fail", listener="gateway")
    if found is not None:
        raise ConfigError(found.message, hint=found.hint)


def admin_key(api_key: str | None, configured: str | None = None) -> str:
    """The control-plane key: ``configured`` (``QEMBED_GATEWAY_ADMIN_KEY``) or a random one.

    Raises:
        ConfigError: it equals the client key (clients could then manage workers). A ``:`` in
            the key is fine: smg 1.13's parser keeps everything after ``role:`` as the key.
    """
    import secrets

    from qembed import env as qenv
    from qembed.net import clean_api_key

    key = clean_api_key(configured, source=f"`{qenv.GATEWAY_ADMIN_KEY.name}`") if configured else None
    if not key:
        return secrets.token_urlsafe(32)
    if api_key and key == api_key:
        raise ConfigError(f"`{qenv.GATEWAY_ADMIN_KEY.name}` equals the client key `{qenv.API_KEY.name}`: every "
                          "client could register or remove the gateway's workers",
                          hint=f"set `{qenv.GATEWAY_ADMIN_KEY.name}` to a different secret, e.g. "
                          "`export QEMBED_GATEWAY_ADMIN_KEY=$(openssl rand -hex 32)`")
    return key


def start_gateway(
    workers: Sequence[str], *, host: str, port: int, policy: str = DEFAULT_POLICY,
    api_key: str | None = None, admin: str | None = None, log_path: Path, metrics_port: int | None = None,
    health_interval: int = HEALTH_INTERVAL, ready_timeout: float = 1800.0,
    parent_death_signal: int | None = None, pass_fds: Sequence[int] = (),
) -> Server:
    """Spawn ``smg launch`` in its own process group (returns at once; see :func:`wait_gateway`).
    ``pass_fds`` stay open in smg (a :class:`qembed.host.state.Claim`'s locks).

    ``admin`` is the control-plane key (see :func:`admin_key`; a random one when ``None``); the
    returned server keeps it as ``admin_key`` for :func:`worker_health`.

    Raises:
        MissingDependency: smg is not installed. PortInUse: ``port`` is taken. ConfigError.
    """
    from qembed.host.ports import check_port, find_free_port, port_is_free
    from qembed.serving import launcher

    require_smg()
    check_exposure(host, api_key)
    admin = admin_key(api_key, admin)
    check_port(host, port)
    if metrics_port is None:
        metrics_port = METRICS_PORT if port_is_free(host, METRICS_PORT) else \
            (find_free_port(host, METRICS_PORT) or 0)
    flags = gateway_flags(workers, host=host, port=port, policy=policy, metrics_port=metrics_port,
                          health_interval=health_interval, ready_timeout=ready_timeout)
    env = {_ADMIN_ENV: admin, **({_KEY_ENV: api_key} if api_key else {})}
    server = launcher.spawn(gateway_argv(flags), host=host, port=port, log_path=log_path, env=env,
                            api_key=api_key, header=[f"command: smg {' '.join(flags)}"],
                            parent_death_signal=parent_death_signal, pass_fds=pass_fds,
                            # workers live on other machines: a proxy would see the key and
                            # every document (issue 19, finding 8)
                            drop_env=PROXY_VARS)
    server.metrics_port = metrics_port
    server.admin_key = admin
    return server


#: seconds `qembed gateway` waits for smg and one healthy worker behind it
READY_TIMEOUT_S = 120.0


def wait_gateway(server: Server, *, timeout: float = READY_TIMEOUT_S, min_healthy: int = 1,
                 on_event: Callable[[str], None] | None = None) -> GatewayInfo:
    """Wait until smg answers ``/health``, ``min_healthy`` workers are healthy and one
    embedding goes through it.

    Raises:
        ServerExited: smg exited (its last log lines in ``details``). NotReady: ``timeout``.
        LaunchError: the probe embedding through the gateway failed.
    """
    from qembed.probe import fetch, open_http
    from qembed.transport import TransportFailure

    deadline = time.monotonic() + timeout
    said: set[str] = set()

    def event(text: str) -> None:
        if on_event is not None and text not in said:
            said.add(text)
            on_event(text)

    health: list[WorkerHealth] = []
    http = open_http(server.url, server._api_key, timeout=60.0)
    try:
        while True:
            rc = server.proc.poll()
            if rc is not None:
                server.follower.flush()
                tail = [f"  {t}" for t in server.tail.lines(12) if t.strip()]
                raise ServerExited(f"the gateway (smg) exited before it was ready (exit code {rc})",
                                   returncode=rc, hint=f"read its log: `less {server.log_path}`",
                                   details=["last log lines:", *tail])
            if time.monotonic() >= deadline:
                up = ", ".join(f"{w.url} {w.status or 'unhealthy'}" for w in health) or "none reported"
                raise NotReady(f"the gateway was not ready after {timeout:.0f} s "
                               f"({sum(w.healthy for w in health)} of {min_healthy} workers healthy)",
                               hint="check each worker with `curl URL/health`; raise `--ready-timeout`",
                               details=[f"workers: {up}", f"log: {server.log_path}"])
            try:
                ok = fetch(http, "GET", "/health", timeout=2.0).status == 200
            except TransportFailure:
                ok = False
            if ok:
                event("gateway answers")
                health = worker_health(server.url, api_key=server.admin_key)
                if sum(w.healthy for w in health) >= min_healthy:
                    break
            server.follower.poll()
            server._pause(0.1)
        info = _probe_through(http, server, deadline)
    finally:
        http.close()
    info.workers = worker_health(server.url, api_key=server.admin_key) or health
    info.metrics_port = server.metrics_port
    event("ready")
    return info


def _probe_through(http: Any, server: Server, deadline: float) -> GatewayInfo:
    """One embedding through the gateway. Right after a worker turns healthy smg may still be
    registering its model, so a failed probe is retried until ``deadline``."""
    import orjson

    from qembed.probe import PROBE_TEXT, fetch
    from qembed.transport import TransportFailure

    while True:
        left = max(1.0, min(60.0, deadline - time.monotonic()))
        problem = ""
        try:
            r = fetch(http, "GET", "/v1/models", timeout=left)
            served = str((orjson.loads(r.content).get("data") or [{}])[0].get("id") or "")
            r = fetch(http, "POST", "/v1/embeddings", {"input": PROBE_TEXT, "model": served}, timeout=left)
            if r.status == 200:
                body = orjson.loads(r.content)
                dims = len(body["data"][0]["embedding"])
                return GatewayInfo(url=server.url, served_model_name=served, model=str(body.get("model") or served),
                                   dimensions=dims, workers=[], seconds=server.elapsed())
            problem = f"HTTP {r.status}: {r.content[:200].decode('utf-8', 'replace')}"
        except (TransportFailure, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            problem = f"{exc.__class__.__name__}: {exc}"
        if time.monotonic() >= deadline or server.proc.poll() is not None:
            raise LaunchError(f"the probe embedding through the gateway failed ({problem})",
                              hint=f"read the gateway log: `less {server.log_path}`")
        server._pause(0.2)


# -- many GPUs, one server each, behind the gateway ------------------------------------------------


def split_gpus(gpu_ids: Sequence[int], tp_size: int) -> list[list[int]]:
    """GPU groups of ``tp_size`` (one server each); refuses a count that does not divide."""
    tp = max(1, tp_size)
    if not gpu_ids or len(gpu_ids) % tp:
        raise ConfigError(f"`--gpus` lists {len(gpu_ids)} GPUs, not a multiple of `tp_size` {tp}",
                          hint=f"list a multiple of {tp} GPUs, or change `tp_size`")
    return [list(gpu_ids[i:i + tp]) for i in range(0, len(gpu_ids), tp)]


def parse_gpus(text: str) -> list[int]:
    """``"0,1,2,3"`` -> ``[0, 1, 2, 3]`` (no duplicates, no negatives)."""
    try:
        ids = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ConfigError(f"`--gpus {text}` is not a list of GPU indices",
                          hint="write the indices `nvidia-smi` shows, comma-separated: `--gpus 0,1,2,3`") from None
    if not ids or any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise ConfigError(f"`--gpus {text}` must list distinct GPU indices >= 0",
                          hint="e.g. `--gpus 0,1,2,3`")
    return ids


def dp_options(gpu_ids: Sequence[int], tp_size: int = 1) -> dict[str, object]:
    """Typed profile options for the default shape: one server, ``--dp-size`` = GPUs / ``tp_size``."""
    groups = split_gpus(gpu_ids, tp_size)
    return {"gpu_ids": list(gpu_ids), "dp_size": len(groups)}


def replica_profiles(profile: Profile, gpu_ids: Sequence[int]) -> list[Profile]:
    """One profile per server of a ``--gateway`` group: ``tp_size`` GPUs each, loopback, ports
    after the profile's port (the gateway takes the profile's port)."""
    groups = split_gpus(gpu_ids, profile.tp_size)
    return [profile.model_copy(update={"gpu_ids": g, "dp_size": 1, "host": "127.0.0.1",
                                       "port": profile.port + 1 + k})
            for k, g in enumerate(groups)]


def replica_name(group: str, index: int) -> str:
    return f"{group}.r{index}"


@dataclass
class Group:
    """N SGLang servers and the smg gateway in front of them (``serve --gpus ... --gateway``)."""

    name: str
    replicas: list[Server]
    profiles: list[Profile]
    gateway: Server | None = None
    infos: list[Any] = field(default_factory=list)  # readiness.ReadyInfo per replica
    sessions: list[ServingSession] = field(default_factory=list)  # one per replica, in order

    def servers(self) -> list[Server]:
        return ([self.gateway] if self.gateway is not None else []) + self.replicas

    def stop(self, timeout: float) -> None:
        """Gateway first (no new traffic), then every replica; each process group is killed,
        each replica's record removed and its claim released."""
        from concurrent.futures import ThreadPoolExecutor

        try:
            if self.gateway is not None:
                self.gateway.stop(timeout=min(timeout, 10.0))
            with ThreadPoolExecutor(max_workers=max(1, len(self.replicas))) as pool:
                list(pool.map(lambda s: s.stop(timeout=timeout if s.proc.poll() is None else 0), self.replicas))
        finally:
            for session in self.sessions:
                session.close()

    def detach(self) -> None:
        """Leave the gateway and every replica running, recorded, after this process exits."""
        if self.gateway is not None:
            self.gateway.detach()
        for session in self.sessions:
            session.detach()


def start_replicas(profile: Profile, gpu_ids: Sequence[int], *, name: str, api_key: str | None,
                   python: str, detach: bool = False) -> Group:
    """Claim every replica's name and port, check every port and the flags once, then launch
    one SGLang per GPU group, each a :class:`qembed.serving.supervisor.ServingSession` (recorded with
    ``group`` and ``role: replica``). On any failure the replicas launched so far are stopped,
    their records removed and their claims released."""
    from qembed.host.ports import check_port
    from qembed.serving import sglang_args
    from qembed.serving.supervisor import ServingSession

    profs = replica_profiles(profile, gpu_ids)
    sessions = [ServingSession(p, name=replica_name(name, k), api_key=api_key, python=python, detach=detach,
                               checks=False, record_fields={"group": name, "role": "replica"})
                for k, p in enumerate(profs)]
    group = Group(name=name, replicas=[], profiles=profs, sessions=sessions)
    try:
        for session in sessions:
            session.prepare()
        for p in profs:
            check_port(p.host, p.port)
        check_port(profile.host, profile.port)
        py, target_env = sglang_args.resolve_sglang(profs[0], python)
        sglang_args.ensure_accepted(sglang_args.build_flags(profs[0], api_key="x" if api_key else None),
                                    python=py, env=target_env)
        for session in sessions:
            group.replicas.append(session.launch(check_flags=False, check_port_free=False))
    except BaseException:
        group.stop(0)
        raise
    return group


def wait_replicas(group: Group, *, timeout: float, on_event: Callable[[str], None] | None = None) -> list[Any]:
    """Wait until every replica is ready (they load in parallel; one deadline for all)."""
    deadline = time.monotonic() + timeout
    infos = []
    for k, server in enumerate(group.replicas):
        def phase(label: str, elapsed: float, k: int = k) -> None:
            if on_event is not None:
                on_event(f"replica {k} (GPU {','.join(map(str, group.profiles[k].gpu_ids or []))}): {label}")
        infos.append(server.wait_ready(timeout=max(0.0, deadline - time.monotonic()), on_phase=phase))
    group.infos = infos
    return infos


__all__ = [
    "ADMIN_KEY_ID",
    "DEFAULT_POLICY",
    "INSTALL_HINT",
    "POLICIES",
    "READY_TIMEOUT_S",
    "GatewayInfo",
    "Group",
    "WorkerHealth",
    "WorkerInfo",
    "admin_key",
    "check_exposure",
    "check_policy",
    "check_same_space",
    "dp_options",
    "gateway_argv",
    "gateway_flags",
    "normalize_url",
    "parse_gpus",
    "probe_worker",
    "probe_workers",
    "replica_name",
    "replica_profiles",
    "require_smg",
    "split_gpus",
    "start_gateway",
    "start_replicas",
    "wait_gateway",
    "wait_replicas",
    "worker_health",
]
