"""A stand-in for SGLang 0.5.23's HTTP server. TEST DOUBLE: it lives in tests/ and never ships.

It reproduces what ``../shared/reference/sglang-0.5.23.md`` documents for an embedding server
(sections 2.2, 3 and "Traps for a launcher"), so client and launcher code can be tested
without a GPU:

* ``GET /health``: 503 (empty body) for the first ``health_503_count`` polls, then 200 after
  ``health_delay`` seconds (a real healthy ``/health`` runs a 1-token forward after
  ``asyncio.sleep(1)``; tests use a shorter delay).
* ``GET /v1/models``: 200 at once, with ``max_model_len`` (it answers before warm-up ends in
  the real server, which is why it is no readiness signal).
* ``GET /model_info``, ``POST /encode``.
* ``GET /metrics`` (404 unless ``metrics``): SGLang 0.5.23's real names and labels (reference
  section 5, ``metrics_collector.py``): request/prompt-token counters, the
  ``e2e_request_latency_seconds`` histogram with SGLang's buckets, ``http_responses_total``,
  and the queue/running/KV gauges (``queue_reqs`` / ``running_reqs`` / ``token_usage`` in the
  config set them). ``metrics_prefix`` switches ``sglang:`` to ``sglang_``.
* ``POST /v1/embeddings``: SGLang's validation order and messages, flat error bodies
  (``{"object": "error", "message", "type", "param", "code"}``), ``dimensions`` only when
  Matryoshka is enabled (truncate, then L2-normalise), base64 = little-endian float32, ``model``
  echoes the model path, ``usage`` counts the appended EOS, 401 ``{"error": "Unauthorized"}``.
* Faults for retry tests: ``status`` (e.g. 503 "The request queue is full."), ``reset`` (close
  the connection without an answer), ``delay`` and ``hang``.
* A misbehaving server, one mode per fault (``Fault("bad", mode=...)``, see :data:`BAD_MODES`):
  replies with repeated, negative or missing indices, short or long base64, wrong-length float
  lists, NaN/inf, non-unit vectors, the wrong count, non-JSON, an HTML page, a body trickled one
  byte at a time, a huge ``Retry-After``, a truncated body, a wrong content type. And
  ``StandinConfig.models_body`` replaces the ``/v1/models`` body.
* ``die_after`` makes the process exit mid-job (gateway failover tests).
* Peer runtimes' faults (issue 21), for what SGLang never does: ``dimensions_behaviour``
  ``"vllm"`` refuses every ``dimensions`` with vLLM's exact HTTP 400 body ("Model '...' does not
  support Matryoshka embeddings; dimensions must be unset (received dimensions=N)."), and
  ``"infinity"`` slices the normalised vector without renormalising (Infinity 0.0.78's
  batch_handler); ``strip_whitespace`` strips every input first (Infinity's pydantic
  ``strip_whitespace``: a whitespace-only input becomes "" and is embedded without an error);
  ``"ignore"`` sends full vectors whatever ``dimensions`` says.

The vectors come from a pluggable :class:`Backend`. The default :class:`HashBackend` gives a
deterministic unit vector per text (no torch needed); ``tests/standin/tiny_backend.py`` runs a
real tiny Qwen3 model.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import math
import os
import struct
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

Input = str | list[int]


class Backend(Protocol):
    """Turns inputs (text or token ids) into full-size, L2-normalised vectors."""

    dim: int

    def count_tokens(self, item: Input) -> int: ...

    def embed(self, items: Sequence[Input]) -> list[list[float]]: ...


class HashBackend:
    """Deterministic pseudo-embeddings: the same input always gives the same unit vector.

    Tokens are whitespace-separated words plus the EOS that SGLang's tokenizer appends.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def count_tokens(self, item: Input) -> int:
        if isinstance(item, list):
            return len(item)
        return len(item.split()) + 1  # + <|endoftext|>

    def embed(self, items: Sequence[Input]) -> list[list[float]]:
        out = []
        for item in items:
            key = item if isinstance(item, str) else json.dumps(item)
            seed = hashlib.sha256(key.encode("utf-8")).digest()
            # Expand the hash into dim floats in [-1, 1) with a counter-mode hash stream.
            raw = b"".join(
                hashlib.sha256(seed + i.to_bytes(4, "little")).digest()
                for i in range(math.ceil(self.dim * 4 / 32))
            )
            vals = [(v / 2**31) - 1.0 for v in struct.unpack(f"<{self.dim}I", raw[: self.dim * 4])]
            norm = math.sqrt(sum(v * v for v in vals)) or 1.0
            out.append([v / norm for v in vals])
        return out


@dataclass
class Fault:
    """One injected fault, applied to the next ``count`` embedding requests.

    kind: ``status`` (answer ``status`` with SGLang's body for it), ``reset`` (close the
    socket without answering), ``delay`` (sleep ``seconds`` then answer), ``hang`` (never
    answer until the server stops).
    """

    kind: str
    count: int = 1
    status: int = 503
    message: str = "The request queue is full."
    seconds: float = 0.0
    mode: str = ""  #: for kind ``bad``: one of BAD_MODES


#: kind ``bad`` modes: how a 200 reply (or the exchange) is broken
BAD_MODES = (
    "repeated_index", "negative_index", "missing_index", "index_out_of_range", "string_index",
    "short_base64", "long_base64", "invalid_base64", "short_floats", "long_floats",
    "nan", "inf", "not_unit", "zero_vector", "too_few", "too_many", "null_embedding",
    "non_json", "html_200", "html_502", "empty_200", "no_data", "truncated", "trickle",
    "retry_after", "wrong_content_type",
)


@dataclass
class StandinConfig:
    dim: int = 2560
    model: str = "Qwen/Qwen3-Embedding-4B"
    served_model_name: str | None = None
    context_length: int = 32768
    matryoshka: bool = True
    matryoshka_dimensions: list[int] | None = None
    health_503_count: int = 0
    health_delay: float = 0.0
    api_key: str | None = None
    metrics: bool = False
    metrics_prefix: str = "sglang:"
    queue_reqs: int = 0
    running_reqs: int = 0
    token_usage: float = 0.0
    is_embedding: bool = True
    faults: list[Fault] = field(default_factory=list)
    models_body: str | None = None  #: raw ``/v1/models`` body instead of the real one
    # The process exits (os._exit(1), no answer) on embedding request number die_after + 1:
    # a worker that crashes mid-job (only meaningful for `python -m tests.standin.server`).
    die_after: int | None = None
    #: ``"sglang"`` (the ``matryoshka`` flag decides), ``"vllm"``, ``"infinity"`` or ``"ignore"`` (module doc)
    dimensions_behaviour: str = "sglang"
    strip_whitespace: bool = False  #: Infinity: leading/trailing whitespace removed from every input


def _pack(vec: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode("ascii")


def _unpack(emb: Any) -> list[float]:
    if isinstance(emb, str):
        raw = base64.b64decode(emb)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return list(emb)


def mangle(reply: dict[str, Any], mode: str) -> tuple[int, str, bytes]:
    """Break a good ``/v1/embeddings`` reply as ``mode`` says: (status, content type, body)."""
    data: list[dict[str, Any]] = reply["data"]
    fmt_b64 = isinstance(data[0]["embedding"], str)

    def set_vec(i: int, vec: list[float]) -> None:
        data[i]["embedding"] = _pack(vec) if fmt_b64 else vec

    last = len(data) - 1
    if mode == "repeated_index":
        data[last]["index"] = 0
    elif mode == "negative_index":
        data[last]["index"] = -1
    elif mode == "missing_index":
        del data[last]["index"]
    elif mode == "index_out_of_range":
        data[last]["index"] = len(data)
    elif mode == "string_index":
        data[last]["index"] = str(last)
    elif mode in ("short_base64", "short_floats"):
        set_vec(last, _unpack(data[last]["embedding"])[:-1])
    elif mode in ("long_base64", "long_floats"):
        set_vec(last, [*_unpack(data[last]["embedding"]), 0.0])
    elif mode == "invalid_base64":
        data[last]["embedding"] = "@@" + data[last]["embedding"][2:]
    elif mode in ("nan", "inf"):
        vec = _unpack(data[last]["embedding"])
        vec[0] = math.nan if mode == "nan" else math.inf
        set_vec(last, vec)  # as floats, Python writes JSON's non-standard NaN/Infinity literal
    elif mode == "not_unit":
        set_vec(last, [2.0 * v for v in _unpack(data[last]["embedding"])])
    elif mode == "zero_vector":
        set_vec(last, [0.0] * len(_unpack(data[last]["embedding"])))
    elif mode == "too_few":
        data.pop()
    elif mode == "too_many":
        data.append({**data[last], "index": len(data)})
    elif mode == "null_embedding":
        data[last]["embedding"] = None
    elif mode == "non_json":
        return 200, "application/json", b"Internal error: CUDA error: an illegal memory access"
    elif mode == "html_200":
        return 200, "text/html", b"<html><head><title>Welcome to nginx!</title></head><body></body></html>"
    elif mode == "html_502":
        return 502, "text/html", b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    elif mode == "empty_200":
        return 200, "application/json", b""
    elif mode == "no_data":
        return 200, "application/json", json.dumps({"object": "list", "model": reply["model"]}).encode()
    elif mode == "wrong_content_type":  # a good body with a wrong header: the body decides
        return 200, "text/plain", json.dumps(reply).encode()
    else:
        raise ValueError(f"unknown bad mode {mode!r}")
    return 200, "application/json", json.dumps(reply).encode()


def _error_body(message: str, status: int, type_: str = "BadRequestError") -> dict[str, Any]:
    return {"object": "error", "message": message, "type": type_, "param": None, "code": status}


def vllm_error_body(message: str, status: int = 400, type_: str = "BadRequestError") -> dict[str, Any]:
    """vLLM's current OpenAI-style error: nested under ``error``."""
    return {"error": {"message": message, "type": type_, "param": None, "code": status}}


class RequestError(Exception):
    def __init__(self, status: int, message: str, type_: str = "BadRequestError",
                 body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body or _error_body(message, status, type_)


class Standin:
    """The server state shared by all handler threads."""

    def __init__(self, config: StandinConfig, backend: Backend | None = None) -> None:
        self.config = config
        self.backend: Backend = backend or HashBackend(config.dim)
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []  # JSON bodies of POST /v1/embeddings, in order
        self.health_polls = 0
        self.embedding_requests = 0
        self.prompt_tokens = 0
        self.latencies: list[float] = []  # seconds, one per answered /v1/embeddings
        self.responses: dict[int, int] = {}  # status code -> count, /v1/embeddings
        self.stopping = threading.Event()

    # -- /metrics ----------------------------------------------------------------------------

    #: SGLang's e2e latency buckets (metrics_collector.py, bucket_e2e_request_latency)
    E2E_BUCKETS = (0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 200, 400, 600, 1200, 1800, 2400)

    def metrics_text(self) -> str:
        cfg = self.config
        p = cfg.metrics_prefix
        name = (cfg.served_model_name or cfg.model).replace("\\", "\\\\").replace('"', '\\"')
        tok = f'model_name="{name}",engine_type="unified"'
        sch = f'{tok},tp_rank="0",pp_rank="0",moe_ep_rank="0"'
        with self.lock:
            lat = list(self.latencies)
            n_req, n_tok = self.embedding_requests, self.prompt_tokens
            responses = dict(self.responses)
        lines = [
            f"# HELP {p}num_requests_total The number of processed requests.",
            f"# TYPE {p}num_requests_total counter",
            f'{p}num_requests_total{{{tok},is_streaming="false"}} {float(n_req)}',
            f"# TYPE {p}prompt_tokens_total counter",
            f"{p}prompt_tokens_total{{{tok}}} {float(n_tok)}",
            f"# TYPE {p}num_aborted_requests_total counter",
            f"{p}num_aborted_requests_total{{{tok}}} 0.0",
            f"# HELP {p}e2e_request_latency_seconds Histogram of End-to-end request latency in seconds",
            f"# TYPE {p}e2e_request_latency_seconds histogram",
        ]
        for le in self.E2E_BUCKETS:
            count = sum(1 for x in lat if x <= le)
            lines.append(f'{p}e2e_request_latency_seconds_bucket{{{tok},is_streaming="false",le="{float(le)}"}} {float(count)}')
        lines += [
            f'{p}e2e_request_latency_seconds_bucket{{{tok},is_streaming="false",le="+Inf"}} {float(len(lat))}',
            f'{p}e2e_request_latency_seconds_count{{{tok},is_streaming="false"}} {float(len(lat))}',
            f'{p}e2e_request_latency_seconds_sum{{{tok},is_streaming="false"}} {sum(lat)}',
            f"# TYPE {p}http_responses_total counter",
        ]
        for code, count in sorted(responses.items()):
            lines.append(f'{p}http_responses_total{{endpoint="/v1/embeddings",status_code="{code}",method="POST"}} {float(count)}')
        lines += [
            f"# TYPE {p}num_queue_reqs gauge", f"{p}num_queue_reqs{{{sch}}} {float(cfg.queue_reqs)}",
            f"# TYPE {p}num_running_reqs gauge", f"{p}num_running_reqs{{{sch}}} {float(cfg.running_reqs)}",
            f"# TYPE {p}token_usage gauge", f"{p}token_usage{{{sch}}} {float(cfg.token_usage)}",
        ]
        return "\n".join(lines) + "\n"

    def record_response(self, status: int, started: float) -> None:
        with self.lock:
            self.responses[status] = self.responses.get(status, 0) + 1
            if status == 200:
                self.latencies.append(time.perf_counter() - started)

    # -- faults -----------------------------------------------------------------------------

    def next_fault(self) -> Fault | None:
        with self.lock:
            for fault in self.config.faults:
                if fault.count > 0:
                    fault.count -= 1
                    return fault
        return None

    # -- /v1/embeddings ---------------------------------------------------------------------

    def embeddings(self, body: Any) -> dict[str, Any]:
        cfg = self.config
        if not isinstance(body, dict) or "input" not in body:
            raise RequestError(400, "1 validation error for EmbeddingRequest\ninput\n  Field required", "Bad Request")
        inp = body["input"]
        items: list[Input]
        if cfg.strip_whitespace:  # before any check, as pydantic does: "  " becomes "" and passes
            if isinstance(inp, str):
                inp = inp.strip()
            elif isinstance(inp, list) and all(isinstance(x, str) for x in inp):
                inp = [x.strip() for x in inp]
        if isinstance(inp, str):
            if not inp.strip() and not cfg.strip_whitespace:
                raise RequestError(400, "Input cannot be empty or whitespace only")
            items = [inp]
        elif isinstance(inp, list):
            if not inp:
                raise RequestError(400, "Input cannot be empty")
            if all(isinstance(x, str) for x in inp):
                for i, x in enumerate(inp):
                    if not x.strip() and not cfg.strip_whitespace:
                        raise RequestError(400, f"Input at index {i} cannot be empty or whitespace only")
                items = list(inp)
            elif all(isinstance(x, int) and not isinstance(x, bool) for x in inp):
                for i, x in enumerate(inp):
                    if x < 0:
                        raise RequestError(400, f"Token ID at index {i} must be non-negative")
                items = [list(inp)]
            elif all(isinstance(x, list) for x in inp):
                items = [list(x) for x in inp]
            else:
                raise RequestError(400, "All items in input list must be strings")
        else:
            raise RequestError(400, f"1 validation error for EmbeddingRequest\ninput\n  Input should be a valid string [input_value={inp!r}]", "Bad Request")
        fmt = body.get("encoding_format", "float")
        if fmt not in ("float", "base64"):
            raise RequestError(400, f"encoding_format must be either 'float' or 'base64', got '{fmt}'")
        model = body.get("model", "default")
        served = cfg.served_model_name or cfg.model
        if isinstance(model, str) and ":" in model and model != served:
            raise RequestError(400, f"LoRA adapter '{model.split(':', 1)[1]}' was requested, but LoRA is not enabled. Please launch the server with --enable-lora flag and preload adapters with --lora-paths or /load_lora_adapter endpoint.")
        if not cfg.is_embedding:
            raise RequestError(400, "This model does not appear to be an embedding model by default. Please add `--is-embedding` when launching the server or try another model.")
        dims = body.get("dimensions")
        if dims is not None and cfg.dimensions_behaviour == "vllm":
            message = (f"Model '{served}' does not support Matryoshka embeddings; dimensions must be unset "
                       f"(received dimensions={dims}).")
            raise RequestError(400, message, body=vllm_error_body(message))
        if dims is not None and cfg.dimensions_behaviour == "sglang":
            if not cfg.matryoshka:
                raise RequestError(400, f"Model '{cfg.model}' does not support matryoshka representation, changing output dimensions will lead to poor results.")
            if dims < 1:
                raise RequestError(400, "Requested dimensions must be greater than 0")
            if cfg.matryoshka_dimensions and dims not in cfg.matryoshka_dimensions:
                raise RequestError(400, f"Model '{cfg.model}' only supports {cfg.matryoshka_dimensions} matryoshka dimensions, using other output dimensions will lead to poor results.")
            if dims > self.backend.dim:
                raise RequestError(400, f"Provided dimensions are greater than max embedding dimension: {self.backend.dim}")
        counts = [self.backend.count_tokens(x) for x in items]
        for n in counts:
            if n >= cfg.context_length:  # SGLang uses >=: exactly context_len is rejected
                raise RequestError(400, f"The input ({n} tokens) is longer than the model's context length ({cfg.context_length} tokens).")
        vectors = self.backend.embed(items)
        data = []
        for i, vec in enumerate(vectors):
            if dims is not None and cfg.dimensions_behaviour == "infinity":
                vec = vec[:dims]  # the normalised vector sliced, never renormalised
            elif dims is not None and cfg.dimensions_behaviour != "ignore":  # truncate, then L2-normalise (SGLang)
                vec = vec[:dims]
                norm = math.sqrt(sum(v * v for v in vec)) or 1.0
                vec = [v / norm for v in vec]
            emb: Any
            if fmt == "base64":
                emb = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode("ascii")
            else:
                emb = vec
            data.append({"embedding": emb, "index": i, "object": "embedding"})
        total = sum(counts)
        with self.lock:
            self.prompt_tokens += total
        return {
            "data": data,
            "model": cfg.model,
            "object": "list",
            "usage": {
                "prompt_tokens": total,
                "total_tokens": total,
                "completion_tokens": 0,
                "prompt_tokens_details": None,
                "reasoning_tokens": 0,
                "completion_tokens_details": None,
            },
        }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # -- helpers ----------------------------------------------------------------------------

    def _send(self, status: int, body: Any = None, *, raw: bytes | None = None,
              content_type: str = "application/json", headers: dict[str, str] | None = None) -> None:
        if self.command == "POST" and self.path.split("?", 1)[0] == "/v1/embeddings":
            self.server.state.record_response(status, getattr(self, "_started", time.perf_counter()))
        payload = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)

    def _bad(self, fault: Fault, body: Any) -> None:
        """Answer as a misbehaving server (``Fault("bad", mode=...)``)."""
        st = self.server.state
        if fault.mode == "retry_after":
            return self._send(fault.status, _error_body(fault.message, fault.status, str(fault.status)),
                              headers={"Retry-After": f"{fault.seconds:g}"})
        try:
            reply = st.embeddings(body)
        except RequestError as exc:
            return self._send(exc.status, exc.body)
        if fault.mode in ("truncated", "trickle"):
            payload = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.flush()
            if fault.mode == "truncated":  # half the promised body, then the connection drops
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(2)
                return None
            for i in range(len(payload)):  # one byte every `seconds`, until done or stopped
                if st.stopping.wait(fault.seconds):
                    return None
                try:
                    self.wfile.write(payload[i:i + 1])
                    self.wfile.flush()
                except OSError:  # the client gave up
                    return None
            return None
        status, ctype, raw = mangle(reply, fault.mode)
        return self._send(status, raw=raw, content_type=ctype)

    def _authorized(self) -> bool:
        key = self.server.state.config.api_key
        if key is None or self.path.startswith(("/health", "/metrics", "/ready", "/ping")):
            return True
        return self.headers.get("Authorization") == f"Bearer {key}"

    # -- routes -----------------------------------------------------------------------------

    def do_GET(self) -> None:
        st = self.server.state
        cfg = st.config
        if not self._authorized():
            return self._send(401, {"error": "Unauthorized"})
        path = self.path.split("?", 1)[0]
        if path in ("/health", "/health_generate"):
            with st.lock:
                st.health_polls += 1
                polls = st.health_polls
            if st.stopping.is_set() or polls <= cfg.health_503_count:
                return self._send(503, raw=b"")
            if cfg.health_delay:
                time.sleep(cfg.health_delay)
            return self._send(200, raw=b"")
        if path == "/v1/models":
            if cfg.models_body is not None:
                return self._send(200, raw=cfg.models_body.encode())
            return self._send(200, {"object": "list", "data": [{
                "id": cfg.served_model_name or cfg.model, "object": "model", "created": int(time.time()),
                "owned_by": "sglang", "root": cfg.model, "parent": None,
                "max_model_len": cfg.context_length}]})
        if path == "/model_info":
            return self._send(200, {
                "model_path": cfg.model, "tokenizer_path": cfg.model, "is_generation": not cfg.is_embedding,
                "served_model_name": cfg.served_model_name or cfg.model, "model_type": "qwen3",
                "architectures": ["Qwen3ForCausalLM"],
                "embedding": {"pooling": "last", "normalize": True, "supports_dimensions": cfg.matryoshka,
                              "matryoshka_dimensions": cfg.matryoshka_dimensions}})
        if path == "/metrics":
            if not cfg.metrics:
                return self._send(404, {"detail": "Not Found"})
            return self._send(200, raw=st.metrics_text().encode())
        return self._send(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        self._started = time.perf_counter()  # for the /metrics latency histogram
        st = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not self._authorized():
            return self._send(401, {"error": "Unauthorized"})
        path = self.path.split("?", 1)[0]
        if path not in ("/v1/embeddings", "/encode"):
            return self._send(404, {"detail": "Not Found"})
        if "application/json" not in (self.headers.get("Content-Type") or ""):
            return self._send(400, _error_body("Unsupported Media Type: Only 'application/json' is allowed", 400))
        try:
            body = json.loads(raw or b"null")
        except json.JSONDecodeError as exc:
            return self._send(400, _error_body(f"JSON decode error: {exc}", 400, "Bad Request"))
        if path == "/encode":
            text = body.get("text") if isinstance(body, dict) else None
            texts = [text] if isinstance(text, str) else list(text or [])
            vecs = st.backend.embed(texts)
            out = [{"embedding": v, "meta_info": {"prompt_tokens": st.backend.count_tokens(t)}} for t, v in zip(texts, vecs, strict=True)]
            return self._send(200, out[0] if isinstance(text, str) else out)
        with st.lock:
            st.requests.append(body)
            st.embedding_requests += 1
            if st.config.die_after is not None and st.embedding_requests > st.config.die_after:
                os._exit(1)
        fault = st.next_fault()
        if fault is not None:
            if fault.kind == "reset":
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(2)
                return None
            if fault.kind == "hang":
                st.stopping.wait()
                return None
            if fault.kind == "bad":
                return self._bad(fault, body)
            if fault.kind == "delay":
                time.sleep(fault.seconds)
            elif fault.kind == "status":
                type_ = str(fault.status) if fault.status == 503 else "InternalServerError"
                return self._send(fault.status, _error_body(fault.message, fault.status, type_))
        try:
            return self._send(200, st.embeddings(body))
        except RequestError as exc:
            return self._send(exc.status, exc.body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], state: Standin) -> None:
        super().__init__(addr, _Handler)
        self.state = state


@dataclass
class Running:
    """A stand-in server running in a background thread."""

    server: _Server
    thread: threading.Thread

    @property
    def state(self) -> Standin:
        return self.server.state

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self.state.requests

    def inputs_since(self, start: int) -> list[Any]:
        """Every input (text or token ids) received since request number ``start``, flattened."""
        return inputs_of(self.requests[start:])


def inputs_of(bodies: list[dict[str, Any]]) -> list[Any]:
    """Every input (text or token ids) of these request bodies, flattened."""
    out: list[Any] = []
    for body in bodies:
        inp = body["input"]
        out.extend([inp] if isinstance(inp, str) else inp)
    return out


@contextlib.contextmanager
def serve_in_thread(
    config: StandinConfig | None = None, backend: Backend | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> Iterator[Running]:
    """Run the stand-in on ``host:port`` (port 0 = any free port) for the ``with`` block."""
    state = Standin(config or StandinConfig(), backend)
    server = _Server((host, port), state)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Running(server, thread)
    finally:
        state.stopping.set()
        server.shutdown()
        server.server_close()


def build_server(config: StandinConfig, backend: Backend | None = None, *, host: str, port: int) -> _Server:
    """Bind (raises OSError errno 98 if the port is busy) without serving yet."""
    return _Server((host, port), Standin(config, backend))


def config_from_json(text: str) -> StandinConfig:
    raw = json.loads(text)
    faults = [Fault(**f) for f in raw.pop("faults", [])]
    return StandinConfig(**raw, faults=faults)


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.standin.server --port P [--config JSON]``: serve until killed."""
    p = argparse.ArgumentParser(prog="standin-sglang", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=30000)
    p.add_argument("--config", default="{}", help="StandinConfig as JSON")
    args = p.parse_args(argv)
    server = build_server(config_from_json(args.config), host=args.host, port=args.port)
    print(f"standin listening on {args.host}:{server.server_address[1]}", file=sys.stderr, flush=True)
    server.serve_forever(poll_interval=0.05)


if __name__ == "__main__":
    main()
