"""`qembed top`: a live view of a worker's or a gateway's metrics (thin layer over qembed.fleet.top)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from qembed import env as qenv
from qembed.cli._app import app

if TYPE_CHECKING:
    from rich.table import Table

    from qembed.fleet.top import Stats

TOP_EXAMPLES = """\
Examples:

\b
  qembed top                              # the server started last
  qembed top emb                          # a named server (`qembed ps`)
  qembed top --url http://10.0.0.5:30000  # a worker with metrics on
  qembed top --url http://gateway:29000   # smg's --prometheus-port
  qembed top --once --json | jq .[0].p99_s

The server needs `metrics: true` in its profile (SGLang's `--enable-metrics`; on by default in
the shipped profiles). Press Ctrl-C to quit.

""" + qenv.env_help("QEMBED_URL")


def _fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def _short(url: str) -> str:
    """``http://127.0.0.1:30000/metrics`` -> ``127.0.0.1:30000`` (the scheme and default path add nothing)."""
    short = url.split("://", 1)[-1]
    return short.removesuffix("/metrics")


def _table(rows: list[Stats]) -> Table:
    from rich import box
    from rich.table import Table

    # 11 columns fit 80 terminal columns: no vertical rules, the server as host:port, cells fold
    t = Table(title="qembed top", show_lines=False, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
              padding=(0, 0))
    for col in ("server", "kind", "req/s", "tok/s", "p50", "p95", "p99", "queue", "running",
                "KV used", "5xx/s"):
        t.add_column(col, overflow="fold")
    for s in rows:
        server = _short(s.url)
        if not s.ok:
            t.add_row(server, s.kind, f"error: {s.error}", *[""] * 8)
            continue
        kind = s.kind if s.workers is None else f"gateway ({s.healthy_workers or 0:.0f}/{s.workers:.0f} workers)"
        t.add_row(server, kind, _fmt(s.requests_per_s, ".1f"), _fmt(s.tokens_per_s, ".0f"),
                  _ms(s.p50_s), _ms(s.p95_s), _ms(s.p99_s), _fmt(s.queue, ".0f"), _fmt(s.running, ".0f"),
                  _fmt(None if s.kv_usage is None else s.kv_usage * 100, ".1f", "%"),
                  _fmt(s.errors_per_s, ".2f"))
    gpus = next((s.gpus for s in rows if s.gpus), [])
    for g in gpus:
        t.add_row(f"GPU {g.index} {g.name}", "local", "", "", "", "", "", "", "",
                  f"mem {g.memory_used / 2**30:.1f}/{g.memory_total / 2**30:.1f} GiB",
                  f"util {_fmt(g.utilization_pct, '.0f', '%')}")
    return t


def _urls(name: str | None, url: list[str] | None) -> list[str]:
    from qembed.errors import ConfigError
    from qembed.host import state

    if url:
        return list(url)
    if name:
        rec = state.live(name)
        if rec is None:
            raise ConfigError(f"no running server named `{name}`", hint="`qembed ps` lists them; or pass `--url URL`")
        return [rec.url]
    configured = qenv.URL.get()
    if configured:
        return [configured]
    rec = state.default_server()
    return [rec.url if rec else qenv.DEFAULT_URL]


@app.command("top", epilog=TOP_EXAMPLES)
def top_cmd(
    name: Annotated[str | None, typer.Argument(help="A server started by `qembed serve` (see `qembed ps`).")] = None,
    url: Annotated[list[str] | None, typer.Option("--url", envvar=qenv.URL.name,
                                                   help="Server base URL or its /metrics URL (repeatable).")] = None,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between refreshes (1-10).")] = 2.0,
    once: Annotated[bool, typer.Option("--once", help="Measure one interval, print, and exit.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="With --once: print JSON on stdout.")] = False,
) -> None:
    """Live requests/s, tokens/s, latency percentiles, queue, KV usage and GPU use of servers."""
    from qembed import output
    from qembed.errors import ConfigError
    from qembed.fleet import top

    top.check_interval(interval)
    urls = _urls(name, url)
    if json_ and not once:
        raise ConfigError("`--json` needs `--once`", hint="`qembed top --once --json`")
    if once:
        rows = top.once(urls, interval=interval)
        if json_:
            output.print_json([r.to_json() for r in rows])
        else:
            output.out_console().print(_table(rows))
        return
    import time

    from rich.live import Live

    watcher = top.Watcher(urls)
    try:
        with Live(_table(watcher.refresh()), console=output.out_console(), auto_refresh=False) as live:
            while True:
                deadline = time.monotonic() + interval
                while (left := deadline - time.monotonic()) > 0:
                    time.sleep(left)
                live.update(_table(watcher.refresh()), refresh=True)
    except KeyboardInterrupt:
        return
