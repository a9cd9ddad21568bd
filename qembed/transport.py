"""The client's I/O backends: move request bytes, report transport failures. No retries,
no parsing (that is :class:`qembed.client.BaseClient`'s job).

Two async backends behind one small interface (``await request(Request) -> Response``,
``await aclose()``):

* :class:`AiohttpAsync`, the default when aiohttp is installed: 2-2.5x less client CPU per
  vector than ``httpx.AsyncClient`` with requests in flight (docs/client.md, "Transport";
  encode/httpx#3215).
* :class:`HttpxAsync`, which also takes any httpx ``transport=`` (``httpx.MockTransport`` in
  tests).

aiohttp and httpx are imported inside the functions that use them.
"""

from __future__ import annotations

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


class TransportFailure(Exception):
    """A request that got no HTTP answer; ``connect`` tells whether it never connected."""

    def __init__(self, message: str, *, connect: bool) -> None:
        super().__init__(message)
        self.connect = connect


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


class HttpxAsync:
    """I/O over ``httpx.AsyncClient``; ``httpx_kwargs`` go to its constructor (base_url,
    headers, timeout, transport, ...)."""

    def __init__(self, httpx_kwargs: dict[str, Any]) -> None:
        import httpx

        self._http = httpx.AsyncClient(**httpx_kwargs)

    async def request(self, req: Request) -> Response:
        import httpx

        try:
            r = await self._http.request(req.method, req.path, content=req.body)
        except httpx.TransportError as exc:
            connect = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
            raise TransportFailure(f"{type(exc).__name__}: {exc}", connect=connect) from exc
        return Response(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content)

    async def aclose(self) -> None:
        await self._http.aclose()


class AiohttpAsync:
    """I/O over aiohttp. The session is made on first use, inside the running event loop, as
    aiohttp requires; proxies from the environment are ignored (``trust_env=False``), as for
    httpx, so loopback servers are reached directly.

    Args:
        base_url: prefix of every request path.
        headers: sent with every request (User-Agent, Authorization).
        timeouts: (connect, read) seconds; ``None`` means no limit.
        limit: connections kept in the pool.
    """

    def __init__(self, *, base_url: str, headers: dict[str, str],
                 timeouts: tuple[float | None, float | None], limit: int) -> None:
        self._base_url = base_url
        self._headers = headers
        self._timeouts = timeouts
        self._limit = limit
        self._session: Any = None

    async def request(self, req: Request) -> Response:
        import aiohttp

        if self._session is None:
            connect, read = self._timeouts
            self._session = aiohttp.ClientSession(
                headers=self._headers, trust_env=False,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read),
                connector=aiohttp.TCPConnector(limit=self._limit),
            )
        try:
            async with self._session.request(req.method, self._base_url + req.path, data=req.body) as r:
                content = await r.read()
                headers = {k.lower(): v for k, v in r.headers.items()}
                return Response(r.status, headers, content)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise TransportFailure(f"{type(exc).__name__}: {exc}", connect=True) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransportFailure(f"{type(exc).__name__}: {exc}", connect=False) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
