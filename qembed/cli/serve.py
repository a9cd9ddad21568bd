"""`qembed serve`, `ps`, `stop`, `logs`: start SGLang and manage the servers qembed started.

Thin layer: options -> a :class:`qembed.serving.supervisor.ServingSession` (its plan for
``--dry-run``; :func:`qembed.serving.foreground.run_session` in the foreground), or
:mod:`qembed.serving.launcher` / :mod:`qembed.host.state` reads for ``ps/stop/logs`` -> :mod:`qembed.output`.
Only the standard library and typer are imported at module level.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from qembed import env as qenv
from qembed.cli._app import app

if TYPE_CHECKING:
    from qembed.host.state import Record
    from qembed.serving.profiles.model import Profile
    from qembed.serving.profiles.resolve import ResolvedProfile
    from qembed.serving.readiness import ReadyInfo
    from qembed.serving.supervisor import Event, Plan, ServingSession

SERVE_EXAMPLES = """\
Examples:

\b
  # profile `auto` picks settings for your GPU
  qembed serve
  qembed serve -p a100-40g --port 31000     # a shipped profile, another port
  qembed serve --set gpu_memory_fraction=0.8 --set context_length=8192
  # run in the background; see `qembed ps`
  qembed serve --detach --name emb
  # show the SGLang command, check its flags, exit
  qembed serve --dry-run
  # one model on four GPUs (SGLang --dp-size 4)
  qembed serve --gpus 0,1,2,3
  # two servers behind the SGLang model gateway
  qembed serve --gpus 0,1 --gateway
  # no GPU, production: real SGLang on CPU (check it: `qembed doctor -p xeon`)
  qembed serve --profile xeon
  # no GPU: the reference engine on CPU (dev, CI; not production)
  qembed serve --profile cpu
  # once ready, compare its vectors with the model card's
  qembed serve --verify
  # SGLang lives in another environment
  qembed serve --python ~/sglang-venv/bin/python
  # listen on the network, with a key
  QEMBED_API_KEY=secret qembed serve --host 0.0.0.0

Ctrl-C (or SIGTERM) stops the server (SGLang, or the reference engine of `--profile cpu`): it
drains in-flight requests for up to --shutdown-timeout seconds, then the whole process group is
killed. The engine's log goes to a file in the state directory; the terminal shows the startup
phases.

""" + qenv.env_help("QEMBED_PROFILE", "QEMBED_API_KEY", "QEMBED_SGLANG_PYTHON", "QEMBED_STATE_DIR", "QEMBED_LOG_FORMAT")

PS_EXAMPLES = """\
Examples:

\b
  qembed ps
  qembed ps --json | jq -r '.[].url'
"""

STOP_EXAMPLES = """\
Examples:

\b
  qembed stop                      # the only one here (several: refused)
  qembed stop emb
  qembed stop --all
  qembed stop emb --timeout 5      # give in-flight requests 5 s, then kill
"""

LOGS_EXAMPLES = """\
Examples:

\b
  qembed logs emb                  # the last 50 lines
  qembed logs emb --lines 200
  # follow until Ctrl-C or until the server exits
  qembed logs emb -f
"""

ProfileOpt = Annotated[
    str,
    typer.Option(
        "--profile", "-p", envvar=qenv.PROFILE.name,
        help="Deployment profile: a shipped name (a100-80g, h100, l4, ...), `auto`, or a YAML path.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]


class _Phases:
    """Renders startup phases on stderr: a rich status line on a TTY, plain lines otherwise."""

    def __init__(self, enabled: bool, engine: str) -> None:
        from qembed import output
        from qembed.serving.readiness import PHASES

        self.json = output.log_format() == "json"
        self.enabled = enabled or self.json  # JSON events go to log shippers, even with --json
        self.engine = engine
        self.live: Any = None
        if self.enabled and not self.json and output.stderr_is_tty():
            self.live = output.err_console().status(PHASES[0].text(engine))
            self.live.start()

    def __call__(self, label: str, elapsed: float) -> None:
        if not self.enabled:
            return
        from qembed import output
        from qembed.serving.readiness import PHASES

        if self.json:
            key = next((p.key for p in PHASES if p.text(self.engine) == label), None)
            output.event("phase" if key else "notice", label, phase=key, elapsed_s=round(elapsed, 1))
            return
        text = f"{label} ({elapsed:.0f} s)" if label != "ready" else f"ready in {elapsed:.1f} s"
        if self.live is not None:
            # finished phases stay on screen above the spinner, as plain lines do
            output.err_console().print(f"[{elapsed:6.1f}s] {label}", markup=False, highlight=False)
            self.live.update(text)
        else:
            output.status(f"[{elapsed:6.1f}s] {label}")

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


def _overrides(
    set_: list[str] | None, model: str | None, port: int | None, host: str | None, python: str | None,
    ready_timeout: float | None, shutdown_timeout: float | None,
) -> tuple[list[str], dict[str, object]]:
    """``(--set texts, typed options)``: only ``--set`` values are parsed (as YAML); every other
    option is taken as written, with the type it declares (``--host ::``, ``--model 2024``)."""
    options: dict[str, object] = {
        "model": model, "port": port, "host": host, "python": python,
        "ready_timeout": ready_timeout, "shutdown_timeout": shutdown_timeout,
    }
    return list(set_ or []), {k: v for k, v in options.items() if v is not None}


def _examples(info: ReadyInfo, profile: Profile, has_key: bool) -> list[str]:
    import shlex

    from qembed.serving.profiles.model import engine_name

    body = shlex.quote(f'{{"model": "{info.served_model_name}", "input": ["hello world"]}}')
    auth = f' -H "Authorization: Bearer ${profile.api_key_env}"' if has_key else ""
    key = f'os.environ["{profile.api_key_env}"]' if has_key else '"none"'
    return [
        "curl:",
        f"  curl -s {info.url}/v1/embeddings -H 'Content-Type: application/json'{auth} \\",
        f"    -d {body}",
        "",
        "openai (Python):",
        "  import os" if has_key else "  from openai import OpenAI",
        *(["  from openai import OpenAI"] if has_key else []),
        f'  client = OpenAI(base_url="{info.url}/v1", api_key={key})',
        f'  vecs = client.embeddings.create(model="{info.served_model_name}", input=["hello world"])',
        "  # the SDK asks for encoding_format=\"base64\" unless told otherwise and decodes it;",
        f"  # {engine_name(profile, capital=True)} sends little-endian float32, so both formats give the same numbers",
        "  # queries need an instruction prefix: `qembed embed --query TEXT` adds it",
    ]


def _render_ready(info: ReadyInfo, *, name: str, profile: Profile, log_path: str, detached: bool,
                  has_key: bool, pid: int, as_json: bool) -> None:
    from qembed import output

    if as_json:
        output.print_json({**info.to_json(), "openai_base_url": f"{info.url}/v1", "name": name,
                           "profile": profile.name, "pid": pid, "log_path": log_path,
                           "detached": detached, "api_key_env": profile.api_key_env if has_key else None})
        return
    ctx = f"{info.context_length} tokens" if info.context_length else "unknown"
    lines = [
        f"ready in {info.seconds:.1f} s: {info.served_model_name} at {info.url}",
        f"  url:            {info.url}   (OpenAI base_url: {info.url}/v1)",
        f"  model:          {info.model}",
        f"  served name:    {info.served_model_name}",
        f"  vector size:    {info.dimensions}",
        f"  context length: {ctx}",
        f"  name:           {name}   (pid {pid}; `qembed stop {name}`, `qembed logs {name}`)",
        f"  log:            {log_path}",
        "",
        *_examples(info, profile, has_key),
    ]
    if not detached:
        lines += ["", "Press Ctrl-C to stop."]
    output.data("\n".join(lines))


def _dry_run(resolved: ResolvedProfile, plan: Plan, *, as_json: bool) -> None:
    from qembed import output
    from qembed.serving import sglang_args
    from qembed.serving.profiles.display import display_value, redacted_values

    profile, cmd, cpu_plan = plan.profile, plan.command, plan.cpu
    findings = plan.findings
    dumped = redacted_values(profile)
    refusal = plan.refusal
    if not as_json:
        if resolved.auto_reason:
            output.status(f"auto: {resolved.auto_reason}")
        output.data(f"profile: {profile.name}")
        for key, value in dumped.items():
            if key not in ("name", "extends"):
                output.data(f"  {key}: {display_value(key, value)}")
        output.data("command:")
        output.data(f"  {shlex_join(cmd.redacted_argv())}")
        output.data("environment (added):")
        for k, v in cmd.redacted_env().items():
            output.data(f"  {k}={v}")
        if cpu_plan is not None:
            output.data("SGLang on CPU:")
            for f in cpu_plan.findings:
                if f.level == "info" and f.check in ("cpu", "kernels", "path", "ram"):
                    output.data(f"  {f.check}: {f.message}")
            for pv in cpu_plan.values:  # each value the launch uses, and where it came from
                shown = "(unset)" if pv.value is None else pv.value
                output.data(f"  {pv.key}: {shown}  [{pv.source}] {pv.why}")
        for f in findings:
            if f is refusal:
                if cpu_plan is None:  # a CPU refusal is raised below, as a real serve raises it
                    output.warn(f"a real `qembed serve` would refuse on this machine: {f.message}", f.hint)
            else:
                output.warn(f.message, f.hint)

    def report(parser_check: str) -> None:
        if as_json:
            doc = {"profile": dumped, "requested": resolved.requested, "auto_reason": resolved.auto_reason,
                   "argv": cmd.redacted_argv(), "env": cmd.redacted_env(), "command": cmd.display(),
                   "parser_check": parser_check,
                   "launch_findings": [{"level": f.level, "message": f.message, "hint": f.hint} for f in findings],
                   "serve_would_refuse": refusal is not None}
            if cpu_plan is not None:
                doc["cpu_plan"] = cpu_plan.to_json()
            output.print_json(doc)

    if cpu_plan is not None and refusal is not None:
        # the CPU build is missing (or the model does not fit in RAM): `serve` refuses before anything
        # starts, and so does its dry run (exit 2, or 3); the plan still goes to stdout with --json
        report("skipped")
        plan.require()
    verdict = plan.check_flags(on_import=None if as_json else lambda: output.status(sglang_args.PARSER_IMPORT_NOTE))
    report("ok")
    if not as_json:
        output.status(f"SGLang's parser accepts these flags ({sglang_args.verdict_source(verdict)}; "
                      "dry run: nothing started)")


def shlex_join(argv: list[str]) -> str:
    import shlex

    return shlex.join(argv)


@app.command("serve", epilog=SERVE_EXAMPLES)
def serve(
    profile: ProfileOpt = "auto",
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model: HF id or local dir (profile key `model`).")] = None,
    port: Annotated[int | None, typer.Option("--port", help="HTTP port (profile key `port`, default 30000).")] = None,
    host: Annotated[str | None, typer.Option("--host", help="Bind address (profile key `host`, default 127.0.0.1).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", metavar="KEY=VALUE", help="Override a profile key (repeatable), e.g. `--set gpu_memory_fraction=0.8`.")] = None,
    python: Annotated[str | None, typer.Option("--python", help="Python interpreter that has SGLang installed (default: profile key `python`, else $QEMBED_SGLANG_PYTHON, else this interpreter).")] = None,
    ready_timeout: Annotated[float | None, typer.Option("--ready-timeout", help="Seconds to wait for the server to be ready (profile key `ready_timeout`, default 1800).")] = None,
    shutdown_timeout: Annotated[float | None, typer.Option("--shutdown-timeout", help="Seconds the server may drain requests on stop before it is killed (profile key `shutdown_timeout`, default 30).")] = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run in the background: wait until ready, record it, exit 0.")] = False,
    name: Annotated[str | None, typer.Option("--name", help="Server name for `qembed ps/stop/logs` (default: the profile name).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the profile, the engine's command and env (key redacted), check the flags, exit.")] = False,
    json_: JsonOpt = False,
    gpus: Annotated[str | None, typer.Option("--gpus", metavar="0,1,...", help="Serve on these GPUs, one replica per `tp_size` GPUs, through SGLang's `--dp-size` (sets profile keys `gpu_ids`, `dp_size`). See docs/scaling.md.")] = None,
    use_gateway: Annotated[bool, typer.Option("--gateway", help="With --gpus: one SGLang server per replica behind the SGLang model gateway (smg) instead of `--dp-size` (`pip install 'qembed[gateway]'`).")] = False,
    log_format: Annotated[str, typer.Option("--log-format", envvar=qenv.LOG_FORMAT.name, metavar="text|json", help="qembed's own messages on stderr (phases, ready, stop, failures with their diagnosis): `text`, or `json` lines for log shippers. The engine's log stays in its file.")] = "text",
    verify_: Annotated[bool, typer.Option("--verify", help="Once ready, run `qembed verify` against it; stop the server if it fails (needs `qembed[verify]`).")] = False,
) -> None:
    """Start an embedding server (SGLang; `--profile cpu`: the reference engine) and wait until it answers embeddings."""
    from qembed import output
    from qembed.errors import ConfigError
    from qembed.serving import gpu, sglang_args, supervisor
    from qembed.serving.profiles.resolve import resolve_api_key, resolve_profile

    if log_format not in output.LOG_FORMATS:
        raise ConfigError(f"unknown `--log-format {log_format}`", hint="use `--log-format text` or `--log-format json`")
    output.set_log_format(log_format)
    snap = gpu.snapshot()
    sets, options = _overrides(set_, model, port, host, python, ready_timeout, shutdown_timeout)
    resolved = resolve_profile(profile, overrides=sets, options=options, gpus=snap)
    prof = resolved.profile
    if gpus is not None or use_gateway:  # many GPUs: qembed/serving/gateway.py, docs/scaling.md
        from qembed.serving import gateway

        if gpus is None:
            raise ConfigError("`--gateway` needs `--gpus`", hint="e.g. `qembed serve --gpus 0,1 --gateway`; "
                              "for workers on other machines use `qembed gateway --worker URL ...`")
        options = {**options, **gateway.dp_options(gateway.parse_gpus(gpus), prof.tp_size)}
        resolved = resolve_profile(profile, overrides=sets, options=options, gpus=snap)
        prof = resolved.profile
    py = sglang_args.sglang_python(prof)
    api_key = resolve_api_key(prof)

    session = supervisor.ServingSession(prof, name=name or prof.name or "default", api_key=api_key, python=py,
                                        detach=detach, gpus=snap, on_event=_renderer(json_))
    if dry_run:
        # everything a real serve would refuse or warn about before launching (issue 22): the
        # session's own plan, not a copy of its checks; nothing is claimed or started
        plan = session.plan()
        if plan.exposure is not None:  # a real serve: the session says it
            output.warn(plan.exposure.message, plan.exposure.hint)
        for message in plan.profile_warnings:
            output.warn(message)
        if use_gateway:
            from qembed.cli.gateway import dry_run_group

            dry_run_group(prof, api_key=api_key, python=py, as_json=json_)
        elif prof.engine == "reference":
            _dry_run_reference(plan, as_json=json_)
        else:
            _dry_run(resolved, plan, as_json=json_)
        return

    if use_gateway:  # the group session claims and checks, then launches its replicas and smg
        from qembed.cli.gateway import serve_group

        serve_group(prof, name=session.name, api_key=api_key, python=py, detach=detach, as_json=json_, gpus=snap)
        return
    _serve_session(session, json_=json_, verify_=verify_)


def _renderer(json_: bool) -> Callable[[Event], None]:
    """How `serve` says a session's events (warnings always; notices unless `--json`)."""
    from qembed import output

    # a model download: bars or lines on stderr; with --json, JSON events or nothing
    downloads = output.Transfers(enabled=not json_ or output.log_format() == "json")

    def render(e: Event) -> None:
        if e.kind == "warning":
            output.warn(e.message, e.hint)
        elif e.kind == "download":
            downloads(e.message, e.fields)
        elif e.kind == "notice":
            if not json_:
                output.status(e.message)
        elif e.kind == "spawned":
            if not json_ or output.log_format() == "json":
                output.event("spawned", e.message, **e.fields)
        elif e.kind == "stopping" and not (json_ and e.fields.get("reason") == "failed"):
            output.event("stopping", e.message, pid=e.fields.get("pid"), drain_timeout_s=e.fields.get("drain_timeout_s"))

    return render


def _serve_session(session: ServingSession, *, json_: bool, verify_: bool) -> None:
    from qembed import output
    from qembed.serving import foreground
    from qembed.serving.profiles.model import engine_name

    prof, detach = session.profile, session.detached
    server = session.start()
    phases = _Phases(enabled=not json_, engine=session.engine)

    def ready(info: ReadyInfo) -> None:
        if phases.json:
            output.event("ready", f"ready in {info.seconds:.1f} s: {info.served_model_name} at {info.url}",
                         **info.to_json(), name=session.name, pid=server.pid, detached=detach)
        _render_ready(info, name=session.name, profile=prof, log_path=str(server.log_path),
                      detached=detach, has_key=session.api_key is not None, pid=server.pid, as_json=json_)
        if verify_:
            _verify_after_ready(info, prof, api_key=session.api_key, quiet=json_)

    ending = foreground.run_session(session, on_phase=phases, on_waited=phases.close, on_ready=ready)
    if ending.how == "exited":
        output.event("exited", f"{engine_name(prof, capital=True)} exited (exit code 0) after {ending.elapsed:.0f} s",
                     exit_code=0)
    elif ending.how == "stopped" and ending.signum is not None:
        output.event("stopped", f"stopped ({session.engine} exit code {ending.returncode})",
                     exit_code=ending.returncode, by=foreground.signal_name(ending.signum))
        raise typer.Exit(ending.exit_code)


# -- the reference engine (`--profile cpu`) and `--verify` -----------------------------------------


def _dry_run_reference(plan: Plan, *, as_json: bool) -> None:
    from qembed import output

    profile, cmd = plan.profile, plan.command
    if as_json:
        output.print_json({"profile": profile.model_dump(mode="json"), "argv": cmd.redacted_argv(),
                           "env": cmd.redacted_env(), "command": cmd.display()})
        return
    output.data(f"profile: {profile.name} (engine: reference)")
    output.data("command:")
    output.data(f"  {shlex_join(cmd.redacted_argv())}")
    output.status("dry run: nothing started")


def _verify_after_ready(info: ReadyInfo, profile: Profile, *, api_key: str | None, quiet: bool) -> None:
    """`serve --verify`: raises VerifyFailed (exit 1; the caller then stops the server)."""
    from qembed import output
    from qembed.fleet.verify import verify_or_raise

    fp32 = profile.engine == "reference" or profile.dtype == "float32"
    report = verify_or_raise(info.url, model=profile.model, precision="fp32" if fp32 else "bf16",
                             api_key=api_key, progress=None if quiet else output.status)
    if not quiet:
        full = report.results[0]
        output.status(f"verify: PASS (min cos {full.min_cos:.7f} over {len(full.texts)} texts, "
                      f"{report.tolerance.name} tolerance, {report.seconds:.0f} s)")


# -- ps / stop / logs ------------------------------------------------------------------------------


def _uptime(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


@app.command("ps", epilog=PS_EXAMPLES)
def ps(json_: JsonOpt = False) -> None:
    """List the servers started by `qembed serve`, with live health."""
    from concurrent.futures import ThreadPoolExecutor

    from qembed import output
    from qembed.host import state
    from qembed.serving import launcher

    records = state.list_records(clean=True, other_hosts=True)

    def status(r: Record) -> str:  # another machine's server can't be probed or checked from here
        return f"on host {r.hostname}" if r.elsewhere else launcher.server_status(r)

    with ThreadPoolExecutor(max_workers=max(1, min(32, len(records)))) as pool:
        health = list(pool.map(status, records))
    if json_:
        output.print_json([{**r.to_json(), "status": h, "uptime_seconds": r.uptime()} for r, h in zip(records, health, strict=True)])
        return
    if not records:
        output.status("no servers running (start one with `qembed serve --detach`)")
        return
    # Few columns; `--json` has every field (profile, log, host, ...). DIR, where `qembed serve` ran,
    # tells apart the servers of other checkouts and jobs of the same user.
    rows = [
        (r.name, h, r.url, r.served_model_name or r.model, r.dimensions or "", r.pid, _uptime(r.uptime()),
         ",".join(map(str, r.gpu_ids)) if r.gpu_ids else "", _short_dir(r.cwd))
        for r, h in zip(records, health, strict=True)
    ]
    output.table(["NAME", "STATUS", "URL", "MODEL", "DIM", "PID", "UPTIME", "GPUS", "DIR"], rows, stack_key=1)


def _short_dir(path: str | None, width: int = 32) -> str:
    """A working directory as `ps` shows it: `~` for the home directory, the tail kept."""
    if not path:
        return "?"
    home = os.path.expanduser("~")
    if home not in ("", "/") and (path == home or path.startswith(home + os.sep)):
        path = "~" + path[len(home):]
    return path if len(path) <= width else "..." + path[-(width - 3):]


def _described(r: Record) -> str:
    """`` `emb` (started in ~/src/a, profile a100) ``: enough to tell two servers apart."""
    return f"`{r.name}` (started in {_short_dir(r.cwd)}, profile {r.profile or '?'})"


def _pick(name: str | None) -> Record:
    from qembed.errors import ConfigError
    from qembed.host import state

    records = state.list_records(clean=True, other_hosts=True)
    here = [r for r in records if not r.elsewhere]
    if name is None:
        # A bare `stop` stops a server only when it can be the one meant: the only one running
        # on this machine (a group, its gateway and replicas, is one). Two, from two checkouts or
        # jobs of the same user, are refused: the user names one.
        gateways = {r.name for r in here if r.role == "gateway"}
        candidates = [r for r in here if not (r.role == "replica" and r.group in gateways)]
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            raise ConfigError("no servers running on this machine",
                              hint="`qembed ps` lists them; start one with `qembed serve --detach`")
        raise ConfigError(f"{len(candidates)} servers are running: name the one to stop (or pass `--all`)",
                          hint="running: " + ", ".join(_described(r) for r in candidates)
                               + "; e.g. `qembed stop " + candidates[-1].name + "`")
    for r in records:
        if r.name == name:
            if r.elsewhere:
                raise ConfigError(f"the server `{name}` runs on host `{r.hostname}`, not on this machine",
                                  hint=f"run `qembed stop {name}` on `{r.hostname}`")
            return r
    running = ", ".join(f"`{r.name}`" for r in here) or "none"
    raise ConfigError(f"no running server named `{name}`", hint=f"running: {running} (`qembed ps`)")


@app.command("stop", epilog=STOP_EXAMPLES)
def stop(
    name: Annotated[str | None, typer.Argument(help="Server name (see `qembed ps`; may be left out when only one runs on this machine).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Stop every server qembed started on this machine.")] = False,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Seconds to let the server drain before killing it (default: the profile's `shutdown_timeout`).")] = None,
    json_: JsonOpt = False,
) -> None:
    """Stop servers started by `qembed serve` (SIGTERM, drain, then kill the process group)."""
    from qembed import output
    from qembed.host import state
    from qembed.serving import launcher

    targets = state.list_records(clean=True) if all_ else state.with_members(_pick(name))
    done: list[dict[str, Any]] = []
    for rec in targets:
        wait = rec.shutdown_timeout if timeout is None else timeout
        if not json_:
            output.status(f"stopping {rec.name} (pid {rec.pid}, started in {_short_dir(rec.cwd)}; "
                          f"draining for up to {wait:.0f} s) ...")
        was_running = launcher.stop_server(rec, timeout=wait)
        done.append({"name": rec.name, "pid": rec.pid, "stopped": was_running})
        if not json_:
            output.status(f"stopped {rec.name}" if was_running else f"{rec.name} was not running")
    if json_:
        output.print_json(done)
    elif not targets:
        output.status("no servers running")


@app.command("logs", epilog=LOGS_EXAMPLES)
def logs(
    name: Annotated[str | None, typer.Argument(help="Server name (default: the most recent server, else the newest log).")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines until Ctrl-C or until the server exits.")] = False,
    lines: Annotated[int, typer.Option("--lines", help="How many lines from the end to show first.")] = 50,
) -> None:
    """Show the log of a server started by `qembed serve` (SGLang's, or the reference engine's)."""
    from pathlib import Path

    from qembed import output
    from qembed.errors import ConfigError
    from qembed.host import logfiles, state
    from qembed.redact import redact

    record = state.load(name) if name else state.default_server()
    path: Path | None = Path(record.log_path) if record else None
    if path is None:
        # no live server: the newest log on disk, e.g. of a start that just failed
        path = state.latest_log(name)
    if path is None or not path.exists():
        what = f"for `{name}`" if name else "(no server is running and no log on disk)"
        raise ConfigError(f"no log {what}", hint="`qembed ps` lists servers; logs live in "
                          f"`{state.logs_dir()}`")
    # SGLang logs its API key (server_args): hide it, and the key in this shell's variable.
    secrets = [os.environ.get(record.api_key_env or "", "")] if record is not None else []
    for line in logfiles.read_log_tail(path, lines):
        output.data(redact(line, secrets))
    if not follow:
        return
    alive = record.is_alive if record is not None else (lambda: False)
    try:
        for line in logfiles.follow_log(path, alive=alive):
            output.data(redact(line, secrets))
    except KeyboardInterrupt:
        return
    output.status(f"({record.name if record else name} exited)")


__all__ = ["logs", "ps", "serve", "stop"]
