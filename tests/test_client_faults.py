"""The client against a misbehaving server: every fault mode of the stand-in
(``tests/standin/server.py``, ``Fault("bad", mode=...)``), with every I/O backend of the sync
client (and its default, `auto`) and with the async client. No reply becomes a vector unless it passes every check;
every wait is bounded; every failure is a QembedError naming the URL.

docs/reliability/client.md lists these faults with the test that proves each.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qembed.client.drivers import AsyncClient, Client
from qembed.errors import BadReply, InputError, ServerError, ServerUnreachable
from tests.helpers.faults import EXPECTED, FLOAT_EXPECTED
from tests.standin.server import BAD_MODES, Fault, HashBackend, StandinConfig, serve_in_thread

ROOT = Path(__file__).resolve().parents[1]

TEXTS = ["alpha", "beta", "gamma"]


@pytest.fixture(params=["httpx", "aiohttp", "stdlib", "auto", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def embed(url: str, how: str, texts: list[str], **kw: Any) -> Any:
    kw = {"backoff": 0.001, "max_retries": 1, **kw}
    if how == "async":
        async def run() -> Any:
            async with AsyncClient(url, **kw) as ac:
                return await ac.embed_documents(texts)
        return asyncio.run(run())
    with Client(url, http=how, **kw) as c:  # type: ignore[arg-type]
        return c.embed_documents(texts)


def test_every_fault_mode_is_covered() -> None:
    covered = set(EXPECTED) | set(FLOAT_EXPECTED) | {"trickle", "retry_after", "wrong_content_type"}
    assert covered == set(BAD_MODES)


@pytest.mark.parametrize("fault", list(EXPECTED))
def test_a_bad_reply_never_becomes_vectors(standin: Any, mode: str, fault: str) -> None:
    cls, what = EXPECTED[fault]
    # the first reply (which also teaches the size) is broken, and the retry too when retried
    standin.state.config.faults.append(Fault("bad", mode=fault, count=3))
    with pytest.raises(cls) as info:
        embed(standin.url, mode, TEXTS)
    msg = info.value.message
    assert what in msg, msg
    assert standin.url in msg or cls is ServerError  # ServerError names the status; BadReply the URL
    if cls is BadReply:
        assert f"{standin.url}/v1/embeddings" in msg and info.value.exit_code == 1


@pytest.mark.parametrize("fault", list(FLOAT_EXPECTED))
def test_a_bad_float_reply_never_becomes_vectors(mode: str, fault: str) -> None:
    cls, what = FLOAT_EXPECTED[fault]
    with (serve_in_thread(StandinConfig(dim=16, faults=[Fault("bad", mode=fault, count=3)])) as srv,
          pytest.raises(cls, match=what)):
        _embed_floats(srv.url, mode, TEXTS)


def _embed_floats(url: str, how: str, texts: list[str]) -> Any:
    """Embed with the float fallback (as after a server refused base64)."""
    if how == "async":
        async def run() -> Any:
            async with AsyncClient(url, backoff=0.001, max_retries=1) as ac:
                ac._encoding = "float"
                return await ac.embed_documents(texts)
        return asyncio.run(run())
    with Client(url, http=how, backoff=0.001, max_retries=1) as c:  # type: ignore[arg-type]
        c._encoding = "float"  # the one copy of what the client learned
        return c.embed_documents(texts)


def test_a_later_bad_reply_fails_the_call_and_writes_no_row(standin: Any, mode: str) -> None:
    good = embed(standin.url, mode, TEXTS)
    np.testing.assert_allclose(good, np.array(HashBackend(16).embed(TEXTS), dtype=np.float32), atol=1e-6)
    standin.state.config.faults.append(Fault("bad", mode="repeated_index", count=3))
    with pytest.raises(BadReply):
        embed(standin.url, mode, TEXTS)


def test_a_wrong_content_type_with_a_good_body_is_accepted(standin: Any, mode: str) -> None:
    standin.state.config.faults.append(Fault("bad", mode="wrong_content_type"))
    out = embed(standin.url, mode, TEXTS)
    np.testing.assert_allclose(out, np.array(HashBackend(16).embed(TEXTS), dtype=np.float32), atol=1e-6)


def test_a_bad_models_reply_is_refused(mode: str) -> None:
    cfg = StandinConfig(dim=16, models_body='{"data": [{"id": "m", "max_model_len": "lots"}]}')
    with serve_in_thread(cfg) as srv, pytest.raises(BadReply, match=r"/v1/models is invalid: `max_model_len` is 'lots'"):
        embed(srv.url, mode, TEXTS)


# -- every wait is bounded --------------------------------------------------------------------


def test_a_trickling_server_hits_the_total_deadline(standin: Any, mode: str) -> None:
    # one byte every 0.3 s: each read is far inside the 1 s read timeout, the whole body never is
    standin.state.config.faults.append(Fault("bad", mode="trickle", seconds=0.3, count=5))
    t0 = time.monotonic()
    with pytest.raises(ServerUnreachable, match=r"no complete answer within the 1 s request deadline"):
        embed(standin.url, mode, TEXTS, timeout=1.0, max_retries=0)
    assert time.monotonic() - t0 < 4  # the deadline plus at most one read, not the ~300 s trickle


def test_a_huge_retry_after_is_capped_and_shown(standin: Any, mode: str, monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    import qembed.client.flow as client_mod

    monkeypatch.setattr(client_mod, "MAX_RETRY_AFTER", 0.05)  # the cap itself, made short for the test
    standin.state.config.faults.append(Fault("bad", mode="retry_after", status=503, seconds=3600))
    with caplog.at_level(logging.WARNING, logger="qembed.client.flow"):
        out = embed(standin.url, mode, TEXTS)
    assert out.shape == (3, 16)
    assert f"{standin.url} asked to wait 3600 s (Retry-After); waiting 0.05 s" in caplog.text


def test_the_retry_budget_is_bounded_in_time(standin: Any, mode: str, caplog: pytest.LogCaptureFixture) -> None:
    # 503 forever with Retry-After 1: max_retries alone would allow 50 s of waiting
    standin.state.config.faults.append(Fault("bad", mode="retry_after", status=503, seconds=1, count=1000))
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="qembed.client.flow"), pytest.raises(ServerError, match="503"):
        embed(standin.url, mode, TEXTS, max_retries=50, retry_timeout=1.5)
    assert time.monotonic() - t0 < 5
    assert "giving up retrying" in caplog.text


def test_the_default_retry_after_cap_is_60_seconds() -> None:
    c = Client("http://x", http="httpx")
    assert c._retry_delay(0, "3600") == 60.0
    assert c._retry_delay(0, "inf") < 60.0  # not a number of seconds: our own backoff
    c.close()


# -- inputs -----------------------------------------------------------------------------------


def test_lone_surrogates_are_an_input_error_with_the_index(standin: Any, mode: str) -> None:
    with pytest.raises(InputError, match=r"input 1: the text has a lone surrogate") as info:
        embed(standin.url, mode, ["ok", "bad \ud800 text", "ok too"])
    assert info.value.index == 1
    before = len(standin.requests)
    out = embed(standin.url, mode, ["ok", "bad \udfff", "fine"], on_error="skip")
    assert out.shape[0] == 2 and out.indices.tolist() == [0, 2] and out.failures[0].index == 1
    assert all("\udfff" not in t for r in standin.requests[before:] for t in r["input"])


@pytest.mark.parametrize(("dims", "model"), [(16, None), (31, None), (2561, "Qwen/Qwen3-Embedding-4B"),
                                             (1025, "Qwen3-Embedding-0.6B")])
def test_dimensions_out_of_range_are_refused_before_any_connection(mode: str, dims: int, model: str | None) -> None:
    # nothing listens on this URL: a connection attempt would raise ServerUnreachable instead
    async def run() -> Any:
        async with AsyncClient("http://127.0.0.1:9", model=model) as ac:
            return await ac.embed(["x"], dimensions=dims)

    with pytest.raises(InputError, match=r"`dimensions` must be between 32 and"):
        if mode == "async":
            asyncio.run(run())
        else:
            with Client("http://127.0.0.1:9", http=mode, model=model) as c:  # type: ignore[arg-type]
                c.embed(["x"], dimensions=dims)


def test_dimensions_above_the_served_models_maximum_are_refused_after_learning_it(mode: str) -> None:
    with serve_in_thread(StandinConfig(dim=64)) as srv, pytest.raises(InputError, match="between 32 and 64"):
        _embed_dims(srv.url, mode, 65)


def _embed_dims(url: str, how: str, dims: int) -> Any:
    if how == "async":
        async def run() -> Any:
            async with AsyncClient(url) as ac:
                return await ac.embed(["x"], dimensions=dims)
        return asyncio.run(run())
    with Client(url, http=how) as c:  # type: ignore[arg-type]
        return c.embed(["x"], dimensions=dims)


# -- a client never closed exits quietly --------------------------------------------------------


@pytest.mark.parametrize("script", [
    "import asyncio, qembed\nv = asyncio.run(qembed.AsyncClient(URL).embed(['hello']))\nprint('ok')\n",
    "import asyncio, qembed\nc = qembed.AsyncClient(URL)\nasyncio.run(c.embed(['kept']))\nprint('ok')\n",
    "import qembed\nprint('ok' if qembed.Client(URL, http='httpx').embed(['x']).shape == (1, 16) else 'no')\n",
])
def test_an_async_or_httpx_client_never_closed_exits_quietly(standin: Any, script: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", script.replace("URL", repr(standin.url))], capture_output=True,
                       text=True, timeout=60, env=env, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    assert "nclosed" not in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_client_never_closed_exits_quietly(standin: Any) -> None:
    script = textwrap.dedent(f"""
        import gc, warnings
        warnings.simplefilter("always")
        import qembed
        v = qembed.Client({standin.url!r}).embed(["hello", "world"])
        assert v.shape == (2, 16), v.shape
        c = qembed.Client({standin.url!r})
        c.embed(["kept until exit"])
        print("ok")
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "always", "PYTHONDEVMODE": "1"}
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"
    assert "Unclosed" not in r.stderr and "unclosed" not in r.stderr and "Traceback" not in r.stderr, r.stderr


# -- fuzzing: the texts ------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(texts=st.lists(st.text(max_size=30), min_size=1, max_size=6))
def test_fuzzed_texts_give_a_row_or_a_named_failure_each(standin: Any, texts: list[str]) -> None:
    with Client(standin.url, http="httpx", backoff=0.001, on_error="skip") as c:
        out = c.embed_documents(texts)
    failed = {f.index for f in out.failures}
    kept = [i for i in range(len(texts)) if i not in failed]
    assert (out.indices.tolist() if out.indices is not None else list(range(len(texts)))) == kept
    for i in failed:
        t = texts[i]
        assert not t.strip() or any(0xD800 <= ord(ch) <= 0xDFFF for ch in t)
    if kept:
        want = np.array(HashBackend(16).embed([texts[i] for i in kept]), dtype=np.float32)
        np.testing.assert_allclose(out, want, atol=1e-6)


def test_a_call_waiting_when_the_loop_thread_stops_ends_with_an_error() -> None:
    """The sync Client's aiohttp calls run on a private loop thread. If that thread stops while a
    call waits (the client closed by another thread, interpreter exit after bulk's Ctrl-C), the
    call ends within seconds with `error:` instead of waiting forever: the third newcomer trial
    saw an interrupted bulk job never exit, its workers stuck in `Client._run`."""
    import socket
    import threading

    from qembed.errors import QembedError

    accepted = threading.Event()
    held: list[socket.socket] = []
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]

        def accept() -> None:  # a server that takes the request and never answers
            conn, _ = srv.accept()
            held.append(conn)
            accepted.set()

        threading.Thread(target=accept, daemon=True).start()
        c = Client(f"http://127.0.0.1:{port}", model="m", http="aiohttp", timeout=120, max_retries=0)
        outcome: list[BaseException | None] = []

        def call() -> None:
            try:
                c.embed(["a", "b", "c"])
                outcome.append(None)
            except BaseException as exc:  # the test reports what ended the call
                outcome.append(exc)

        worker = threading.Thread(target=call, daemon=True)
        worker.start()
        assert accepted.wait(timeout=30), "the client never connected"
        loop = c._loop
        assert loop is not None
        loop.call_soon_threadsafe(loop.stop)  # the loop thread ends with the call still pending
        worker.join(timeout=15)
        for conn in held:
            conn.close()
    assert not worker.is_alive(), "the call still waits after its loop thread stopped"
    assert len(outcome) == 1 and isinstance(outcome[0], QembedError), outcome
    assert "closed while this call was waiting" in outcome[0].message
    c.close()  # closing after that is quiet
