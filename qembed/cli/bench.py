"""`qembed bench`: sweep a server (concurrency x inputs per request x length), optionally
against the plain openai SDK."""

from __future__ import annotations

from typing import Annotated

import typer

from qembed import env as qenv
from qembed.cli._app import app

BENCH_EXAMPLES = """\
Examples:

\b
  qembed bench                       # about a minute: 6 cells of 8 s
  qembed bench --full                # the whole sweep: 30 cells of 10 s
  qembed bench --profile h100 -c 4,16 -b 32 -l 512 --json
  qembed bench --url http://gpu-box:30000 --gpu "H100 SXM" --csv
  qembed bench -c 8 -b 32 -l 512 --compare   # vs the plain openai SDK
"""

@app.command("bench", epilog=BENCH_EXAMPLES + "\n" + qenv.env_help("QEMBED_URL", "QEMBED_API_KEY"))
def bench(
    url: Annotated[str | None, typer.Option(
        "--url", envvar=qenv.URL.name, help="Server to measure (default http://127.0.0.1:30000).")] = None,
    profile: Annotated[str | None, typer.Option(
        "--profile", help="Launch a server from this profile first, and stop it afterwards.")] = None,
    api_key: Annotated[str | None, typer.Option(
        "--api-key", envvar=qenv.API_KEY.name, help="Bearer key for the server.")] = None,
    full: Annotated[bool, typer.Option(
        "--full", help="The whole sweep: -c 1,4,16,64,256 -b 1,32 -l 64,512,2048, 10 s per cell "
        "(default: -c 1,16,64 -b 1,32 -l 512, 8 s per cell, about a minute).")] = False,
    concurrency: Annotated[str | None, typer.Option(
        "--concurrency", "-c", help="Requests in flight, comma-separated.")] = None,
    batch: Annotated[str | None, typer.Option(
        "--batch", "-b", help="Inputs per request, comma-separated.")] = None,
    length: Annotated[str | None, typer.Option(
        "--length", "-l", help="Input length in tokens, comma-separated.")] = None,
    requests: Annotated[int | None, typer.Option(
        "--requests", "-n", help="Requests per cell (overrides --duration).")] = None,
    duration: Annotated[float | None, typer.Option(
        "--duration", help="Seconds per cell (in-flight requests are finished and counted; "
        "default 8, or 10 with --full).")] = None,
    warmup: Annotated[int | None, typer.Option(
        "--warmup", help="Warm-up requests per cell, not counted (default: min(concurrency, 16)).")] = None,
    dimensions: Annotated[int | None, typer.Option(
        "--dimensions", help="Matryoshka output size to request.")] = None,
    model: Annotated[str | None, typer.Option(
        "--model", envvar=qenv.MODEL.name, help="Model name for requests and FLOPs (default: the server's).")] = None,
    tokenizer: Annotated[str | None, typer.Option(
        "--tokenizer", help="Local dir or HF id (offline) used to size inputs (default: the model).")] = None,
    gpu: Annotated[str | None, typer.Option(
        "--gpu", help="GPU name for MFU, e.g. 'H100 SXM' (default: NVML when the server is local).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the synthetic inputs.")] = 0,
    loader: Annotated[str, typer.Option(
        "--loader", help="Load generator: auto (aiohttp if installed), aiohttp or httpx.")] = "auto",
    compare: Annotated[bool, typer.Option(
        "--compare", help="Also embed the same texts with the plain openai SDK and print the ratios.")] = False,
    compare_texts: Annotated[int, typer.Option(
        "--compare-texts", help="Texts for --compare (first --length value).")] = 256,
    json_: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    csv_: Annotated[bool, typer.Option("--csv", help="Print the cells as CSV.")] = False,
) -> None:
    """Measure a server's throughput and latency across concurrency, batch size and input length."""
    import contextlib

    from qembed import output
    from qembed.errors import ConfigError
    from qembed.fleet.bench.compare import compare as compare_with_sdk
    from qembed.fleet.bench.compare import compare_caveat
    from qembed.fleet.bench.report import Cell, CellResult
    from qembed.fleet.bench.sweep import (
        launched,
        parse_axis,
        planned_seconds,
        run_bench,
        sweep_options,
    )

    if json_ and csv_:
        raise ConfigError("`--json` and `--csv` cannot be used together")
    if url and profile:
        raise ConfigError("give `--url` or `--profile`, not both")
    if loader not in ("auto", "aiohttp", "httpx"):
        raise ConfigError(f"`--loader` must be auto, aiohttp or httpx (got {loader!r})")
    options = sweep_options(
        full=full,
        concurrency=parse_axis(concurrency, "--concurrency") if concurrency else None,
        batch=parse_axis(batch, "--batch") if batch else None,
        lengths=parse_axis(length, "--length") if length else None,
        duration=duration, requests=requests, warmup=warmup, dimensions=dimensions, model=model,
        tokenizer=tokenizer, gpu=gpu, seed=seed, loader=loader,
    )
    quiet = json_ or csv_
    planned = planned_seconds(options)
    if not quiet and planned is not None:
        cells = len(options.concurrency) * len(options.batch) * len(options.lengths)
        output.status(f"{cells} cells of {options.duration:g} s: about {planned:.0f} s plus warm-ups"
                      + ("" if full else " (`--full` for the whole sweep)"))

    def on_phase(phase: str, elapsed: float) -> None:
        output.status(f"  {phase} ({elapsed:.0f} s)")

    def on_cell(cell: Cell, res: CellResult) -> None:
        if not quiet:
            output.status(f"  c={cell.concurrency} batch={cell.batch} len={cell.tokens}: "
                          f"{res.texts_per_s:,.1f} texts/s, p50 {res.latency_p50_ms:.1f} ms")

    ctx: contextlib.AbstractContextManager[tuple[str, str | None]]
    if profile:
        output.status(f"launching profile `{profile}` ...")
        from qembed.cli.serve import (
            _renderer,  # the session's warnings and notices, said as `serve` says them
        )

        ctx = launched(profile, api_key=api_key, on_phase=on_phase, on_event=_renderer(quiet))
    else:
        ctx = contextlib.nullcontext((url or qenv.DEFAULT_URL, api_key))
    with ctx as (target, key):
        report = run_bench(target, options, api_key=key, on_cell=on_cell)
        rows = None
        caveat = None
        if compare:
            if not quiet:
                output.status(f"comparing with the openai SDK on {compare_texts} texts ...")
            rows = compare_with_sdk(target, api_key=key, texts=compare_texts, tokens=options.lengths[0],
                                  batch=max(options.batch), model=model, dimensions=dimensions, seed=seed)
            caveat = compare_caveat(target)

    if json_:
        payload = report.to_dict()
        if rows is not None:
            from dataclasses import asdict

            payload["compare"] = [asdict(r) for r in rows]
            payload["compare_caveat"] = caveat
        output.print_json(payload)
        return
    if csv_:
        output.data(report.to_csv())
        return
    title = (f"{report.model or 'model ?'} at {report.url} - GPU {report.gpu or '?'}"
             f"{f' ({report.gpu_peak_tflops:g} TFLOPS bf16)' if report.gpu_peak_tflops else ''}"
             f" - loader {report.loader} - inputs sized by {report.sizing}")
    output.table(report.COLUMNS, report.rows(), title=title)
    output.status("latency p50/p95/p99 in ms; tok/s from the server's `usage`; MFU = tok/s x FLOPs/token / bf16 peak")
    if rows is not None:
        output.table(("pattern", "texts", "texts/s (wall)", "client CPU µs/text",
                      "qembed texts/s", "qembed CPU/text"),
                     [(r.pattern, r.texts, f"{r.texts_per_s:,.1f}", f"{r.client_cpu_us_per_text:,.0f}",
                       "" if r.speedup is None else f"{r.speedup:,.2f}x",
                       "" if r.cpu_ratio is None else f"{r.cpu_ratio:,.2f}x") for r in rows],
                     title="same texts, same server: qembed vs the plain openai SDK")
        output.status("qembed texts/s and CPU/text are qembed's figure divided by the row's: "
                      "above 1x qembed is faster; below 1x it uses less CPU per text")
        if caveat:
            output.warn(caveat)
    for note in report.notes:
        output.status(f"note: {note}")
    errors = sum(c.errors for c in report.cells)
    if errors:
        first = next(c.first_error for c in report.cells if c.first_error)
        output.warn(f"{output.plural(errors, 'request')} failed; first: {first}")
