"""`qembed verify` against planted peer-runtime faults (issue 21), on the tiny random Qwen3 model.

Every hypothesis added for real runtimes has a planted server that makes exactly that mistake
(tests/standin: whitespace stripped as Infinity does, a silent 512-token limit, a BOS added,
first-token pooling), and the diagnosis must name it. Each mistake is judged on its own at every
size, so two at once are reported together (Infinity: whitespace stripped AND truncation
without renormalising). The server's own `dimensions` is judged: vLLM's refusal passes as "not
supported (the client truncates)"; a wrong length or norm fails, named. Where nothing
reproduces, the report says what the differing texts share. Exit codes: 1 off the reference,
8 could not complete (a 5xx), 0 for a refusal. And the client's `dimensions` fallback through
the planted vLLM and Infinity equals sentence-transformers' truncate-and-renormalise.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

from qembed.client.drivers import Client
from qembed.errors import CheckIncomplete
from qembed.fleet.verify import VerifyReport, verify
from qembed.fleet.verify_texts import TEXTS
from qembed.reference.engine import ReferenceEngine
from tests.numerics.st_reference import STReference
from tests.numerics.tiny_model import TinyModel
from tests.standin.server import Fault, Input, StandinConfig, serve_in_thread
from tests.standin.tiny_backend import TinyBackend

pytestmark = pytest.mark.slow

IDS = ("q-en", "q-zh", "q-code", "sts-en", "d-en", "d-ja", "d-code-py", "d-tabs", "d-lines", "d-spaces", "d-a",
       "d-long")
LONG = [t for t in TEXTS if t.id in IDS]  #: with d-long (~5,000 tiny-tokenizer tokens): the token-limit case
SUBSET = [t for t in LONG if t.id != "d-long"]


class _Rewrite:
    """A backend that rewrites text before the correct tiny model sees it (an unknown mistake)."""

    def __init__(self, inner: TinyBackend, rewrite: Callable[[str], str]) -> None:
        self.inner, self.dim, self.rewrite = inner, inner.dim, rewrite

    def count_tokens(self, item: Input) -> int:
        return self.inner.count_tokens(self.rewrite(item) if isinstance(item, str) else item)

    def embed(self, items: Sequence[Input]) -> list[list[float]]:
        return self.inner.embed([self.rewrite(x) if isinstance(x, str) else x for x in items])


def _verify(cfg: StandinConfig, backend: Any, engine: ReferenceEngine, dims: list[int] | None = None,
            texts: Sequence[Any] = SUBSET) -> VerifyReport:
    with serve_in_thread(cfg, backend) as srv:
        return verify(srv.url, engine=engine, precision="fp32", texts=texts, dimensions=dims or [])


def _names(report: VerifyReport) -> list[str]:
    return sorted(d.name for d in report.explained_by)


def _cfg(tiny_model: TinyModel, backend: TinyBackend, **kw: Any) -> StandinConfig:
    return StandinConfig(dim=backend.dim, model=str(tiny_model.path), **kw)


# -- each new hypothesis, planted alone ------------------------------------------------------------

PLANTED: dict[str, tuple[dict[str, Any], str | None]] = {
    # name: (StandinConfig extras, the tiny backend's mistake)
    "whitespace-stripped": ({"strip_whitespace": True}, None),
    "token-limit": ({}, "token-limit-512"),
    "bos-added": ({}, "bos"),
    "first-token-pooling": ({}, "first-token"),
}


@pytest.mark.parametrize("name", list(PLANTED))
def test_each_new_hypothesis_is_named(name: str, backend: TinyBackend, tiny_model: TinyModel,
                                      ref_engine: ReferenceEngine) -> None:
    extra, mistake = PLANTED[name]
    report = _verify(_cfg(tiny_model, backend, **extra), backend.with_mistake(mistake), ref_engine,  # type: ignore[arg-type]
                     texts=LONG if name == "token-limit" else SUBSET)
    assert not report.ok
    assert _names(report) == [name], json.dumps(report.to_json()["diagnosis"], indent=1)
    found = report.explained_by[0]
    assert found.consistent and found.explains and found.fix
    assert report.unexplained == []
    if name == "token-limit":
        assert "512 tokens" in found.title and found.explains == ["d-long@64"]
    if name == "whitespace-stripped":  # only the texts with whitespace at the ends differ
        assert set(found.explains) == {"d-code-py@64", "d-tabs@64", "d-spaces@64"}


def test_the_hypotheses_can_fail_a_right_server_passes(backend: TinyBackend, tiny_model: TinyModel,
                                                       ref_engine: ReferenceEngine) -> None:
    report = _verify(_cfg(tiny_model, backend), backend, ref_engine, dims=[32])
    assert report.ok, report.to_json()
    assert report.diagnosis == [] and report.results[1].truncation == "server"


# -- several at once, and at every size ------------------------------------------------------------


def test_infinity_whitespace_and_no_renormalisation_reported_together(
        backend: TinyBackend, tiny_model: TinyModel, ref_engine: ReferenceEngine) -> None:
    """Infinity 0.0.78's two faults: neither hides the other, each explains its part."""
    cfg = _cfg(tiny_model, backend, strip_whitespace=True, dimensions_behaviour="infinity")
    report = _verify(cfg, backend, ref_engine, dims=[32])
    assert not report.ok
    assert _names(report) == ["not-renormalised@32", "whitespace-stripped"], json.dumps(
        report.to_json()["diagnosis"], indent=1)
    assert report.unexplained == []
    by = {d.name: d for d in report.explained_by}
    assert "d-spaces@64" in by["whitespace-stripped"].explains and "d-spaces@32" in by["whitespace-stripped"].explains
    assert all(e.endswith("(norm)") for e in by["not-renormalised@32"].explains)
    assert "qembed's client" in by["not-renormalised@32"].fix
    cut = report.results[1]
    assert cut.truncation == "server" and 0.2 < cut.max_norm_err < 0.9


def test_no_renormalisation_is_named_even_when_full_size_fails(
        backend: TinyBackend, tiny_model: TinyModel, ref_engine: ReferenceEngine) -> None:
    """The old rule ran this hypothesis only when full size passed: a mean-pooling server that
    also truncates without renormalising gets both named."""
    cfg = _cfg(tiny_model, backend, dimensions_behaviour="infinity")
    report = _verify(cfg, backend.with_mistake("mean"), ref_engine, dims=[32])
    assert _names(report) == ["mean-pooling", "not-renormalised@32"], json.dumps(report.to_json()["diagnosis"], indent=1)


# -- the server's own `dimensions` -------------------------------------------------------------------


def test_a_refusal_is_not_supported_and_does_not_fail(backend: TinyBackend, tiny_model: TinyModel,
                                                      ref_engine: ReferenceEngine) -> None:
    report = _verify(_cfg(tiny_model, backend, dimensions_behaviour="vllm"), backend, ref_engine, dims=[32])
    assert report.ok, report.to_json()
    cut = report.results[1]
    assert cut.truncation == "client" and cut.note.startswith("not supported (the client truncates)")
    assert "does not support Matryoshka embeddings" in cut.note


@pytest.mark.parametrize(("behaviour", "name"), [("infinity", "not-renormalised@32"), ("ignore", "wrong-length@32")])
def test_a_wrong_truncation_fails_named_with_the_client_as_fix(
        behaviour: str, name: str, backend: TinyBackend, tiny_model: TinyModel, ref_engine: ReferenceEngine) -> None:
    report = _verify(_cfg(tiny_model, backend, dimensions_behaviour=behaviour), backend, ref_engine, dims=[32])
    full, cut = report.results
    assert full.ok and not cut.ok and not report.ok
    assert _names(report) == [name]
    assert "leave `dimensions` to qembed's client" in report.explained_by[0].fix
    if behaviour == "ignore":
        assert cut.problems == ["the server sends 64 values per vector for `dimensions: 32`"]


# -- nothing reproduces: say what the texts share -----------------------------------------------------


def test_unexplained_texts_are_described(backend: TinyBackend, tiny_model: TinyModel,
                                         ref_engine: ReferenceEngine) -> None:
    """An unknown mistake on the texts with newlines (upper-cased): no hypothesis reproduces it,
    and the report says they all have newlines."""
    odd = _Rewrite(backend, lambda t: t.upper() if "\n" in t.split("Query:")[-1] else t)
    report = _verify(_cfg(tiny_model, backend), odd, ref_engine)
    assert not report.ok and report.explained_by == []
    differing = {t.id for t in report.results[0].texts if not t.ok}
    assert {u.split("@")[0] for u in report.unexplained} == differing
    assert differing == {t.id for t in SUBSET if "\n" in t.text}
    assert any(s.startswith(f"newlines: all {len(differing)} of them") for s in report.shared), report.shared


# -- exit codes --------------------------------------------------------------------------------------


def _cli(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    from qembed.cli import main

    monkeypatch.setattr("sys.argv", ["qembed", *argv])
    with pytest.raises(SystemExit) as done:
        main()
        raise SystemExit(0)
    return int(done.value.code or 0)


def test_exit_codes(backend: TinyBackend, tiny_model: TinyModel, monkeypatch: pytest.MonkeyPatch,
                    capsys: pytest.CaptureFixture[str]) -> None:
    """0 for a refusal (reported), 1 off the reference, 8 when the server answers 500, 7 when
    nothing listens."""
    import qembed.fleet.verify

    monkeypatch.setattr(qembed.fleet.verify, "TEXTS", tuple(SUBSET))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["--precision", "fp32", "--dimensions", "32"]
    with serve_in_thread(_cfg(tiny_model, backend, dimensions_behaviour="vllm"), backend) as srv:
        assert _cli(["verify", "--url", srv.url, *args], monkeypatch) == 0
    out = capsys.readouterr().out
    assert "not supported by the server (the client truncates)" in out and "PASS" in out
    with serve_in_thread(_cfg(tiny_model, backend, strip_whitespace=True), backend) as srv:
        assert _cli(["verify", "--url", srv.url, *args], monkeypatch) == 1
    out = capsys.readouterr().out
    assert "cause: leading and trailing whitespace is stripped" in out
    cfg = _cfg(tiny_model, backend, faults=[Fault("status", count=1000, status=500, message="boom")])
    with serve_in_thread(cfg, backend) as srv:
        assert _cli(["verify", "--url", srv.url, *args], monkeypatch) == 8
    err = capsys.readouterr().err
    assert "error: could not complete the check: the server answered 500: boom" in err
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert _cli(["verify", "--url", f"http://127.0.0.1:{port}", *args], monkeypatch) == 7
    assert "no server answers" in capsys.readouterr().err


def test_a_connection_lost_mid_run_is_incomplete(backend: TinyBackend, tiny_model: TinyModel,
                                                 ref_engine: ReferenceEngine) -> None:
    cfg = _cfg(tiny_model, backend, faults=[Fault("reset", count=1000)])
    with serve_in_thread(cfg, backend) as srv, pytest.raises(CheckIncomplete) as err:
        verify(srv.url, engine=ref_engine, precision="fp32", texts=SUBSET[:2], dimensions=[])
    assert err.value.exit_code == 8


# -- the client's fallback through the planted peers equals sentence-transformers --------------------


@pytest.mark.parametrize("behaviour", ["vllm", "infinity"])
def test_client_fallback_equals_sentence_transformers(behaviour: str, backend: TinyBackend, tiny_model: TinyModel,
                                                      st: STReference, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="qembed.client.flow")
    docs = [t.text for t in SUBSET if t.kind == "document"]
    queries = [t.text for t in SUBSET if t.kind == "query" and t.task == "retrieval"]
    with serve_in_thread(_cfg(tiny_model, backend, dimensions_behaviour=behaviour), backend) as srv, \
            Client(srv.url) as c:
        d = c.embed_documents(docs, dimensions=32)
        q = c.embed_queries(queries, dimensions=32)
    cos_d = np.sum(d.astype(np.float64) * st.documents(docs, dims=32), axis=1)
    cos_q = np.sum(q.astype(np.float64) * st.queries(queries, dims=32), axis=1)
    assert cos_d.min() >= 1 - 1e-5 and cos_q.min() >= 1 - 1e-5
    assert np.abs(np.linalg.norm(d, axis=1) - 1).max() <= 1e-5
    said = [r.getMessage() for r in caplog.records if "truncates and renormalises the vectors itself" in r.getMessage()]
    assert len(said) == 1
