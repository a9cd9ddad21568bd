"""What the client returns: :class:`Embeddings` (a float32 numpy array with the server's
usage), :class:`EmbeddingLists` (the same as plain lists), :class:`Failure`, :class:`ServerInfo`;
:class:`Job`, one call's result while it is built, with the functions that finish it; and the
errors that a failed request means (:func:`server_error`, :func:`unreachable`).

numpy is imported inside functions: ``Embeddings`` is built on first use.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from qembed.errors import InputError, ServerError, ServerUnreachable
from qembed.transport import Response, TransportFailure

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["EmbeddingLists", "Embeddings", "Failure", "ServerInfo"]

OnError = Literal["raise", "skip"]

@dataclass(frozen=True)
class Failure:
    """An input that was skipped (``on_error="skip"``): its position and why."""

    index: int
    reason: str


@dataclass(frozen=True)
class EmbeddingLists:
    """What :class:`Embeddings` holds, as plain Python lists (no numpy): see ``embed_lists``.

    ``vectors[k]`` is the row of input ``indices[k]`` (``indices`` is ``None`` when no input
    was skipped); each value is the float32 the server sent, as a Python float, exactly as
    ``Embeddings.tolist()`` gives it.
    """

    vectors: list[list[float]]
    dimensions: int  #: values per vector (0 when nothing was embedded and the size is unknown)
    prompt_tokens: int
    model: str | None
    indices: list[int] | None
    failures: list[Failure]


@dataclass(frozen=True)
class ServerInfo:
    """What the client learned about the server."""

    url: str
    model: str | None  #: the served model name (``/v1/models``)
    max_model_len: int | None  #: context length; inputs must be shorter
    dimensions: int | None  #: full vector size (learned from one embedding)
    supports_dimensions: bool | None  #: ``None`` until a ``dimensions`` request told us


_EMBEDDINGS_CLASS: type | None = None


def _embeddings_class() -> type:
    """``Embeddings`` subclasses numpy's ndarray, so it is built on first use (lazy numpy)."""
    global _EMBEDDINGS_CLASS
    if _EMBEDDINGS_CLASS is not None:
        return _EMBEDDINGS_CLASS
    import numpy as np

    class Embeddings(np.ndarray):
        """A float32 ``(n, d)`` array of unit rows, in input order, plus what the server said.

        Attributes:
            prompt_tokens: tokens the server counted (EOS included), from ``usage``.
            model: the model the server reported.
            indices: input position of each row when some inputs were skipped, else ``None``.
            failures: the skipped inputs (``on_error="skip"``), as :class:`Failure`.
        """

        prompt_tokens: int
        model: str | None
        indices: npt.NDArray[np.intp] | None
        failures: list[Failure]

        def __array_finalize__(self, obj: Any) -> None:
            # The metadata describes the whole result; a slice or a derived array must not
            # carry row indices that no longer match its rows.
            whole = obj is not None and getattr(obj, "shape", None) == self.shape
            self.prompt_tokens = getattr(obj, "prompt_tokens", 0) if whole else 0
            self.model = getattr(obj, "model", None)
            self.indices = getattr(obj, "indices", None) if whole else None
            self.failures = getattr(obj, "failures", []) if whole else []

        def __array_wrap__(self, array: Any, context: Any = None, return_scalar: bool = False) -> Any:
            # ufunc / matmul results (norms, similarity matrices) are plain arrays
            result = super().__array_wrap__(array, context, return_scalar)
            if isinstance(result, np.ndarray) and result.shape != self.shape:
                return result.view(np.ndarray)
            return result

        @property
        def usage(self) -> dict[str, int]:
            return {"prompt_tokens": self.prompt_tokens, "total_tokens": self.prompt_tokens}

    Embeddings.__module__ = __name__
    Embeddings.__qualname__ = "Embeddings"
    _EMBEDDINGS_CLASS = Embeddings
    return Embeddings


def __getattr__(name: str) -> Any:
    if name == "Embeddings":
        return _embeddings_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
    # What type checkers see; at run time the class is built by _embeddings_class().
    class Embeddings(np.ndarray[Any, np.dtype[np.float32]]):
        prompt_tokens: int
        model: str | None
        indices: npt.NDArray[np.intp] | None
        failures: list[Failure]

        @property
        def usage(self) -> dict[str, int]: ...


@dataclass
class Job:
    """One embed() call: formatted texts, the output array and the bookkeeping (the result being built)."""

    texts: list[str]
    dimensions: int | None
    on_error: OnError
    plain: bool = False  #: rows as Python lists, no numpy (``embed_lists``)
    width: int | None = None  #: the server's own width for ``dimensions`` (``dimensions_fallback=False``)
    out: Any = None  # np.ndarray (n, d), allocated once d is known; plain: list of rows
    ok: Any = None  # np.ndarray[bool] (n,); plain: list[bool]
    tokens: int = 0
    model: str | None = None
    failures: dict[int, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, index: int, reason: str, *, hint: str | None = None) -> None:
        if self.on_error == "raise":
            raise InputError(f"input {index}: {reason}", index=index, hint=hint)
        with self.lock:
            self.failures[index] = reason

    def check_texts(self, raw: list[str]) -> None:
        """Fail the inputs the server would reject: blank (``raw``, as given) or not valid
        UTF-8 (the formatted ``texts``)."""
        for i, text in enumerate(raw):
            if not text.strip():
                self.fail(i, "the text is empty or whitespace only (the server rejects the whole request)",
                          hint="remove blank inputs, or pass `on_error=\"skip\"`")  # qembed embed says `--on-error skip`
        try:  # one pass over all texts; the per-text search runs only when one is bad
            "".join(self.texts).encode("utf-8")
        except UnicodeEncodeError:
            for i, text in enumerate(self.texts):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as exc:
                    self.fail(i, f"the text has a lone surrogate ({text[exc.start]!r} at character {exc.start}), "
                                 "which is not valid UTF-8",
                              hint="decode the source with `errors=\"replace\"`, or pass `on_error=\"skip\"`")


def allocate(job: Job, dim: int | None) -> None:
    """Make the job's output once the vector size ``dim`` is known (a plain job: at once)."""
    if job.plain:
        if job.out is None:
            job.out, job.ok = [None] * len(job.texts), [False] * len(job.texts)
        return
    import numpy as np

    if job.out is None and dim is not None:
        job.out = np.empty((len(job.texts), dim), dtype=np.float32)
        job.ok = np.zeros(len(job.texts), dtype=bool)


def finish_lists(job: Job, dim: int | None) -> EmbeddingLists:
    """The job's rows as :class:`EmbeddingLists` (``dim``: the vector size, when known)."""
    failures = [Failure(i, r) for i, r in sorted(job.failures.items())]
    ok = [bool(job.ok[i]) and i not in job.failures for i in range(len(job.texts))] if job.ok else []
    keep = [i for i, k in enumerate(ok) if k]
    return EmbeddingLists(vectors=[job.out[i] for i in keep], dimensions=dim or 0,
                          prompt_tokens=job.tokens, model=job.model,
                          indices=None if len(keep) == len(job.texts) else keep, failures=failures)


def finish(job: Job, dim: int | None) -> Embeddings:
    """The job's rows as :class:`Embeddings` (``dim``: the vector size, when known)."""
    import numpy as np

    cls = _embeddings_class()
    if job.out is None:  # nothing was sent (empty input, or everything skipped)
        job.out = np.empty((len(job.texts), dim or 0), dtype=np.float32)
        job.ok = np.zeros(len(job.texts), dtype=bool)
    if job.failures:
        job.ok[list(job.failures)] = False
    arr: Embeddings
    if bool(job.ok.all()):
        arr = job.out.view(cls)
        arr.indices = None
    else:
        keep = np.flatnonzero(job.ok)
        arr = job.out[keep].view(cls)
        arr.indices = keep
    arr.prompt_tokens = job.tokens
    arr.model = job.model
    arr.failures = [Failure(i, r) for i, r in sorted(job.failures.items())]
    return arr


# -- what a failed request means -------------------------------------------------------------


def error_message(resp: Response) -> tuple[str, Any]:
    """The message from SGLang's flat body, OpenAI's nested one, or a 401 string; and the body."""
    import orjson

    try:
        body = orjson.loads(resp.content) if resp.content else None
    except orjson.JSONDecodeError:
        text = resp.content.decode("utf-8", "replace").strip()
        if text.startswith("<"):  # an HTML error page: a proxy or another web server
            m = re.search(r"<title>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
            title = " ".join(m.group(1).split())[:100] if m else "no title"
            return f"an HTML page ({title}), not SGLang's JSON: a proxy or another web server?", text[:500]
        return text[:500] or f"HTTP {resp.status}", text
    msg: Any = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            msg = err.get("message")
        elif isinstance(err, str):
            msg = err
        if msg is None:
            msg = body.get("message") or body.get("detail")
    return (str(msg) if msg else f"HTTP {resp.status}"), body


def server_error(resp: Response, base_url: str) -> ServerError:
    """The error for a final non-200 answer from ``base_url``, with a hint for its status."""
    msg, body = error_message(resp)
    status = resp.status
    hint: str | None = None
    if status in (401, 403):
        hint = "set `QEMBED_API_KEY` (or `--api-key`) to the key the server was started with"
    elif status == 404:
        hint = f"is {base_url} an OpenAI-compatible embedding server (`/v1/embeddings`)? try `qembed doctor`"
    elif status == 503:
        hint = "the server is overloaded or starting; lower `concurrency`, or raise `max_queued_requests` in the profile"
    elif status == 400 and "--is-embedding" in msg:
        hint = "restart the server with `--is-embedding` (`qembed serve` adds it)"
    elif status >= 500:
        hint = "see the server log (`qembed logs`)"
    return ServerError(f"the server answered {status}: {msg}", status=status, body=body, hint=hint)


def is_connect_error(exc: BaseException) -> bool:
    """Nothing listening / could not connect (as opposed to a connection lost mid-way)."""
    if isinstance(exc, TransportFailure):
        return exc.connect
    import httpx

    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)


def unreachable(exc: BaseException, base_url: str, *, total: float | None, api_key: str | None) -> ServerUnreachable:
    """The error for a request to ``base_url`` that got no answer, after its retries
    (``total``: the request deadline; ``api_key`` is never shown)."""
    if isinstance(exc, TransportFailure) and exc.deadline:
        return ServerUnreachable(
            f"{base_url} sent no complete answer within the {total:g} s request deadline", connect=False,
            hint="the server is stuck or overloaded (`qembed logs`); raise `timeout=` (`--timeout`) for "
            "very long inputs",
        )
    if is_connect_error(exc):
        return ServerUnreachable(
            f"no server answers at {base_url}",
            hint="start one with `qembed serve`, or set `QEMBED_URL` (`--url`) to where it runs",
        )
    cause = exc.__cause__ if isinstance(exc, TransportFailure) and exc.__cause__ else exc
    from qembed.redact import redact

    # a library's own text may quote the request's headers: never the key (issue 19)
    return ServerUnreachable(
        redact(f"the connection to {base_url} failed: {type(cause).__name__}: {cause}",
               [api_key] if api_key else []), connect=False,
        hint="check the server (`qembed ps`, `qembed logs`) and try again",
    )
