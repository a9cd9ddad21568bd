"""The checks every peer runtime goes through (tests/peers/test_*.py call them with what the
runtime is known to do): qembed's client, `--dimensions`, a bulk job killed and resumed, the
LangChain and LlamaIndex adapters, and `qembed verify`, each judged against sentence-transformers
on the model directory the peer serves (tests/numerics/reference.py's rule: cos >= 1 - 1e-6 and
unit norm for every row).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from qembed.client.drivers import Client
from qembed.integrations.langchain import QembedEmbeddings
from qembed.integrations.llamaindex import QembedEmbedding
from tests.fake_site.harness import run_qembed
from tests.numerics.reference import assert_caught, assert_matches
from tests.numerics.st_reference import STReference
from tests.numerics.texts import DOCUMENTS, QUERIES
from tests.peers.peer import Peer, bulk_killed_and_resumed

DIMS = 32
FULL = 64  # the tiny model's hidden size

#: texts with whitespace at an end (Infinity strips it: docs/peers.md)
EDGE_WHITESPACE: list[str] = [
    "  Paris is the capital of France.  ",
    "\tMadrid es la capital de España.",
    "Berlin ist die Hauptstadt von Deutschland.\n",
    *(t for t in DOCUMENTS if t != t.strip()),  # code, and a long document, ending in a newline
]
#: the numerics documents without whitespace at either end
CLEAN: list[str] = [t for t in DOCUMENTS if t == t.strip()]
assert len(CLEAN) >= 10 and len(EDGE_WHITESPACE) >= 5


def client_full_size(peer: Peer, st: STReference, *, strips_whitespace: bool) -> None:
    """qembed's Client: documents and queries at full size equal sentence-transformers.

    ``strips_whitespace``: the peer strips leading and trailing whitespace from every input, so
    its vectors for such texts equal the reference of the stripped text and not of the text."""
    texts = CLEAN + EDGE_WHITESPACE
    with Client(peer.url) as client:
        docs = np.asarray(client.embed_documents(texts), dtype=np.float32)
        queries = np.asarray(client.embed_queries(QUERIES), dtype=np.float32)
    assert docs.shape == (len(texts), FULL) and queries.shape == (len(QUERIES), FULL)
    assert_matches(queries, st.queries(QUERIES), label=f"{peer.name}: client queries")
    assert_matches(docs[: len(CLEAN)], st.documents(CLEAN), label=f"{peer.name}: client documents")
    edge = docs[len(CLEAN):]
    if strips_whitespace:
        assert_matches(edge, st.documents([t.strip() for t in EDGE_WHITESPACE]),
                       label=f"{peer.name}: edge-whitespace documents = the stripped texts' reference")
        assert_caught(edge, st.documents(EDGE_WHITESPACE), label=f"{peer.name}: edge whitespace is lost")
    else:
        assert_matches(edge, st.documents(EDGE_WHITESPACE), label=f"{peer.name}: edge-whitespace documents")


def client_dimensions(peer: Peer, st: STReference, env: dict[str, str]) -> None:
    """`dimensions=32` through the Client and `qembed embed --dimensions 32` equal the model
    card's truncate-then-renormalise, whatever the peer does with `dimensions` itself."""
    with Client(peer.url) as client:
        docs = np.asarray(client.embed_documents(CLEAN, dimensions=DIMS), dtype=np.float32)
        queries = np.asarray(client.embed_queries(QUERIES, dimensions=DIMS), dtype=np.float32)
    assert docs.shape == (len(CLEAN), DIMS)
    assert_matches(docs, st.documents(CLEAN, dims=DIMS), label=f"{peer.name}: client documents d={DIMS}")
    assert_matches(queries, st.queries(QUERIES, dims=DIMS), label=f"{peer.name}: client queries d={DIMS}")

    out = run_qembed(["embed", "--url", peer.url, "--dimensions", str(DIMS), "--format", "json", *CLEAN],
                     env, timeout=120)
    assert out.returncode == 0, out.stderr
    got = np.asarray(_vectors(json.loads(out.stdout)), dtype=np.float32)
    assert_matches(got, st.documents(CLEAN, dims=DIMS), label=f"{peer.name}: qembed embed --dimensions {DIMS}")


def _vectors(doc: Any) -> list[list[float]]:
    """The vectors of `qembed embed --format json` (a list of vectors, or objects holding one)."""
    rows = doc["data"] if isinstance(doc, dict) and "data" in doc else doc
    return [r["embedding"] if isinstance(r, dict) else r for r in rows]


def bulk_resume(peer: Peer, st: STReference, env: dict[str, str], work: Path, *, n: int = 400,
                chunk: int = 8) -> None:
    """A bulk job SIGKILLed after 5 chunks and resumed gives the uninterrupted run's rows, which
    equal sentence-transformers."""
    texts = [f"document {i}: the quick brown fox {'jumps ' * (i % 7)}over dog {i}" for i in range(n)]
    ids = [f"doc-{i}" for i in range(n)]
    runs = bulk_killed_and_resumed(peer.url, texts, ids, work, chunk=chunk, env=env)
    assert runs.chunks_before_kill < n // chunk, "the job finished before it was killed"
    assert runs.summary["rows"] == n and runs.summary["chunks_resumed"] == runs.chunks_before_kill, runs.summary
    whole, resumed = pq.read_table(runs.whole), pq.read_table(runs.resumed)
    assert resumed.column("id").to_pylist() == whole.column("id").to_pylist() == ids
    a = np.asarray(whole.column("embedding").to_pylist(), dtype=np.float32)
    b = np.asarray(resumed.column("embedding").to_pylist(), dtype=np.float32)
    assert_matches(b, a, label=f"{peer.name}: resumed rows = the uninterrupted run's")
    assert_matches(a, st.documents(texts), label=f"{peer.name}: bulk rows")


def adapters(peer: Peer, st: STReference) -> None:
    """The LangChain and LlamaIndex adapters, full size and at 32 dims, sync and async."""
    with QembedEmbeddings(url=peer.url) as lc, QembedEmbeddings(url=peer.url, dimensions=DIMS) as lc32:
        assert_matches(np.array(lc.embed_documents(CLEAN)), st.documents(CLEAN), label=f"{peer.name}: langchain documents")
        assert_matches(np.array([lc.embed_query(q) for q in QUERIES]), st.queries(QUERIES),
                       label=f"{peer.name}: langchain queries")
        assert_matches(np.array(asyncio.run(lc.aembed_documents(CLEAN))), st.documents(CLEAN),
                       label=f"{peer.name}: langchain async documents")
        assert_matches(np.array(lc32.embed_documents(CLEAN)), st.documents(CLEAN, dims=DIMS),
                       label=f"{peer.name}: langchain documents d={DIMS}")
        assert_matches(np.array([lc32.embed_query(q) for q in QUERIES]), st.queries(QUERIES, dims=DIMS),
                       label=f"{peer.name}: langchain queries d={DIMS}")
    li, li32 = QembedEmbedding(url=peer.url), QembedEmbedding(url=peer.url, dimensions=DIMS)
    try:
        assert_matches(np.array(li.get_text_embedding_batch(CLEAN)), st.documents(CLEAN),
                       label=f"{peer.name}: llamaindex texts")
        assert_matches(np.array([li.get_query_embedding(q) for q in QUERIES]), st.queries(QUERIES),
                       label=f"{peer.name}: llamaindex queries")
        assert_matches(np.array(asyncio.run(li.aget_text_embedding_batch(CLEAN))), st.documents(CLEAN),
                       label=f"{peer.name}: llamaindex async texts")
        assert_matches(np.array(li32.get_text_embedding_batch(CLEAN)), st.documents(CLEAN, dims=DIMS),
                       label=f"{peer.name}: llamaindex texts d={DIMS}")
        assert_matches(np.array([li32.get_query_embedding(q) for q in QUERIES]), st.queries(QUERIES, dims=DIMS),
                       label=f"{peer.name}: llamaindex queries d={DIMS}")
    finally:
        li.close()
        li32.close()


def verify(peer: Peer, env: dict[str, str]) -> tuple[int, dict[str, Any], str]:
    """`qembed verify --url ... --model DIR --precision fp32 --dimensions 32 --json`."""
    out = run_qembed(["verify", "--url", peer.url, "--model", str(peer.model_dir), "--precision", "fp32",
                      "--dimensions", str(DIMS), "--json"], env, timeout=300)
    assert "Traceback" not in out.stderr, out.stderr
    assert out.stdout.strip(), f"verify printed no report (exit {out.returncode}): {out.stderr}"
    return out.returncode, json.loads(out.stdout), out.stderr


def reproducing(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The diagnosis entries that reproduce the server (name, title, fix ...)."""
    return [d for d in report.get("diagnosis", []) if d.get("reproduces")]


def named(entries: list[dict[str, Any]], *words: str) -> list[dict[str, Any]]:
    """Entries whose name or title has every word (case-insensitive)."""
    return [d for d in entries
            if all(w in f"{d.get('name', '')} {d.get('title', '')}".lower() for w in words)]
