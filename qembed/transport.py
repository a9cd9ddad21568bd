"""The client's I/O backends: move request bytes, report transport failures. No retries,
no parsing, no decisions: :class:`qembed.client.flow.BaseClient`'s sans-IO flows make those, and
``Client`` / ``AsyncClient`` only carry each request the flow yields to a backend here.

Two interfaces, one failure type (:class:`TransportFailure`):

* sync, :class:`SyncTransport` (``request(Request) -> Response``, ``close()``):

  * :class:`StdlibSync` (``http.client``): the light one. It imports in a few ms where aiohttp
    takes ~100 ms, so a one-shot ``qembed embed "text"`` never loads aiohttp or asyncio; with a
    small pool of keep-alive connections it is also thread-safe.
  * :class:`HttpxSync`, for the sync client's httpx mode (and any httpx ``transport=``).

* async, :class:`AsyncTransport` (``await request(Request) -> Response``, ``await aclose()``):

  * :class:`AiohttpAsync`, the default for concurrent requests when aiohttp is installed: 2-2.5x
    less client CPU per vector than ``httpx.AsyncClient`` with requests in flight
    (docs/client.md, "Transport"; encode/httpx#3215).
  * :class:`HttpxAsync`, which also takes any httpx ``transport=`` (``httpx.MockTransport`` in
    tests).

Every backend bounds a request three ways: the connect timeout, the per-read timeout, and a
total deadline for the whole exchange (connect, send, every byte of the answer), so a server
that trickles one byte every few seconds cannot hold a request forever. A request past its
deadline fails with ``TransportFailure(deadline=True)``.

:func:`httpx_client` is the one place an ``httpx.Client`` / ``httpx.AsyncClient`` is made (the
client's httpx mode, ``qembed bench``'s httpx loader). aiohttp and httpx are imported inside the
functions that use them.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, Protocol


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


class SyncTransport(Protocol):
    def request(self, req: Request) -> Response: ...

    def close(self) -> None: ...


class AsyncTransport(Protocol):
    async def request(self, req: Request) -> Response: ...

    async def aclose(self) -> None: ...


def _past_deadline(total: float | None) -> TransportFailure:
    return TransportFailure(f"no complete answer within the {total:g} s request deadline", connect=False,
                            deadline=True)


def choose_http(http: str, transport: Any, *, sync: bool = False) -> str:
    """``auto``: aiohttp when installed and no httpx ``transport`` is injected, else httpx;
    ``stdlib`` only for the sync client. Checking for aiohttp does not import it."""
    from qembed.errors import ConfigError, MissingDependency

    allowed = ("auto", "httpx", "aiohttp", "stdlib") if sync else ("auto", "httpx", "aiohttp")
    if http not in allowed:
        raise ConfigError(f"`http` must be {', '.join(f'`{a}`' for a in allowed[:-1])} or `{allowed[-1]}`, "
                          f"got `{http}`")
    if http in ("aiohttp", "stdlib") and transport is not None:
        raise ConfigError(f"`transport=` is an httpx transport; it cannot be used with `http=\"{http}\"`")
    if http in ("httpx", "stdlib") or (http == "auto" and transport is not None):
        return http if http != "auto" else "httpx"
    import importlib.util

    if importlib.util.find_spec("aiohttp") is None:
        if http == "aiohttp":
            raise MissingDependency("`http=\"aiohttp\"` needs aiohttp", hint="pip install aiohttp")
        return "httpx"
    return "aiohttp"


def _close_connections(idle: list[Any]) -> None:
    import contextlib

    while idle:
        with contextlib.suppress(Exception):  # best effort (it runs from a finalizer too)
            idle.pop().close()


class _NotSent(Exception):
    """Sending failed: the connection was dead before the request left."""


def _dropped(conn: Any) -> bool:
    """Whether an idle keep-alive connection was closed by the server (it reads as ready)."""
    import select

    sock = conn.sock
    if sock is None:
        return True
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


class StdlibSync:
    """Blocking I/O over the standard library's ``http.client``: nothing to import but the
    standard library, so one small request costs no aiohttp/httpx import. Keep-alive
    connections are pooled (up to ``limit`` idle), so threads may share it. Proxies from the
    environment are ignored, as for the other backends.

    Bounds: the connect timeout, the per-read timeout, and the total deadline; no read waits
    longer than the time left, and each read returns what one ``recv`` got, so a server that
    trickles bytes is cut off at ``total`` plus at most one read.

    Args:
        base_url: ``http://`` or ``https://`` host, port and optional path prefix.
        headers: sent with every request (User-Agent, Authorization).
        timeouts: connect, per-read and total seconds (:class:`Timeouts`).
        limit: idle connections kept.
    """

    def __init__(self, *, base_url: str, headers: dict[str, str], timeouts: Timeouts, limit: int) -> None:
        from urllib.parse import urlsplit

        u = urlsplit(base_url)
        self._https = u.scheme == "https"
        self._host = u.hostname or "127.0.0.1"
        self._port = u.port
        self._prefix = u.path.rstrip("/")
        self._headers = headers
        self._timeouts = timeouts
        self._limit = limit
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        weakref.finalize(self, _close_connections, self._idle)

    def _connection(self) -> tuple[Any, bool]:
        """An idle keep-alive connection (reused: True), else a new, connected one."""
        while True:
            with self._lock:
                idle = self._idle.pop() if self._idle else None
            if idle is None:
                break
            if not _dropped(idle):
                return idle, True
            idle.close()  # the server closed it while idle (e.g. uvicorn's 5 s keep-alive)
        import http.client

        t = self._timeouts
        connect = min(x for x in (t.connect, t.total, 1e9) if x is not None)
        conn: Any
        if self._https:
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=connect)
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=connect)
        try:
            conn.connect()
        except OSError as exc:
            conn.close()
            raise TransportFailure(f"{type(exc).__name__}: {exc}", connect=True) from exc
        return conn, False

    def request(self, req: Request) -> Response:
        import http.client

        t = self._timeouts
        end = None if t.total is None else time.monotonic() + t.total
        while True:
            conn, reused = self._connection()
            try:
                return self._exchange(conn, req, end)
            except TimeoutError as exc:
                conn.close()
                if end is not None and time.monotonic() >= end - 1e-3:
                    raise _past_deadline(t.total) from exc
                raise TransportFailure(f"ReadTimeout: {exc or 'timed out'}", connect=False) from exc
            except _NotSent as exc:
                conn.close()
                if reused:  # a kept-alive connection that died unseen: the request never left
                    continue
                cause = exc.__cause__
                raise TransportFailure(f"{type(cause).__name__}: {cause}", connect=False) from cause
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise TransportFailure(f"{type(exc).__name__}: {exc}", connect=False) from exc

    def _exchange(self, conn: Any, req: Request, end: float | None) -> Response:
        import http.client

        read = self._timeouts.read
        sock = conn.sock  # held here: http.client drops conn.sock when an answer says it will close

        def bound() -> None:
            # no single wait longer than the per-read limit or the time left
            left = None if end is None else max(end - time.monotonic(), 1e-3)
            limits = [x for x in (read, left) if x is not None]
            sock.settimeout(min(limits) if limits else None)

        bound()
        try:
            conn.request(req.method, self._prefix + req.path, body=req.body, headers=self._headers)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise _NotSent() from exc
        r = conn.getresponse()
        chunks: list[bytes] = []
        while not r.isclosed():
            bound()
            chunk = r.read1(65536)
            if not chunk:
                break
            chunks.append(chunk)
            if end is not None and time.monotonic() > end:
                raise TimeoutError("past the request deadline")
        if r.length:  # the body ended before its Content-Length
            raise http.client.IncompleteRead(b"".join(chunks), r.length)
        r.close()  # the connection may take the next request only after this
        resp = Response(r.status, {k.lower(): v for k, v in r.getheaders()}, b"".join(chunks))
        if r.will_close:
            conn.close()
        else:
            with self._lock:
                if len(self._idle) < self._limit:
                    self._idle.append(conn)
                    return resp
            conn.close()
        return resp

    def close(self) -> None:
        with self._lock:
            _close_connections(self._idle)


def _httpx_failure(exc: Exception) -> TransportFailure:
    import httpx

    connect = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
    return TransportFailure(f"{type(exc).__name__}: {exc}", connect=connect)


def httpx_client(*, sync: bool, base_url: str, headers: dict[str, str], timeout: Timeouts | Any,
                 limit: int | None, transport: Any = None) -> Any:
    """An ``httpx.Client`` (``sync``) or ``httpx.AsyncClient``, made the one way qembed makes them.

    Proxies from the environment are ignored (``trust_env=False``): a local GPU server must not
    go through ``HTTP(S)_PROXY``, as for the other backends. Redirects are not followed (httpx's
    default), so documents and the key never go where a ``Location`` points.

    Args:
        base_url: prefix of every request path.
        headers: sent with every request (User-Agent, Authorization).
        timeout: a :class:`Timeouts` (its connect and per-read limits; the total deadline is the
            backend's), or an ``httpx.Timeout`` used as given.
        limit: connections, all of them kept alive; ``None``: no limit.
        transport: an httpx transport (``httpx.MockTransport`` in tests), else httpx's own.
    """
    import httpx

    if isinstance(timeout, Timeouts):
        timeout = httpx.Timeout(timeout.read, connect=timeout.connect)
    kw: dict[str, Any] = {
        "base_url": base_url,
        "headers": headers,
        "timeout": timeout,
        "limits": httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
        "trust_env": False,
    }
    if transport is not None:
        kw["transport"] = transport
    return httpx.Client(**kw) if sync else httpx.AsyncClient(**kw)


class HttpxSync:
    """Blocking I/O over ``httpx.Client`` (:func:`httpx_client`; ``httpx_timeout``: an
    ``httpx.Timeout`` to use instead of ``timeouts``' connect and read limits). The deadline is
    checked after every chunk read, and no read may wait longer than the time left, so a request
    ends within ``total`` plus at most one read."""

    def __init__(self, *, base_url: str, headers: dict[str, str], timeouts: Timeouts, limit: int | None,
                 transport: Any = None, httpx_timeout: Any = None) -> None:
        self._http = httpx_client(sync=True, base_url=base_url, headers=headers, timeout=httpx_timeout or timeouts,
                                  limit=limit, transport=transport)
        self._total = timeouts.total

    def request(self, req: Request, *, total: float | None = None) -> Response:
        """``total``: this request's deadline instead of the transport's."""
        import httpx

        total = self._total if total is None else total
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
    """I/O over ``httpx.AsyncClient`` (:func:`httpx_client`; arguments as for :class:`HttpxSync`).
    ``timeouts.total`` bounds each whole request."""

    def __init__(self, *, base_url: str, headers: dict[str, str], timeouts: Timeouts, limit: int | None,
                 transport: Any = None, httpx_timeout: Any = None) -> None:
        self._http = httpx_client(sync=False, base_url=base_url, headers=headers, timeout=httpx_timeout or timeouts,
                                  limit=limit, transport=transport)
        self._total = timeouts.total

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
            # never follow a redirect: it would re-send the documents and the key to wherever
            # the Location points (httpx and http.client do not follow either)
            async with self._session.request(req.method, self._base_url + req.path, data=req.body,
                                             allow_redirects=False) as r:
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
