"""A fast stand-in embedding server with an optional modelled GPU. TEST/BENCH DOUBLE: never shipped.

``tests/standin/server.py`` is the faithful stand-in (validation order, error bodies, faults) and
costs milliseconds of CPU per request. This one is for throughput work: it answers
``POST /v1/embeddings`` with **precomputed** bodies, so the server costs almost nothing and the
client under test is what gets measured.

* asyncio HTTP/1.1 with keep-alive and a Content-Length parser, bound to 127.0.0.1.
* SGLang 0.5.23's body shape: ``data`` / ``model`` (the model path) / ``object`` / ``usage`` in
  that order, the full UsageInfo block; float JSON or base64 (little-endian float32) by
  ``encoding_format`` (default float, as in SGLang); ``dimensions`` truncates and re-normalises.
* Vectors: 64 seeded random unit vectors rounded to bf16, as SGLang sends them. Request ``i``'s
  ``k``-th item gets vector ``k % 64``.
* ``usage.prompt_tokens`` = sum over inputs of ``len(utf8) // 4 + 1`` (the ``+ 1`` is the EOS
  SGLang's tokenizer appends). The same estimate sizes ``qembed bench``'s synthetic inputs.
* Optional modelled GPU (:class:`GPUModel`): one coroutine runs forwards back to back; each
  forward takes everything queued so far (continuous batching) and lasts
  ``overhead + vectors x per_vector (+ tokens x per_token)``.
* ``GET /health`` (200), ``GET /v1/models`` (with ``max_model_len``), ``GET /stats`` (counters:
  requests, vectors, forwards, busy seconds).
* Exits by itself after ``--ttl`` seconds, and on SIGTERM.

Run: ``python -m tests.standin.gpu_model --port 0 --overhead-ms 5 --vector-us 2000``; the first
stdout line is ``LISTENING http://127.0.0.1:PORT``. :func:`start` does that in a subprocess and
returns a handle that reads the server's CPU time and stops it by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

REPO = Path(__file__).resolve().parents[2]
N_BASE_VECTORS = 64


@dataclass(frozen=True)
class GPUModel:
    """Seconds per forward = ``overhead_s + vectors x per_vector_s + tokens x per_token_s``."""

    overhead_s: float
    per_vector_s: float
    per_token_s: float = 0.0

    def forward_seconds(self, vectors: int, tokens: int) -> float:
        return self.overhead_s + vectors * self.per_vector_s + tokens * self.per_token_s

    def capacity(self) -> float:
        """Vectors/s when every forward is infinitely large (ignoring per-token cost)."""
        return 1.0 / self.per_vector_s if self.per_vector_s > 0 else float("inf")

    def throughput(self, vectors_per_forward: int) -> float:
        """Vectors/s when every forward carries ``vectors_per_forward`` vectors."""
        n = vectors_per_forward
        return n / self.forward_seconds(n, 0)


# The benchmark cases of docs/performance.md (scripts/bench_client.py, scripts/bench_gateway.py):
# 4B-sized vectors of ~128-token texts, and two modelled GPUs.
CASE_DIM = 2560
CASE_TOKENS = 128
CASE_A = GPUModel(overhead_s=0.005, per_vector_s=0.002)  # 4B, 128 tokens, H100 at ~50 % MFU
CASE_B = GPUModel(overhead_s=0.003, per_vector_s=0.00033)  # 0.6B


def bf16_unit_vectors(n: int, dim: int, *, seed: int = 0) -> Any:
    """``n`` unit vectors rounded to bf16 (kept as float32), the precision SGLang returns."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    bits = v.view(np.uint32)
    # round to nearest even on the top 16 bits
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)
    return rounded.view(np.float32)


class Bodies:
    """Precomputed ``data`` arrays per (items, format, dims), built on first use."""

    def __init__(self, dim: int, *, seed: int = 0) -> None:
        self.dim = dim
        self.seed = seed
        self._items: dict[tuple[str, int], list[bytes]] = {}
        self._data: dict[tuple[int, str, int], bytes] = {}

    def _item_bytes(self, fmt: str, dims: int) -> list[bytes]:
        key = (fmt, dims)
        items = self._items.get(key)
        if items is None:
            vecs = bf16_unit_vectors(N_BASE_VECTORS, self.dim, seed=self.seed)
            if dims < self.dim:  # truncate, then L2-normalise (SGLang's pooler order)
                vecs = vecs[:, :dims].copy()
                vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            if fmt == "base64":
                items = [b'"' + base64.b64encode(v.astype("<f4").tobytes()) + b'"' for v in vecs]
            else:
                items = [orjson.dumps(v.tolist()) for v in vecs]
            self._items[key] = items
        return items

    def data(self, n: int, fmt: str, dims: int) -> bytes:
        key = (n, fmt, dims)
        body = self._data.get(key)
        if body is None:
            items = self._item_bytes(fmt, dims)
            parts = [
                b'{"embedding":' + items[i % N_BASE_VECTORS] + b',"index":%d,"object":"embedding"}' % i
                for i in range(n)
            ]
            body = b"[" + b",".join(parts) + b"]"
            if len(self._data) > 256:  # bound memory in long sweeps
                self._data.clear()
            self._data[key] = body
        return body


@dataclass
class Stats:
    requests: int = 0
    vectors: int = 0
    tokens: int = 0
    forwards: int = 0
    busy_s: float = 0.0
    started: float = field(default_factory=time.monotonic)


class GPU:
    """One coroutine that runs forwards back to back over everything queued.

    The forward timeline is kept on paper: a forward starts when the previous one ended or
    when its first request arrived, whichever is later, and it takes the requests that had
    arrived by then. So a late wake-up of this process's event loop (the client and the server
    share a 2-core box) delays the replies but does not show up as idle GPU time.
    """

    def __init__(self, model: GPUModel, stats: Stats) -> None:
        self.model = model
        self.stats = stats
        self.queue: list[tuple[float, int, int, asyncio.Future[None]]] = []
        self.wake = asyncio.Event()

    async def submit(self, vectors: int, tokens: int) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self.queue.append((loop.time(), vectors, tokens, fut))
        self.wake.set()
        await fut

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time()
        while True:
            if not self.queue:
                self.wake.clear()
                await self.wake.wait()
                continue
            start = max(end, min(q[0] for q in self.queue))
            batch = [q for q in self.queue if q[0] <= start]
            self.queue = [q for q in self.queue if q[0] > start]
            vectors = sum(b[1] for b in batch)
            tokens = sum(b[2] for b in batch)
            dur = self.model.forward_seconds(vectors, tokens)
            end = start + dur
            await asyncio.sleep(max(0.0, end - loop.time()))
            self.stats.forwards += 1
            self.stats.busy_s += dur
            for *_, fut in batch:
                if not fut.done():
                    fut.set_result(None)


def count_tokens(text: str) -> int:
    """The stand-in's tokenizer: about 4 UTF-8 bytes per token, plus the appended EOS."""
    return len(text.encode("utf-8")) // 4 + 1


class App:
    def __init__(self, *, dim: int, model: str, context_length: int, gpu: GPUModel | None,
                 api_key: str | None) -> None:
        self.dim = dim
        self.model = model
        self.context_length = context_length
        self.api_key = api_key
        self.bodies = Bodies(dim)
        self.stats = Stats()
        self.gpu_model = gpu
        self.gpu: GPU | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = [*lines[0].split(" "), "", ""][:3]
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                length = int(headers.get("content-length") or 0)
                body = await reader.readexactly(length) if length else b""
                status, payload = await self.route(method, path.split("?", 1)[0], headers, body)
                close = headers.get("connection", "").lower() == "close"
                writer.write(
                    b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n"
                    % (status, b"OK" if status == 200 else b"ERR", sum(len(p) for p in payload),
                       b"connection: close\r\n" if close else b"")
                )
                writer.writelines(payload)
                await writer.drain()
                if close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            # CancelledError: the server is shutting down; ending quietly keeps stderr clean.
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def route(self, method: str, path: str, headers: dict[str, str],
                    body: bytes) -> tuple[int, list[bytes]]:
        if path == "/health":
            return 200, [b""]
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, [b'{"error":"Unauthorized"}']
        if method == "GET" and path == "/v1/models":
            return 200, [orjson.dumps({"object": "list", "data": [{
                "id": self.model, "object": "model", "created": int(time.time()), "owned_by": "sglang",
                "root": self.model, "parent": None, "max_model_len": self.context_length}]})]
        if method == "GET" and path == "/stats":
            s = self.stats
            return 200, [orjson.dumps({"requests": s.requests, "vectors": s.vectors, "tokens": s.tokens,
                                       "forwards": s.forwards, "busy_s": s.busy_s,
                                       "uptime_s": time.monotonic() - s.started})]
        if method == "POST" and path == "/v1/embeddings":
            return await self.embeddings(body)
        return 404, [b'{"detail":"Not Found"}']

    async def embeddings(self, raw: bytes) -> tuple[int, list[bytes]]:
        try:
            req = orjson.loads(raw)
            inp = req["input"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return 400, [_error(400, "Bad Request: input is required")]
        texts = [inp] if isinstance(inp, str) else inp
        if not isinstance(texts, list) or not texts:
            return 400, [_error(400, "Input cannot be empty")]
        fmt = req.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            return 400, [_error(400, f"encoding_format must be either 'float' or 'base64', got '{fmt}'")]
        dims = req.get("dimensions") or self.dim
        if not isinstance(dims, int) or dims < 1 or dims > self.dim:
            return 400, [_error(400, f"Provided dimensions are greater than max embedding dimension: {self.dim}")]
        tokens = 0
        for t in texts:
            if not isinstance(t, str) or not t.strip():
                return 400, [_error(400, "Input cannot be empty or whitespace only")]
            tokens += len(t.encode("utf-8")) // 4 + 1
        n = len(texts)
        if self.gpu is not None:
            await self.gpu.submit(n, tokens)
        self.stats.requests += 1
        self.stats.vectors += n
        self.stats.tokens += tokens
        usage = (b',"model":%s,"object":"list","usage":{"prompt_tokens":%d,"total_tokens":%d,'
                 b'"completion_tokens":0,"prompt_tokens_details":null,"reasoning_tokens":0,'
                 b'"completion_tokens_details":null}}') % (orjson.dumps(self.model), tokens, tokens)
        return 200, [b'{"data":', self.bodies.data(n, fmt, dims), usage]


def _error(status: int, message: str) -> bytes:
    return orjson.dumps({"object": "error", "message": message, "type": "BadRequestError",
                         "param": None, "code": status})


async def serve(app: App, *, host: str, port: int, ttl: float) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.call_later(ttl, stop.set)
    if app.gpu_model is not None:
        app.gpu = GPU(app.gpu_model, app.stats)
        gpu_task = asyncio.create_task(app.gpu.run())
    server = await asyncio.start_server(app.handle, host, port, limit=2**26)
    bound = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"LISTENING http://{host}:{bound}\n")
    sys.stdout.flush()
    async with server:
        await stop.wait()
    if app.gpu_model is not None:
        gpu_task.cancel()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="gpu_model", description="fast stand-in embedding server (test double)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--dim", type=int, default=2560)
    p.add_argument("--model", default="Qwen/Qwen3-Embedding-4B")
    p.add_argument("--context-length", type=int, default=32768)
    p.add_argument("--overhead-ms", type=float, default=None, help="modelled GPU: fixed ms per forward")
    p.add_argument("--vector-us", type=float, default=0.0, help="modelled GPU: µs per vector")
    p.add_argument("--token-us", type=float, default=0.0, help="modelled GPU: µs per token")
    p.add_argument("--api-key", default=None)
    p.add_argument("--ttl", type=float, default=600.0, help="exit after this many seconds")
    a = p.parse_args(argv)
    gpu = None
    if a.overhead_ms is not None:
        gpu = GPUModel(a.overhead_ms / 1e3, a.vector_us / 1e6, a.token_us / 1e6)
    app = App(dim=a.dim, model=a.model, context_length=a.context_length, gpu=gpu, api_key=a.api_key)
    with contextlib.suppress(ImportError):
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    asyncio.run(serve(app, host=a.host, port=a.port, ttl=a.ttl))


# -- the parent's side: spawn, find the port, read CPU time, stop by PID -----------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` in seconds (fields 14 and 15 of proc(5)), read with
    qembed's one ``/proc/<pid>/stat`` parser."""
    from qembed.host.procfs import read_stat

    rest = read_stat(pid)
    if rest is None:
        raise ProcessLookupError(f"no /proc/{pid}/stat")
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    url: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> float:
        """utime + stime of the server process."""
        return cpu_seconds(self.pid)

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return int(self.proc.returncode)


def spawn(*, dim: int = 2560, model: str = "Qwen/Qwen3-Embedding-4B", gpu: GPUModel | None = None,
          api_key: str | None = None, ttl: float = 600.0, python: str | None = None,
          ready_timeout: float = 30.0) -> ServerProcess:
    """Start the server in its own process and wait (with a deadline) for its LISTENING line."""
    argv = [python or sys.executable, "-m", "tests.standin.gpu_model", "--dim", str(dim),
            "--model", model, "--ttl", str(ttl)]
    if gpu is not None:
        argv += ["--overhead-ms", str(gpu.overhead_s * 1e3), "--vector-us", str(gpu.per_vector_s * 1e6),
                 "--token-us", str(gpu.per_token_s * 1e6)]
    if api_key is not None:
        argv += ["--api-key", api_key]
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, cwd=str(REPO), env=env)
    assert proc.stdout is not None
    deadline = time.monotonic() + ready_timeout
    line = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            break
        if proc.poll() is not None:
            break
    if not line.startswith(b"LISTENING "):
        ServerProcess(proc, "").stop()
        raise RuntimeError(f"gpu_model stand-in did not start (exit {proc.returncode}, line {line!r})")
    return ServerProcess(proc, line.split()[1].decode())


@contextlib.contextmanager
def running(**kw: Any) -> Iterator[ServerProcess]:
    """``with running(gpu=GPUModel(...)) as srv:`` ... stopped by PID on exit."""
    srv = spawn(**kw)
    try:
        yield srv
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
