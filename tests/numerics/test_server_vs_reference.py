"""The stand-in server with the tiny-model backend (SGLang's computation: one sequence at a time,
no padding, last token, L2 norm) against the official batched, left-padded recipe.

No qembed code here: this pins the server side, so the client tests can blame the client.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.engine.wiretap import Wiretap
from tests.numerics.reference import (
    Reference,
    assert_matches,
    compare,
    format_query,
    truncate_normalise,
)
from tests.numerics.texts import DOCUMENTS, MIXED, QUERIES
from tests.numerics.tiny_model import TinyModel
from tests.numerics.wire import post_embeddings
from tests.standin.tiny_backend import TinyBackend

TASK = "Given a web search query, retrieve relevant passages that answer the query"


@pytest.mark.parametrize("encoding_format", ["float", "base64"])
def test_documents_match_reference(
    server: Wiretap, reference: Reference, encoding_format: str
) -> None:
    got, reply = post_embeddings(server.url, DOCUMENTS, encoding_format=encoding_format)
    assert got.shape == (len(DOCUMENTS), 64)
    assert_matches(
        got, reference.encode_documents(DOCUMENTS), label=f"server docs ({encoding_format})"
    )
    assert reply["model"] == server.model


def test_instructed_queries_match_reference(server: Wiretap, reference: Reference) -> None:
    got, _ = post_embeddings(server.url, [format_query(TASK, q) for q in QUERIES])
    assert_matches(got, reference.encode_queries(QUERIES, task=TASK), label="server queries")


@pytest.mark.parametrize("dims", [32, 16])
def test_server_side_dimensions_truncate_then_renormalise(
    server: Wiretap, reference: Reference, dims: int
) -> None:
    got, _ = post_embeddings(server.url, DOCUMENTS, dimensions=dims, encoding_format="base64")
    assert got.shape == (len(DOCUMENTS), dims)
    assert_matches(
        got,
        truncate_normalise(reference.encode_documents(DOCUMENTS), dims),
        label=f"server docs d={dims}",
    )


def test_mixed_batch_comes_back_in_order(server: Wiretap, reference: Reference) -> None:
    got, _ = post_embeddings(server.url, MIXED)
    expected = reference.encode(MIXED)
    assert_matches(got, expected, label="server mixed batch")
    # and the rule would notice a shuffle: every row is closest to its own reference row
    assert (np.argmax(got @ expected.T, axis=1) == np.arange(len(MIXED))).all()


def test_usage_counts_the_appended_eos(server: Wiretap, reference: Reference) -> None:
    _, reply = post_embeddings(server.url, DOCUMENTS[:3])
    assert reply["usage"]["prompt_tokens"] == sum(
        len(reference.tokenizer(t)["input_ids"]) for t in DOCUMENTS[:3]
    )


def test_token_ids_without_eos_differ_from_text(
    server: Wiretap, reference: Reference, tiny_model: TinyModel
) -> None:
    """The SGLang trap: token ids are embedded as given, with no EOS appended. A client that
    pre-tokenizes with ``add_special_tokens=False`` gets different vectors than the same text."""
    texts = DOCUMENTS
    expected = reference.encode_documents(texts)
    bare = [reference.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    got_bare, _ = post_embeddings(server.url, bare)
    result = compare(got_bare, expected, label="token ids without EOS")
    assert not result.ok and result.min_cos < 0.9, result.summary()
    with_eos = [[*ids, tiny_model.endoftext_id] for ids in bare]
    got_eos, _ = post_embeddings(server.url, with_eos)
    assert_matches(got_eos, expected, label="token ids + <|endoftext|>")
    # one flat list of ints is one input, too
    one, _ = post_embeddings(server.url, with_eos[0])
    assert_matches(one, expected[:1], label="flat token-id list")


def test_backend_alone_matches_reference(backend: TinyBackend, reference: Reference) -> None:
    """Without HTTP in between (catches a JSON rounding problem separately from the backend)."""
    got = np.asarray(backend.embed(MIXED), dtype=np.float32)
    assert_matches(got, reference.encode(MIXED), label="backend direct")
    assert backend.count_tokens("hello world") == len(
        reference.tokenizer("hello world")["input_ids"]
    )
