"""The reference engine's HTTP layer (qembed/reference/server.py ``build_app``) in this process, on a
tiny arithmetic engine: what a keyless client can do to `/metrics`, malformed bodies, the
`dimensions` reasons, the key comparison, and fairness between a huge and a small request.
Issue 19, finding 10 and the reference-engine items (docs/reliability.md)."""

from __future__ import annotations

import asyncio
import inspect
import re
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from qembed.reference import server as refserver
from qembed.reference.server import Settings, build_app

KEY = "s3cret-key-value"
DIM = 8


class TinyEngine:
    """Enough of ReferenceEngine for the HTTP layer; records every forward pass."""

    dim = DIM
    vocab_size = 1000

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.seen: list[str] = []
        self.gate = threading.Event()  # the first forward pass waits for it
        self.gate.set()

    def token_ids(self, text: str) -> list[int]:
        text.encode("utf-8")  # a real tokenizer fails on a lone surrogate
        self.seen.append(text)
        return [1] * (len(text.split()) + 1)

    def encode(self, texts: Sequence[str], *, batch_size: int) -> np.ndarray:
        self.batches.append(list(texts))
        if len(self.batches) == 1:
            self.gate.wait(30)
        v = np.ones((len(texts), DIM), dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def embed_ids(self, ids: Sequence[int]) -> np.ndarray:
        v = np.ones(DIM, dtype=np.float32)
        return v / np.linalg.norm(v)


def run(test: Callable[[TestClient[Any, Any], TinyEngine], Awaitable[None]], *, key: str | None = KEY,
        model: str = "tiny", batch_tokens: int = 16384) -> TinyEngine:
    engine = TinyEngine()
    settings = Settings(model=model, served_model_name=model, context_length=512, metrics=True, api_key=key)

    async def go() -> None:
        app = build_app(engine, settings, batch_tokens=batch_tokens)  # type: ignore[arg-type]
        async with TestClient(TestServer(app)) as client:
            await test(client, engine)

    asyncio.run(go())
    return engine


AUTH = {"Authorization": f"Bearer {KEY}"}
# one sample line of the text exposition format: name{label="escaped",...} value
_SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\\n])*",?)*\})? \S+$')


def _check_exposition(text: str) -> list[str]:
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    for line in samples:
        assert _SAMPLE.match(line), line
    return samples


def test_keyless_clients_cannot_forge_metrics_lines_or_grow_the_label_set() -> None:
    async def t(c: TestClient[Any, Any], e: TinyEngine) -> None:
        forged = '/x",method="GET"} 1\nsglang:num_queue_reqs{model_name="tiny",engine_type="unified"} 4242\n#'
        for path in [forged, '/a"b', "/a\\b", *[f"/unique/{i}" for i in range(300)]]:
            await c.get(path)
            await c.post(path, data=b"{}")
        await c.post("/v1/embeddings", json={"input": "hi"})  # no key: 401
        r = await c.get("/metrics")
        text = await r.text()
        samples = _check_exposition(text)
        assert not any("4242" in s for s in samples)
        queue = [s for s in samples if s.startswith("sglang:num_queue_reqs")]
        assert queue == ['sglang:num_queue_reqs{model_name="tiny",engine_type="unified"} 0']
        http = [s for s in samples if s.startswith("sglang:http_")]
        assert all("unique" not in s and '/a' not in s for s in http), http
        assert len(http) <= 12  # known routes only
    run(t)


def test_ready_answers_without_a_key_like_sglang() -> None:
    """Issue 20: the reference server answered `/ready` with 401; SGLang 0.5.23 serves it to
    anyone (srt/utils/auth.py exempts /health, /ready and /metrics by prefix), 200 once up."""
    async def t(c: TestClient[Any, Any], e: TinyEngine) -> None:
        for path in ("/ready", "/health", "/metrics"):
            r = await c.get(path)
            assert r.status == 200, path
        assert await (await c.get("/ready")).read() == b""
        assert (await c.get("/v1/models")).status == 401  # everything else still needs the key
        assert e.batches == []  # no forward pass behind /ready
    run(t)


def test_metric_label_values_are_escaped() -> None:
    async def t(c: TestClient[Any, Any], e: TinyEngine) -> None:
        r = await c.post("/v1/embeddings", json={"input": "hi"}, headers=AUTH)
        assert r.status == 200
        text = await (await c.get("/metrics")).text()
        _check_exposition(text)
        assert 'model_name="we\\"ird\\\\name\\nx"' in text
    run(t, model='we"ird\\name\nx')


@pytest.mark.parametrize("body", [b'{"input": "\\ud800"}', b'{"input": ["ok", "a\\udfffb"]}',
                                  b"[" * 100_000 + b"]" * 100_000,
                                  b'{"input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"])
def test_malformed_bodies_are_400_not_500(body: bytes) -> None:
    async def t(c: TestClient[Any, Any], e: TinyEngine) -> None:
        r = await c.post("/v1/embeddings", data=body, headers={**AUTH, "Content-Type": "application/json"})
        assert r.status == 400, await r.text()
        assert (await r.json())["object"] == "error"
    run(t)


@pytest.mark.parametrize(("dims", "status", "reason"), [
    ("8", 200, None),  # SGLang's pydantic model takes a numeric string
    (8.0, 200, None),
    (1.5, 400, "Input should be a valid integer, got a number with a fractional part"),
    ("8.5", 400, "Input should be a valid integer, unable to parse string as an integer"),
    (True, 400, "Input should be a valid integer, got a boolean"),
    ([8], 400, "Input should be a valid integer"),
    (0, 400, "Requested dimensions must be greater than 0"),
])
def test_dimensions_get_the_right_reason(dims: Any, status: int, reason: str | None) -> None:
    async def t(c: TestClient[Any, Any], e: TinyEngine) -> None:
        r = await c.post("/v1/embeddings", json={"input": "hi", "dimensions": dims}, headers=AUTH)
        body = await r.json()
        assert r.status == status, body
        if reason is None:
            assert len(body["data"][0]["embedding"]) == 8
        else:
            assert reason in body["message"]
            assert "greater than 0" not in body["message"] or dims == 0
    run(t)


def test_the_key_is_compared_in_constant_time() -> None:
    src = inspect.getsource(refserver.build_app)
    assert "compare_digest" in src
    assert '!= f"Bearer' not in src

    async def t(c: TestClient[Any, Any], e: TinyEngine) -> None:
        for header in ["Bearer " + KEY[:-1] + "é", "Bearer", "bearer " + KEY, "Bearer " + KEY + "x", ""]:
            r = await c.get("/v1/models", headers={"Authorization": header})
            assert r.status in (401, 200)
            assert r.status == (200 if header == "bearer " + KEY else 401), header
    run(t)


def test_a_one_text_request_is_not_queued_behind_a_huge_one() -> None:
    async def t(c: TestClient[Any, Any], e: TinyEngine) -> None:
        e.gate.clear()
        big = asyncio.ensure_future(c.post("/v1/embeddings", json={"input": [f"doc {i}" for i in range(2000)]},
                                           headers=AUTH))
        while not e.batches:  # the big request's first pass runs (and waits at the gate)
            await asyncio.sleep(0.001)
        small = asyncio.ensure_future(c.post("/v1/embeddings", json={"input": "small one"}, headers=AUTH))
        while "small one" not in e.seen:  # counted, so queued: nothing awaits in between
            await asyncio.sleep(0.001)
        e.gate.set()
        r = await small
        assert r.status == 200
        assert (await big).status == 200
        total = len(e.batches)
        assert total >= 50
        served_in = next(i for i, b in enumerate(e.batches) if "small one" in b)
        # the small request rides in the very next pass, not after the big one's 60
        assert served_in == 1, (served_in, total)
    run(t, batch_tokens=100)
