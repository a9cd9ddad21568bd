"""Client / AsyncClient parity: same methods, same requests, same vectors."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import numpy as np
import pytest

from qembed.client.drivers import AsyncClient, Client
from qembed.client.flow import BaseClient
from qembed.errors import InputError, ServerError, ServerUnreachable
from tests.standin.server import Fault, StandinConfig, serve_in_thread

PUBLIC = ["embed", "embed_queries", "embed_documents", "embed_texts", "embed_lists", "server_info"]


@pytest.mark.parametrize("name", PUBLIC)
def test_same_public_signatures(name: str) -> None:
    sync_sig = inspect.signature(getattr(Client, name))
    async_sig = inspect.signature(getattr(AsyncClient, name))
    assert sync_sig == async_sig
    assert inspect.iscoroutinefunction(getattr(AsyncClient, name))
    assert not inspect.iscoroutinefunction(getattr(Client, name))


@pytest.mark.parametrize("cls", [Client, AsyncClient])
def test_constructors_list_the_base_clients_parameters(cls: type) -> None:
    """Each client lists BaseClient's parameters (no **kwargs), with the same kinds, types and
    defaults, plus its own `http`."""
    base = inspect.signature(BaseClient.__init__).parameters
    params = dict(inspect.signature(cls.__init__).parameters)
    assert params.pop("http").default == "auto"
    assert list(params) == list(base)
    for name, p in base.items():
        assert (params[name].kind, params[name].default, params[name].annotation) == (p.kind, p.default, p.annotation)


CALLS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("embed_queries", ([f"q{i}" for i in range(40)],), {}),
    ("embed_queries", (["a cat"],), {"task": "sts", "dimensions": 32}),
    ("embed_documents", ([f"d{i}" for i in range(70)],), {"dimensions": 40}),
    ("embed", (["x", " ", "y"],), {"instruction": "Find it", "on_error": "skip"}),
    ("embed", (["p"],), {"prefix": "Represent the document for retrieval: "}),
]


def backend(name: str) -> str:
    return name


HTTP = ["httpx", "aiohttp"]


@pytest.mark.parametrize("http", HTTP)
@pytest.mark.parametrize("matryoshka", [True, False])
def test_same_requests_and_vectors(matryoshka: bool, http: str) -> None:
    backend(http)

    def cfg() -> StandinConfig:
        return StandinConfig(dim=64, matryoshka=matryoshka, faults=[Fault("status", count=1), Fault("reset", count=1)])

    with serve_in_thread(cfg()) as srv, Client(srv.url, batch_size=16, backoff=0.001) as c:
        sync_out = [getattr(c, name)(*a, **kw) for name, a, kw in CALLS]
        sync_reqs = sorted(map(repr, srv.requests))

    async def run(url: str) -> list[Any]:
        async with AsyncClient(url, batch_size=16, backoff=0.001, http=http) as ac:  # type: ignore[arg-type]
            assert ac.http == http
            return [await getattr(ac, name)(*a, **kw) for name, a, kw in CALLS]

    with serve_in_thread(cfg()) as srv:
        async_out = asyncio.run(run(srv.url))
        async_reqs = sorted(map(repr, srv.requests))
    assert sync_reqs == async_reqs
    for s, a in zip(sync_out, async_out, strict=True):
        assert s.shape == a.shape and s.dtype == a.dtype == np.float32
        np.testing.assert_array_equal(s, a)
        assert s.prompt_tokens == a.prompt_tokens
        assert s.failures == a.failures
        assert (s.indices is None and a.indices is None) or s.indices.tolist() == a.indices.tolist()


@pytest.mark.parametrize("http", HTTP)
def test_async_raises_the_same_errors(http: str) -> None:
    backend(http)

    async def run(url: str, texts: list[str]) -> None:
        async with AsyncClient(url, http=http, backoff=0.001) as ac:  # type: ignore[arg-type]
            await ac.embed_documents(texts)

    with serve_in_thread(StandinConfig(dim=8)) as srv:
        with pytest.raises(InputError) as exc:
            asyncio.run(run(srv.url, ["ok", ""]))
        assert exc.value.index == 1
        url = srv.url
    with pytest.raises(ServerUnreachable) as gone:
        asyncio.run(run(url, ["ok"]))
    assert gone.value.message == f"no server answers at {url}"


@pytest.mark.parametrize("http", HTTP)
def test_async_api_key_and_retry_after_reset(http: str) -> None:
    backend(http)

    async def run(url: str, key: str) -> Any:
        async with AsyncClient(url, http=http, api_key=key, backoff=0.001) as ac:  # type: ignore[arg-type]
            return await ac.embed_documents(["a", "b"])

    cfg = StandinConfig(dim=8, api_key="k", faults=[Fault("reset", count=2)])
    with serve_in_thread(cfg) as srv:
        assert asyncio.run(run(srv.url, "k")).shape == (2, 8)
        with pytest.raises(ServerError) as exc:
            asyncio.run(run(srv.url, "wrong"))
    assert exc.value.status == 401 and exc.value.message == "the server answered 401: Unauthorized"


def _handler(seen: list[dict[str, Any]]):  # type: ignore[no-untyped-def]
    import base64
    import json
    import struct

    import httpx

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "m", "max_model_len": 512}]})
        body = json.loads(request.content)
        seen.append(body)
        if len(seen) == 1:  # the first embeddings call is throttled once
            return httpx.Response(429, headers={"Retry-After": "0"}, json={"error": {"message": "slow down"}})
        data = [{"object": "embedding", "index": i,
                 "embedding": base64.b64encode(struct.pack("<32f", *[float(k == len(t) % 32) for k in range(32)])).decode()}
                for i, t in enumerate(body["input"])]
        return httpx.Response(200, json={"data": data, "model": "m", "object": "list", "usage": {"prompt_tokens": 7}})

    return handler


def test_one_mock_handler_serves_both_clients() -> None:
    import httpx

    sync_seen: list[dict[str, Any]] = []
    with Client("http://mock", transport=httpx.MockTransport(_handler(sync_seen))) as c:
        s = c.embed_queries(["q"], dimensions=None)

    async_seen: list[dict[str, Any]] = []

    async def run() -> Any:
        async with AsyncClient("http://mock", transport=httpx.MockTransport(_handler(async_seen))) as ac:
            return await ac.embed_queries(["q"])

    a = asyncio.run(run())
    assert sync_seen == async_seen and len(sync_seen) == 2  # 429 honoured, then retried once
    assert sync_seen[1] == {"input": ["Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:q"],
                            "encoding_format": "base64", "model": "m"}
    np.testing.assert_array_equal(s, a)
    assert s.prompt_tokens == a.prompt_tokens == 7


# -- one handler for both clients (httpx.MockTransport) ----------------------------------------


def _mock_handler(log: list[dict[str, Any]]) -> Any:
    """An SGLang-shaped server in a function: /v1/models, then base64 replies (one refusal of
    `dimensions`, as a server with Matryoshka off sends), each request recorded."""
    import base64
    import json

    import httpx

    from tests.standin.server import HashBackend

    backend = HashBackend(48)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "m", "max_model_len": 512}]})
        body = json.loads(request.content)
        log.append(body)
        if "dimensions" in body:
            return httpx.Response(400, json={"object": "error", "message": "This model does not support matryoshka "
                                             "representation, changing output dimensions will lead to poor results."})
        vecs = np.array(backend.embed(body["input"]), dtype="<f4")
        data = [{"object": "embedding", "index": i, "embedding": base64.b64encode(v.tobytes()).decode()}
                for i, v in enumerate(vecs)]
        return httpx.Response(200, json={"data": data, "model": "m", "usage": {"prompt_tokens": len(data)}})

    return handler


def test_one_handler_same_requests_and_results() -> None:
    """The parity STYLE.md asks for: one MockTransport handler serves Client and AsyncClient;
    the same calls give the same requests (same bodies, same order) and identical arrays."""
    import httpx

    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
        ("embed_documents", ([f"d{i}" for i in range(9)],), {}),
        ("embed_queries", (["q"],), {"dimensions": 32}),
        ("embed", (["x", " ", "y"],), {"on_error": "skip"}),
    ]
    sync_log: list[dict[str, Any]] = []
    with Client(transport=httpx.MockTransport(_mock_handler(sync_log)), batch_size=4, concurrency=1) as c:
        sync_out = [getattr(c, name)(*a, **kw) for name, a, kw in calls]
        sync_info = c.server_info()

    async_log: list[dict[str, Any]] = []

    async def run() -> tuple[list[Any], Any]:
        async with AsyncClient(transport=httpx.MockTransport(_mock_handler(async_log)), batch_size=4,
                               concurrency=1) as ac:
            return [await getattr(ac, name)(*a, **kw) for name, a, kw in calls], await ac.server_info()

    async_out, async_info = asyncio.run(run())
    assert sync_log == async_log
    assert len(sync_log) == 3 + 2 + 1  # 9 texts in 3 requests; refused dimensions, then truncated; one
    assert sync_info == async_info and sync_info.supports_dimensions is False
    for s, a in zip(sync_out, async_out, strict=True):
        assert s.shape == a.shape
        np.testing.assert_array_equal(s, a)
        assert (s.prompt_tokens, s.model, s.failures) == (a.prompt_tokens, a.model, a.failures)
