"""The load generator: concurrent ``POST /v1/embeddings`` over the client's transports.

Requests go through :mod:`qembed.transport` (aiohttp when installed: cheaper per request,
performance.md 3.2; else httpx), as the client's do, so bench reaches the same servers the same
way: proxies from the environment (``HTTP_PROXY``) are ignored. Each cell sends a warm-up
(excluded), then a fixed number of requests or as many as fit in a duration, always with
``encoding_format: "base64"``. A failed request is counted, never raised.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from qembed.errors import ConfigError, MissingDependency, ServerError
from qembed.fleet.bench.report import Cell, CellResult, percentile
from qembed.fleet.bench.texts import TextSource
from qembed.transport import (
    AiohttpAsync,
    HttpxAsync,
    Request,
    Timeouts,
    TransportFailure,
    choose_http,
)

LOADERS = ("auto", "aiohttp", "httpx")
EMBEDDINGS_PATH = "/v1/embeddings"


def loader_name(prefer: str = "auto") -> str:
    """The load generator that will be used: ``aiohttp`` if importable (and wanted), else ``httpx``.

    Raises:
        ConfigError: ``prefer`` is not one of :data:`LOADERS`.
        MissingDependency: ``prefer="aiohttp"`` and aiohttp is not installed.
    """
    if prefer not in LOADERS:
        raise ConfigError(f"`--loader` must be `auto`, `aiohttp` or `httpx`, got `{prefer}`")
    try:
        return choose_http(prefer, None)
    except MissingDependency:
        raise MissingDependency("aiohttp is not installed", hint="pip install aiohttp") from None


def open_transport(name: str, url: str, headers: dict[str, str],
                   timeout: float) -> AiohttpAsync | HttpxAsync:
    """The client's backend ``name`` for ``url``, with no connection limit and no proxies."""
    base = url.rstrip("/")
    timeouts = Timeouts(connect=timeout, read=timeout, total=timeout)
    if name == "aiohttp":
        # limit=0: aiohttp's "no limit"; the session already ignores proxies (trust_env=False)
        return AiohttpAsync(base_url=base, headers=headers, limit=0, timeouts=timeouts)
    return HttpxAsync(base_url=base, headers=headers, timeouts=timeouts, limit=None)


@dataclass
class Tally:
    """What one cell's requests came back with."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    ok: int = 0
    texts: int = 0
    tokens: int = 0
    first_error: str | None = None

    def fail(self, message: str) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = message


def check_reply(status: int, raw: bytes, n: int, tally: Tally) -> None:
    """Count one reply: HTTP 200 with ``n`` vectors is a success, anything else an error."""
    import orjson

    if status != 200:
        tally.fail(f"HTTP {status}: {raw[:200].decode('utf-8', 'replace')}")
        return
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        tally.fail(f"HTTP 200 with a body that is not JSON: {raw[:200].decode('utf-8', 'replace')}")
        return
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list) or len(data) != n:
        tally.fail(f"expected {n} vectors, got {len(data) if isinstance(data, list) else 'none'}")
        return
    usage = body.get("usage")
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    tally.ok += 1
    tally.texts += n
    tally.tokens += tokens if isinstance(tokens, int) and tokens >= 0 else 0


async def run_cell(transport: AiohttpAsync | HttpxAsync, cell: Cell, source: TextSource, *,
                   model: str | None, dimensions: int | None, requests: int | None,
                   duration: float | None, warmup: int, start_index: int) -> tuple[Tally, float, float, int]:
    """One cell: warm-up, then the measured requests. Returns ``(tally, seconds, client CPU
    seconds, next text index)``.

    Raises:
        ServerError: every warm-up request failed.
    """
    import orjson

    next_index = start_index

    def body_for(n: int) -> bytes:
        nonlocal next_index
        texts = source.texts(cell.tokens, next_index, n)
        next_index += n
        req: dict[str, Any] = {"input": texts, "encoding_format": "base64"}
        if model:
            req["model"] = model
        if dimensions:
            req["dimensions"] = dimensions
        return orjson.dumps(req)

    async def one(tally: Tally, body: bytes) -> None:
        t0 = time.perf_counter()
        try:
            resp = await transport.request(Request("POST", EMBEDDINGS_PATH, body))
        except TransportFailure as exc:  # a failed request is a result, not a crash
            tally.fail(str(exc))
            return
        except Exception as exc:  # any other failure of one request (a reply httpx cannot decode)
            tally.fail(f"{type(exc).__name__}: {exc}")
            return
        tally.latencies.append(time.perf_counter() - t0)
        check_reply(resp.status, resp.content, cell.batch, tally)

    # Warm-up: not counted (connections opened, server caches warm).
    warm = Tally()
    await asyncio.gather(*(one(warm, body_for(cell.batch)) for _ in range(warmup)))
    if warm.errors == warmup and warmup > 0:
        raise ServerError(f"every warm-up request failed: {warm.first_error}", status=0,
                          hint="check `--url`, the API key, and `qembed doctor`")

    # Bodies are built before the clock starts, so input generation is not timed.
    total = requests if requests is not None else None
    bodies: list[bytes] = []
    if total is not None:
        bodies = [body_for(cell.batch) for _ in range(total)]
    tally = Tally()
    issued = 0
    t_start = time.perf_counter()
    cpu_start = time.process_time()
    deadline = t_start + duration if duration is not None else math.inf

    async def worker() -> None:
        nonlocal issued
        while True:
            if total is not None:
                if issued >= total:
                    return
                body = bodies[issued]
            else:
                if time.perf_counter() >= deadline:
                    return
                body = body_for(cell.batch)
            issued += 1
            await one(tally, body)

    await asyncio.gather(*(worker() for _ in range(cell.concurrency)))
    seconds = time.perf_counter() - t_start
    cpu = time.process_time() - cpu_start
    return tally, seconds, cpu, next_index


async def run_cells(url: str, cells: Sequence[Cell], source: TextSource, *, headers: dict[str, str],
                    loader: str, model: str | None, dimensions: int | None, requests: int | None,
                    duration: float | None, warmup: int | None, timeout: float,
                    on_cell: Callable[[Cell, CellResult], None] | None,
                    finish: Callable[[CellResult], None]) -> list[CellResult]:
    """Run ``cells`` in order over one transport; ``finish`` completes each result (MFU) before
    ``on_cell`` sees it."""
    out: list[CellResult] = []
    index = 0
    transport = open_transport(loader, url, headers, timeout)
    try:
        for cell in cells:
            w = warmup if warmup is not None else min(cell.concurrency, 16)
            tally, seconds, cpu, index = await run_cell(
                transport, cell, source, model=model, dimensions=dimensions, requests=requests,
                duration=duration, warmup=w, start_index=index)
            res = cell_result(cell, tally, seconds, cpu)
            finish(res)
            out.append(res)
            if on_cell is not None:
                on_cell(cell, res)
    finally:
        await transport.aclose()
    return out


def cell_result(cell: Cell, tally: Tally, seconds: float, cpu: float) -> CellResult:
    """Rates and latency percentiles of one cell."""
    lat_ms = [x * 1e3 for x in tally.latencies]  # every answered request, errors included
    seconds = max(seconds, 1e-9)
    return CellResult(
        concurrency=cell.concurrency, batch=cell.batch, tokens_target=cell.tokens,
        requests=tally.ok, errors=tally.errors, texts=tally.texts, tokens=tally.tokens,
        seconds=seconds,
        requests_per_s=tally.ok / seconds,
        texts_per_s=tally.texts / seconds, tokens_per_s=tally.tokens / seconds,
        latency_p50_ms=percentile(lat_ms, 50), latency_p95_ms=percentile(lat_ms, 95),
        latency_p99_ms=percentile(lat_ms, 99),
        tokens_per_text=tally.tokens / tally.texts if tally.texts else 0.0,
        client_cpu_pct=100.0 * cpu / seconds, first_error=tally.first_error,
    )
