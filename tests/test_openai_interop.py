"""The plain openai SDK pointed at the stand-in: float, base64 (its default) and dimensions.

Both it and qembed must see the same vectors, so a user can switch between them.
"""

from __future__ import annotations

import base64

import numpy as np
import openai
import pytest

from qembed.client import Client
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
