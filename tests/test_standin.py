"""The stand-in SGLang server itself: it must answer as the reference says SGLang does,
or every test built on it proves nothing."""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator

import httpx
import pytest

from tests.standin.server import Fault, StandinConfig, serve_in_thread


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


_OPEN: list[httpx.Client] = []


def _client(url: str) -> httpx.Client:
    c = httpx.Client(base_url=url)
    _OPEN.append(c)
    return c


def test_health_503_then_200_and_models_answers_early() -> None:
    with serve_in_thread(StandinConfig(dim=8, health_503_count=2)) as srv:
        c = _client(srv.url)
        assert c.get("/v1/models").status_code == 200  # answers before ready: not a readiness signal
        assert [c.get("/health").status_code for _ in range(3)] == [503, 503, 200]
        assert c.get("/v1/models").json()["data"][0]["max_model_len"] == 32768


def test_embeddings_shape_base64_and_dimensions() -> None:
    with serve_in_thread(StandinConfig(dim=16)) as srv:
        c = _client(srv.url)
        full = c.post("/v1/embeddings", json={"input": ["a b", "c"]}).json()
        assert full["model"] == "Qwen/Qwen3-Embedding-4B"
        assert full["usage"]["prompt_tokens"] == 3 + 2  # words + EOS each
        b64 = c.post("/v1/embeddings", json={"input": ["a b"], "dimensions": 4, "encoding_format": "base64"}).json()
        vec = struct.unpack("<4f", base64.b64decode(b64["data"][0]["embedding"]))
        head = full["data"][0]["embedding"][:4]
        norm = sum(v * v for v in head) ** 0.5
        assert vec == pytest.approx([v / norm for v in head], rel=1e-6)
        assert sum(v * v for v in vec) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"input": ["ok", "  "]}, "Input at index 1 cannot be empty or whitespace only"),
        ({"input": ""}, "Input cannot be empty or whitespace only"),
        ({"input": "x", "encoding_format": "f16"}, "encoding_format must be either 'float' or 'base64', got 'f16'"),
        ({"input": "x", "dimensions": 99}, "Provided dimensions are greater than max embedding dimension: 16"),
        ({"input": " ".join(["w"] * 10)}, "The input (11 tokens) is longer than the model's context length (11 tokens)."),
    ],
)
def test_whole_request_failures_use_the_flat_error_body(body: dict[str, object], message: str) -> None:
    with serve_in_thread(StandinConfig(dim=16, context_length=11)) as srv:
        r = httpx.post(srv.url + "/v1/embeddings", json=body)
        assert r.status_code == 400
        assert r.json() == {"object": "error", "message": message, "type": "BadRequestError", "param": None, "code": 400}


def test_matryoshka_off_rejects_dimensions_and_api_key_guards_all_but_health() -> None:
    with serve_in_thread(StandinConfig(dim=8, matryoshka=False, api_key="k")) as srv:
        assert httpx.get(srv.url + "/health").status_code == 200
        assert httpx.post(srv.url + "/v1/embeddings", json={"input": "x"}).json() == {"error": "Unauthorized"}
        r = httpx.post(srv.url + "/v1/embeddings", json={"input": "x", "dimensions": 4}, headers={"Authorization": "Bearer k"})
        assert "does not support matryoshka representation" in r.json()["message"]


def test_faults_status_then_reset_then_normal() -> None:
    cfg = StandinConfig(dim=8, faults=[Fault("status", count=1), Fault("reset", count=1)])
    with serve_in_thread(cfg) as srv:
        r = httpx.post(srv.url + "/v1/embeddings", json={"input": "x"})
        assert r.status_code == 503 and r.json()["message"] == "The request queue is full."
        with pytest.raises(httpx.TransportError):
            httpx.post(srv.url + "/v1/embeddings", json={"input": "x"})
        assert httpx.post(srv.url + "/v1/embeddings", json={"input": "x"}).status_code == 200
        assert len(srv.requests) == 3
