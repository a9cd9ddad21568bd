"""`qembed verify` and its reference engine, on the tiny random Qwen3 model (CPU, offline).

* qembed.reference.engine (sentence-transformers, the model's own prompts) equals the plain
  transformers recipe of tests/numerics/reference.py to 1 - 1e-6;
* verify passes against the stand-in server with real tiny-model vectors (server-side and
  client-side Matryoshka);
* verify fails, and names the right mistake, against servers that drop the EOS, mean-pool,
  do not normalise, replace newlines, add a space after `Query:`, or truncate without
  renormalising.

The mistake tests judge a 12-text subset of the built-in set (queries under three tasks,
documents with newlines and tabs) to stay within CI time on 2 cores; the full 40-text set runs in
the passing tests.
"""

from __future__ import annotations

import base64
import json
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from qembed.fleet.verify import VerifyFailed, verify, verify_or_raise
from qembed.fleet.verify_texts import TEXTS
from qembed.reference.engine import ReferenceEngine
from tests.engine.wiretap import Wiretap
from tests.numerics.reference import Reference, truncate_normalise
from tests.numerics.texts import DOCUMENTS, QUERIES
from tests.numerics.tiny_model import TinyModel
from tests.standin.server import Input, Standin, StandinConfig, _Server, serve_in_thread
from tests.standin.tiny_backend import TinyBackend

pytestmark = pytest.mark.slow

SUBSET_IDS = ("q-en", "q-zh", "q-ar", "q-code", "sts-en", "bitext-ko", "d-en", "d-ja", "d-code-py",
              "d-tabs", "d-lines", "d-mixed")
SUBSET = [t for t in TEXTS if t.id in SUBSET_IDS]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return np.sum(a64 * b64, axis=1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))


# -- the reference engine ------------------------------------------------------------------------


def test_reference_engine_equals_the_transformers_recipe(ref_engine: ReferenceEngine, reference: Reference) -> None:
    """sentence-transformers + the model's prompts == AutoModel, left padding, last token, L2."""
    from qembed.instructions import TASKS

    assert ref_engine.dim == 64
    prompt = ref_engine.query_prompt(TASKS["retrieval"])
    assert prompt is ref_engine.prompts["query"]  # taken from config_sentence_transformers.json
    assert ref_engine.document_prompt() == ""
    docs = ref_engine.encode(DOCUMENTS)
    queries = ref_engine.encode(QUERIES, prompt=prompt)
    assert _cos(docs, reference.encode_documents(DOCUMENTS)).min() >= 1 - 1e-6
    assert _cos(queries, reference.encode_queries(QUERIES)).min() >= 1 - 1e-6
    assert np.abs(np.linalg.norm(docs, axis=1) - 1).max() <= 1e-6
    # another task: the model card's template, not the model's retrieval prompt
    sts = ref_engine.encode(QUERIES, prompt=ref_engine.query_prompt(TASKS["sts"]))
    assert _cos(sts, reference.encode_queries(QUERIES, task="Retrieve semantically similar text")).min() >= 1 - 1e-6
    # Matryoshka: truncate, then renormalise
    cut = ref_engine.encode(DOCUMENTS, dimensions=32)
    assert cut.shape == (len(DOCUMENTS), 32)
    assert _cos(cut, truncate_normalise(reference.encode_documents(DOCUMENTS), 32)).min() >= 1 - 1e-6
    assert np.abs(np.linalg.norm(cut, axis=1) - 1).max() <= 1e-6
    # one unpadded sequence (what servers run, and what the diagnosis recomputes)
    one = ref_engine.embed_ids(ref_engine.token_ids(DOCUMENTS[-1]))
    assert _cos(one[None], reference.encode_documents(DOCUMENTS[-1:]))[0] >= 1 - 1e-6


def test_text_set_covers_what_the_issue_asks(ref_engine: ReferenceEngine) -> None:
    assert 38 <= len(TEXTS) <= 42 and len({t.id for t in TEXTS}) == len(TEXTS)
    joined = "".join(t.text for t in TEXTS)
    for sample in ("北京", "España", "مصر", "東京", "서울", "def ", "\t", "\n"):
        assert sample in joined
    assert {t.task for t in TEXTS if t.kind == "query"} >= {"retrieval", "code", "sts", "bitext"}
    longest = max(TEXTS, key=lambda t: len(t.text))
    # >= 2,000 tokens on Qwen's tokenizer needs >= ~9,000 English characters (about 4.5 per token)
    assert len(longest.text) >= 11_000
    assert len(ref_engine.token_ids(longest.text)) >= 2_000


# -- passing ---------------------------------------------------------------------------------------


def test_verify_passes_against_real_sglang(server: Wiretap, ref_engine: ReferenceEngine) -> None:
    report = verify(server.url, engine=ref_engine, precision="fp32")
    assert report.ok, report.to_json()
    full, cut = report.results
    assert (full.dimensions, cut.dimensions, cut.truncation) == (64, 32, "server")
    assert len(full.texts) == len(TEXTS) and full.min_cos >= 1 - 1e-5 and full.max_norm_err <= 1e-4
    assert full.top1 == 1.0 and full.topk == 1.0
    assert max(t.tokens for t in full.texts) >= 2_000
    assert report.diagnosis == []
    assert any(r.get("dimensions") == 32 for r in server.requests)  # truncated by the server


def test_verify_falls_back_to_client_side_truncation(server_no_mrl: Wiretap, ref_engine: ReferenceEngine) -> None:
    report = verify(server_no_mrl.url, engine=ref_engine, precision="fp32", texts=SUBSET)
    assert report.ok, report.to_json()
    assert report.results[1].truncation == "client"


def test_default_tolerance_is_bf16_for_a_server_that_is_not_the_reference(
        server: Wiretap, ref_engine: ReferenceEngine) -> None:
    report = verify(server.url, engine=ref_engine, texts=SUBSET, dimensions=[])
    assert report.ok and report.tolerance.name == "bf16" and report.tolerance.cos == 1e-3
    assert [r.dimensions for r in report.results] == [64]


# -- failing, with the right diagnosis ---------------------------------------------------------------


class _TextMistake:
    """A backend that rewrites text before the correct tiny model sees it."""

    def __init__(self, inner: TinyBackend, rewrite: Callable[[str], str]) -> None:
        self.inner = inner
        self.dim = inner.dim
        self.rewrite = rewrite

    def _fix(self, item: Input) -> Input:
        return self.rewrite(item) if isinstance(item, str) else item

    def count_tokens(self, item: Input) -> int:
        return self.inner.count_tokens(self._fix(item))

    def embed(self, items: Sequence[Input]) -> list[list[float]]:
        return self.inner.embed([self._fix(x) for x in items])


class _NoRenormStandin(Standin):
    """Truncates to ``dimensions`` but does not renormalise (the Matryoshka mistake)."""

    def embeddings(self, body: Any) -> dict[str, Any]:
        dims = body.get("dimensions") if isinstance(body, dict) else None
        if dims is None:
            return super().embeddings(body)
        fmt = body.get("encoding_format", "float")
        reply = super().embeddings({**body, "dimensions": None, "encoding_format": "float"})
        for row in reply["data"]:
            vec = row["embedding"][:dims]
            row["embedding"] = (base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
                                if fmt == "base64" else vec)
        return reply


def _serve_state(state: Standin) -> Iterator[str]:
    srv = _Server(("127.0.0.1", 0), state)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


CASES: dict[str, tuple[str, Callable[[TinyBackend], Any]]] = {
    "drops the EOS": ("no-eos", lambda b: b.with_mistake("no-eos")),
    "mean-pools": ("mean-pooling", lambda b: b.with_mistake("mean")),
    "does not normalise": ("not-normalised", lambda b: b.with_mistake("no-renorm")),
    "replaces newlines": ("newlines-replaced", lambda b: _TextMistake(b, lambda t: t.replace("\n", " "))),
    "adds a space after Query:": ("space-after-query",
                                  lambda b: _TextMistake(b, lambda t: t.replace("\nQuery:", "\nQuery: ", 1))),
}


@pytest.mark.parametrize("case", list(CASES))
def test_verify_fails_and_names_the_mistake(case: str, backend: TinyBackend, tiny_model: TinyModel,
                                            ref_engine: ReferenceEngine) -> None:
    expected, make = CASES[case]
    cfg = StandinConfig(dim=backend.dim, model=str(tiny_model.path))
    with serve_in_thread(cfg, make(backend)) as srv:
        report = verify(srv.url, engine=ref_engine, precision="fp32", texts=SUBSET, dimensions=[])
    assert not report.ok
    assert [d.name for d in report.explained_by] == [expected], json.dumps(report.to_json()["diagnosis"], indent=1)
    found = report.explained_by[0]
    assert found.fix and (found.min_cos >= 1 - 1e-5 or expected == "not-normalised")
    # the other hypotheses were tried and do not reproduce the server
    assert len(report.diagnosis) > 1 or expected == "not-normalised"


def test_verify_catches_truncation_without_renormalisation(
        backend: TinyBackend, tiny_model: TinyModel, ref_engine: ReferenceEngine) -> None:
    state = _NoRenormStandin(StandinConfig(dim=backend.dim, model=str(tiny_model.path)), backend)
    for url in _serve_state(state):
        report = verify(url, engine=ref_engine, precision="fp32", texts=SUBSET, dimensions=[32])
    full, cut = report.results
    assert full.ok and not cut.ok and not report.ok
    assert cut.min_cos >= 1 - 1e-5 and cut.max_norm_err > 0.2  # cosine alone cannot see it
    assert [d.name for d in report.explained_by] == ["not-renormalised@32"]


def test_verify_or_raise_gives_the_fix_as_hint(backend: TinyBackend, tiny_model: TinyModel,
                                               ref_engine: ReferenceEngine) -> None:
    """What `qembed serve --verify` raises (exit 1) before it stops the server."""
    cfg = StandinConfig(dim=backend.dim, model=str(tiny_model.path))
    with serve_in_thread(cfg, backend.with_mistake("no-eos")) as srv, pytest.raises(VerifyFailed) as err:
        verify_or_raise(srv.url, model=str(tiny_model.path), precision="fp32", api_key=None,
                        engine=ref_engine, texts=SUBSET, dimensions=[])
    assert err.value.exit_code == 1
    assert err.value.hint is not None and "151643" in err.value.hint
    assert any("no-eos" in d for d in err.value.details)
    assert "min cos" in err.value.message


# -- the CLI -----------------------------------------------------------------------------------------


def _cli(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    from qembed.cli import main

    monkeypatch.setattr("sys.argv", ["qembed", *argv])
    with pytest.raises(SystemExit) as done:
        main()
        raise SystemExit(0)
    return int(done.value.code or 0)


def test_cli_verify_json_pass_and_fail(server: Wiretap, backend: TinyBackend, tiny_model: TinyModel,
                                       monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`qembed verify --json`: exit 0 with a report; exit 1 with the diagnosis (real model load)."""
    import qembed.fleet.verify

    monkeypatch.setattr(qembed.fleet.verify, "TEXTS", tuple(SUBSET))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["--precision", "fp32", "--dimensions", "32", "--json"]
    assert _cli(["verify", "--url", server.url, *args], monkeypatch) == 0
    good = json.loads(capsys.readouterr().out)
    assert good["ok"] is True and good["model"] == str(tiny_model.path)  # the server's model path
    assert [r["dimensions"] for r in good["results"]] == [64, 32]
    cfg = StandinConfig(dim=backend.dim, model=str(tiny_model.path))
    with serve_in_thread(cfg, backend.with_mistake("mean")) as bad_srv:
        assert _cli(["verify", "--url", bad_srv.url, *args], monkeypatch) == 1
    bad = json.loads(capsys.readouterr().out)
    assert bad["ok"] is False
    assert [d["name"] for d in bad["diagnosis"] if d["reproduces"]] == ["mean-pooling"]
    # the human form names the cause and the fix
    assert _cli(["verify", "--url", server.url, "--precision", "fp32", "--dimensions", "none"], monkeypatch) == 0
    assert "PASS" in capsys.readouterr().out
