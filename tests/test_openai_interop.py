"""The plain openai SDK pointed at the stand-in: float, base64 (its default) and dimensions.

Both it and qembed must see the same vectors, so a user can switch between them.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import openai
import pytest

from qembed.client.drivers import Client
from tests.standin.server import StandinConfig, serve_in_thread


@pytest.mark.parametrize("encoding", ["float", "base64", None])
@pytest.mark.parametrize("dims", [None, 32])
def test_openai_sdk_matches_qembed(encoding: str | None, dims: int | None) -> None:
    texts = ["Instruct: Retrieve semantically similar text\nQuery:a cat", "plain doc"]
    with serve_in_thread(StandinConfig(dim=64)) as srv:
        sdk = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)
        kw: dict[str, object] = {}
        if encoding is not None:
            kw["encoding_format"] = encoding
        if dims is not None:
            kw["dimensions"] = dims
        resp = sdk.embeddings.create(model="Qwen/Qwen3-Embedding-4B", input=texts, **kw)
        sdk.close()
        sent = srv.requests[-1]
        with Client(srv.url) as c:
            ours = c.embed(texts, dimensions=dims)
    assert sent["input"] == texts  # the SDK sends text, not token ids (LangChain is what sends ids)
    assert sent["encoding_format"] == (encoding or "base64")
    rows = []
    for item in resp.data:
        emb = item.embedding
        if isinstance(emb, str):  # explicit base64: the SDK leaves it encoded
            emb = np.frombuffer(base64.b64decode(emb), dtype="<f4")
        rows.append(np.asarray(emb, dtype=np.float32))
    theirs = np.stack(rows)
    assert theirs.shape == ours.shape == (2, dims or 64)
    np.testing.assert_allclose(theirs, ours, atol=1e-6)
    assert resp.usage.prompt_tokens == ours.prompt_tokens


@pytest.mark.slow
def test_openai_sdk_against_a_server_qembed_serve_started(tmp_path: Path) -> None:
    """The issue's interop check end to end: `qembed serve --detach` starts the (fake) SGLang
    with qembed's real argv (`--is-embedding`, Matryoshka on), then the plain openai SDK gets
    float, base64 and `dimensions` answers that agree with each other and with qembed.Client."""
    from tests.fake_site import harness

    port = harness.free_port()
    pidfile = tmp_path / "pids.json"
    env = harness.fake_env(pidfile, QEMBED_STATE_DIR=str(tmp_path / "state"))
    args = ["serve", "--python", str(harness.WRAPPER), "--port", str(port), "--detach", "--name", "sdk", "--json"]
    started = harness.run_qembed(args, env)
    assert started.returncode == 0, started.stderr
    pids = harness.all_pids(harness.read_pids(pidfile))
    try:
        base = json.loads(started.stdout)["openai_base_url"]
        sdk = openai.OpenAI(base_url=base, api_key="unused", max_retries=0)
        texts = ["Instruct: Retrieve semantically similar text\nQuery:a cat", "plain doc"]
        as_float = sdk.embeddings.create(model="m", input=texts, encoding_format="float")
        default = sdk.embeddings.create(model="m", input=texts)  # the SDK's base64 path
        small = sdk.embeddings.create(model="m", input=texts, dimensions=256)
        sdk.close()
        f = np.array([d.embedding for d in as_float.data], dtype=np.float32)
        b = np.array([d.embedding for d in default.data], dtype=np.float32)
        s = np.array([d.embedding for d in small.data], dtype=np.float32)
        assert f.shape == (2, 2560) and np.allclose(f, b, atol=1e-7)
        assert s.shape == (2, 256) and np.allclose(np.linalg.norm(s, axis=1), 1.0, atol=1e-5)
        # Matryoshka: the 256-d answer is the renormalised head of the full vector
        head = f[:, :256] / np.linalg.norm(f[:, :256], axis=1, keepdims=True)
        assert np.allclose(s, head, atol=1e-6)
        with Client(base) as c:
            assert np.allclose(c.embed(texts, dimensions=256), s, atol=1e-6)
    finally:
        stop = harness.run_qembed(["stop", "sdk", "--timeout", "10"], env)
        harness.kill_leftovers(pids)
    assert stop.returncode == 0, stop.stderr
    harness.assert_gone(pids)
