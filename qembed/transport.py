"""The client's I/O backends: move request bytes, report transport failures. No retries,
no parsing (that is :class:`qembed.client.BaseClient`'s job).

Two async backends behind one small interface (``await request(Request) -> Response``,
``await aclose()``), and one sync backend (``request(Request) -> Response``, ``close()``):

* :class:`AiohttpAsync`, the default when aiohttp is installed: 2-2.5x less client CPU per
  vector than ``httpx.AsyncClient`` with requests in flight (docs/client.md, "Transport";
  encode/httpx#3215).
* :class:`HttpxAsync`, which also takes any httpx ``transport=`` (``httpx.MockTransport`` in
  tests).

* :class:`HttpxSync`, for the sync client's httpx mode.

Every backend bounds a request three ways: the connect timeout, the per-read timeout, and a
total deadline for the whole exchange (connect, send, every byte of the answer), so a server
that trickles one byte every few seconds cannot hold a request forever. A request past its
deadline fails with ``TransportFailure(deadline=True)``.

aiohttp and httpx are imported inside the functions that use them.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from typing import Any


@dataclass
class Request:
    method: str
    path: str
    body: bytes | None = None


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    content: bytes


@dataclass(frozen=True)
class Timeouts:
    """Seconds; ``None`` means no limit. ``total`` bounds one whole request (all reads)."""

    connect: float | None
    read: float | None
    total: float | None


class TransportFailure(Exception):
    """A request that got no (complete) HTTP answer; ``connect`` tells whether it never
    connected, ``deadline`` whether it ran past its total deadline."""

    def __init__(self, message: str, *, connect: bool, deadline: bool = False) -> None:
        super().__init__(message)
        self.connect = connect
        self.deadline = deadline


def _past_deadline(total: float | None) -> TransportFailure:
    return TransportFailure(f"no complete answer within the {total:g} s request deadline", connect=False,
                            deadline=True)


def choose_http(http: str, transport: Any) -> str:
    """``auto``: aiohttp when installed and no httpx ``transport`` is injected, else httpx."""
    from .errors import ConfigError, MissingDependency

    if http not in ("auto", "httpx", "aiohttp"):
        raise ConfigError(f"`http` must be `auto`, `httpx` or `aiohttp`, got `{http}`")
    if http == "aiohttp" and transport is not None:
        raise ConfigError("`transport=` is an httpx transport; it cannot be used with `http=\"aiohttp\"`")
    if http == "httpx" or (http == "auto" and transport is not None):
        return "httpx"
    try:
        import aiohttp  # noqa: F401
    except ImportError as exc:
        if http == "aiohttp":
            raise MissingDependency("`http=\"aiohttp\"` needs aiohttp", hint="pip install aiohttp") from exc
        return "httpx"
    return "aiohttp"


def _httpx_failure(exc: Exception) -> TransportFailure:
    import httpx

    connect = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
    return TransportFailure(f"{type(exc).__name__}: {exc}", connect=connect)


class HttpxSync:
    """Blocking I/O over ``httpx.Client``; ``httpx_kwargs`` go to its constructor (base_url,
    headers, timeout, transport, ...). The deadline is checked after every chunk read, and no
    read may wait longer than the time left, so a request ends within ``total`` plus at most
    one read."""

    def __init__(self, httpx_kwargs: dict[str, Any], *, total: float | None) -> None:
        import httpx

        self._http = httpx.Client(**httpx_kwargs)
        self._total = total

    def request(self, req: Request) -> Response:
        import httpx

        total = self._total
        end = None if total is None else time.monotonic() + total
        timeout: Any = httpx.USE_CLIENT_DEFAULT
        if total is not None:
            t = self._http.timeout
            timeout = httpx.Timeout(connect=min(t.connect or total, total), read=min(t.read or total, total),
                                    write=min(t.write or total, total), pool=min(t.pool or total, total))
        try:
            with self._http.stream(req.method, req.path, content=req.body, timeout=timeout) as r:
                chunks: list[bytes] = []
                for chunk in r.iter_bytes():
                    chunks.append(chunk)
                    if end is not None and time.monotonic() > end:
                        raise _past_deadline(total)
                return Response(r.status_code, {k.lower(): v for k, v in r.headers.items()}, b"".join(chunks))
        except httpx.TransportError as exc:
            raise _httpx_failure(exc) from exc

    def close(self) -> None:
        self._http.close()


class HttpxAsync:
    """I/O over ``httpx.AsyncClient``; ``httpx_kwargs`` go to its constructor (base_url,
    headers, timeout, transport, ...). ``total`` bounds each whole request."""

    def __init__(self, httpx_kwargs: dict[str, Any], *, total: float | None = None) -> None:
        import httpx

        self._http = httpx.AsyncClient(**httpx_kwargs)
        self._total = total

    async def request(self, req: Request) -> Response:
        import asyncio

        import httpx

        try:
            async with asyncio.timeout(self._total):
                r = await self._http.request(req.method, req.path, content=req.body)
        except httpx.TransportError as exc:
            raise _httpx_failure(exc) from exc
        except TimeoutError as exc:
            raise _past_deadline(self._total) from exc
        return Response(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content)

    async def aclose(self) -> None:
        await self._http.aclose()


def _abandon_session(session: Any) -> None:
    """Close an aiohttp session without its event loop (which may be closed): its connector
    drops its connections at once. Best effort; never raises (it runs from a finalizer)."""
    import asyncio

    if session.closed:
        return
    try:
        connector = session.connector
        loop = getattr(connector, "_loop", None)
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        if loop is not None and loop.is_running() and current is not loop:
            # the loop runs in another thread (the sync Client's): close there, properly
            asyncio.run_coroutine_threadsafe(session.close(), loop).result(timeout=5)
            return
        close_now = getattr(connector, "_close", None)  # sync; the public close() needs the loop
        if close_now is not None:
            close_now()
    except Exception:
        pass


class AiohttpAsync:
    """I/O over aiohttp. The session is made on first use, inside the running event loop, as
    aiohttp requires; proxies from the environment are ignored (``trust_env=False``), as for
    httpx, so loopback servers are reached directly.

    Args:
        base_url: prefix of every request path.
        headers: sent with every request (User-Agent, Authorization).
        timeouts: connect, per-read and total seconds (:class:`Timeouts`).
        limit: connections kept in the pool.
    """

    def __init__(self, *, base_url: str, headers: dict[str, str], timeouts: Timeouts, limit: int) -> None:
        self._base_url = base_url
        self._headers = headers
        self._timeouts = timeouts
        self._limit = limit
        self._session: Any = None

    async def request(self, req: Request) -> Response:
        import aiohttp

        t = self._timeouts
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers, trust_env=False,
                timeout=aiohttp.ClientTimeout(total=t.total, sock_connect=t.connect, sock_read=t.read),
                connector=aiohttp.TCPConnector(limit=self._limit),
            )
            # a client never closed (its loop may be gone by then) is closed when collected
            # or at exit, so aiohttp does not warn "Unclosed client session"
            weakref.finalize(self, _abandon_session, self._session)
        start = time.monotonic()
        try:
            async with self._session.request(req.method, self._base_url + req.path, data=req.body) as r:
                content = await r.read()
                headers = {k.lower(): v for k, v in r.headers.items()}
                return Response(r.status, headers, content)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise TransportFailure(f"{type(exc).__name__}: {exc}", connect=True) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            if t.total is not None and isinstance(exc, TimeoutError) and time.monotonic() - start >= t.total * 0.99:
                raise _past_deadline(t.total) from exc
            raise TransportFailure(f"{type(exc).__name__}: {exc}", connect=False) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
