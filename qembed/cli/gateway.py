"""`qembed gateway`: the SGLang model gateway (smg) in front of `qembed serve` workers; and the
`qembed serve --gpus ... --gateway` group (one server per GPU behind smg).

Thin layer: options -> a :mod:`qembed.serving.gateway_session` session (claims, records,
cleanup and the foreground loop are the library's) -> :mod:`qembed.output`.
Only the standard library and typer are imported at module level.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from qembed import env as qenv
from qembed.cli._app import app

if TYPE_CHECKING:
    from qembed.serving.gateway import GatewayInfo
    from qembed.serving.gateway_session import GatewaySession, GroupSession
    from qembed.serving.gpu import GPUSnapshot
    from qembed.serving.profiles.model import Profile
    from qembed.serving.supervisor import Event

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


def _renderer(json_: bool) -> Callable[[Event], None]:
    """How `gateway` (and a `serve --gateway` group) says a session's events: warnings always,
    progress lines unless `--json`."""
    from qembed import output

    def render(e: Event) -> None:
        if e.kind == "warning":
            output.warn(e.message, e.hint)
        elif e.kind == "notice" and not json_:
            output.status(e.message)

    return render


def _foreground(session: GatewaySession | GroupSession) -> None:
    """Serve until Ctrl-C/SIGTERM or until the gateway exits; a dying replica only warns."""
    from qembed import output

    ending = session.foreground(on_stopping=lambda: output.status("stopping ..."))
    output.status("stopped")
    if ending.how == "stopped":
        raise typer.Exit(ending.exit_code)


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
    from qembed.net import clean_api_key
    from qembed.serving.gateway_session import GatewaySession

    api_key = clean_api_key(qenv.API_KEY.get(), source=f"`{qenv.API_KEY.name}`")
    session = GatewaySession(name=name, host=host, port=port, api_key=api_key, admin=qenv.GATEWAY_ADMIN_KEY.get(),
                             policy=policy, metrics_port=metrics_port, ready_timeout=ready_timeout, detach=detach,
                             on_event=_renderer(json_))
    with session:  # whatever fails leaves nothing running, recorded or claimed
        session.prepare()
        if not json_:
            output.status(f"checking {output.plural(len(worker), 'worker')} ...")
        session.probe(worker)
        server = session.launch()
        info = session.wait_ready()
        _render(info, name=name, pid=server.pid, log_path=str(session.log_path), detached=detach, as_json=json_)
        if detach:
            session.detach()
            return
        _foreground(session)


def serve_group(prof: Profile, *, name: str, api_key: str | None, python: str, detach: bool,
                as_json: bool, gpus: GPUSnapshot | None = None) -> None:
    """`qembed serve --gpus ... --gateway`: one SGLang per GPU group, smg in front on the
    profile's port; ready when every replica is ready and healthy in the gateway."""
    from qembed.serving.gateway_session import GroupSession

    session = GroupSession(prof, name=name, api_key=api_key, python=python, detach=detach, gpus=gpus,
                           admin=qenv.GATEWAY_ADMIN_KEY.get(), on_event=_renderer(as_json))
    with session:  # whatever fails leaves nothing running, recorded or claimed
        session.prepare()
        group = session.launch()
        info = session.wait_ready()
        assert group.gateway is not None
        _render(info, name=name, pid=group.gateway.pid, log_path=str(session.log_path), detached=detach,
                as_json=as_json, extra={"replicas": [{"name": r.name, "pid": r.pid, "url": r.url, "gpu_ids": r.gpu_ids}
                                                     for r in session.replica_records]})
        if detach:
            session.detach()
            return
        _foreground(session)


def dry_run_group(prof: Profile, *, api_key: str | None, python: str, as_json: bool) -> None:
    """`serve --gpus ... --gateway --dry-run`: each replica's SGLang command (checked by SGLang's
    parser) and the smg command; nothing starts."""
    import shlex

    from qembed import output
    from qembed.serving import gateway, sglang_args
    from qembed.serving.gateway_session import GroupSession

    plan = GroupSession(prof, name=prof.name or "default", api_key=api_key, python=python).plan()
    reps, cmds = plan.profiles, plan.commands
    if not as_json:
        for k, c in enumerate(cmds):
            output.data(f"replica {k} (GPU {','.join(map(str, reps[k].gpu_ids or []))}):")
            output.data(f"  {c.display()}")
        output.data("gateway:")
        output.data(f"  {shlex.join(plan.gateway_argv)}" + ("   (API key from the environment)" if api_key else ""))
    verdict = plan.check_flags(on_import=None if as_json else lambda: output.status(sglang_args.PARSER_IMPORT_NOTE))
    if as_json:
        output.print_json({"replicas": [{"gpu_ids": p.gpu_ids, "port": p.port, "argv": c.redacted_argv(),
                                         "env": c.redacted_env()} for p, c in zip(reps, cmds, strict=True)],
                           "gateway": {"argv": plan.gateway_argv, "smg_installed": gateway.smg_available()},
                           "parser_check": "ok"})
    else:
        output.status(f"SGLang's parser accepts these flags ({sglang_args.verdict_source(verdict)}; "
                      "dry run: nothing started)")


__all__ = ["dry_run_group", "gateway_cmd", "serve_group"]
