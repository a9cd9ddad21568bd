"""The embedding client's I/O: :class:`Client` and :class:`AsyncClient` drive the sans-IO
flows of :class:`qembed.client.flow.BaseClient` (which makes every decision) over a transport
(:mod:`qembed.transport`), running requests concurrently where a flow asks for it. They return
:mod:`qembed.client.results` types.

Example:
    >>> import qembed
    >>> with qembed.Client() as client:                       # doctest: +SKIP
    ...     q = client.embed_queries("what is MRL?")
    ...     d = client.embed_documents(["MRL is Matryoshka Representation Learning."])
    ...     print(float(q @ d.T))
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from qembed.client.flow import (
    DEFAULT_BACKOFF,
    DEFAULT_BATCH_SIZE,
    DEFAULT_BATCH_TOKENS,
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_RETRIES,
    DEFAULT_RETRY_TIMEOUT,
    USE_CLIENT_DEFAULT,
    BaseClient,
    Flow,
    Kind,
    Sleep,
    UseClientDefault,
    kind_args,
)
from qembed.client.results import EmbeddingLists, OnError, ServerInfo
from qembed.errors import QembedError
from qembed.instructions import DEFAULT_QUERY_TASK
from qembed.transport import (
    AiohttpAsync,
    AsyncTransport,
    HttpxAsync,
    HttpxSync,
    Request,
    Response,
    StdlibSync,
    SyncTransport,
    TransportFailure,
    choose_http,
)

if TYPE_CHECKING:
    import httpx

    from qembed.client.results import Embeddings

logger = logging.getLogger(__name__)

__all__ = ["AsyncClient", "Client"]

#: how often a call waiting on the loop thread checks that the thread still runs (seconds)
LOOP_CHECK_S = 0.5

_F = TypeVar("_F", bound=Callable[..., Any])
_T = TypeVar("_T")

_DOC_ARGS = """
        Args:
            texts: one string or a sequence of strings.
            dimensions: Matryoshka size, 32 .. the model's full size (default: full).
            on_error: ``"raise"`` or ``"skip"`` (default: the client's).

        Returns:
            :class:`Embeddings`: float32 ``(n, d)``, unit rows, input order; ``.prompt_tokens``.

        Raises:
            InputError: a blank or too long input (``.index``), or bad ``dimensions``.
            ServerUnreachable: no server answers at ``base_url``.
            ServerError: the server answered with an error.
"""


def _with_args_doc(fn: _F) -> _F:
    fn.__doc__ = (fn.__doc__ or "") + "\n" + _DOC_ARGS
    return fn


# -- drivers: move the bytes each flow step asks for ---------------------------------------


class _Limiter:
    """One limit on requests in flight per client (and event loop), shared by all its calls."""

    def __init__(self, concurrency: int) -> None:
        self._concurrency = concurrency
        self._sem: Any = None
        self._loop: Any = None

    def semaphore(self) -> Any:
        import asyncio

        loop = asyncio.get_running_loop()
        if self._sem is None or self._loop is not loop:
            self._sem, self._loop = asyncio.Semaphore(self._concurrency), loop
        return self._sem


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first real error in a (nested) exception group; qembed's own errors first."""
    import asyncio

    flat: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            stack[:0] = list(exc.exceptions)
        elif not isinstance(exc, asyncio.CancelledError):
            flat.append(exc)
    from qembed.errors import QembedError

    for exc in flat:
        if isinstance(exc, QembedError):
            return exc
    return flat[0] if flat else group


async def _drive_async(limiter: _Limiter, io: AsyncTransport, flow: Flow[_T]) -> _T:
    """Run a flow over an async transport; a ``Parallel`` step runs its sub-flows as tasks."""
    import asyncio

    value: Any = None
    error: TransportFailure | None = None
    while True:
        try:
            step = flow.send(value) if error is None else flow.throw(error)
        except StopIteration as stop:
            result: _T = stop.value
            return result
        value, error = None, None
        if isinstance(step, Request):
            try:
                value = await io.request(step)
            except TransportFailure as exc:
                error = exc
        elif isinstance(step, Sleep):
            await asyncio.sleep(step.seconds)
        else:
            await _gather_async(limiter, io, step.flows)


async def _gather_async(limiter: _Limiter, io: AsyncTransport, flows: list[Flow[None]]) -> None:
    import asyncio

    sem = limiter.semaphore()

    async def one(f: Flow[None]) -> None:
        async with sem:
            await _drive_async(limiter, io, f)

    try:
        async with asyncio.TaskGroup() as tg:
            for f in flows:
                tg.create_task(one(f))
    except BaseExceptionGroup as group:
        # callers expect the same exceptions as from Client, not a group
        raise _first_error(group) from None


class _OnLoop:
    """A sync face for an async transport: each request runs on the client's loop thread."""

    def __init__(self, io: AsyncTransport, run: Callable[[Any], Any]) -> None:
        self._io, self._run = io, run

    def request(self, req: Request) -> Response:
        resp: Response = self._run(self._io.request(req))
        return resp

    def close(self) -> None:
        pass  # the async transport is closed with the loop


# -- sync ------------------------------------------------------------------------------------


class Client(BaseClient):
    """Synchronous client; same methods as :class:`AsyncClient`, blocking.

    ``http="auto"`` (default), with no ``transport`` and aiohttp installed: a call's single
    requests (the model lookup, a one-request job) go over the standard library's
    ``http.client``, which costs no import, and a call with several requests runs them
    concurrently over aiohttp on a private event-loop thread (2-2.5x less CPU per vector than
    httpx, docs/client.md). ``"aiohttp"``: everything over aiohttp; ``"httpx"`` and
    ``"stdlib"``: everything over that library, concurrent requests in a small thread pool.
    Whatever the transport, the same flow makes every decision and there is one copy of what
    the client learned about the server.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        base_url: str | None = None,
        http: Literal["auto", "httpx", "aiohttp", "stdlib"] = "auto",
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
        super().__init__(url, base_url=base_url, api_key=api_key, model=model, timeout=timeout,
                         max_retries=max_retries, backoff=backoff, retry_timeout=retry_timeout,
                         expect_unit=expect_unit, dimensions_fallback=dimensions_fallback,
                         concurrency=concurrency, batch_size=batch_size, batch_tokens=batch_tokens,
                         on_error=on_error, transport=transport, headers=headers)
        self._limiter = _Limiter(self.concurrency)
        self.http: str = choose_http(http, self._transport, sync=True)
        self._pool: Any = None
        self._pool_lock = threading.Lock()
        self._loop: Any = None
        self._loop_thread: threading.Thread | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._aio: AiohttpAsync | None = None
        limit = self.concurrency * 2 + 2
        self._io: SyncTransport
        if self.http == "aiohttp":
            self._aio = AiohttpAsync(base_url=self.base_url, headers=self._headers(), timeouts=self._timeouts(),
                                     limit=limit)
        if self.http == "httpx":
            self._io = HttpxSync(base_url=self.base_url, headers=self._headers(), timeouts=self._timeouts(),
                                 limit=limit, transport=self._transport, httpx_timeout=self._httpx_timeout())
        elif self.http == "stdlib" or http == "auto":
            self._io = StdlibSync(base_url=self.base_url, headers=self._headers(), timeouts=self._timeouts(),
                                  limit=limit)
        else:
            assert self._aio is not None
            self._io = _OnLoop(self._aio, self._run)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close connections, the worker threads and the event loop thread.

        A client that is never closed is closed when it is garbage-collected or at interpreter
        exit, whichever comes first, so a script may just call ``qembed.Client().embed(...)``.
        """
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._io.close()
        if self._finalizer is not None:
            self._finalizer()  # runs _stop_loop once
            self._loop = self._loop_thread = self._finalizer = None

    @staticmethod
    def _stop_loop(loop: Any, thread: threading.Thread, aio: AiohttpAsync | None) -> None:
        """Close the aiohttp session on its own loop, then stop the loop and its thread."""
        import asyncio

        try:
            if aio is not None and loop.is_running() and threading.current_thread() is not thread:
                async def close_and_settle() -> None:
                    await aio.aclose()
                    for _ in range(3):  # let the transports' connection_lost callbacks run
                        await asyncio.sleep(0)

                asyncio.run_coroutine_threadsafe(close_and_settle(), loop).result(timeout=10)
        except Exception as exc:  # closing is best effort: never raise from a finalizer
            logger.debug("closing the client's session failed: %s", exc)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if threading.current_thread() is not thread:
                thread.join(timeout=10)
                if not thread.is_alive():
                    loop.close()

    def _run(self, coro: Any) -> Any:
        """Run a coroutine on the private loop thread and wait for it (Ctrl-C cancels it)."""
        import asyncio
        import concurrent.futures

        with self._pool_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="qembed-loop", daemon=True)
                thread.start()
                self._loop, self._loop_thread = loop, thread
                # not a bound method: the finalizer must not keep the client alive
                self._finalizer = weakref.finalize(self, Client._stop_loop, loop, thread, self._aio)
            loop, loop_thread = self._loop, self._loop_thread
        closed = QembedError("the client was closed while this call was waiting for the server",
                             hint="close a Client only after its calls have returned")
        try:
            fut = asyncio.run_coroutine_threadsafe(coro, loop)
        except RuntimeError:  # the loop is already closed
            coro.close()
            raise closed from None
        try:
            while True:
                # Wait in steps: a client closed by another thread (bulk's Ctrl-C) stops the loop,
                # and this call's future would then never finish; the interpreter would hang at
                # exit joining this thread (seen once in 4 interrupted bulk jobs).
                try:
                    return fut.result(timeout=LOOP_CHECK_S)
                except concurrent.futures.TimeoutError:
                    if loop_thread is None or not loop_thread.is_alive() or loop.is_closed():
                        raise closed from None
        except BaseException:
            fut.cancel()
            raise

    # -- public ----------------------------------------------------------------------------

    @_with_args_doc
    def embed(self, texts: str | Iterable[str], *, instruction: str | None = None, prefix: str | None = None,
              dimensions: int | UseClientDefault | None = USE_CLIENT_DEFAULT,
              on_error: OnError | UseClientDefault = USE_CLIENT_DEFAULT) -> Embeddings:
        """Embed texts as given, or with ``instruction`` in the Qwen3 query format."""
        raw, formatted = self._format(texts, kind="raw", instruction=instruction, prefix=prefix)
        out: Embeddings = self._drive(self._embed_flow(raw, formatted, dimensions, on_error))
        return out

    @_with_args_doc
    def embed_queries(self, texts: str | Iterable[str], *, task: str | None = DEFAULT_QUERY_TASK,
                      instruction: str | None = None,
                      dimensions: int | UseClientDefault | None = USE_CLIENT_DEFAULT,
                      on_error: OnError | UseClientDefault = USE_CLIENT_DEFAULT) -> Embeddings:
        """Embed queries as ``Instruct: {task}\\nQuery:{text}`` (default task: retrieval)."""
        raw, formatted = self._format(texts, kind="query", task=task, instruction=instruction)
        out: Embeddings = self._drive(self._embed_flow(raw, formatted, dimensions, on_error))
        return out

    @_with_args_doc
    def embed_documents(self, texts: str | Iterable[str], *, task: str | None = None,
                        dimensions: int | UseClientDefault | None = USE_CLIENT_DEFAULT,
                        on_error: OnError | UseClientDefault = USE_CLIENT_DEFAULT) -> Embeddings:
        """Embed documents: no instruction, except for a symmetric ``task`` (sts, bitext, ...)."""
        raw, formatted = self._format(texts, kind="document", task=task)
        out: Embeddings = self._drive(self._embed_flow(raw, formatted, dimensions, on_error))
        return out

    @_with_args_doc
    def embed_texts(self, texts: str | Iterable[str], *, kind: Kind = "document", task: str | None = None,
                    instruction: str | None = None, prefix: str | None = None,
                    dimensions: int | UseClientDefault | None = USE_CLIENT_DEFAULT,
                    on_error: OnError | UseClientDefault = USE_CLIENT_DEFAULT) -> Embeddings:
        """Embed texts as ``kind`` says: ``"query"`` (as ``embed_queries``; with neither
        ``task`` nor ``instruction``, the retrieval task), ``"document"`` (as
        ``embed_documents``) or ``"raw"`` (as ``embed``). The one dispatch that ``qembed
        embed``, bulk jobs and the framework adapters use (:func:`qembed.client.flow.kind_args`).
        """
        raw, formatted = self._format(texts, **kind_args(kind, task, instruction, prefix))
        out: Embeddings = self._drive(self._embed_flow(raw, formatted, dimensions, on_error))
        return out

    def embed_lists(self, texts: str | Iterable[str], *, kind: Kind = "document", task: str | None = None,
                    instruction: str | None = None, prefix: str | None = None,
                    dimensions: int | UseClientDefault | None = USE_CLIENT_DEFAULT,
                    on_error: OnError | UseClientDefault = USE_CLIENT_DEFAULT) -> EmbeddingLists:
        """The vectors of ``embed`` (``kind="raw"``), ``embed_queries`` (``"query"``) or
        ``embed_documents`` (``"document"``), under the same checks, as Python lists: numpy is
        not imported (unless the client itself must truncate a Matryoshka size). For a few
        texts in a short-lived process, where importing numpy costs more than the request.

        Example:
            >>> client.embed_lists(["hello"]).vectors[0][:2]                 # doctest: +SKIP
            [0.0123, -0.0456]
        """
        raw, formatted = self._format(texts, **kind_args(kind, task, instruction, prefix))
        result: EmbeddingLists = self._drive(self._embed_flow(raw, formatted, dimensions, on_error, plain=True))
        return result

    def server_info(self) -> ServerInfo:
        """Model name, context length and full vector size (one probe embedding, cached)."""
        return self._drive(self._info_flow())

    # -- the driver ------------------------------------------------------------------------

    def _drive(self, flow: Flow[_T]) -> _T:
        """Run a flow: requests over the sync transport, waits with ``time.sleep``."""
        value: Any = None
        error: TransportFailure | None = None
        while True:
            try:
                step = flow.send(value) if error is None else flow.throw(error)
            except StopIteration as stop:
                result: _T = stop.value
                return result
            value, error = None, None
            if isinstance(step, Request):
                try:
                    value = self._io.request(step)
                except TransportFailure as exc:
                    error = exc
            elif isinstance(step, Sleep):
                time.sleep(step.seconds)
            else:
                self._parallel(step.flows)

    def _parallel(self, flows: list[Flow[None]]) -> None:
        """Several requests at once: over aiohttp on the loop thread when the client has it,
        else in a thread pool over the (thread-safe) sync transport."""
        if self._aio is not None:
            self._run(_gather_async(self._limiter, self._aio, flows))
            return
        if self.concurrency == 1:
            for f in flows:
                self._drive(f)
            return
        pool = self._executor()
        futures = [pool.submit(self._drive, f) for f in flows]
        try:
            for fut in futures:
                fut.result()
        finally:
            for fut in futures:
                fut.cancel()

    def _executor(self) -> Any:
        with self._pool_lock:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="qembed")
            return self._pool


# -- async -----------------------------------------------------------------------------------


class AsyncClient(BaseClient):
    """Asynchronous client; same methods as :class:`Client`, awaited.

    ``http="auto"`` (default) uses aiohttp when it is installed and no ``transport`` is given
    (it costs 2-2.5x less CPU per vector), else httpx; ``"httpx"`` / ``"aiohttp"`` force one.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        base_url: str | None = None,
        http: Literal["auto", "httpx", "aiohttp"] = "auto",
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
        super().__init__(url, base_url=base_url, api_key=api_key, model=model, timeout=timeout,
                         max_retries=max_retries, backoff=backoff, retry_timeout=retry_timeout,
                         expect_unit=expect_unit, dimensions_fallback=dimensions_fallback,
                         concurrency=concurrency, batch_size=batch_size, batch_tokens=batch_tokens,
                         on_error=on_error, transport=transport, headers=headers)
        self._limiter = _Limiter(self.concurrency)
        self.http: str = choose_http(http, self._transport)
        limit = self.concurrency * 2 + 2
        self._io: AsyncTransport = (
            AiohttpAsync(base_url=self.base_url, headers=self._headers(), timeouts=self._timeouts(), limit=limit)
            if self.http == "aiohttp" else
            HttpxAsync(base_url=self.base_url, headers=self._headers(), timeouts=self._timeouts(), limit=limit,
                       transport=self._transport, httpx_timeout=self._httpx_timeout())
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._io.aclose()

    close = aclose

    @_with_args_doc
    async def embed(self, texts: str | Iterable[str], *, instruction: str | None = None, prefix: str | None = None,
                    dimensions: int | UseClientDefault | None = USE_CLIENT_DEFAULT,
                    on_error: OnError | UseClientDefault = USE_CLIENT_DEFAULT) -> Embeddings:
        """Embed texts as given, or with ``instruction`` in the Qwen3 query format."""
        raw, formatted = self._format(texts, kind="raw", instruction=instruction, prefix=prefix)
        out: Embeddings = await self._drive(self._embed_flow(raw, formatted, dimensions, on_error))
        return out

    @_with_args_doc
    async def embed_queries(self, texts: str | Iterable[str], *, task: str | None = DEFAULT_QUERY_TASK,
                            instruction: str | None = None,
                            dimensions: int | UseClientDefault | None = USE_CLIENT_DEFAULT,
                            on_error: OnError | UseClientDefault = USE_CLIENT_DEFAULT) -> Embeddings:
        """Embed queries as ``Instruct: {task}\\nQuery:{text}`` (default task: retrieval)."""
        raw, formatted = self._format(texts, kind="query", task=task, instruction=instruction)
        out: Embeddings = await self._drive(self._embed_flow(raw, formatted, dimensions, on_error))
        return out

    @_with_args_doc
    async def embed_documents(self, texts: str | Iterable[str], *, task: str | None = None,
                              dimensions: int | UseClientDefault | None = USE_CLIENT_DEFAULT,
                              on_error: OnError | UseClientDefault = USE_CLIENT_DEFAULT) -> Embeddings:
        """Embed documents: no instruction, except for a symmetric ``task`` (sts, bitext, ...)."""
        raw, formatted = self._format(texts, kind="document", task=task)
        out: Embeddings = await self._drive(self._embed_flow(raw, formatted, dimensions, on_error))
        return out

    @_with_args_doc
    async def embed_texts(self, texts: str | Iterable[str], *, kind: Kind = "document", task: str | None = None,
                          instruction: str | None = None, prefix: str | None = None,
                          dimensions: int | UseClientDefault | None = USE_CLIENT_DEFAULT,
                          on_error: OnError | UseClientDefault = USE_CLIENT_DEFAULT) -> Embeddings:
        """:meth:`Client.embed_texts`, awaited."""
        raw, formatted = self._format(texts, **kind_args(kind, task, instruction, prefix))
        out: Embeddings = await self._drive(self._embed_flow(raw, formatted, dimensions, on_error))
        return out

    async def embed_lists(self, texts: str | Iterable[str], *, kind: Kind = "document", task: str | None = None,
                          instruction: str | None = None, prefix: str | None = None,
                          dimensions: int | UseClientDefault | None = USE_CLIENT_DEFAULT,
                          on_error: OnError | UseClientDefault = USE_CLIENT_DEFAULT) -> EmbeddingLists:
        """:meth:`Client.embed_lists`, awaited."""
        raw, formatted = self._format(texts, **kind_args(kind, task, instruction, prefix))
        result: EmbeddingLists = await self._drive(self._embed_flow(
            raw, formatted, dimensions, on_error, plain=True))
        return result

    async def server_info(self) -> ServerInfo:
        """Model name, context length and full vector size (one probe embedding, cached)."""
        return await self._drive(self._info_flow())

    async def _drive(self, flow: Flow[_T]) -> _T:
        return await _drive_async(self._limiter, self._io, flow)
