"""Known mistakes must FAIL the very rule the correct vectors pass (cos >= 1 - 1e-5 per text,
| ||v|| - 1 | <= 1e-4, dims, count/order): proof that the numerics tests can fail.

Each case puts one mistake in the path (server backend, prompt formatting, token ids, Matryoshka
handling, row order) and asserts ``compare(...)`` reports a problem.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from tests.engine.wiretap import Wiretap
from tests.numerics.reference import (
    COS_TOL,
    NORM_TOL,
    RETRIEVAL_TASK,
    Reference,
    assert_caught,
    assert_matches,
    truncate_normalise,
)
from tests.numerics.texts import DOCUMENTS, MIXED, QUERIES
from tests.numerics.tiny_model import TinyModel
from tests.numerics.wire import post_embeddings
from tests.standin.server import StandinConfig, serve_in_thread
from tests.standin.tiny_backend import Mistake, TinyBackend

# -- mistakes in the server ---------------------------------------------------------------


@pytest.mark.parametrize("mistake", ["no-eos", "mean"])
def test_wrong_server_computation_is_caught(
    backend: TinyBackend, reference: Reference, tiny_model: TinyModel, mistake: Mistake
) -> None:
    cfg = StandinConfig(dim=backend.dim, model=str(tiny_model.path))
    with serve_in_thread(cfg, backend.with_mistake(mistake)) as srv:
        got, _ = post_embeddings(srv.url, MIXED)
    result = assert_caught(got, reference.encode(MIXED), label=f"backend mistake {mistake}")
    assert result.min_cos < 0.9  # far off, not a borderline call


def test_unnormalised_vectors_pass_cosine_but_fail_norm(
    backend: TinyBackend, reference: Reference, tiny_model: TinyModel
) -> None:
    """Cosine cannot see a missing normalisation; the norm check does."""
    cfg = StandinConfig(dim=backend.dim, model=str(tiny_model.path))
    with serve_in_thread(cfg, backend.with_mistake("no-renorm")) as srv:
        got, _ = post_embeddings(srv.url, MIXED)
    result = assert_caught(got, reference.encode(MIXED), label="backend mistake no-renorm")
    assert result.min_cos >= 1 - COS_TOL and result.max_norm_err > NORM_TOL


def test_older_snapshot_without_eos_post_processor_is_caught(
    tiny_model_no_eos: TinyModel, reference: Reference
) -> None:
    """A server loaded from a snapshot whose tokenizer does not append EOS (same weights)."""
    old = TinyBackend(tiny_model_no_eos.path)
    cfg = StandinConfig(dim=old.dim, model=str(tiny_model_no_eos.path))
    with serve_in_thread(cfg, old) as srv:
        got, _ = post_embeddings(srv.url, DOCUMENTS)
    assert_caught(got, reference.encode_documents(DOCUMENTS), label="older snapshot (no EOS)")


# -- mistakes in what the client sends ---------------------------------------------------

PROMPT_MISTAKES: dict[str, Callable[[str], str]] = {
    "no instruction": lambda q: q,
    "space after Query:": lambda q: f"Instruct: {RETRIEVAL_TASK}\nQuery: {q}",
    "space instead of newline": lambda q: f"Instruct: {RETRIEVAL_TASK} Query:{q}",
    "trailing newline": lambda q: f"Instruct: {RETRIEVAL_TASK}\nQuery:{q}\n",
    "no Instruct: label": lambda q: f"{RETRIEVAL_TASK}\nQuery:{q}",
}


@pytest.mark.parametrize("name", list(PROMPT_MISTAKES))
def test_query_prompt_mistakes_are_caught(server: Wiretap, reference: Reference, name: str) -> None:
    sent = [PROMPT_MISTAKES[name](q) for q in QUERIES]
    got, _ = post_embeddings(server.url, sent)
    assert_caught(got, reference.encode_queries(QUERIES), label=f"query prompt: {name}")


def test_documents_with_the_query_instruction_are_caught(
    server: Wiretap, reference: Reference
) -> None:
    got, _ = post_embeddings(
        server.url, [f"Instruct: {RETRIEVAL_TASK}\nQuery:{d}" for d in DOCUMENTS]
    )
    assert_caught(
        got, reference.encode_documents(DOCUMENTS), label="documents with query instruction"
    )


@pytest.mark.parametrize(
    "extra", ["<|endoftext|> twice", "<|im_end|> (tokenizer.eos_token) appended"]
)
def test_client_side_eos_mistakes_are_caught(
    server: Wiretap, reference: Reference, tiny_model: TinyModel, extra: str
) -> None:
    """A client that "ensures EOS" on ids that already end with it, or with eos_token_id."""
    tail = tiny_model.endoftext_id if extra.startswith("<|endoftext|>") else tiny_model.im_end_id
    ids = [[*reference.tokenizer(t)["input_ids"], tail] for t in DOCUMENTS]
    got, _ = post_embeddings(server.url, ids)
    assert_caught(got, reference.encode_documents(DOCUMENTS), label=f"token ids: {extra}")


# -- mistakes in handling the vectors ----------------------------------------------------


@pytest.mark.parametrize("dims", [32, 16])
def test_matryoshka_mistakes_are_caught(server: Wiretap, reference: Reference, dims: int) -> None:
    full, _ = post_embeddings(server.url, DOCUMENTS)
    expected = truncate_normalise(reference.encode_documents(DOCUMENTS), dims)
    # control: client-side truncate + renormalise of the correct full vectors passes
    assert_matches(truncate_normalise(full, dims), expected, label=f"client-side MRL d={dims}")
    # truncated but not renormalised: cosine 1, norms 0.3-0.8
    no_renorm = assert_caught(full[:, :dims], expected, label=f"MRL d={dims} not renormalised")
    assert no_renorm.min_cos >= 1 - COS_TOL and no_renorm.max_norm_err > NORM_TOL
    # the last d dims instead of the first
    assert_caught(
        truncate_normalise(full[:, ::-1], dims), expected, label=f"MRL d={dims} last dims"
    )
    # dimensions ignored (full size returned)
    assert_caught(full, expected, label=f"MRL d={dims} ignored")


def test_order_and_count_mistakes_are_caught(server: Wiretap, reference: Reference) -> None:
    got, _ = post_embeddings(server.url, MIXED)
    expected = reference.encode(MIXED)
    assert_matches(got, expected, label="mixed batch (control)")
    assert_caught(np.roll(got, 1, axis=0), expected, label="rows rolled by one")
    assert_caught(got[::-1], expected, label="rows reversed")
    assert_caught(got[:-1], expected, label="one row missing")
