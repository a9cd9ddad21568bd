"""The reference engine as an HTTP server: ``qembed serve --profile cpu``.

``python -m qembed.reference.server --model M [--host H] [--port P] ...`` serves SGLang's embedding API
on :class:`~qembed.reference.engine.ReferenceEngine` (sentence-transformers, the model card's recipe,
fp32 on CPU by default), with aiohttp:

* ``POST /v1/embeddings``: ``input`` as a string, a list of strings, token ids or lists of
  token ids (used as given, no EOS appended, as SGLang does); ``encoding_format`` float or
  base64 (little-endian float32); ``dimensions`` (truncate, then renormalise); ``usage``
  counts the appended EOS. Errors use SGLang's messages and flat body, so clients that parse
  them (qembed's) behave the same.
* ``GET /v1/models`` (``owned_by: qembed-reference``: ``qembed verify`` then uses the fp32
  tolerance), ``GET /health``, ``GET /metrics`` (with ``--enable-metrics``: the subset of
  SGLang's metric names that applies).
* Texts from all requests in flight are batched by a token budget (padded tokens per forward,
  ``--batch-tokens``); each request gets its rows back in its own order.

It is for development, CI and verification, not production throughput (:data:`NOTICE`).
The API key comes from the environment variable :data:`API_KEY_ENV`, never from argv.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import hmac
import logging
import math
import os
import signal
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qembed import env as _env

if TYPE_CHECKING:
    from aiohttp import web

    from qembed.reference.engine import ReferenceEngine

logger = logging.getLogger("qembed.reference.server")

API_KEY_ENV = _env.REFSERVER_API_KEY.name
OWNER = "qembed-reference"
DEFAULT_BATCH_TOKENS = 16384
NOTICE = (
    "qembed reference engine (sentence-transformers, fp32 on CPU): for development, CI and "
    "verification, not production throughput. Measured on 2 shared CPU cores with the 2-layer "
    "test model: 400-800 texts/s of 64 tokens, 70-85 of 512 tokens; the real 0.6B needs about "
    "6,000x the compute per token: expect about 1 short text/s or less (an estimate; docs/verify.md)"
)
#: open without a key, as in SGLang 0.5.23 (``srt/utils/auth.py``: ``/health``, ``/ready`` and
#: ``/metrics`` by prefix, "to support k8s probes and Prometheus scraping without embedding secrets")
_EXEMPT = ("/health", "/ready", "/metrics")
#: every route the engine serves: the only values the ``endpoint`` metric label takes
_ROUTES = ("/health", "/health_generate", "/ready", "/v1/models", "/metrics", "/v1/embeddings")

Input = str | list[int]


# -- metrics -----------------------------------------------------------------------------------

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, float("inf"))


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * len(_BUCKETS))
    total: float = 0.0
    n: int = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(_BUCKETS):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.n += 1

    def lines(self, name: str, labels: str) -> list[str]:
        out = []
        for bound, count in zip(_BUCKETS, self.counts, strict=True):
            le = "+Inf" if math.isinf(bound) else repr(bound)
            out.append(f'{name}_bucket{{{labels},le="{le}"}} {count}')
        out += [f"{name}_sum{{{labels}}} {self.total}", f"{name}_count{{{labels}}} {self.n}"]
        return out


def _label(value: str) -> str:
    """A label value escaped as the text exposition format says (``\\``, ``\"``, ``\n``)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass
class Metrics:
    """The subset of SGLang 0.5.23's metric names that applies to this engine."""

    model_name: str
    context_len: int
    requests: int = 0
    aborted: int = 0
    prompt_tokens: int = 0
    queued: int = 0
    running: int = 0
    e2e: _Histogram = field(default_factory=_Histogram)
    queue_time: _Histogram = field(default_factory=_Histogram)
    http_requests: dict[tuple[str, str], int] = field(default_factory=dict)
    http_responses: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def render(self) -> str:
        m = f'model_name="{_label(self.model_name)}",engine_type="unified"'
        lines = [
            "# TYPE sglang:num_requests_total counter", f"sglang:num_requests_total{{{m}}} {self.requests}",
            "# TYPE sglang:num_aborted_requests_total counter",
            f"sglang:num_aborted_requests_total{{{m}}} {self.aborted}",
            "# TYPE sglang:prompt_tokens_total counter", f"sglang:prompt_tokens_total{{{m}}} {self.prompt_tokens}",
            "# TYPE sglang:generation_tokens_total counter", f"sglang:generation_tokens_total{{{m}}} 0",
            "# TYPE sglang:num_queue_reqs gauge", f"sglang:num_queue_reqs{{{m}}} {self.queued}",
            "# TYPE sglang:num_running_reqs gauge", f"sglang:num_running_reqs{{{m}}} {self.running}",
            "# TYPE sglang:context_len gauge", f"sglang:context_len{{{m}}} {self.context_len}",
            "# TYPE sglang:e2e_request_latency_seconds histogram",
            *self.e2e.lines("sglang:e2e_request_latency_seconds", m),
            "# TYPE sglang:queue_time_seconds histogram",
            *self.queue_time.lines("sglang:queue_time_seconds", m),
            "# TYPE sglang:http_requests_total counter",
            *[f'sglang:http_requests_total{{endpoint="{_label(e)}",method="{_label(meth)}"}} {n}'
              for (e, meth), n in sorted(self.http_requests.items())],
            "# TYPE sglang:http_responses_total counter",
            *[f'sglang:http_responses_total{{endpoint="{_label(e)}",status_code="{s}",method="{_label(meth)}"}} {n}'
              for (e, s, meth), n in sorted(self.http_responses.items())],
        ]
        return "\n".join(lines) + "\n"


# -- requests ----------------------------------------------------------------------------------


class RequestError(Exception):
    """An error answer, with SGLang's flat body."""

    def __init__(self, status: int, message: str, type_: str = "BadRequestError") -> None:
        super().__init__(message)
        self.status = status
        self.body = {"object": "error", "message": message, "type": type_, "param": None, "code": status}


def _check_encodable(text: str, index: int) -> None:
    """JSON may spell a lone surrogate (``"\\ud800"``), which no UTF-8 tokenizer takes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RequestError(400, f"Input at index {index} is not valid Unicode: a lone surrogate "
                           f"(U+{ord(text[exc.start]):04X}) at character {exc.start}") from None


def _dimensions(value: Any) -> int:
    """``dimensions`` read as SGLang's pydantic ``Optional[int]`` reads it (lax: ``"8"`` and
    ``8.0`` are 8), with pydantic's reasons; ``true`` is refused where pydantic takes it as 1."""
    def bad(why: str) -> RequestError:
        return RequestError(400, f"1 validation error for EmbeddingRequest\ndimensions\n  {why}", "Bad Request")

    if isinstance(value, bool):
        raise bad("Input should be a valid integer, got a boolean")
    if isinstance(value, int):
        n = value
    elif isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise bad("Input should be a valid integer, got a number with a fractional part")
        n = int(value)
    elif isinstance(value, str):
        try:
            n = int(value.strip())
        except ValueError:
            raise bad("Input should be a valid integer, unable to parse string as an integer") from None
    else:
        raise bad("Input should be a valid integer")
    if n < 1:
        raise RequestError(400, "Requested dimensions must be greater than 0")
    return n


def parse_input(body: Any) -> list[Input]:
    """The ``input`` of an embeddings request, checked the way SGLang checks it."""
    if not isinstance(body, dict) or "input" not in body:
        raise RequestError(400, "1 validation error for EmbeddingRequest\ninput\n  Field required", "Bad Request")
    inp = body["input"]
    if isinstance(inp, str):
        if not inp.strip():
            raise RequestError(400, "Input cannot be empty or whitespace only")
        _check_encodable(inp, 0)
        return [inp]
    if not isinstance(inp, list):
        raise RequestError(400, "1 validation error for EmbeddingRequest\ninput\n  Input should be a valid string",
                           "Bad Request")
    if not inp:
        raise RequestError(400, "Input cannot be empty")
    if all(isinstance(x, str) for x in inp):
        for i, x in enumerate(inp):
            if not x.strip():
                raise RequestError(400, f"Input at index {i} cannot be empty or whitespace only")
            _check_encodable(x, i)
        return list(inp)
    if all(isinstance(x, int) and not isinstance(x, bool) for x in inp):
        ids: list[list[int]] = [list(inp)]
    elif all(isinstance(x, list) and x and all(isinstance(y, int) and not isinstance(y, bool) for y in x)
             for x in inp):
        ids = [list(x) for x in inp]
    else:
        raise RequestError(400, "All items in input list must be strings")
    for seq in ids:
        for i, x in enumerate(seq):
            if x < 0:
                raise RequestError(400, f"Token ID at index {i} must be non-negative")
    return list(ids)


@dataclass
class _Item:
    data: Input
    tokens: int
    future: asyncio.Future[Any]
    queued_at: float


class Batcher:
    """Collects items from all requests in flight; one forward pass per token budget.

    Requests take turns: each pass takes one item from each waiting request in turn (round
    robin) until the budget is spent, so a 1-text request never waits behind the whole of a
    20,000-text one, only behind the pass in progress.
    """

    def __init__(self, engine: ReferenceEngine, metrics: Metrics, *, batch_tokens: int) -> None:
        self.engine = engine
        self.metrics = metrics
        self.batch_tokens = batch_tokens
        self.waiting: collections.deque[collections.deque[_Item]] = collections.deque()  # one per request
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    def _pending(self) -> int:
        return sum(len(q) for q in self.waiting)

    async def embed(self, items: Sequence[Input], tokens: Sequence[int]) -> list[Any]:
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        queued = [_Item(x, n, loop.create_future(), now) for x, n in zip(items, tokens, strict=True)]
        if queued:
            self.waiting.append(collections.deque(queued))
            self.wake.set()
        self.metrics.queued = self._pending()
        return list(await asyncio.gather(*(it.future for it in queued)))

    def _take(self) -> list[_Item]:
        """Items for one pass: one from each request in turn, while the padded budget holds."""
        batch: list[_Item] = []
        longest = 0
        while self.waiting:
            q = self.waiting[0]
            nxt = q[0]
            if batch and max(longest, nxt.tokens) * (len(batch) + 1) > self.batch_tokens:
                break
            batch.append(q.popleft())
            longest = max(longest, nxt.tokens)
            self.waiting.rotate(-1)  # the next request's turn
            if not q:
                self.waiting.remove(q)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self.waiting:
                self.wake.clear()
                await self.wake.wait()
            batch = self._take()
            started = time.monotonic()
            self.metrics.queued = self._pending()
            self.metrics.running = len(batch)
            for it in batch:
                self.metrics.queue_time.observe(started - it.queued_at)
            try:
                vectors = await loop.run_in_executor(None, self._forward, [it.data for it in batch])
            except Exception as exc:  # a failed forward fails its requests, not the server
                logger.exception("forward pass failed")
                for it in batch:
                    if not it.future.done():
                        it.future.set_exception(exc)
            else:
                for it, vec in zip(batch, vectors, strict=True):
                    if not it.future.done():
                        it.future.set_result(vec)
            finally:
                self.metrics.running = 0

    def _forward(self, items: list[Input]) -> list[Any]:
        texts = [(i, x) for i, x in enumerate(items) if isinstance(x, str)]
        out: list[Any] = [None] * len(items)
        if texts:
            vecs = self.engine.encode([x for _, x in texts], batch_size=len(texts))
            for (i, _), v in zip(texts, vecs, strict=True):
                out[i] = v
        for i, x in enumerate(items):
            if isinstance(x, list):
                out[i] = self.engine.embed_ids(x)
        return out


# -- the app -----------------------------------------------------------------------------------


@dataclass
class Settings:
    model: str
    served_model_name: str
    context_length: int
    matryoshka: bool = True
    metrics: bool = False
    api_key: str | None = None


def _json(status: int, body: Any) -> web.Response:
    from aiohttp import web

    return web.json_response(body, status=status)


def build_app(engine: ReferenceEngine, settings: Settings, *, batch_tokens: int = DEFAULT_BATCH_TOKENS) -> web.Application:
    """The aiohttp application (also used in-process by tests)."""
    from aiohttp import web

    metrics = Metrics(model_name=settings.served_model_name, context_len=settings.context_length)
    batcher = Batcher(engine, metrics, batch_tokens=batch_tokens)
    stopping = asyncio.Event()

    expected = settings.api_key.encode() if settings.api_key else None

    def authorized(request: web.Request) -> bool:
        """SGLang's check: ``Bearer`` (any case), one space, the key, compared in constant time."""
        if expected is None or request.path.startswith(_EXEMPT):  # SGLang matches by prefix
            return True
        scheme, _, token = (request.headers.get("Authorization") or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.encode("utf-8", "surrogateescape"), expected)

    @web.middleware
    async def count_and_auth(request: web.Request, handler: Any) -> web.StreamResponse:
        resp: web.StreamResponse
        ok = authorized(request)
        if not ok:
            resp = _json(401, {"error": "Unauthorized"})
        else:
            try:
                resp = await handler(request)
            except web.HTTPException as exc:
                resp = _json(exc.status, {"detail": exc.reason})
        # only the routes this server has, so a client never chooses a label value and the label
        # set stays bounded (issue 19, finding 10); a request is counted once past the key check
        route = request.match_info.route.resource
        endpoint = route.canonical if route is not None else None
        if endpoint in _ROUTES and request.method in ("GET", "POST"):
            if ok:
                key = (endpoint, request.method)
                metrics.http_requests[key] = metrics.http_requests.get(key, 0) + 1
            rkey = (endpoint, str(resp.status), request.method)
            metrics.http_responses[rkey] = metrics.http_responses.get(rkey, 0) + 1
        return resp

    async def health(request: web.Request) -> web.Response:
        return web.Response(status=503 if stopping.is_set() else 200)

    async def ready(request: web.Request) -> web.Response:
        # SGLang's `/ready`: 200 once up, 503 while shutting down, no forward pass, empty body
        # (http_server.py `ready`, tokenizer_manager `is_ready`)
        return web.Response(status=503 if stopping.is_set() else 200)

    async def models(request: web.Request) -> web.Response:
        return _json(200, {"object": "list", "data": [{
            "id": settings.served_model_name, "object": "model", "created": int(time.time()),
            "owned_by": OWNER, "root": settings.model, "parent": None,
            "max_model_len": settings.context_length}]})

    async def metrics_route(request: web.Request) -> web.Response:
        if not settings.metrics:
            return _json(404, {"detail": "Not Found"})
        return web.Response(text=metrics.render(), content_type="text/plain")

    async def embeddings(request: web.Request) -> web.Response:
        started = time.monotonic()
        if "application/json" not in (request.headers.get("Content-Type") or ""):
            return _json(400, RequestError(400, "Unsupported Media Type: Only 'application/json' is allowed").body)
        try:
            body = await request.json()
        except ValueError as exc:
            return _json(400, RequestError(400, f"JSON decode error: {exc}", "Bad Request").body)
        except RecursionError:  # 100,000-deep nesting: the client's fault, not the server's
            return _json(400, RequestError(400, "JSON decode error: nested too deeply", "Bad Request").body)
        try:
            payload = await _embed(body)
        except RequestError as exc:
            metrics.aborted += 1
            return _json(exc.status, exc.body)
        metrics.requests += 1
        metrics.e2e.observe(time.monotonic() - started)
        return _json(200, payload)

    async def _embed(body: Any) -> dict[str, Any]:
        items = parse_input(body)
        fmt = body.get("encoding_format", "float") or "float"
        if fmt not in ("float", "base64"):
            raise RequestError(400, f"encoding_format must be either 'float' or 'base64', got '{fmt}'")
        model = body.get("model")
        if isinstance(model, str) and ":" in model and model != settings.served_model_name:
            raise RequestError(400, f"LoRA adapter '{model.split(':', 1)[1]}' was requested, but LoRA is not enabled.")
        dims = body.get("dimensions")
        if dims is not None:
            dims = _dimensions(dims)
            if not settings.matryoshka:
                raise RequestError(400, f"Model '{settings.model}' does not support matryoshka representation, "
                                   "changing output dimensions will lead to poor results.")
            if dims > engine.dim:
                raise RequestError(400, f"Provided dimensions are greater than max embedding dimension: {engine.dim}")
        counts = [len(x) if isinstance(x, list) else len(engine.token_ids(x)) for x in items]
        for x in items:
            if isinstance(x, list) and max(x) >= engine.vocab_size:
                raise RequestError(400, f"Token ID {max(x)} is out of vocabulary (size {engine.vocab_size})")
        for n in counts:
            if n >= settings.context_length:  # SGLang uses >=
                raise RequestError(400, f"The input ({n} tokens) is longer than the model's context length "
                                   f"({settings.context_length} tokens).")
        vectors = await batcher.embed(items, counts)
        metrics.prompt_tokens += sum(counts)
        data = []
        import numpy as np

        from qembed.vectors import truncate

        for i, vec in enumerate(vectors):
            v = truncate(vec, dims) if dims is not None else np.asarray(vec, dtype=np.float32)
            emb: Any = (base64.b64encode(struct.pack(f"<{len(v)}f", *v.tolist())).decode("ascii")
                        if fmt == "base64" else [float(x) for x in v.tolist()])
            data.append({"embedding": emb, "index": i, "object": "embedding"})
        total = sum(counts)
        return {"data": data, "model": settings.served_model_name, "object": "list",
                "usage": {"prompt_tokens": total, "total_tokens": total, "completion_tokens": 0}}

    async def on_startup(app: web.Application) -> None:
        batcher.start()

    async def on_shutdown(app: web.Application) -> None:
        stopping.set()

    async def on_cleanup(app: web.Application) -> None:
        await batcher.stop()

    app = web.Application(middlewares=[count_and_auth], client_max_size=64 * 1024 * 1024)
    app.router.add_get("/health", health)
    app.router.add_get("/health_generate", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/metrics", metrics_route)
    app.router.add_post("/v1/embeddings", embeddings)
    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m qembed.reference.server", description=__doc__.split("\n")[0])
    from qembed.reference.engine import DEFAULT_MODEL

    p.add_argument("--model", default=DEFAULT_MODEL, help="HF id or local sentence-transformers directory")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=30000)
    p.add_argument("--served-model-name", default=None)
    p.add_argument("--context-length", type=int, default=None)
    p.add_argument("--batch-tokens", type=int, default=DEFAULT_BATCH_TOKENS,
                   help="padded tokens per forward pass (default %(default)s)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--no-matryoshka", action="store_true", help="refuse `dimensions` as SGLang does without it")
    p.add_argument("--enable-metrics", action="store_true")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error", "critical"])
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format="[%(asctime)s] %(message)s")
    from qembed.errors import QembedError
    from qembed.net import clean_api_key
    from qembed.reference.engine import ReferenceEngine

    try:
        api_key = clean_api_key(os.environ.get(API_KEY_ENV), source=f"`{API_KEY_ENV}`")
    except QembedError as exc:
        from qembed import output

        output.error(exc)
        return 2
    logger.info(NOTICE)
    logger.info("Load weight begin: %s (%s, float32)", args.model, args.device)
    try:
        engine = ReferenceEngine(args.model, device=args.device, threads=args.threads)
    except QembedError as exc:
        from qembed import output

        output.error(exc)
        return 1
    context = args.context_length or engine.context_length
    logger.info("Load weight end: vector size %d, context length %d, prompts %s",
                engine.dim, context, sorted(engine.prompts))
    settings = Settings(model=args.model, served_model_name=args.served_model_name or args.model,
                        context_length=context, matryoshka=not args.no_matryoshka,
                        metrics=args.enable_metrics,
                        api_key=api_key)
    app = build_app(engine, settings, batch_tokens=args.batch_tokens)
    return asyncio.run(_serve(app, args.host, args.port))


async def _serve(app: web.Application, host: str, port: int) -> int:
    from aiohttp import web

    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        logger.error("could not bind %s:%d: %s", host, port, exc)
        await runner.cleanup()
        return 1
    bound = runner.addresses[0][1] if runner.addresses else port
    logger.info("The server is fired up and ready to roll! listening on http://%s:%d", host, bound)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logger.info("shutting down")
    await runner.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
