"""The LangChain and LlamaIndex adapters give the sentence-transformers reference vectors.

The real pinned frameworks (langchain-core 1.8.1, llama-index-core 0.14.25) drive the adapters
against the stand-in SGLang server backed by the tiny Qwen3 model; sentence-transformers 6.2 on
the same model directory is the reference (``encode_query`` for queries, ``encode_document`` for
documents, ``encode(prompt=...)`` for other instructions). Rule: reference.py's (min cos over
mixed texts >= 1 - 1e-5, unit norms), also at a Matryoshka size.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Iterator

import numpy as np
import pytest

from qembed.errors import InputError, MissingDependency
from qembed.instructions import TASKS
from qembed.integrations.langchain import QembedEmbeddings
from qembed.integrations.llamaindex import QembedEmbedding
from tests.engine.wiretap import Wiretap
from tests.numerics.reference import assert_caught, assert_matches
from tests.numerics.st_reference import STReference
from tests.numerics.texts import DOCUMENTS, QUERIES

DIMS = 32
RETRIEVAL_PROMPT = f"Instruct: {TASKS['retrieval']}\nQuery:"
CUSTOM = "Given a bug report, retrieve the commit that fixes it"

# 20 documents for the retriever round trip: the numerics set plus 8 short ones.
CORPUS: list[str] = [*DOCUMENTS,
    "The Eiffel Tower was finished in 1889.",
    "Photosynthesis needs light, water and carbon dioxide.",
    "Berlin ist die Hauptstadt von Deutschland.",
    "Москва является столицей России.",
    "SELECT id, name FROM users ORDER BY name;",
    "Water boils at 100 degrees Celsius at sea level.",
    "東京は日本の首都です。",
    "The quick brown fox jumps over the lazy dog.",
]
assert len(CORPUS) == 20


@pytest.fixture(scope="module")
def lc(server: Wiretap) -> Iterator[QembedEmbeddings]:
    with QembedEmbeddings(url=server.url) as emb:
        yield emb


@pytest.fixture(scope="module")
def li(server: Wiretap) -> Iterator[QembedEmbedding]:
    emb = QembedEmbedding(url=server.url)
    yield emb
    emb.close()


# -- LangChain -----------------------------------------------------------------------------


def test_langchain_documents_and_queries_match_sentence_transformers(
    lc: QembedEmbeddings, st: STReference, server: Wiretap
) -> None:
    start = len(server.requests)
    docs = np.array(lc.embed_documents(DOCUMENTS), dtype=np.float32)
    queries = np.array([lc.embed_query(q) for q in QUERIES], dtype=np.float32)
    assert_matches(docs, st.documents(DOCUMENTS), label="langchain adapter documents")
    assert_matches(queries, st.queries(QUERIES), label="langchain adapter queries")
    # the wire: text, never ids; newlines intact; the exact official query format
    sent = server.inputs_since(start)
    assert all(isinstance(x, str) for x in sent)
    assert [x for x in sent if not x.startswith("Instruct:")][-len(DOCUMENTS):] == DOCUMENTS
    assert [RETRIEVAL_PROMPT + q for q in QUERIES] == [x for x in sent if x.startswith("Instruct:")]
    assert any("\n" in d for d in DOCUMENTS)  # the set does test newlines


def test_langchain_async_methods_match_too(server: Wiretap, st: STReference) -> None:
    emb = QembedEmbeddings(url=server.url)

    async def run() -> tuple[list[list[float]], list[list[float]]]:
        docs = await emb.aembed_documents(DOCUMENTS)
        queries = list(await asyncio.gather(*(emb.aembed_query(q) for q in QUERIES)))
        return docs, queries

    try:
        docs, queries = asyncio.run(run())
    finally:
        emb.close()
    assert_matches(np.array(docs), st.documents(DOCUMENTS), label="langchain adapter async documents")
    assert_matches(np.array(queries), st.queries(QUERIES), label="langchain adapter async queries")


def test_langchain_dimensions_truncate_then_normalise(server: Wiretap, st: STReference) -> None:
    with QembedEmbeddings(url=server.url, dimensions=DIMS) as emb:
        docs = np.array(emb.embed_documents(DOCUMENTS))
        queries = np.array([emb.embed_query(q) for q in QUERIES])
        adocs = np.array(asyncio.run(emb.aembed_documents(DOCUMENTS)))
    assert docs.shape == (len(DOCUMENTS), DIMS)
    assert_matches(docs, st.documents(DOCUMENTS, dims=DIMS), label=f"langchain adapter documents d={DIMS}")
    assert_matches(adocs, st.documents(DOCUMENTS, dims=DIMS), label=f"langchain adapter async d={DIMS}")
    assert_matches(queries, st.queries(QUERIES, dims=DIMS), label=f"langchain adapter queries d={DIMS}")


def test_langchain_task_and_instruction_choose_the_query_prompt(
    server: Wiretap, st: STReference
) -> None:
    with QembedEmbeddings(url=server.url, task="code") as code, \
            QembedEmbeddings(url=server.url, instruction=CUSTOM) as custom:
        got_code = np.array([code.embed_query(q) for q in QUERIES])
        got_custom = np.array([custom.embed_query(q) for q in QUERIES])
        docs = np.array(custom.embed_documents(DOCUMENTS))
    code_prompt = f"Instruct: {TASKS['code']}\nQuery:"
    assert_matches(got_code, st.with_prompt(QUERIES, code_prompt), label="langchain task=code")
    assert_matches(got_custom, st.with_prompt(QUERIES, f"Instruct: {CUSTOM}\nQuery:"),
                   label="langchain custom instruction")
    assert_caught(got_custom, st.queries(QUERIES), label="custom instruction is not the default")
    assert_matches(docs, st.documents(DOCUMENTS), label="documents stay bare with an instruction")


def test_symmetric_task_instructs_documents_too(server: Wiretap, st: STReference) -> None:
    prompt = f"Instruct: {TASKS['sts']}\nQuery:"
    with QembedEmbeddings(url=server.url, task="sts") as emb:
        docs = np.array(emb.embed_documents(QUERIES))
    assert_matches(docs, st.with_prompt(QUERIES, prompt), label="langchain task=sts documents")


def test_unknown_task_fails_at_construction() -> None:
    with pytest.raises(InputError, match="unknown task"):
        QembedEmbeddings(task="retreival")
    with pytest.raises(InputError, match="unknown task"):
        QembedEmbedding(task="retreival")


def test_langchain_repr_hides_the_key() -> None:
    emb = QembedEmbeddings(url="http://127.0.0.1:9", api_key="sk-secret-123")
    try:
        assert "sk-secret-123" not in repr(emb)
    finally:
        emb.close()


def test_langchain_retriever_round_trip(lc: QembedEmbeddings, st: STReference) -> None:
    from langchain_core.vectorstores import InMemoryVectorStore

    expected = _expected_top_hits(st)
    store = InMemoryVectorStore(embedding=lc)
    store.add_texts(CORPUS, ids=[str(i) for i in range(len(CORPUS))])
    retriever = store.as_retriever(search_kwargs={"k": 1})
    for query, want in expected.items():
        (hit,) = retriever.invoke(query)
        assert hit.page_content == CORPUS[want], query
    (hit,) = asyncio.run(retriever.ainvoke(QUERIES[0]))
    assert hit.page_content == CORPUS[expected[QUERIES[0]]]


# -- LlamaIndex ----------------------------------------------------------------------------


def test_llamaindex_texts_and_queries_match_sentence_transformers(
    li: QembedEmbedding, st: STReference, server: Wiretap
) -> None:
    start = len(server.requests)
    docs = np.array(li.get_text_embedding_batch(DOCUMENTS), dtype=np.float32)
    one = np.array([li.get_text_embedding(DOCUMENTS[6])], dtype=np.float32)
    queries = np.array([li.get_query_embedding(q) for q in QUERIES], dtype=np.float32)
    assert_matches(docs, st.documents(DOCUMENTS), label="llamaindex adapter texts")
    assert_matches(one, st.documents(DOCUMENTS[6:7]), label="llamaindex adapter one text")
    assert_matches(queries, st.queries(QUERIES), label="llamaindex adapter queries")
    sent = server.inputs_since(start)
    assert all(isinstance(x, str) for x in sent)
    assert DOCUMENTS[6] in sent and "\n" in DOCUMENTS[6]  # no newline replacement
    assert [RETRIEVAL_PROMPT + q for q in QUERIES] == [x for x in sent if x.startswith("Instruct:")]


def test_llamaindex_async_methods_match_too(server: Wiretap, st: STReference) -> None:
    emb = QembedEmbedding(url=server.url, embed_batch_size=5)  # several batches, gathered

    async def run() -> tuple[list[list[float]], list[list[float]], list[float]]:
        docs = await emb.aget_text_embedding_batch(DOCUMENTS)
        queries = [await emb.aget_query_embedding(q) for q in QUERIES]
        return docs, queries, await emb.aget_text_embedding(DOCUMENTS[6])

    try:
        docs, queries, one = asyncio.run(run())
    finally:
        emb.close()
    assert_matches(np.array(docs), st.documents(DOCUMENTS), label="llamaindex adapter async texts")
    assert_matches(np.array(queries), st.queries(QUERIES), label="llamaindex adapter async queries")
    assert_matches(np.array([one]), st.documents(DOCUMENTS[6:7]), label="llamaindex async one text")


def test_llamaindex_dimensions_and_instruction(server: Wiretap, st: STReference) -> None:
    emb = QembedEmbedding(url=server.url, dimensions=DIMS, instruction=CUSTOM)
    try:
        docs = np.array(emb.get_text_embedding_batch(DOCUMENTS))
        queries = np.array([emb.get_query_embedding(q) for q in QUERIES])
    finally:
        emb.close()
    assert docs.shape == (len(DOCUMENTS), DIMS)
    assert_matches(docs, st.documents(DOCUMENTS, dims=DIMS), label=f"llamaindex texts d={DIMS}")
    assert_matches(queries, st.with_prompt(QUERIES, f"Instruct: {CUSTOM}\nQuery:", dims=DIMS),
                   label=f"llamaindex custom instruction d={DIMS}")


def test_llamaindex_key_stays_out_of_repr_and_payload() -> None:
    emb = QembedEmbedding(url="http://127.0.0.1:9", api_key="sk-secret-123")
    try:
        assert "sk-secret-123" not in repr(emb)
        assert "sk-secret-123" not in str(emb.to_payload())
        assert "sk-secret-123" not in emb.model_dump_json()
    finally:
        emb.close()


def test_llamaindex_retriever_round_trip(li: QembedEmbedding, st: STReference) -> None:
    from llama_index.core import VectorStoreIndex
    from llama_index.core.schema import TextNode

    expected = _expected_top_hits(st)
    nodes = [TextNode(text=t, id_=str(i)) for i, t in enumerate(CORPUS)]
    index = VectorStoreIndex(nodes, embed_model=li)
    retriever = index.as_retriever(similarity_top_k=1)
    for query, want in expected.items():
        (hit,) = retriever.retrieve(query)
        assert hit.node.get_content() == CORPUS[want], query
    (hit,) = asyncio.run(retriever.aretrieve(QUERIES[0]))
    assert hit.node.get_content() == CORPUS[expected[QUERIES[0]]]


def _expected_top_hits(st: STReference) -> dict[str, int]:
    """The reference's top document for each query, kept only with a clear margin.

    The tiny model has random weights, so "expected" cannot come from the meaning of the texts:
    it is the sentence-transformers ranking, which a retriever must reproduce. At least one query
    must rank differently without its instruction, so the round trip also proves that the
    retriever's query path adds it.
    """
    scores = st.queries(QUERIES) @ st.documents(CORPUS).T
    bare = st.documents(QUERIES) @ st.documents(CORPUS).T
    out: dict[str, int] = {}
    for q, row in zip(QUERIES, scores, strict=True):
        top2 = np.sort(row)[-2:]
        if top2[1] - top2[0] > 1e-3:
            out[q] = int(np.argmax(row))
    assert QUERIES[0] in out and len(out) >= 4, out
    assert any(int(np.argmax(bare[QUERIES.index(q)])) != i for q, i in out.items()), \
        "no query whose top hit depends on the instruction"
    return out


# -- missing frameworks --------------------------------------------------------------------


@pytest.mark.parametrize(("module", "framework", "extra"), [
    ("qembed.integrations.langchain", "langchain_core", "langchain"),
    ("qembed.integrations.llamaindex", "llama_index", "llamaindex"),
])
def test_missing_framework_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch, module: str, framework: str, extra: str
) -> None:
    for name in list(sys.modules):
        if name == framework or name.startswith(framework + "."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, framework, None)  # import of it now raises ImportError
    monkeypatch.delitem(sys.modules, module)
    with pytest.raises(MissingDependency) as info:
        importlib.import_module(module)
    assert info.value.hint == f"pip install 'qembed[{extra}]'"
    assert isinstance(info.value, ImportError)


# -- never closed, as frameworks do ----------------------------------------------------------

UNCLOSED_SCRIPT = """
from tests.standin.server import StandinConfig, serve_in_thread
from qembed.integrations.langchain import QembedEmbeddings
from qembed.integrations.llamaindex import QembedEmbedding
with serve_in_thread(StandinConfig(dim=64)) as srv:
    lc = QembedEmbeddings(url=srv.url, http="aiohttp")
    li = QembedEmbedding(url=srv.url, http="aiohttp")
    assert len(lc.embed_query("hi")) == 64 and len(li.get_query_embedding("hi")) == 64
print("embedded")
"""


def test_adapters_never_closed_exit_quietly() -> None:
    """LangChain and LlamaIndex never close an embeddings object; the interpreter must still
    exit without aiohttp's "Unclosed client session" warnings."""
    import os
    import subprocess

    from tests.helpers.paths import REPO

    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run([sys.executable, "-c", UNCLOSED_SCRIPT], capture_output=True, text=True,
                          cwd=str(REPO), env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "embedded"
    assert "Unclosed" not in proc.stderr, proc.stderr[-2000:]
