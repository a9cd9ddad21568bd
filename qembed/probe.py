"""One probe of a running embedding server: ``/health``, ``/v1/models``, one embedding and,
optionally, one ``dimensions`` request, each reply checked by the client's own rules
(:func:`qembed.vectors.parse_models`, :func:`qembed.vectors.parse_reply`).

``qembed doctor`` renders its facts as rows; ``qembed bench`` takes the model and stops on a
server whose replies are wrong. Each step records its outcome instead of raising, so a caller
can report every step; :meth:`ServerFacts.raise_for_embedding` turns the result into the
client's exceptions.

It is also qembed's one HTTP probe layer: :func:`open_http` / :func:`fetch` / :func:`get` (on
:class:`qembed.transport.HttpxSync`, so every request has a total deadline and ignores proxies)
carry the gateway's worker probes, the readiness loop's ``/health`` checks and ``verify``'s
server details, with one probe text (:data:`PROBE_TEXT`), one "not an embedding server" rule
(:func:`serves_generator`), one 401 hint (:data:`API_KEY_HINT`) and one unreachable message
(:func:`unreachable`).

Example:
    >>> facts = probe_server("http://127.0.0.1:30000", None)      # doctest: +SKIP
    >>> facts.health, facts.model, facts.dimensions, facts.norm
    (200, 'Qwen/Qwen3-Embedding-4B', 2560, 1.0)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qembed.errors import QembedError, ServerError, ServerUnreachable
from qembed.net import auth_headers

if TYPE_CHECKING:
    from qembed.transport import HttpxSync, Response, TransportFailure

#: The text of every probe embedding.
PROBE_TEXT = "qembed probe"
#: What SGLang's 400 says when the model was started as a text generator (no ``--is-embedding``).
NOT_EMBEDDING = "does not appear to be an embedding model"
#: The fix for a 401 where the caller passes the key (``--api-key`` or ``QEMBED_API_KEY``).
API_KEY_HINT = "pass `--api-key` or set QEMBED_API_KEY"


def open_http(url: str, api_key: str | None = None, *, timeout: float, transport: Any = None) -> HttpxSync:
    """One connection pool to ``url`` for probes: no proxies, ``api_key`` as a bearer token,
    ``timeout`` seconds as each request's total deadline (connect at most 5 s of it).
    ``transport``: an httpx transport, for tests. Close it with ``close()``."""
    from qembed.transport import HttpxSync, Timeouts

    headers = {"Content-Type": "application/json", **auth_headers(api_key)}
    return HttpxSync(base_url=url, headers=headers, limit=None, transport=transport,
                     timeouts=Timeouts(connect=min(5.0, timeout), read=timeout, total=timeout))


def fetch(http: HttpxSync, method: str, path: str, body: Any = None, *, timeout: float | None = None) -> Response:
    """One request on ``http`` (from :func:`open_http`); ``body`` is sent as JSON; ``timeout``
    replaces the pool's total deadline for this request.

    Raises:
        TransportFailure: no complete answer (``connect``: nothing listening; ``deadline``).
    """
    import httpx

    from qembed.transport import Request, TransportFailure

    content = None
    if body is not None:
        import orjson

        content = orjson.dumps(body)
    try:
        return http.request(Request(method, path, content), total=timeout)
    except httpx.HTTPError as exc:  # not a transport error (a body that cannot be decoded): no answer either
        raise TransportFailure(f"{type(exc).__name__}: {exc}", connect=False) from exc


def get(url: str, path: str, *, api_key: str | None = None, timeout: float, transport: Any = None) -> Response:
    """One ``GET url+path`` with a total deadline of ``timeout`` s (see :func:`fetch`)."""
    http = open_http(url, api_key, timeout=timeout, transport=transport)
    try:
        return fetch(http, "GET", path)
    finally:
        http.close()


def unreachable(url: str, failure: TransportFailure) -> ServerUnreachable:
    """The one "no answer" error: nothing listening at ``url``, or the exchange failed
    (``failure`` is its ``__cause__``)."""
    if failure.connect:
        err = ServerUnreachable(f"no server answers at {url}",
                                hint="start one with `qembed serve`, or pass the right `--url`")
    else:
        err = ServerUnreachable(f"the connection to {url} failed: {failure}", connect=False,
                                hint="check the server (`qembed ps`, `qembed logs`) and try again")
    err.__cause__ = failure
    return err


def serves_generator(err: QembedError | None) -> bool:
    """The one "not an embedding server" rule: the probe embedding got SGLang's 400 for a model
    started as a text generator."""
    return isinstance(err, ServerError) and err.status == 400 and NOT_EMBEDDING in err.message


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


def _error_text(r: Response) -> str:
    text = r.content[:300].decode("utf-8", "replace")
    return text.strip() or f"HTTP {r.status}"


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

    from qembed.transport import TransportFailure
    from qembed.vectors import parse_reply

    url = url.rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    facts: dict[str, Any] = {"url": url}
    http = open_http(url, api_key, timeout=timeout, transport=transport)
    try:
        if health:
            t0 = time.perf_counter()
            try:
                r = fetch(http, "GET", "/health")
            except TransportFailure as exc:
                facts["health_error"] = f"no answer ({exc})"
                if embedding:
                    facts["embedding_error"] = unreachable(url, exc)
                return ServerFacts(**facts)
            facts["health"], facts["health_seconds"] = r.status, time.perf_counter() - t0
            if r.status != 200:
                facts["health_error"] = f"HTTP {r.status}"
                if embedding:
                    facts["embedding_error"] = ServerError(f"{url}/health answered {r.status}: not ready",
                                                           status=r.status,
                                                           hint="503 = still starting or unhealthy; see `qembed logs`")
                return ServerFacts(**facts)
        try:
            r = fetch(http, "GET", "/v1/models")
        except TransportFailure as exc:
            facts["models_error"] = f"no answer ({exc})"
            facts["embedding_error"] = unreachable(url, exc)
            return ServerFacts(**facts)
        if not _models_step(r, url, facts):
            return ServerFacts(**facts)
        if not embedding:
            return ServerFacts(**facts)
        body: dict[str, Any] = {"input": [PROBE_TEXT], "model": model or facts.get("model") or "default",
                                "encoding_format": "base64"}
        try:
            r = fetch(http, "POST", "/v1/embeddings", body)
        except TransportFailure as exc:
            facts["embedding_error"] = unreachable(url, exc)
            return ServerFacts(**facts)
        facts["embedding_status"] = r.status
        if r.status != 200:
            facts["embedding_error"] = ServerError(f"{url}/v1/embeddings answered {r.status}: {_error_text(r)}",
                                                   status=r.status)
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
            _dimensions_step(http, url, body, facts)
        return ServerFacts(**facts)
    finally:
        http.close()


def _models_step(r: Response, url: str, facts: dict[str, Any]) -> bool:
    """Record what ``/v1/models`` answered: the served name, model path and context length.
    ``False``: the server wants an API key, so the probe stops here."""
    import orjson

    from qembed.vectors import parse_models

    facts["models_status"] = r.status
    if r.status == 401:
        facts["models_error"] = "HTTP 401: the server wants an API key"
        facts["embedding_error"] = ServerError("the server rejected the API key (HTTP 401)", status=401,
                                               hint=API_KEY_HINT)
        return False
    if r.status != 200:
        facts["models_error"] = f"HTTP {r.status}: {_error_text(r)}"
        return True
    try:
        served, mml = parse_models(r.content, source=f"{url}/v1/models")
        first = orjson.loads(r.content)["data"]
        root = first[0].get("root") if first else None
        facts.update(model=served, max_model_len=mml, model_path=root if isinstance(root, str) and root else served)
    except QembedError as exc:
        facts["models_error"] = exc.message
    return True


def _dimensions_step(http: HttpxSync, url: str, body: dict[str, Any], facts: dict[str, Any]) -> None:
    """Ask for half the size (at most 256): does the server truncate (Matryoshka on)?"""
    from qembed.transport import TransportFailure
    from qembed.vectors import parse_reply

    dims = min(256, max(1, facts["dimensions"] // 2))
    facts["matryoshka_dimensions"] = dims
    try:
        r = fetch(http, "POST", "/v1/embeddings", {**body, "dimensions": dims})
    except TransportFailure as exc:
        facts["dimensions_error"] = f"request failed: {exc}"
        return
    if r.status != 200:
        facts["supports_dimensions"] = False
        facts["dimensions_error"] = f"HTTP {r.status}: {_error_text(r)}"
        return
    try:
        parse_reply(r.content, 1, width=dims, source=f"{url}/v1/embeddings")
        facts["supports_dimensions"] = True
    except QembedError as exc:
        facts["supports_dimensions"] = False
        facts["dimensions_error"] = exc.message


__all__ = ["API_KEY_HINT", "NOT_EMBEDDING", "PROBE_TEXT", "ServerFacts", "fetch", "get", "open_http", "probe_server",
           "serves_generator", "unreachable"]
