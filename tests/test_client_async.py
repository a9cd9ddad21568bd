"""Client / AsyncClient parity: same methods, same requests, same vectors."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import numpy as np
import pytest

from qembed.client import AsyncClient, Client
from qembed.errors import InputError
from tests.standin.server import Fault, StandinConfig, serve_in_thread

PUBLIC = ["embed", "embed_queries", "embed_documents", "server_info"]


@pytest.mark.parametrize("name", PUBLIC)
def test_same_public_signatures(name: str) -> None:
    sync_sig = inspect.signature(getattr(Client, name))
    async_sig = inspect.signature(getattr(AsyncClient, name))
    assert sync_sig == async_sig
    assert inspect.iscoroutinefunction(getattr(AsyncClient, name))
    assert not inspect.iscoroutinefunction(getattr(Client, name))


CALLS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("embed_queries", ([f"q{i}" for i in range(40)],), {}),
    ("embed_queries", (["a cat"],), {"task": "sts", "dimensions": 32}),
    ("embed_documents", ([f"d{i}" for i in range(70)],), {"dimensions": 40}),
    ("embed", (["x", " ", "y"],), {"instruction": "Find it", "on_error": "skip"}),
    ("embed", (["p"],), {"prefix": "Represent the document for retrieval: "}),
]


@pytest.mark.parametrize("matryoshka", [True, False])
def test_same_requests_and_vectors(matryoshka: bool) -> None:
    def cfg() -> StandinConfig:
        return StandinConfig(dim=64, matryoshka=matryoshka, faults=[Fault("status", count=1)])

    with serve_in_thread(cfg()) as srv, Client(srv.url, batch_size=16, backoff=0.001) as c:
        sync_out = [getattr(c, name)(*a, **kw) for name, a, kw in CALLS]
        sync_reqs = sorted(map(repr, srv.requests))

    async def run(url: str) -> list[Any]:
        async with AsyncClient(url, batch_size=16, backoff=0.001) as ac:
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


def test_async_raises_the_same_input_error() -> None:
    async def run(url: str) -> None:
        async with AsyncClient(url) as ac:
            await ac.embed_documents(["ok", ""])

    with serve_in_thread(StandinConfig(dim=8)) as srv, pytest.raises(InputError) as exc:
        asyncio.run(run(srv.url))
    assert exc.value.index == 1
