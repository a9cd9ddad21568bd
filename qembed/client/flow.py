"""The client's sans-IO core: ``BaseClient`` holds the configuration, what was learned about the
server, and the flows that make every decision (what to send, retries and their waits, the
fallbacks) without any I/O; :mod:`qembed.client.drivers` (``Client``, ``AsyncClient``) only
drives those flows over a transport (:mod:`qembed.transport`), and
:mod:`qembed.client.results` holds what they return. The defaults live here.

What it gets right by default, because users of Qwen3-Embedding most often get it wrong:

* queries carry the trained instruction ``Instruct: {task}\\nQuery:{text}``; documents none;
* texts go to the server as text (SGLang's tokenizer then appends the ``<|endoftext|>`` EOS);
* ``dimensions`` (Matryoshka) uses the server's field; when a server refuses it (any 4xx that
  the same request without it does not get) or truncates wrongly (the wrong length, or no
  renormalisation), the client says so once and truncates and L2-renormalises here from then on;
  both give the same vectors;
* replies are requested as base64 and decoded straight into a float32 ``(n, d)`` array.

Example:
    >>> import qembed
    >>> with qembed.Client() as client:                       # doctest: +SKIP
    ...     q = client.embed_queries("what is MRL?")
    ...     d = client.embed_documents(["MRL is Matryoshka Representation Learning."])
    ...     print(float(q @ d.T))
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
import threading
import time
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from qembed import env as qenv
from qembed._version import __version__
from qembed.client.results import (
    Job,
    OnError,
    ServerInfo,
    allocate,
    error_message,
    finish,
    finish_lists,
    is_connect_error,
    server_error,
    unreachable,
)
from qembed.errors import BadReply, DimensionsRefused, InputError
from qembed.instructions import (
    DEFAULT_QUERY_TASK,
    apply_prefix,
    format_document,
    format_query,
    resolve_instruction,
)
from qembed.net import auth_headers as _auth_headers
from qembed.net import base_url as _base_url
from qembed.transport import Request, Response, Timeouts, TransportFailure
from qembed.vectors import (
    check_dimensions,
    parse_models,
    parse_reply,
    parse_reply_rows,
    truncate,
    truncation_fault,
)

if TYPE_CHECKING:
    import httpx


logger = logging.getLogger(__name__)

__all__ = ["USE_CLIENT_DEFAULT", "BaseClient", "Kind", "UseClientDefault", "estimate_tokens",
           "kind_args"]

Kind = Literal["raw", "query", "document"]


class UseClientDefault:
    """Sentinel type: "use the client's default" (``None`` can be a real value)."""

    _instance: UseClientDefault | None = None

    def __new__(cls) -> UseClientDefault:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "USE_CLIENT_DEFAULT"


USE_CLIENT_DEFAULT = UseClientDefault()

DEFAULT_CONNECT_TIMEOUT = 5.0
#: a 32k-token input on a busy server can take minutes; this bounds each read and, as a total
#: deadline, each whole request (every byte of the answer)
DEFAULT_READ_TIMEOUT = 300.0
DEFAULT_MAX_RETRIES = 4
DEFAULT_BACKOFF = 0.5  # seconds; doubled each attempt, with jitter, capped at MAX_BACKOFF
MAX_BACKOFF = 10.0
#: the longest ``Retry-After`` honoured; a longer one is capped, with a warning
MAX_RETRY_AFTER = 60.0
#: no retry starts after this many seconds since a request's first attempt (its waits included)
DEFAULT_RETRY_TIMEOUT = 120.0
#: texts per request; with 8 in flight, 128 keeps a modelled 0.6B-class GPU 97.8 % busy against
#: 95.0 % with 64 (docs/performance.md section 7); `batch_tokens` still caps long texts
DEFAULT_BATCH_SIZE = 128
#: estimated tokens per request (see ``estimate_tokens``): 128 texts of ~256 tokens, or fewer longer ones
DEFAULT_BATCH_TOKENS = 32768
#: UTF-8 bytes per token in the estimate used to size requests and benchmark inputs (the
#: Qwen tokenizer is byte-level BPE: about 4 for English and code, about 3 for CJK)
BYTES_PER_TOKEN = 4
DEFAULT_CONCURRENCY = 8  # measured: 8 x 128 texts keep a modelled GPU 97.8 % busy (docs/performance.md section 7)
#: The Qwen tokenizer is byte-level BPE: a token is at least one UTF-8 byte, and in practice
#: no text averages more than this many bytes per token. So ``bytes // 8`` is a *lower* bound
#: used to reject inputs that are certainly too long before sending; anything subtler is
#: caught from the server's own answer (the exact count needs the tokenizer).
MAX_BYTES_PER_TOKEN = 8

_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: 4xx answers to a request with ``dimensions`` that say something else than "not this field"
#: (the key, overload): never taken for a refusal of ``dimensions``
_NOT_A_REFUSAL = frozenset({401, 403, 408, 429})
_TOO_LONG = re.compile(r"The input \((\d+) tokens\) is longer than the model's context length")
_AT_INDEX = re.compile(r"Input at index (\d+) cannot be empty")


def estimate_tokens(text: str) -> int:
    """Token estimate without the tokenizer: ``utf8 bytes // 4 + 1`` (the EOS).

    The one estimate in qembed: the client sizes requests with it, ``qembed bench`` sizes its
    inputs with it. It is close for English and code; CJK text (3 bytes a character, about one
    token each) runs up to a third over it.
    """
    return len(text.encode("utf-8", "surrogatepass")) // BYTES_PER_TOKEN + 1


def min_tokens(text: str) -> int:
    """A lower bound on the token count (see ``MAX_BYTES_PER_TOKEN``), EOS included."""
    return len(text.encode("utf-8", "surrogatepass")) // MAX_BYTES_PER_TOKEN + 1


@dataclass(frozen=True)
class Sleep:
    """A flow step: wait this long (a retry's backoff), then resume the flow."""

    seconds: float


@dataclass(frozen=True)
class Parallel:
    """A flow step: run these sub-flows, at most ``concurrency`` at a time, then resume."""

    flows: list[Generator[Request | Sleep | Parallel, Any, None]]


Step = Request | Sleep | Parallel
_T = TypeVar("_T")
#: a sans-IO flow: yields steps, receives their outcomes, returns its result
Flow = Generator[Step, Any, _T]


# -- the I/O-free core -----------------------------------------------------------------------


class BaseClient:
    """Configuration, request building and reply parsing shared by both clients (no I/O).

    Args:
        url: server URL; default ``QEMBED_URL``, then the server recorded by
            ``qembed serve --detach``, then ``http://127.0.0.1:30000``. A trailing ``/v1``
            (OpenAI style) is accepted. The CLI's ``--url`` and the adapters' ``url=``.
        base_url: the same, spelt as the openai SDK spells it (give one of the two).
        api_key: sent as ``Authorization: Bearer``; default ``QEMBED_API_KEY``, then the
            variable named by the recorded server.
        model: model name to send; default ``QEMBED_MODEL``, then the server's own.
        timeout: seconds one request may take in total (every byte of the answer), also the
            per-read limit; or an ``httpx.Timeout`` (its ``read`` is then the total too).
            Default: connect 5 s, read and total 300 s (32k-token inputs are slow on a busy
            server).
        max_retries: retries on connection errors, deadlines, 408/429/500/502/503/504 (never on
            400/401/404).
        backoff: first retry delay in seconds (doubles, with jitter; ``Retry-After`` wins, up
            to 60 s: a longer one is capped and logged as a warning).
        retry_timeout: seconds after a request's first attempt when no further retry starts
            (default 120); ``None``: only ``max_retries`` limits them.
        expect_unit: the server L2-normalises (SGLang does for Qwen3-Embedding), so a reply
            vector whose norm is not 1 within 1 % is refused (:class:`~qembed.errors.BadReply`).
        dimensions_fallback: when the server refuses ``dimensions`` or truncates wrongly,
            truncate and renormalise here (default). ``False`` (``qembed verify``, which judges
            the server's own truncation): a refusal raises
            :class:`~qembed.errors.DimensionsRefused`, and replies are kept as the server sent
            them (any width, any norm).
        concurrency: requests in flight for one call.
        batch_size: texts per request.
        batch_tokens: estimated tokens per request (see :func:`estimate_tokens`).
        on_error: ``"raise"`` (default) or ``"skip"`` inputs the server would reject
            (blank, too long); skipped ones are listed in ``Embeddings.failures``.
        transport: an httpx transport (e.g. ``httpx.MockTransport(handler)``) for tests.
        headers: extra HTTP headers.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str | None = None,
        timeout: float | httpx.Timeout | UseClientDefault | None = USE_CLIENT_DEFAULT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
        retry_timeout: float | None = DEFAULT_RETRY_TIMEOUT,
        expect_unit: bool = True,
        dimensions_fallback: bool = True,
        concurrency: int = DEFAULT_CONCURRENCY,
        batch_size: int = DEFAULT_BATCH_SIZE,
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
        on_error: OnError = "raise",
        transport: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        from qembed.errors import ConfigError

        # `url=` as the CLI (`--url`) and the adapters say it; `base_url=` as the openai SDK does
        if url is not None and base_url is not None:
            raise ConfigError("pass the server's address once: `url=` or `base_url=` (the same thing), not both")
        base_url = url if url is not None else base_url
        record = None
        if base_url is None and qenv.URL.get() is None:
            record = _recorded_server()
        url = base_url or qenv.URL.get() or (record.url if record else None) or qenv.DEFAULT_URL
        self.base_url = _base_url(url)
        from qembed.net import clean_api_key

        # the source is named in an error about the key, never the key itself
        env_name = f"`{qenv.API_KEY.name}`"
        key: str | None
        if api_key:  # the CLI's `--api-key` option reads the variable too: name it when it came from there
            key, source = api_key, env_name if api_key == os.environ.get(qenv.API_KEY.name) else "`api_key` (`--api-key`)"
        else:
            key, source = qenv.API_KEY.get(), env_name
        if key is None and record is not None:
            key_env = getattr(record, "api_key_env", None)
            key, source = (os.environ.get(key_env) if key_env else None), f"`{key_env}`"
        self.api_key = clean_api_key(key, source=source)
        self.model = model or qenv.MODEL.get()
        self.timeout = timeout
        if max_retries < 0 or concurrency < 1 or batch_size < 1 or batch_tokens < 1:
            raise ConfigError("`max_retries` must be >= 0 and `concurrency`, `batch_size`, `batch_tokens` >= 1")
        if isinstance(timeout, int | float) and not isinstance(timeout, bool) and not timeout > 0:
            raise ConfigError(f"`timeout` must be a number of seconds > 0, got {timeout}")
        if retry_timeout is not None and not retry_timeout >= 0:
            raise ConfigError(f"`retry_timeout` must be >= 0 seconds or None, got {retry_timeout}")
        self.retry_timeout = retry_timeout
        self.expect_unit = expect_unit
        self.dimensions_fallback = dimensions_fallback
        if on_error not in ("raise", "skip"):
            raise ConfigError(f"`on_error` must be `raise` or `skip`, got `{on_error}`")
        self.max_retries = max_retries
        self.backoff = backoff
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.batch_tokens = batch_tokens
        self.on_error: OnError = on_error
        self._transport = transport
        self._extra_headers = dict(headers or {})
        # learned from the server
        self._models_fetched = False
        self._server_model: str | None = None
        self._max_model_len: int | None = None
        self._full_dim: int | None = None
        self._supports_dimensions: bool | None = None
        self._encoding = "base64"
        self._state_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    # -- what every I/O backend is given -------------------------------------------------

    def _timeouts(self) -> Timeouts:
        """Connect, per-read and total seconds for every I/O backend."""
        t = self.timeout
        if isinstance(t, UseClientDefault):
            return Timeouts(DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT, DEFAULT_READ_TIMEOUT)
        if t is None:  # no limit, as httpx takes `timeout=None`
            return Timeouts(None, None, None)
        if isinstance(t, int | float):
            return Timeouts(min(DEFAULT_CONNECT_TIMEOUT, float(t)), float(t), float(t))
        # an httpx.Timeout: its read limit is the total deadline too
        return Timeouts(t.connect, t.read, t.read)

    def _headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json", "Accept": "application/json",
             "User-Agent": f"qembed/{__version__}"}
        h.update(_auth_headers(self.api_key))
        h.update(self._extra_headers)
        return h

    def _httpx_timeout(self) -> httpx.Timeout | None:
        """An ``httpx.Timeout`` given as ``timeout=``, for an httpx backend to use as it is (its
        write and pool settings too); ``None`` when ``timeout`` is seconds or the default."""
        t = self.timeout
        return None if t is None or isinstance(t, UseClientDefault | int | float) else t

    # -- text preparation ------------------------------------------------------------------

    @staticmethod
    def _as_list(texts: str | Iterable[str]) -> list[str]:
        items = [texts] if isinstance(texts, str) else list(texts)
        for i, t in enumerate(items):
            if not isinstance(t, str):
                raise InputError(
                    f"input {i} is a {type(t).__name__}, not a string",
                    index=i,
                    hint="send text; token ids skip the tokenizer's EOS (151643) and give wrong vectors",
                )
        return items

    def _new_job(self, raw: list[str], formatted: list[str], dimensions: int | UseClientDefault | None,
                 on_error: OnError | UseClientDefault) -> Job:
        dims = None if isinstance(dimensions, UseClientDefault) else dimensions
        mode: OnError = self.on_error if isinstance(on_error, UseClientDefault) else on_error
        if mode not in ("raise", "skip"):
            raise InputError(f"`on_error` must be `raise` or `skip`, got `{mode}`")
        if dims is not None:
            self._precheck_dimensions(dims)
        job = Job(texts=formatted, dimensions=dims, on_error=mode)
        job.check_texts(raw)
        return job

    def _known_max_dimensions(self) -> int | None:
        """The full vector size, when learned or known from the model name (qembed.models)."""
        if self._full_dim is not None:
            return self._full_dim
        from qembed.models import known_shape

        for name in (self.model, self._server_model):
            shape = known_shape(name) if name else None
            if shape is not None:
                return shape.hidden_size
        return None

    def _precheck_dimensions(self, dims: int) -> None:
        """Refuse ``dimensions`` out of range before any connection, as far as it is known."""
        check_dimensions(dims, self._known_max_dimensions())

    def _check_lengths(self, job: Job) -> None:
        limit = self._max_model_len
        if limit is None:
            return
        for i, text in enumerate(job.texts):
            if i in job.failures:
                continue
            n = min_tokens(text)
            if n >= limit:
                job.fail(i, f"the text is at least {n} tokens, longer than the model's context length ({limit} tokens)",
                         hint="split the text into shorter passages")

    def _plan(self, job: Job) -> list[list[int]]:
        """Group the valid inputs into requests by item count and estimated tokens."""
        batches: list[list[int]] = []
        cur: list[int] = []
        cur_tokens = 0
        for i, text in enumerate(job.texts):
            if i in job.failures:
                continue
            est = estimate_tokens(text)
            if cur and (len(cur) >= self.batch_size or cur_tokens + est > self.batch_tokens):
                batches.append(cur)
                cur, cur_tokens = [], 0
            cur.append(i)
            cur_tokens += est
        if cur:
            batches.append(cur)
        return batches

    def _needs_learning(self, job: Job) -> bool:
        """The first request runs alone while we still learn the size or Matryoshka support."""
        if self._full_dim is None:
            return True
        return job.dimensions is not None and self._supports_dimensions is None and not self._as_sent(job)

    def _as_sent(self, job: Job) -> bool:
        """The server's own ``dimensions`` replies are kept as sent (``dimensions_fallback=False``)."""
        return job.dimensions is not None and not self.dimensions_fallback

    def _out_dim(self, job: Job) -> int | None:
        if self._as_sent(job):
            return job.width
        return job.dimensions if job.dimensions is not None else self._full_dim

    def _allocate(self, job: Job) -> None:
        allocate(job, self._out_dim(job))

    # -- requests --------------------------------------------------------------------------

    def _models_request(self) -> Request:
        return Request("GET", "/v1/models")

    def _parse_models(self, resp: Response) -> None:
        self._models_fetched = True
        if resp.status != 200:
            if resp.status == 401:
                raise server_error(resp, self.base_url)
            logger.debug("GET /v1/models answered %s; no context-length check", resp.status)
            return
        self._server_model, self._max_model_len = parse_models(resp.content, source=f"{self.base_url}/v1/models")

    def _embed_request(self, texts: list[str], dimensions: int | None) -> Request:
        import orjson

        body: dict[str, Any] = {"input": texts, "encoding_format": self._encoding}
        model = self.model or self._server_model
        if model:
            body["model"] = model
        if dimensions is not None:
            body["dimensions"] = dimensions
        return Request("POST", "/v1/embeddings", orjson.dumps(body))

    # -- replies ---------------------------------------------------------------------------

    def _parse_embeddings(self, job: Job, rows: list[int], resp: Response, *, client_truncate: bool) -> str | None:
        """Check the reply (:func:`qembed.vectors.parse_reply`), then write its rows.

        A reply to a request with ``dimensions`` is judged first
        (:func:`qembed.vectors.truncation_fault`): when it is a wrong truncation, nothing is
        written and the fault is returned (the caller falls back); ``None`` when written.
        """
        server_dims = job.dimensions is not None and not client_truncate
        judged = server_dims  # width and norm judged here (fallback) or not at all (as sent)
        with self._state_lock:
            width = None if judged else self._full_dim
        source = f"{self.base_url}/v1/embeddings"
        reply: Any = (parse_reply_rows if job.plain else parse_reply)(
            resp.content, len(rows), width=width, source=source, expect_unit=self.expect_unit and not judged,
            status=resp.status)
        vectors = reply.rows if job.plain else reply.vectors
        got = len(vectors[0]) if job.plain else vectors.shape[1]
        if server_dims and not self._as_sent(job):
            assert job.dimensions is not None
            fault = truncation_fault(vectors, job.dimensions)
            if fault is not None:
                return fault
        with self._state_lock:
            if self._full_dim is None and not server_dims:
                self._full_dim = got
            if server_dims and not self._as_sent(job):
                self._supports_dimensions = True
            if self._as_sent(job):
                if job.width is None:
                    job.width = got
                elif job.width != got:
                    raise BadReply(f"the reply from {source} is invalid: vectors of {got} and {job.width} values "
                                   f"for `dimensions: {job.dimensions}`", status=resp.status)
            self._allocate(job)
        if client_truncate:
            assert job.dimensions is not None
            if job.dimensions > got:
                check_dimensions(job.dimensions, got)
            if job.plain:  # the one numpy step of a plain job: the same renormalisation as always
                import numpy as np

                vectors = truncate(np.array(vectors, dtype=np.float32), job.dimensions).tolist()
            else:
                vectors = truncate(vectors, job.dimensions)
        if job.plain:
            for i, row in zip(rows, vectors, strict=True):
                job.out[i], job.ok[i] = row, True
        else:
            job.out[rows] = vectors
            job.ok[rows] = True
        with job.lock:
            job.tokens += reply.prompt_tokens
            job.model = job.model or reply.model
        return None

    def _retryable(self, status: int) -> bool:
        return status in _RETRY_STATUSES

    def _retry_delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                asked = float(retry_after)
            except ValueError:
                asked = math.nan  # an HTTP date: fall back to our own backoff
            if math.isfinite(asked):
                if asked > MAX_RETRY_AFTER:
                    logger.warning("%s asked to wait %g s (Retry-After); waiting %g s", self.base_url, asked,
                                   MAX_RETRY_AFTER)
                return max(0.0, min(asked, MAX_RETRY_AFTER))
        d = min(MAX_BACKOFF, self.backoff * (2**attempt))
        return float(d / 2 + random.uniform(0, d / 2))

    def _retry_allowed(self, start: float, delay: float) -> bool:
        """Whether a retry after ``delay`` s still starts within ``retry_timeout`` of ``start``."""
        if self.retry_timeout is None or time.monotonic() + delay - start <= self.retry_timeout:
            return True
        logger.warning("%s: giving up retrying after %.0f s (`retry_timeout` %g s)", self.base_url,
                       time.monotonic() - start, self.retry_timeout)
        return False

    def _transport_retries(self, exc: BaseException) -> int:
        """Retries for a transport error: a refused connection to a server that has never
        answered this client fails fast (one retry), so `qembed embed` with no server says so
        at once; once it has answered, a refusal (a restart) gets the full retries."""
        if is_connect_error(exc) and not self._models_fetched:
            return min(1, self.max_retries)
        return self.max_retries

    # -- the sans-IO flows (shared by both clients) -----------------------------------------
    #
    # Every decision lives here, once: what to send, retries and their waits, the prelude
    # (models, probe, dimension check, plan), the Matryoshka and base64 fallbacks, isolating a
    # bad input by halving. A flow is a generator: it yields a step and receives its outcome:
    #   Request  -> the Response (after no retries: the flow retries), or a TransportFailure
    #               thrown into it;
    #   Sleep    -> None, after that many seconds;
    #   Parallel -> None, once all its sub-flows ran (at most `concurrency` at a time).
    # `Client` and `AsyncClient` only drive flows (`_drive`, `_drive_async`): they move bytes.

    def _exchange(self, req: Request) -> Flow[Response]:
        """One request with retries: connection errors, deadlines, 408/429/5xx."""
        attempt, start = 0, time.monotonic()
        while True:
            try:
                resp: Response = yield req
            except TransportFailure as exc:
                delay = self._retry_delay(attempt, None)
                if attempt >= self._transport_retries(exc) or not self._retry_allowed(start, delay):
                    raise unreachable(exc, self.base_url, total=self._timeouts().total, api_key=self.api_key) from exc.__cause__
                logger.info("%s %s: %s; retry %d in %.2f s", req.method, req.path, exc, attempt + 1, delay)
            else:
                if not self._retryable(resp.status) or attempt >= self.max_retries:
                    return resp
                delay = self._retry_delay(attempt, resp.headers.get("retry-after"))
                if not self._retry_allowed(start, delay):
                    return resp
                logger.info("%s %s: HTTP %d; retry %d in %.2f s", req.method, req.path, resp.status, attempt + 1,
                            delay)
            yield Sleep(delay)
            attempt += 1

    def _models_flow(self) -> Flow[None]:
        if not self._models_fetched:
            self._parse_models((yield from self._exchange(self._models_request())))

    def _probe_flow(self) -> Flow[None]:
        """One embedding to learn the full vector size."""
        probe = Job(texts=["qembed dimension probe"], dimensions=None, on_error="raise")
        yield from self._batch_flow(probe, [0])

    def _info_flow(self) -> Flow[ServerInfo]:
        yield from self._models_flow()
        if self._full_dim is None:
            yield from self._probe_flow()
        return self._info()

    def _embed_flow(self, raw: list[str], formatted: list[str], dimensions: int | UseClientDefault | None,
                    on_error: OnError | UseClientDefault, *, plain: bool = False) -> Flow[Any]:
        """One embed() call: check the inputs, learn what is needed, plan, send, assemble
        (:class:`Embeddings`; with ``plain``, :class:`EmbeddingLists`)."""
        job = self._new_job(raw, formatted, dimensions, on_error)
        job.plain = plain
        if not job.texts:
            return (finish_lists if plain else finish)(job, self._out_dim(job))
        yield from self._models_flow()
        if job.dimensions is not None:
            self._precheck_dimensions(job.dimensions)  # now with the served model's name
            if self._full_dim is None:
                yield from self._probe_flow()
            assert self._full_dim is not None
            check_dimensions(job.dimensions, self._full_dim)
            if job.dimensions == self._full_dim:
                job.dimensions = None
        self._check_lengths(job)
        self._allocate(job)
        batches = self._plan(job)
        while batches and self._needs_learning(job):
            yield from self._batch_flow(job, batches.pop(0))
        if len(batches) == 1:
            yield from self._batch_flow(job, batches[0])
        elif batches:
            yield Parallel([self._batch_flow(job, b) for b in batches])
        return (finish_lists if plain else finish)(job, self._out_dim(job))

    def _batch_flow(self, job: Job, rows: list[int]) -> Flow[None]:
        """Send ``rows``; on a whole-request failure caused by one input, isolate it by halving."""
        stack = [rows]
        while stack:
            part = stack.pop()
            server_dims = job.dimensions if (job.dimensions is not None and self._supports_dimensions is not False) else None
            client_truncate = job.dimensions is not None and server_dims is None
            texts = [job.texts[i] for i in part]
            resp = yield from self._exchange(self._embed_request(texts, server_dims))
            if resp.status == 200:
                fault = self._parse_embeddings(job, part, resp, client_truncate=client_truncate)
                if fault is not None:  # a server that truncates wrongly: the same fallback as a refusal
                    self._truncate_here(f"the server truncates to `dimensions` wrongly: {fault}")
                    stack.append(part)
                continue
            msg, body = error_message(resp)
            if server_dims is not None and self._may_refuse_dimensions(resp.status, msg):
                if not self.dimensions_fallback:
                    raise DimensionsRefused(f"the server refused `dimensions` (HTTP {resp.status}: {msg})",
                                            status=resp.status, body=body)
                # a refusal by its meaning: the same request without `dimensions` succeeds
                without = yield from self._exchange(self._embed_request(texts, None))
                if without.status == 200:
                    self._truncate_here(f"the server refused `dimensions` (HTTP {resp.status}: {msg})")
                    self._parse_embeddings(job, part, without, client_truncate=True)
                    continue
                resp = without  # it fails without `dimensions` too: judge that answer
                msg, body = error_message(resp)
            if resp.status == 400 and self._encoding == "base64" and "encoding_format" in msg:
                logger.info("server cannot send base64; asking for floats")
                self._encoding = "float"
                stack.append(part)
                continue
            if resp.status == 400 and _TOO_LONG.search(msg):
                if len(part) == 1:
                    job.fail(part[0], msg.rstrip("."),
                             hint="split the text into shorter passages")
                    continue
                mid = len(part) // 2
                stack.extend([part[mid:], part[:mid]])
                continue
            m = _AT_INDEX.search(msg)
            if resp.status == 400 and m and int(m.group(1)) < len(part):
                bad = part[int(m.group(1))]
                job.fail(bad, "the text is empty or whitespace only")
                rest = [i for i in part if i != bad]
                if rest:
                    stack.append(rest)
                continue
            raise server_error(resp, self.base_url)

    @staticmethod
    def _may_refuse_dimensions(status: int, msg: str) -> bool:
        """A 4xx to a request with ``dimensions`` that may be a refusal of that field (confirmed
        when the same request without it succeeds); not the key, overload, or an input's fault."""
        return (400 <= status < 500 and status not in _NOT_A_REFUSAL and not _TOO_LONG.search(msg)
                and not _AT_INDEX.search(msg) and "encoding_format" not in msg)

    def _truncate_here(self, why: str) -> None:
        """From now on this client sends no ``dimensions`` to this server and truncates and
        renormalises itself; says so once (a warning on qembed's logger)."""
        with self._state_lock:
            first = self._supports_dimensions is not False
            self._supports_dimensions = False
        if first:
            logger.warning("%s: %s; this client truncates and renormalises the vectors itself from now on "
                           "(the same vectors as a server that does it right)", self.base_url, why)

    # -- formatting for the three entry points ---------------------------------------------

    def _format(self, texts: str | Iterable[str], *, kind: Literal["raw", "query", "document"],
                task: str | None = None, instruction: str | None = None,
                prefix: str | None = None) -> tuple[list[str], list[str]]:
        raw = self._as_list(texts)
        if prefix is not None:
            return raw, [apply_prefix(t, prefix) for t in raw]
        if kind == "query":
            return raw, [format_query(t, task=task, instruction=instruction) for t in raw]
        if kind == "document":
            return raw, [format_document(t, task=task) for t in raw]
        inst = resolve_instruction(None, instruction)
        return raw, [t if inst is None else format_query(t, task=None, instruction=inst) for t in raw]

    def _info(self) -> ServerInfo:
        return ServerInfo(url=self.base_url, model=self.model or self._server_model,
                          max_model_len=self._max_model_len, dimensions=self._full_dim,
                          supports_dimensions=self._supports_dimensions)


def kind_args(kind: Kind, task: str | None, instruction: str | None, prefix: str | None) -> dict[str, Any]:
    """How ``kind`` formats texts: the one query / document / raw dispatch, used by
    ``embed_texts`` and ``embed_lists`` (and so by ``qembed embed``, bulk jobs and the
    framework adapters). A query with neither ``task`` nor ``instruction`` gets
    :data:`DEFAULT_QUERY_TASK`; a document takes no ``instruction`` or ``prefix``; ``raw`` texts
    are sent as given, or with ``instruction`` in the query format, or after ``prefix``.

    Returns:
        the keyword arguments of ``BaseClient._format``.

    Raises:
        ConfigError: an unknown ``kind``, or a document given an ``instruction`` or ``prefix``.
    """
    from qembed.errors import ConfigError

    if kind not in ("raw", "query", "document"):
        raise ConfigError(f"`kind` must be `raw`, `query` or `document`, got `{kind}`")
    if kind == "query":
        return {"kind": kind, "task": DEFAULT_QUERY_TASK if task is None and instruction is None else task,
                "instruction": instruction}
    if kind == "document":
        if instruction is not None or prefix is not None:
            raise ConfigError("documents take no `instruction` or `prefix`; use `kind=\"query\"` or `\"raw\"`")
        return {"kind": kind, "task": task}
    return {"kind": kind, "instruction": instruction, "prefix": prefix}


def _recorded_server() -> Any:
    """The server recorded by ``qembed serve --detach``, if that module and record exist."""
    try:
        from qembed.host import state

        return state.default_server()
    except (ImportError, AttributeError):
        return None
    except Exception as exc:  # a broken state dir must not stop a client with an explicit URL
        logger.debug("could not read the recorded server: %s", exc)
        return None
