"""qembed's own client, end to end, against the official recipe: the vectors a user gets from
``qembed.Client`` must be the vectors the Qwen3-Embedding README computes.

The server is the stand-in with the tiny-model backend (pinned against the reference in
test_server_vs_reference.py), so a failure here is the client's: prompt format, instruction
choice, Matryoshka handling, base64 decoding, batching and order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest

from qembed import AsyncClient, Client, InputError, format_query
from qembed.instructions import TASKS
from tests.engine.wiretap import Wiretap
from tests.numerics.reference import (
    RETRIEVAL_TASK,
    Reference,
    assert_caught,
    assert_matches,
    truncate_normalise,
)
from tests.numerics.reference import format_query as reference_format_query
from tests.numerics.texts import DOCUMENTS, MIXED, QUERIES
from tests.numerics.tiny_model import TinyModel
from tests.standin.server import StandinConfig, serve_in_thread
from tests.standin.tiny_backend import TinyBackend

# Official instruction texts (QwenLM README; evaluation/qwen3_embedding_model.py), typed in here
# rather than imported from qembed, so a typo in qembed's presets fails.
OFFICIAL = {
    "retrieval": RETRIEVAL_TASK,
    "sts": "Retrieve semantically similar text",
    "bitext": "Retrieve parallel sentences",
}


@pytest.fixture
def client(server: Wiretap) -> Iterator[Client]:
    with Client(server.url, max_retries=0) as c:
        yield c


def _as_array(vectors: object, n: int) -> np.ndarray:
    arr = np.asarray(vectors)
    assert arr.dtype == np.float32, arr.dtype
    assert arr.ndim == 2 and arr.shape[0] == n, arr.shape
    return arr


def test_format_query_is_the_official_format() -> None:
    for q in QUERIES:
        assert format_query(q) == reference_format_query(RETRIEVAL_TASK, q)
        assert format_query(q, instruction="Find X") == reference_format_query("Find X", q)
    for name, text in OFFICIAL.items():
        assert TASKS[name] == text


def test_default_queries_match_the_instructed_reference(
    client: Client, reference: Reference
) -> None:
    got = _as_array(client.embed_queries(QUERIES), len(QUERIES))
    assert got.shape[1] == 64
    assert_matches(got, reference.encode_queries(QUERIES), label="client embed_queries (retrieval)")


def test_documents_match_the_reference_without_instruction(
    client: Client, reference: Reference
) -> None:
    got = _as_array(client.embed_documents(DOCUMENTS), len(DOCUMENTS))
    assert_matches(got, reference.encode_documents(DOCUMENTS), label="client embed_documents")


def test_embed_without_instruction_sends_text_as_is(client: Client, reference: Reference) -> None:
    got = _as_array(client.embed(DOCUMENTS), len(DOCUMENTS))
    assert_matches(got, reference.encode(DOCUMENTS), label="client embed (raw)")


def test_embed_with_custom_instruction(client: Client, reference: Reference) -> None:
    task = "Given a question, retrieve passages in any language that answer it"
    got = _as_array(client.embed(QUERIES, instruction=task), len(QUERIES))
    assert_matches(
        got, reference.encode_queries(QUERIES, task=task), label="client embed(instruction=...)"
    )


@pytest.mark.parametrize("task", ["sts", "bitext"])
def test_symmetric_tasks_put_the_official_instruction_on_both_sides(
    client: Client, reference: Reference, task: str
) -> None:
    q = _as_array(client.embed_queries(QUERIES, task=task), len(QUERIES))
    assert_matches(
        q,
        reference.encode_queries(QUERIES, task=OFFICIAL[task]),
        label=f"client queries task={task}",
    )
    d = _as_array(client.embed_documents(DOCUMENTS, task=task), len(DOCUMENTS))
    assert_matches(
        d,
        reference.encode_queries(DOCUMENTS, task=OFFICIAL[task]),
        label=f"client docs task={task}",
    )


@pytest.mark.parametrize("dims", [32, 48])
def test_server_side_dimensions_match_truncate_then_normalise(
    server: Wiretap, client: Client, reference: Reference, dims: int
) -> None:
    before = len(server.requests)
    got = _as_array(client.embed_documents(DOCUMENTS, dimensions=dims), len(DOCUMENTS))
    assert got.shape[1] == dims
    expected = truncate_normalise(reference.encode_documents(DOCUMENTS), dims)
    assert_matches(got, expected, label=f"client docs d={dims} (server-side)")
    q = _as_array(client.embed_queries(QUERIES, dimensions=dims), len(QUERIES))
    assert_matches(
        q,
        truncate_normalise(reference.encode_queries(QUERIES), dims),
        label=f"client queries d={dims} (server-side)",
    )
    # the Matryoshka server did the truncation: the requests carried `dimensions`
    assert any(r.get("dimensions") == dims for r in server.requests[before:])


@pytest.mark.parametrize("dims", [32, 48])
def test_client_side_truncation_when_matryoshka_is_off(
    server_no_mrl: Wiretap, reference: Reference, dims: int
) -> None:
    with Client(server_no_mrl.url, max_retries=0) as c:
        got = _as_array(c.embed_documents(DOCUMENTS, dimensions=dims), len(DOCUMENTS))
        q = _as_array(c.embed_queries(QUERIES, dimensions=dims), len(QUERIES))
    assert got.shape[1] == dims
    assert_matches(
        got,
        truncate_normalise(reference.encode_documents(DOCUMENTS), dims),
        label=f"client docs d={dims} (client-side)",
    )
    assert_matches(
        q,
        truncate_normalise(reference.encode_queries(QUERIES), dims),
        label=f"client queries d={dims} (client-side)",
    )


def test_dimensions_below_the_model_card_minimum_are_refused(client: Client) -> None:
    """qembed refuses d < 32 (the Qwen3-Embedding card's MRL range) instead of sending it."""
    with pytest.raises(InputError):
        client.embed_documents(DOCUMENTS[:2], dimensions=16)


def test_mixed_batch_in_order_across_concurrent_requests(
    server: Wiretap, reference: Reference
) -> None:
    """Mixed languages and lengths, split into many small requests run 4 at a time."""
    before = len(server.requests)
    with Client(server.url, max_retries=0, batch_size=3, concurrency=4) as c:
        got = _as_array(c.embed(MIXED), len(MIXED))
    assert len(server.requests) - before >= 7  # really split (ceil(20 / 3))
    expected = reference.encode(MIXED)
    assert_matches(got, expected, label="client mixed batch, batch_size=3, concurrency=4")
    assert (np.argmax(got @ expected.T, axis=1) == np.arange(len(MIXED))).all()


def test_async_client_matches_too(server: Wiretap, reference: Reference) -> None:
    async def run() -> tuple[np.ndarray, np.ndarray]:
        async with AsyncClient(server.url, max_retries=0, batch_size=4) as c:
            return np.asarray(await c.embed_queries(QUERIES)), np.asarray(
                await c.embed_documents(DOCUMENTS)
            )

    q, d = asyncio.run(run())
    assert_matches(q, reference.encode_queries(QUERIES), label="async client queries")
    assert_matches(d, reference.encode_documents(DOCUMENTS), label="async client documents")


def test_queries_without_their_instruction_are_caught(client: Client, reference: Reference) -> None:
    """Through the client: embedding queries as documents fails the same rule."""
    got = _as_array(client.embed_documents(QUERIES), len(QUERIES))
    assert_caught(
        got, reference.encode_queries(QUERIES), label="client: queries embedded as documents"
    )
    spaced = _as_array(
        client.embed([f"Instruct: {RETRIEVAL_TASK}\nQuery: {q}" for q in QUERIES]), len(QUERIES)
    )
    assert_caught(spaced, reference.encode_queries(QUERIES), label="client: 'Query: ' with a space")


def test_skipped_inputs_leave_the_other_rows_in_place(client: Client, reference: Reference) -> None:
    """on_error="skip": a blank input is dropped and every other row still matches its text."""
    texts = [*MIXED[:3], "   ", *MIXED[3:]]
    with Client(client.base_url, max_retries=0, on_error="skip", batch_size=4) as c:
        got = c.embed(texts)
    assert got.indices is not None
    assert list(got.indices) == [i for i in range(len(texts)) if i != 3]
    assert [f.index for f in got.failures] == [3]
    assert_matches(
        _as_array(got, len(MIXED)),
        reference.encode(MIXED),
        label="client skip blank, others in order",
    )


def test_too_long_input_is_isolated_and_the_rest_match(
    tiny_model: TinyModel, backend: TinyBackend, reference: Reference
) -> None:
    """A server with a 1,000-token context rejects the whole request for the 1,201-token doc
    (the client's byte-based lower bound, 687 tokens, lets it through); the client isolates it by
    halving, and the other rows come back right and in order."""
    long_idx = max(range(len(DOCUMENTS)), key=lambda i: len(DOCUMENTS[i]))
    cfg = StandinConfig(dim=backend.dim, model=str(tiny_model.path), context_length=1000)
    with serve_in_thread(cfg, backend) as srv, Client(srv.url, max_retries=0, on_error="skip") as c:
        got = c.embed_documents(DOCUMENTS)
        assert len(srv.requests) > 2  # one rejected request for all 12, then the halves
    keep = [i for i in range(len(DOCUMENTS)) if i != long_idx]
    assert got.indices is not None
    assert list(got.indices) == keep
    assert [f.index for f in got.failures] == [long_idx]
    expected = reference.encode_documents(DOCUMENTS)[keep]
    assert_matches(
        _as_array(got, len(keep)), expected, label="client skip too-long, others in order"
    )
