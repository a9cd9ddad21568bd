"""The client against the stand-in SGLang server and httpx.MockTransport."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest

import qembed
from qembed.client.drivers import Client
from qembed.client.flow import BaseClient, estimate_tokens
from qembed.errors import ConfigError, InputError, ServerError, ServerUnreachable
from qembed.integrations import Sides
from tests.standin.server import Fault, HashBackend, StandinConfig, serve_in_thread

RETRIEVAL = "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:"


def reference(texts: list[str], dim: int, dims: int | None = None) -> np.ndarray:
    """What the stand-in's backend gives, computed without the client."""
    full = np.array(HashBackend(dim).embed(texts), dtype=np.float64)
    if dims is not None:
        full = full[:, :dims]
        full /= np.linalg.norm(full, axis=1, keepdims=True)
    return full.astype(np.float32)


HTTP = {"backend": "httpx"}


@pytest.fixture(autouse=True, params=["httpx", "aiohttp", "stdlib", "auto"])
def http_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test here runs with every I/O backend of the sync Client, and with `auto` (single
    requests over the standard library, concurrent ones over aiohttp). aiohttp is a core
    dependency, so no variant may be skipped."""
    HTTP["backend"] = request.param
    yield request.param
    HTTP["backend"] = "httpx"


def fast(url: str, **kw: Any) -> Client:
    c = Client(url, backoff=0.001, http=HTTP["backend"], **kw)  # type: ignore[arg-type]
    assert c.http == {"auto": "aiohttp"}.get(HTTP["backend"], HTTP["backend"])
    return c


def embed_inputs(srv: Any) -> list[list[str]]:
    return [r["input"] for r in srv.requests if r.get("input") != ["qembed dimension probe"]]


# -- what is sent ----------------------------------------------------------------------------


def test_queries_documents_and_custom_instruction_reach_the_server_verbatim() -> None:
    with serve_in_thread(StandinConfig(dim=32)) as srv, fast(srv.url) as c:
        q = c.embed_queries(["what is MRL?"])
        d = c.embed_documents("MRL is Matryoshka Representation Learning.")
        s = c.embed_queries(["a cat"], task="sts")
        x = c.embed(["bug"], instruction="Given a bug report, retrieve the fix")
        bodies = srv.requests
    assert bodies[0]["input"] == [RETRIEVAL + "what is MRL?"]
    assert bodies[0]["encoding_format"] == "base64"
    assert bodies[0]["model"] == "Qwen/Qwen3-Embedding-4B"  # learned from /v1/models
    assert "dimensions" not in bodies[0]
    assert bodies[1]["input"] == ["MRL is Matryoshka Representation Learning."]
    assert bodies[2]["input"] == ["Instruct: Retrieve semantically similar text\nQuery:a cat"]
    assert bodies[3]["input"] == ["Instruct: Given a bug report, retrieve the fix\nQuery:bug"]
    for arr, text in [(q, RETRIEVAL + "what is MRL?"), (d, "MRL is Matryoshka Representation Learning.")]:
        assert arr.dtype == np.float32 and arr.shape == (1, 32)
        np.testing.assert_allclose(arr, reference([text], 32), atol=1e-6)
    assert q.prompt_tokens == len((RETRIEVAL + "what is MRL?").split()) + 1
    assert s.shape == x.shape == (1, 32)


def test_embed_texts_is_the_one_query_document_raw_dispatch() -> None:
    """A query with neither task nor instruction gets the retrieval task (the default lives in
    `kind_args`); the adapters' query side goes through it too; a document with an instruction
    and an unknown kind are refused before anything is sent."""
    with serve_in_thread(StandinConfig(dim=32)) as srv, fast(srv.url) as c:
        c.embed_texts(["q"], kind="query")
        c.embed_texts(["q"], kind="query", instruction="Find it")
        c.embed_texts(["d"], kind="document", task="sts")
        c.embed_texts(["d"], kind="document")
        c.embed_texts(["r"], kind="raw", prefix="p: ")
        Sides(None, None).embed_queries(c, ["s"], None)
        Sides("code", None).embed_documents(c, ["s"], None)
        with pytest.raises(ConfigError, match="documents take no"):
            c.embed_texts(["d"], kind="document", instruction="x")
        with pytest.raises(ConfigError, match="`kind` must be"):
            c.embed_texts(["d"], kind="passage")  # type: ignore[arg-type]
        inputs = embed_inputs(srv)
    assert inputs == [[RETRIEVAL + "q"], ["Instruct: Find it\nQuery:q"],
                      ["Instruct: Retrieve semantically similar text\nQuery:d"], ["d"], ["p: r"], [RETRIEVAL + "s"],
                      ["s"]]


def test_results_are_unit_rows_in_input_order_across_many_requests() -> None:
    texts = [f"text {i} " * (i % 7 + 1) for i in range(300)]
    with serve_in_thread(StandinConfig(dim=48)) as srv, fast(srv.url, batch_size=16, concurrency=4) as c:
        out = c.embed_documents(texts)
        n_requests = len(srv.requests)
    assert n_requests == 300 // 16 + 1
    np.testing.assert_allclose(out, reference(texts, 48), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert out.indices is None and out.failures == []


def test_order_survives_a_slow_first_request() -> None:
    texts = [f"t{i}" for i in range(128)]
    with serve_in_thread(StandinConfig(dim=16)) as srv, fast(srv.url, batch_size=16, concurrency=4) as c:
        c.embed_documents(["warm up"])  # learn the size so the rest goes concurrently
        srv.state.config.faults.append(Fault("delay", count=1, seconds=0.3))
        out = c.embed_documents(texts)
    np.testing.assert_allclose(out, reference(texts, 16), atol=1e-6)


def test_request_split_by_token_budget() -> None:
    long = "x" * 4000  # ~1000 estimated tokens
    with serve_in_thread(StandinConfig(dim=8)) as srv, fast(srv.url, batch_tokens=2500) as c:
        c.embed_documents([long] * 5)
        sizes = [len(i) for i in embed_inputs(srv)]
    assert estimate_tokens(long) == 1001
    # by the estimated token budget, not by count; requests in flight may arrive in any order
    assert sorted(sizes) == [1, 2, 2]


# -- dimensions ------------------------------------------------------------------------------


@pytest.mark.parametrize("dims", [32, 40])
def test_server_and_client_truncation_give_the_same_vectors(dims: int) -> None:
    texts = [f"doc {i}" for i in range(70)]
    with serve_in_thread(StandinConfig(dim=64, matryoshka=True)) as on, fast(on.url) as c:
        server_side = c.embed_documents(texts, dimensions=dims)
        assert c.server_info().supports_dimensions is True
        assert all(r.get("dimensions") == dims for r in on.requests if r["input"] != ["qembed dimension probe"])
    with serve_in_thread(StandinConfig(dim=64, matryoshka=False)) as off, fast(off.url) as c:
        client_side = c.embed_documents(texts, dimensions=dims)
        assert c.server_info().supports_dimensions is False
    assert server_side.shape == client_side.shape == (70, dims)
    np.testing.assert_allclose(server_side, client_side, atol=1e-6)
    np.testing.assert_allclose(client_side, reference(texts, 64, dims), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(client_side, axis=1), 1.0, atol=1e-5)


def test_dimensions_range_is_learned_from_the_server() -> None:
    with serve_in_thread(StandinConfig(dim=64)) as srv, fast(srv.url) as c:
        with pytest.raises(InputError, match="between 32 and 64"):
            c.embed_documents(["x"], dimensions=65)
        with pytest.raises(InputError, match="between 32 and 64"):
            c.embed_documents(["x"], dimensions=16)
        assert c.embed_documents(["x"], dimensions=64).shape == (1, 64)
        assert c.server_info().dimensions == 64


# -- inputs SGLang rejects wholesale ---------------------------------------------------------


def test_blank_input_raises_with_its_index_before_sending() -> None:
    with serve_in_thread(StandinConfig(dim=8)) as srv, fast(srv.url) as c:
        with pytest.raises(InputError) as exc:
            c.embed_documents(["fine", "   ", "also fine"])
        assert exc.value.index == 1
        assert srv.requests == []


def test_blank_and_too_long_inputs_are_skipped_and_reported() -> None:
    texts = ["ok one", " ", "w " * 200, "v " * 20, "ok two"]  # [2] fails the byte pre-check, [3] the server
    with serve_in_thread(StandinConfig(dim=8, context_length=16)) as srv, fast(srv.url, on_error="skip") as c:
        out = c.embed_documents(texts)
    assert out.shape == (2, 8)
    assert out.indices.tolist() == [0, 4]
    assert [f.index for f in out.failures] == [1, 2, 3]
    assert "longer than the model's context length" in out.failures[2].reason
    np.testing.assert_allclose(out, reference(["ok one", "ok two"], 8), atol=1e-6)


def test_too_long_input_found_by_the_server_is_isolated_and_named() -> None:
    texts = [f"t{i}" for i in range(9)] + ["v " * 20] + ["z"]
    with serve_in_thread(StandinConfig(dim=8, context_length=16)) as srv, fast(srv.url) as c:
        c.embed_documents(["warm"])
        with pytest.raises(InputError, match=r"input 9: The input \(21 tokens\) is longer") as exc:
            c.embed_documents(texts)
    assert exc.value.index == 9


# -- retries ---------------------------------------------------------------------------------


def test_retries_a_full_queue_503_and_a_reset_connection() -> None:
    cfg = StandinConfig(dim=8, faults=[Fault("status", count=2), Fault("reset", count=1)])
    with serve_in_thread(cfg) as srv, fast(srv.url, max_retries=3) as c:
        out = c.embed_documents(["a", "b"])
        assert len(srv.requests) == 4
    np.testing.assert_allclose(out, reference(["a", "b"], 8), atol=1e-6)


def test_gives_up_after_max_retries_with_the_server_message() -> None:
    cfg = StandinConfig(dim=8, faults=[Fault("status", count=10)])
    with serve_in_thread(cfg) as srv, fast(srv.url, max_retries=2) as c:
        with pytest.raises(ServerError, match="503: The request queue is full") as exc:
            c.embed_documents(["a"])
        assert len(srv.requests) == 3
    assert exc.value.status == 503 and exc.value.hint


def test_no_retry_on_400() -> None:
    cfg = StandinConfig(dim=8, faults=[Fault("status", count=5, status=400, message="bad thing")])
    with serve_in_thread(cfg) as srv, fast(srv.url) as c:
        with pytest.raises(ServerError, match="400: bad thing"):
            c.embed_documents(["a"])
        assert len(srv.requests) == 1


def test_retry_after_header_is_honoured_and_backoff_is_bounded() -> None:
    c = BaseClient("http://x", backoff=0.5)
    assert c._retry_delay(0, "2") == 2.0
    assert c._retry_delay(0, "9999") == 60.0
    for attempt in range(8):
        d = c._retry_delay(attempt, None)
        cap = min(10.0, 0.5 * 2**attempt)
        assert cap / 2 <= d <= cap


def test_unreachable_server_says_how_to_start_one() -> None:
    with serve_in_thread(StandinConfig(dim=8)) as srv:
        url = srv.url
    with fast(url, max_retries=1) as c, pytest.raises(ServerUnreachable) as exc:
        c.embed_documents(["a"])
    assert exc.value.message == f"no server answers at {url}"
    assert "qembed serve" in (exc.value.hint or "") and "QEMBED_URL" in (exc.value.hint or "")


# -- error bodies (MockTransport) -------------------------------------------------------------


def _mock(status: int, body: Any) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(404, json={"detail": "Not Found"})
        return httpx.Response(status, content=json.dumps(body).encode() if not isinstance(body, bytes) else body)

    return handler


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (400, {"object": "error", "message": "flat sglang", "type": "BadRequestError", "param": None, "code": 400}, "flat sglang"),
        (400, {"error": {"message": "nested openai", "type": "invalid_request_error"}}, "nested openai"),
        (401, {"error": "Unauthorized"}, "Unauthorized"),
        (404, {"detail": "Not Found"}, "Not Found"),
        (400, b"plain text oops", "plain text oops"),
        (502, b"<html><title>502 Bad Gateway</title></html>",
         "an HTML page (502 Bad Gateway), not SGLang's JSON: a proxy or another web server?"),
    ],
)
def test_error_bodies_of_all_shapes(status: int, body: Any, message: str) -> None:
    with (Client("http://server", transport=httpx.MockTransport(_mock(status, body)), max_retries=0) as c,
          pytest.raises(ServerError) as exc):
        c.embed_documents(["x"])
    assert exc.value.status == status
    assert exc.value.message == f"the server answered {status}: {message}"
    if status == 401:
        assert "QEMBED_API_KEY" in (exc.value.hint or "")


def test_float_fallback_and_api_key_header() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "m", "max_model_len": 100}]})
        body = json.loads(request.content)
        if body["encoding_format"] == "base64":
            return httpx.Response(400, json={"object": "error", "message": "encoding_format must be either 'float' or 'base64', got 'base64'"})
        return httpx.Response(200, json={"data": [{"embedding": [0.0, 1.0] + [0.0] * 30, "index": 0}], "model": "m",
                                          "usage": {"prompt_tokens": 2}})

    with Client("http://server/v1", api_key="sekret", transport=httpx.MockTransport(handler)) as c:
        out = c.embed_documents(["x"])
    assert out.shape == (1, 32) and out[0, :2].tolist() == [0.0, 1.0]
    assert [json.loads(r.content)["encoding_format"] for r in seen[1:]] == ["base64", "float"]
    assert all(r.headers["authorization"] == "Bearer sekret" for r in seen)
    assert seen[0].url == "http://server/v1/models"  # the trailing /v1 of the base URL is not doubled


# -- defaults --------------------------------------------------------------------------------


def test_defaults_come_from_env_then_the_recorded_server(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Client().base_url == "http://127.0.0.1:30000"

    class Rec:
        url = "http://recorded:31000"
        api_key_env = "MY_KEY"

    import qembed.host.state

    monkeypatch.setattr(qembed.host.state, "default_server", lambda: Rec(), raising=False)
    monkeypatch.setenv("MY_KEY", "from-record")
    c = Client()
    assert (c.base_url, c.api_key) == ("http://recorded:31000", "from-record")
    monkeypatch.setenv("QEMBED_URL", "http://env:1")
    monkeypatch.setenv("QEMBED_API_KEY", "env-key")
    monkeypatch.setenv("QEMBED_MODEL", "env-model")
    c = Client()
    assert (c.base_url, c.api_key, c.model) == ("http://env:1", "env-key", "env-model")
    c = Client("http://arg:2", api_key="arg-key", model="arg-model")
    assert (c.base_url, c.api_key, c.model) == ("http://arg:2", "arg-key", "arg-model")


def test_api_key_reaches_a_guarded_server() -> None:
    with serve_in_thread(StandinConfig(dim=8, api_key="k")) as srv:
        with fast(srv.url, api_key="k") as c:
            assert c.embed_documents(["a"]).shape == (1, 8)
        with fast(srv.url, api_key="wrong") as c, pytest.raises(ServerError) as exc:
            c.embed_documents(["a"])
    assert exc.value.status == 401


def test_public_names() -> None:
    assert qembed.Embeddings is qembed.client.results.Embeddings
    assert qembed.Client is Client
    with serve_in_thread(StandinConfig(dim=8)) as srv, fast(srv.url) as c:
        e = c.embed_queries("single string")
    assert isinstance(e, qembed.Embeddings) and e.shape == (1, 8)
    assert e.usage == {"prompt_tokens": e.prompt_tokens, "total_tokens": e.prompt_tokens}


def test_refused_connection_fails_fast_until_the_server_has_answered() -> None:
    calls: list[str] = []

    def refused(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        raise httpx.ConnectError("connection refused", request=request)

    with Client("http://nowhere", transport=httpx.MockTransport(refused), backoff=0.001) as c, \
            pytest.raises(ServerUnreachable, match="no server answers at http://nowhere"):
        c.embed_documents(["x"])
    assert calls == ["/v1/models"] * 2  # one retry, not max_retries

    calls.clear()

    def restarting(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "m", "max_model_len": 100}]})
        raise httpx.ConnectError("connection refused", request=request)

    with Client("http://restarting", transport=httpx.MockTransport(restarting), backoff=0.001, max_retries=3) as c, \
            pytest.raises(ServerUnreachable):
        c.embed_documents(["x"])
    assert calls == ["/v1/models"] + ["/v1/embeddings"] * 4  # the server answered once: full retries


def test_slices_and_derived_arrays_do_not_carry_stale_metadata() -> None:
    with serve_in_thread(StandinConfig(dim=8)) as srv, fast(srv.url, on_error="skip") as c:
        e = c.embed_documents(["a", " ", "b", "c"])
    assert e.indices.tolist() == [0, 2, 3] and len(e.failures) == 1 and e.prompt_tokens == 6
    copy = e.copy()
    assert copy.indices.tolist() == [0, 2, 3] and copy.prompt_tokens == 6
    part = e[1:]
    assert part.indices is None and part.failures == [] and part.prompt_tokens == 0
    sims = e @ e.T
    norms = np.linalg.norm(e, axis=1)
    assert type(sims) is np.ndarray and type(norms) is np.ndarray
    np.testing.assert_allclose(np.diag(sims), 1.0, atol=1e-5)


def test_token_ids_are_refused_with_the_eos_explanation() -> None:
    with Client("http://unused") as c, pytest.raises(InputError) as exc:
        c.embed([[1944, 151643]])  # type: ignore[list-item]
    assert exc.value.index == 0 and "151643" in (exc.value.hint or "")
