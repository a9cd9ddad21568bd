"""`qembed gateway`: the SGLang model gateway (smg) in front of `qembed serve` workers; and the
`qembed serve --gpus ... --gateway` group (one server per GPU behind smg).

Thin layer: options -> :mod:`qembed.serving.gateway` calls -> :mod:`qembed.output`.
Only the standard library and typer are imported at module level.
"""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING, Annotated, Any

import typer

from qembed import env as qenv
from qembed.cli._app import app

if TYPE_CHECKING:
    from qembed.host.state import Record
    from qembed.serving.gateway import GatewayInfo, Group
    from qembed.serving.profiles.model import Profile
    from qembed.serving.readiness import Server

GATEWAY_EXAMPLES = """\
Examples:

\b
  # on each GPU machine (a worker the gateway can reach, with a key):
  QEMBED_API_KEY=secret qembed serve --host 0.0.0.0 --detach
  # on the gateway machine:
  QEMBED_API_KEY=secret qembed gateway \\
      --worker http://10.0.0.5:30000 --worker http://10.0.0.6:30000
  qembed gateway -w http://gpu1:30000 -w http://gpu2:30000 \\
      --policy power_of_two -d

Every worker must serve the same model and vector size; a worker that does not answer, or is
not an embedding server, is refused with its URL. The gateway is ready when it answers and at
least one worker is healthy; it keeps routing around workers that die and uses them again
when they come back. Needs `pip install 'qembed[gateway]'`. See docs/scaling.md.

""" + qenv.env_help("QEMBED_API_KEY", "QEMBED_GATEWAY_ADMIN_KEY", "QEMBED_STATE_DIR")


def _render(info: GatewayInfo, *, name: str, pid: int, log_path: str, detached: bool, as_json: bool,
            extra: dict[str, Any] | None = None) -> None:
    from qembed import output

    if as_json:
        output.print_json({**info.to_json(), "openai_base_url": f"{info.url}/v1", "name": name, "pid": pid,
                           "log_path": log_path, "detached": detached, **(extra or {})})
        return
    lines = [
        f"gateway ready in {info.seconds:.1f} s: {info.served_model_name} at {info.url}",
        f"  url:            {info.url}   (OpenAI base_url: {info.url}/v1)",
        f"  model:          {info.served_model_name}",
        f"  vector size:    {info.dimensions}",
        f"  workers:        {info.healthy} of {len(info.workers)} healthy",
        *(f"    {'healthy  ' if w.healthy else 'UNHEALTHY'} {w.url}" for w in info.workers),
        f"  name:           {name}   (pid {pid}; `qembed stop {name}`, `qembed logs {name}`)",
        f"  log:            {log_path}",
    ]
    if info.metrics_port:
        lines.append(f"  metrics:        port {info.metrics_port} (smg's Prometheus endpoint)")
    if not detached:
        lines += ["", "Press Ctrl-C to stop."]
    output.data("\n".join(lines))


def _check_name(name: str) -> None:
    from qembed.serving import supervisor

    supervisor.check_name(name)
    supervisor.refuse_running(name)  # NameInUse: exit 2, as `serve` (issue 22)


def _foreground(front: Server, records: list[Record], stop_all: Any, *, others: list[Server]) -> None:
    """Serve until Ctrl-C/SIGTERM or until the gateway exits; a dying replica only warns."""
    from qembed import output
    from qembed.host import state
    from qembed.serving import foreground

    previous = {sig: signal.signal(sig, foreground.raise_terminated) for sig in foreground.STOP_SIGNALS}
    stopped_by: int | None = None
    warned: set[int] = set()
    try:
        while True:
            rc = front.wait(timeout=1.0)
            if rc is not None:
                output.warn(f"the gateway exited (exit code {rc}); stopping the rest",
                            hint=f"read its log: `qembed logs {records[0].name}`")
                break
            for k, rep in enumerate(others):
                if k not in warned and rep.proc.poll() is not None:
                    warned.add(k)
                    output.warn(f"replica {k} (pid {rep.pid}) exited with code {rep.proc.returncode}; "
                                "the gateway routes to the others", hint=f"read its log: `less {rep.log_path}`")
    except KeyboardInterrupt as exc:
        stopped_by = foreground.stopped_by(exc)
    finally:
        output.status("stopping ...")
        try:
            stop_all()
        finally:
            for rec in records:
                state.remove_if_owned(rec)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    output.status("stopped")
    if stopped_by is not None:
        raise typer.Exit(foreground.exit_code(stopped_by))


@app.command("gateway", epilog=GATEWAY_EXAMPLES)
def gateway_cmd(
    worker: Annotated[list[str], typer.Option("--worker", "-w", metavar="URL", help="A worker's base URL (repeat for each `qembed serve` worker).")],
    port: Annotated[int, typer.Option("--port", help="Gateway HTTP port.")] = 30000,
    host: Annotated[str, typer.Option("--host", help="Bind address (default 127.0.0.1; use 0.0.0.0 to serve other machines, with QEMBED_API_KEY set).")] = "127.0.0.1",
    policy: Annotated[str, typer.Option("--policy", help="Load balancing: round_robin or power_of_two (smg's cache_aware gains nothing without shared prefixes).")] = "round_robin",
    metrics_port: Annotated[int | None, typer.Option("--metrics-port", help="smg's Prometheus port (default 29000, or the next free one).")] = None,
    ready_timeout: Annotated[float, typer.Option("--ready-timeout", help="Seconds to wait for the gateway and one healthy worker.")] = 120.0,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run in the background: wait until ready, record it, exit 0.")] = False,
    name: Annotated[str, typer.Option("--name", help="Name for `qembed ps/stop/logs`.")] = "gateway",
    json_: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
) -> None:
    """Run the SGLang model gateway (smg) in front of embedding servers started with `qembed serve`."""
    from qembed import output
    from qembed.host import state
    from qembed.serving import gateway

    _check_name(name)
    gateway.require_smg()
    from qembed.net import clean_api_key

    api_key = clean_api_key(qenv.API_KEY.get(), source=f"`{qenv.API_KEY.name}`")
    gateway.check_policy(policy)
    gateway.check_exposure(host, api_key)
    admin = gateway.admin_key(api_key, qenv.GATEWAY_ADMIN_KEY.get())  # before anything starts
    if not json_:
        output.status(f"checking {output.plural(len(worker), 'worker')} ...")
    infos = gateway.probe_workers(worker, api_key=api_key)
    log_path = state.new_log_path(name)
    server = gateway.start_gateway([w.url for w in infos], host=host, port=port, policy=policy, api_key=api_key,
                                   admin=admin, log_path=log_path, metrics_port=metrics_port, ready_timeout=ready_timeout,
                                   parent_death_signal=None if detach else signal.SIGTERM)
    record = state.make_record(name=name, pid=server.pid, host=host, port=port, url=server.url,
                               model=infos[0].model, log_path=log_path, profile=None,
                               served_model_name=infos[0].served_model_name, dimensions=infos[0].dimensions,
                               detached=detach, api_key_env=qenv.API_KEY.name if api_key else None,
                               owner_pid=None if detach else os.getpid(), shutdown_timeout=10.0, role="gateway")
    state.save(record)
    try:
        info = gateway.wait_gateway(server, timeout=ready_timeout,
                                    on_event=None if json_ else (lambda t: output.status(f"gateway: {t}")))
    except BaseException:
        server.stop(timeout=0)
        state.remove_if_owned(record)
        raise
    _render(info, name=name, pid=server.pid, log_path=str(log_path), detached=detach, as_json=json_)
    if detach:
        server.detach()
        return
    _foreground(server, [record], lambda: server.stop(timeout=10.0), others=[])


def serve_group(prof: Profile, *, name: str, api_key: str | None, python: str, detach: bool,
                as_json: bool, policy: str = "round_robin") -> None:
    """`qembed serve --gpus ... --gateway`: one SGLang per GPU group, smg in front on the
    profile's port; ready when every replica is ready and healthy in the gateway."""
    from qembed import output
    from qembed.host import state
    from qembed.serving import gateway

    gateway.require_smg()
    gateway.check_exposure(prof.host, api_key)  # before minutes of model loading, not after
    admin = gateway.admin_key(api_key, qenv.GATEWAY_ADMIN_KEY.get())
    # each replica is a serving session: its name and port claimed, its record saved
    group: Group = gateway.start_replicas(prof, prof.gpu_ids or [], name=name, api_key=api_key, python=python,
                                          detach=detach)
    pds = None if detach else signal.SIGTERM
    records: list[Record] = [s.record for s in group.sessions if s.record is not None]
    say = None if as_json else output.status
    try:
        if say:
            for k, (s, p) in enumerate(zip(group.replicas, group.profiles, strict=True)):
                say(f"replica {k} on GPU {','.join(map(str, p.gpu_ids or []))}: SGLang pid {s.pid}, {s.url}, log {s.log_path}")
        infos = gateway.wait_replicas(group, timeout=prof.ready_timeout, on_event=say)
        for rec, ri in zip(records, infos, strict=True):
            rec.served_model_name, rec.dimensions, rec.context_length = ri.served_model_name, ri.dimensions, ri.context_length
            state.save(rec)
        log_path = state.new_log_path(name)
        group.gateway = gateway.start_gateway([s.url for s in group.replicas], host=prof.host, port=prof.port,
                                              policy=policy, api_key=api_key, admin=admin,
                                              log_path=log_path, ready_timeout=prof.ready_timeout, parent_death_signal=pds)
        front = state.make_record(
            name=name, pid=group.gateway.pid, host=prof.host, port=prof.port, url=group.gateway.url, model=prof.model,
            log_path=log_path, profile=prof.name, served_model_name=infos[0].served_model_name,
            dimensions=infos[0].dimensions, context_length=infos[0].context_length, detached=detach,
            api_key_env=prof.api_key_env if api_key else None, owner_pid=None if detach else os.getpid(),
            shutdown_timeout=prof.shutdown_timeout, gpu_ids=prof.gpu_ids, group=name, role="gateway")
        state.save(front)
        records.insert(0, front)
        # Readiness waits for every replica: all of them healthy in the gateway too.
        info = gateway.wait_gateway(group.gateway, timeout=prof.ready_timeout, min_healthy=len(group.replicas),
                                    on_event=None if as_json else (lambda t: output.status(f"gateway: {t}")))
    except BaseException:
        group.stop(0)
        for rec in records:
            state.remove_if_owned(rec)
        raise
    _render(info, name=name, pid=group.gateway.pid, log_path=str(log_path), detached=detach, as_json=as_json,
            extra={"replicas": [{"name": r.name, "pid": r.pid, "url": r.url, "gpu_ids": r.gpu_ids}
                                for r in records[1:]]})
    if detach:
        group.detach()
        return
    _foreground(group.gateway, records, lambda: group.stop(prof.shutdown_timeout), others=group.replicas)


def dry_run_group(prof: Profile, *, api_key: str | None, python: str, as_json: bool) -> None:
    """`serve --gpus ... --gateway --dry-run`: each replica's SGLang command (checked by SGLang's
    parser) and the smg command; nothing starts."""
    import shlex

    from qembed import output
    from qembed.serving import gateway, sglang_args

    reps = gateway.replica_profiles(prof, prof.gpu_ids or [])
    cmds = [sglang_args.build_command(p, api_key=api_key, python=python) for p in reps]
    smg = gateway.gateway_flags([f"http://127.0.0.1:{p.port}" for p in reps], host=prof.host, port=prof.port)
    if not as_json:
        for k, c in enumerate(cmds):
            output.data(f"replica {k} (GPU {','.join(map(str, reps[k].gpu_ids or []))}):")
            output.data(f"  {c.display()}")
        output.data("gateway:")
        output.data(f"  smg {shlex.join(smg)}" + ("   (API key from the environment)" if api_key else ""))
    py, target_env = sglang_args.resolve_sglang(reps[0], python)
    verdict = sglang_args.ensure_accepted(
        sglang_args.build_flags(reps[0], api_key="x" if api_key else None), python=py, env=target_env,
        on_import=None if as_json else lambda: output.status(sglang_args.PARSER_IMPORT_NOTE))
    if as_json:
        output.print_json({"replicas": [{"gpu_ids": p.gpu_ids, "port": p.port, "argv": c.redacted_argv(),
                                         "env": c.redacted_env()} for p, c in zip(reps, cmds, strict=True)],
                           "gateway": {"argv": ["smg", *smg], "smg_installed": gateway.smg_available()},
                           "parser_check": "ok"})
    else:
        output.status(f"SGLang's parser accepts these flags ({sglang_args.verdict_source(verdict)}; "
                      "dry run: nothing started)")


__all__ = ["dry_run_group", "gateway_cmd", "serve_group"]
