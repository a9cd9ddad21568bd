"""Third-party behaviour: what the stock OpenAI classes of LangChain and LlamaIndex send to a
Qwen3 server, measured against sentence-transformers on the tiny model (stand-in server).

Every test here is marked ``third_party``: it pins a behaviour of langchain-openai 1.7.4 or
llama-index-embeddings-openai 0.6.0 / -openai-like 0.4.0 that docs/client.md describes. When a
framework release changes it, one of these fails: update docs/client.md, then the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from qembed.instructions import format_query
from tests.engine.wiretap import Wiretap
from tests.numerics.reference import assert_caught, assert_matches
from tests.numerics.st_reference import STReference
from tests.numerics.texts import DOCUMENTS, QUERIES
from tests.numerics.tiny_model import TinyModel

pytestmark = pytest.mark.third_party

MODEL = "Qwen/Qwen3-Embedding-0.6B"
NEWLINE_DOCS = [d for d in DOCUMENTS if "\n" in d]


def _openai_embeddings(server: Wiretap, **kw: Any) -> Any:
    from langchain_openai import OpenAIEmbeddings

    return OpenAIEmbeddings(model=MODEL, base_url=server.url + "/v1", api_key="unused",  # type: ignore[arg-type]
                            max_retries=0, **kw)


# -- LangChain OpenAIEmbeddings ------------------------------------------------------------


@pytest.fixture
def byte_level_cl100k(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Stand in for tiktoken's ``cl100k_base``, which tiktoken downloads on first use (no network
    here: it raises ``requests.ConnectionError``). The stand-in is a byte-level tiktoken
    ``Encoding`` (ids 0-255): the same code path, other ids. The real cl100k ids (up to 100k) are
    not Qwen's either; the measured 0.73 in docs/client.md came from them.

    Yields the encoding names LangChain asked tiktoken for."""
    import tiktoken

    asked: list[str] = []
    local = tiktoken.Encoding(name="bytes", pat_str=r"\S+|\s+",
                              mergeable_ranks={bytes([i]): i for i in range(256)}, special_tokens={})

    def get_encoding(name: str) -> tiktoken.Encoding:
        asked.append(name)
        return local

    monkeypatch.setattr(tiktoken, "get_encoding", get_encoding)
    yield asked


def test_langchain_defaults_send_token_ids_without_eos(
    server: Wiretap, st: STReference, byte_level_cl100k: list[str], tiny_model: TinyModel
) -> None:
    emb = _openai_embeddings(server)
    start = len(server.requests)
    got = np.array(emb.embed_documents(DOCUMENTS), dtype=np.float32)
    assert byte_level_cl100k == ["cl100k_base"]  # tiktoken's fallback for a non-OpenAI name
    sent = server.inputs_since(start)
    assert all(isinstance(x, list) and all(isinstance(i, int) for i in x) for x in sent)
    assert sent[0] == list(DOCUMENTS[0].encode())  # the client-side ids, not text
    assert not any(x[-1] == tiny_model.endoftext_id for x in sent)  # no EOS appended
    result = assert_caught(got, st.documents(DOCUMENTS), label="langchain OpenAIEmbeddings defaults")
    assert result.min_cos < 0.99


def test_langchain_raw_text_is_right_for_documents_but_queries_lack_the_instruction(
    server: Wiretap, st: STReference
) -> None:
    emb = _openai_embeddings(server, check_embedding_ctx_length=False)
    start = len(server.requests)
    docs = np.array(emb.embed_documents(DOCUMENTS), dtype=np.float32)
    queries = np.array([emb.embed_query(q) for q in QUERIES], dtype=np.float32)
    assert server.inputs_since(start) == DOCUMENTS + QUERIES  # text, newlines intact, no instruction
    assert_matches(docs, st.documents(DOCUMENTS), label="langchain check_embedding_ctx_length=False docs")
    assert_caught(queries, st.queries(QUERIES), label="langchain check_embedding_ctx_length=False queries")
    assert_matches(queries, st.documents(QUERIES), label="langchain embed_query == a bare document")


def test_langchain_settings_that_make_the_stock_class_right(
    server: Wiretap, st: STReference
) -> None:
    """What docs/client.md tells users who keep OpenAIEmbeddings: raw text, and the query
    formatted with qembed.format_query; `dimensions` passes through."""
    emb = _openai_embeddings(server, check_embedding_ctx_length=False, dimensions=32)
    docs = np.array(emb.embed_documents(DOCUMENTS), dtype=np.float32)
    queries = np.array([emb.embed_query(format_query(q)) for q in QUERIES], dtype=np.float32)
    assert_matches(docs, st.documents(DOCUMENTS, dims=32), label="langchain stock, fixed, docs d=32")
    assert_matches(queries, st.queries(QUERIES, dims=32), label="langchain stock, fixed, queries d=32")


# -- LlamaIndex OpenAIEmbedding / OpenAILikeEmbedding --------------------------------------


def _llamaindex(kind: str, server: Wiretap) -> Any:
    if kind == "OpenAIEmbedding":
        from llama_index.embeddings.openai import OpenAIEmbedding

        return OpenAIEmbedding(model_name=MODEL, api_base=server.url + "/v1", api_key="unused",
                               max_retries=0)
    from llama_index.embeddings.openai_like import OpenAILikeEmbedding

    return OpenAILikeEmbedding(model_name=MODEL, api_base=server.url + "/v1", api_key="unused",
                               max_retries=0)


@pytest.mark.parametrize("kind", ["OpenAIEmbedding", "OpenAILikeEmbedding"])
def test_llamaindex_replaces_every_newline(server: Wiretap, st: STReference, kind: str) -> None:
    emb = _llamaindex(kind, server)
    start = len(server.requests)
    docs = np.array(emb.get_text_embedding_batch(NEWLINE_DOCS), dtype=np.float32)
    queries = np.array([emb.get_query_embedding(format_query(q)) for q in QUERIES], dtype=np.float32)
    sent = server.inputs_since(start)
    assert sent == [t.replace("\n", " ") for t in NEWLINE_DOCS + [format_query(q) for q in QUERIES]]
    assert not any("\n" in x for x in sent)
    d = assert_caught(docs, st.documents(NEWLINE_DOCS), label=f"llamaindex {kind} documents with newlines")
    q = assert_caught(queries, st.queries(QUERIES), label=f"llamaindex {kind} pre-formatted queries")
    assert d.min_cos < 0.99 and q.min_cos < 0.99


def test_llamaindex_openai_embedding_refuses_a_qwen_model_name() -> None:
    from llama_index.embeddings.openai import OpenAIEmbedding

    with pytest.raises(ValueError):
        OpenAIEmbedding(model=MODEL, api_key="unused")
