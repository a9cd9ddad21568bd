"""One probe of a running embedding server: ``/health``, ``/v1/models``, one embedding and,
optionally, one ``dimensions`` request, each reply checked by the client's own rules
(:func:`qembed.vectors.parse_models`, :func:`qembed.vectors.parse_reply`).

``qembed doctor`` renders its facts as rows; ``qembed bench`` takes the model and stops on a
server whose replies are wrong. Each step records its outcome instead of raising, so a caller
can report every step; :meth:`ServerFacts.raise_for_embedding` turns the result into the
client's exceptions.

Example:
    >>> facts = probe_server("http://127.0.0.1:30000", None)      # doctest: +SKIP
    >>> facts.health, facts.model, facts.dimensions, facts.norm
    (200, 'Qwen/Qwen3-Embedding-4B', 2560, 1.0)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from qembed.errors import QembedError, ServerError, ServerUnreachable
from qembed.net import auth_headers

PROBE_TEXT = "qembed probe"


@dataclass(frozen=True)
class ServerFacts:
    """What one probe learned. ``*_error`` says why a step has no answer (``None``: fine)."""

    url: str
    health: int | None = None  #: ``/health`` status; ``None``: no answer
    health_seconds: float | None = None
    health_error: str | None = None
    model: str | None = None  #: the served model name (``id``)
    model_path: str | None = None  #: the model path (``root``, else ``id``)
    max_model_len: int | None = None
    models_status: int | None = None
    models_error: str | None = None
    dimensions: int | None = None  #: full vector size, from one checked embedding
    expected_dimensions: int | None = None  #: the size the served model makes, when qembed knows its shape
    norm: float | None = None
    embedding_status: int | None = None
    embedding_error: QembedError | None = None
    matryoshka_dimensions: int | None = None  #: the size asked for in the ``dimensions`` step
    supports_dimensions: bool | None = None
    dimensions_error: str | None = None

    @property
    def size_mismatch(self) -> str | None:
        """Why the vector size is not the served model's, when qembed knows the model's shape."""
        if self.dimensions is None or self.expected_dimensions in (None, self.dimensions):
            return None
        return (f"the vector has {self.dimensions} values, but {self.model_path or self.model} makes "
                f"{self.expected_dimensions}")

    def raise_for_embedding(self) -> None:
        """Raise the embedding step's error (ServerUnreachable, ServerError, BadReply), if any."""
        if self.embedding_error is not None:
            raise self.embedding_error


def _unreachable(url: str, exc: Exception) -> ServerUnreachable:
    import httpx

    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return ServerUnreachable(f"no server answers at {url}",
                                 hint="start one with `qembed serve`, or pass the right `--url`")
    return ServerUnreachable(f"the connection to {url} failed: {type(exc).__name__}: {exc}",
                             hint="check the server (`qembed ps`, `qembed logs`) and try again")


@dataclass(frozen=True)
class _Answer:
    status_code: int
    content: bytes


def _error_text(r: _Answer) -> str:
    text = r.content[:300].decode("utf-8", "replace")
    return text.strip() or f"HTTP {r.status_code}"


def probe_server(url: str, api_key: str | None, *, timeout: float = 30.0, health: bool = True,
                 embedding: bool = True, dimensions: bool = False, model: str | None = None,
                 transport: Any = None) -> ServerFacts:
    """Probe the server at ``url`` (no ``/v1``) and check every reply.

    Args:
        url: base URL, e.g. ``http://127.0.0.1:30000``.
        api_key: sent as ``Authorization: Bearer``.
        timeout: total seconds for each request (a healthy ``/health`` runs a 1-token forward
            after sleeping 1 s, so allow far more than 1 s).
        health: query ``/health`` first; if it is not 200, stop there.
        embedding: send one embedding and check it (size, finite, unit length).
        dimensions: then ask for half the size (at most 256) to see whether Matryoshka is on.
        model: model name to send (default: the served one).
        transport: an httpx transport, for tests.

    Returns:
        :class:`ServerFacts`; a step that failed has its ``*_error`` set and later steps left
        out where they depend on it.
    """
    import httpx
    import orjson

    from qembed.vectors import parse_models, parse_reply

    url = url.rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    headers = auth_headers(api_key)
    facts: dict[str, Any] = {"url": url}
    deadline = time.monotonic

    def get(client: httpx.Client, method: str, path: str, body: Any = None) -> _Answer:
        # the total deadline: a server trickling bytes cannot hold the probe past `timeout`
        end = deadline() + timeout
        with client.stream(method, url + path, content=None if body is None else orjson.dumps(body),
                           headers={"Content-Type": "application/json"} if body is not None else None) as r:
            chunks = []
            for chunk in r.iter_bytes():
                chunks.append(chunk)
                if deadline() > end:
                    raise httpx.ReadTimeout(f"no complete answer within the {timeout:g} s deadline")
            return _Answer(r.status_code, b"".join(chunks))

    with httpx.Client(timeout=httpx.Timeout(timeout, connect=min(5.0, timeout)), headers=headers,
                      transport=transport, trust_env=False) as client:
        if health:
            t0 = time.perf_counter()
            try:
                r = get(client, "GET", "/health")
            except httpx.HTTPError as exc:
                facts["health_error"] = f"no answer ({type(exc).__name__}: {exc})"
                if embedding:
                    facts["embedding_error"] = _unreachable(url, exc)
                return ServerFacts(**facts)
            facts["health"], facts["health_seconds"] = r.status_code, time.perf_counter() - t0
            if r.status_code != 200:
                facts["health_error"] = f"HTTP {r.status_code}"
                if embedding:
                    facts["embedding_error"] = ServerError(f"{url}/health answered {r.status_code}: not ready",
                                                           status=r.status_code,
                                                           hint="503 = still starting or unhealthy; see `qembed logs`")
                return ServerFacts(**facts)
        try:
            r = get(client, "GET", "/v1/models")
        except httpx.HTTPError as exc:
            facts["models_error"] = f"no answer ({type(exc).__name__}: {exc})"
            facts["embedding_error"] = _unreachable(url, exc)
            return ServerFacts(**facts)
        facts["models_status"] = r.status_code
        if r.status_code == 401:
            facts["models_error"] = "HTTP 401: the server wants an API key"
            facts["embedding_error"] = ServerError("the server rejected the API key (HTTP 401)", status=401,
                                                   hint="pass `--api-key` or set QEMBED_API_KEY")
            return ServerFacts(**facts)
        if r.status_code != 200:
            facts["models_error"] = f"HTTP {r.status_code}: {_error_text(r)}"
        else:
            try:
                served, mml = parse_models(r.content, source=f"{url}/v1/models")
                first = orjson.loads(r.content)["data"]
                root = first[0].get("root") if first else None
                facts.update(model=served, max_model_len=mml,
                             model_path=root if isinstance(root, str) and root else served)
            except QembedError as exc:
                facts["models_error"] = exc.message
        if not embedding:
            return ServerFacts(**facts)
        body: dict[str, Any] = {"input": [PROBE_TEXT], "model": model or facts.get("model") or "default",
                                "encoding_format": "base64"}
        try:
            r = get(client, "POST", "/v1/embeddings", body)
        except httpx.HTTPError as exc:
            facts["embedding_error"] = _unreachable(url, exc)
            return ServerFacts(**facts)
        facts["embedding_status"] = r.status_code
        if r.status_code != 200:
            facts["embedding_error"] = ServerError(f"{url}/v1/embeddings answered {r.status_code}: {_error_text(r)}",
                                                   status=r.status_code)
            return ServerFacts(**facts)
        try:
            reply = parse_reply(r.content, 1, width=None, source=f"{url}/v1/embeddings")
        except QembedError as exc:
            facts["embedding_error"] = exc
            return ServerFacts(**facts)
        vec = reply.vectors[0].astype("float64")
        facts["dimensions"], facts["norm"] = int(vec.shape[0]), float((vec @ vec) ** 0.5)
        from qembed.models import known_shape

        name = facts.get("model_path") or facts.get("model")
        shape = known_shape(name) if name else None
        facts["expected_dimensions"] = shape.hidden_size if shape else None
        if dimensions:
            dims = min(256, max(1, facts["dimensions"] // 2))
            facts["matryoshka_dimensions"] = dims
            try:
                r = get(client, "POST", "/v1/embeddings", {**body, "dimensions": dims})
            except httpx.HTTPError as exc:
                facts["dimensions_error"] = f"request failed: {type(exc).__name__}: {exc}"
                return ServerFacts(**facts)
            if r.status_code != 200:
                facts["supports_dimensions"] = False
                facts["dimensions_error"] = f"HTTP {r.status_code}: {_error_text(r)}"
            else:
                try:
                    parse_reply(r.content, 1, width=dims, source=f"{url}/v1/embeddings")
                    facts["supports_dimensions"] = True
                except QembedError as exc:
                    facts["supports_dimensions"] = False
                    facts["dimensions_error"] = exc.message
    return ServerFacts(**facts)


__all__ = ["PROBE_TEXT", "ServerFacts", "probe_server"]
