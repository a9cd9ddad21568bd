"""The client's `dimensions` fallback, by meaning (issue 21): a server that refuses the field (a
4xx that the same request without it does not get) or truncates wrongly (the wrong length, or
no renormalisation) gets client-side truncation + renormalisation, said once per client.

Planted servers (tests/standin): vLLM's exact refusal body, Infinity's slice-without-renormalise,
and SGLang's own refusal wording. Every entry point goes through the one flow: `embed_documents`,
`embed_lists`, the async client, `qembed embed --dimensions`, and bulk `embed_file`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from qembed.client.bulk import embed_file
from qembed.client.drivers import AsyncClient, Client
from qembed.errors import DimensionsRefused, ServerError
from tests.standin.server import Fault, HashBackend, StandinConfig, serve_in_thread

DIM = 64
TEXTS = [f"document number {i}" for i in range(10)]


def truncated(texts: list[str], dims: int) -> np.ndarray:
    """The right answer: the full vectors, truncated, then renormalised (computed here)."""
    full = np.array(HashBackend(DIM).embed(texts), dtype=np.float64)[:, :dims]
    return (full / np.linalg.norm(full, axis=1, keepdims=True)).astype(np.float32)


def fallback_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "truncates and renormalises the vectors itself" in r.getMessage()]


def run_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
             args: list[str]) -> tuple[int, str, str]:
    """``qembed ARGS`` through ``main()`` (the error funnel): (exit code, stdout, stderr)."""
    from qembed.cli import main

    monkeypatch.setattr("sys.argv", ["qembed", *args])
    with pytest.raises(SystemExit) as done:
        main()
        raise SystemExit(0)  # main() returns on success
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err


BEHAVIOURS = {
    "vllm": ("refused `dimensions` (HTTP 400: Model 'Qwen/Qwen3-Embedding-4B' does not support Matryoshka "
             "embeddings; dimensions must be unset"),
    "infinity": "truncated without renormalising",
    "sglang-off": "does not support matryoshka representation",
}


def _config(behaviour: str) -> StandinConfig:
    if behaviour == "sglang-off":
        return StandinConfig(dim=DIM, matryoshka=False)
    return StandinConfig(dim=DIM, dimensions_behaviour=behaviour)


@pytest.mark.parametrize("behaviour", list(BEHAVIOURS))
def test_fallback_gives_truncate_then_renormalise_and_says_so_once(
        behaviour: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="qembed.client.flow")
    with serve_in_thread(_config(behaviour)) as srv, Client(srv.url, batch_size=3, concurrency=2) as c:
        first = c.embed_documents(TEXTS, dimensions=32)
        again = c.embed_documents(TEXTS[:4], dimensions=40)
        rows = c.embed_lists(TEXTS[:2], dimensions=32)
        assert c.server_info().supports_dimensions is False
        sent = [r.get("dimensions") for r in srv.requests if r["input"] != ["qembed dimension probe"]]
    np.testing.assert_allclose(first, truncated(TEXTS, 32), atol=1e-6)
    np.testing.assert_allclose(again, truncated(TEXTS[:4], 40), atol=1e-6)
    np.testing.assert_allclose(np.array(rows.vectors), truncated(TEXTS[:2], 32), atol=1e-6)
    # one request carried `dimensions` (refused or judged wrong); nothing after it
    assert sent[0] == 32 and all(d is None for d in sent[1:]), sent
    said = fallback_warnings(caplog)
    assert len(said) == 1, said
    assert BEHAVIOURS[behaviour] in said[0] and srv.url in said[0]
    assert "SGLang embedding server" not in caplog.text


def test_a_new_client_learns_again_and_says_so_again(caplog: pytest.LogCaptureFixture) -> None:
    """Per client (per server): another Client for the same URL asks the server once more."""
    caplog.set_level(logging.WARNING, logger="qembed.client.flow")
    with serve_in_thread(_config("vllm")) as srv:
        for _ in range(2):
            with Client(srv.url) as c:
                c.embed_documents(TEXTS[:2], dimensions=32)
    assert len(fallback_warnings(caplog)) == 2


def test_async_client_takes_the_same_path(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="qembed.client.flow")

    async def run(url: str) -> tuple[np.ndarray, np.ndarray]:
        async with AsyncClient(url, batch_size=3) as ac:
            return await ac.embed_documents(TEXTS, dimensions=32), await ac.embed_documents(TEXTS, dimensions=32)

    with serve_in_thread(_config("vllm")) as srv:
        a, b = asyncio.run(run(srv.url))
    np.testing.assert_allclose(a, truncated(TEXTS, 32), atol=1e-6)
    np.testing.assert_array_equal(a, b)
    assert len(fallback_warnings(caplog)) == 1


@pytest.mark.parametrize("behaviour", ["vllm", "infinity"])
def test_cli_embed_dimensions_through_a_peer(behaviour: str, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str],
                                             caplog: pytest.LogCaptureFixture) -> None:
    """`qembed embed --dimensions 32`: exit 0, the right vectors, the warning once (stderr, through
    qembed's logger; pytest's log capture holds it here)."""
    caplog.set_level(logging.WARNING, logger="qembed.client.flow")
    with serve_in_thread(_config(behaviour)) as srv:
        code, out, err = run_main(monkeypatch, capsys, ["embed", "--url", srv.url, "--dimensions", "32",
                                                        "--format", "jsonl", "a", "b"])
    assert code == 0, err
    vecs = np.array([json.loads(line)["embedding"] for line in out.splitlines()], dtype=np.float32)
    np.testing.assert_allclose(vecs, truncated(["a", "b"], 32), atol=1e-6)
    assert len(fallback_warnings(caplog)) == 1
    assert "error:" not in err


def test_bulk_through_a_refusing_server(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    with serve_in_thread(_config("vllm")) as srv, Client(srv.url) as c:
        result = embed_file(c, src, tmp_path / "out.npy", dimensions=32, chunk_rows=4)
    assert result.dimensions == 32
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), truncated(TEXTS, 32), atol=1e-6)


def test_a_4xx_that_also_comes_without_dimensions_is_no_refusal(caplog: pytest.LogCaptureFixture) -> None:
    """Meaning, not status: when the request fails without `dimensions` too, that error is raised
    and nothing is learned about `dimensions`."""
    caplog.set_level(logging.WARNING, logger="qembed.client.flow")
    cfg = StandinConfig(dim=DIM, dimensions_behaviour="vllm")
    with serve_in_thread(cfg) as srv, Client(srv.url) as c:
        c.server_info()  # learn the size first: the 422 then lands on the request without `dimensions`
        srv.state.config.faults = [Fault("status", count=2, status=422, message="some other complaint")]
        with pytest.raises(ServerError, match="422: some other complaint"):
            c.embed_documents(TEXTS[:2], dimensions=32)
        assert c.server_info().supports_dimensions is None
    assert fallback_warnings(caplog) == []


@pytest.mark.parametrize("status", [401, 429])
def test_the_key_or_overload_is_never_taken_for_a_refusal(status: int) -> None:
    cfg = StandinConfig(dim=DIM)
    with serve_in_thread(cfg) as srv, Client(srv.url, max_retries=0) as c:
        c.server_info()
        srv.state.config.faults = [Fault("status", count=5, status=status, message="no")]
        with pytest.raises(ServerError, match=f"{status}"):
            c.embed_documents(TEXTS[:2], dimensions=32)
        assert srv.requests[-1].get("dimensions") == 32  # not re-sent without it


def test_fallback_off_judges_nothing_and_keeps_the_server_reply() -> None:
    """What `qembed verify` uses: a refusal raises, a wrong truncation comes back as sent."""
    with serve_in_thread(_config("vllm")) as srv, Client(srv.url, dimensions_fallback=False) as c:
        with pytest.raises(DimensionsRefused, match="does not support Matryoshka embeddings"):
            c.embed_documents(TEXTS[:2], dimensions=32)
        assert len([r for r in srv.requests if r.get("dimensions") == 32]) == 1
    with serve_in_thread(_config("infinity")) as srv, Client(srv.url, dimensions_fallback=False,
                                                             expect_unit=False) as c:
        got = c.embed_documents(TEXTS, dimensions=32)
        assert c.server_info().supports_dimensions is None
    full = np.array(HashBackend(DIM).embed(TEXTS), dtype=np.float32)
    np.testing.assert_allclose(got, full[:, :32], atol=1e-6)  # sliced, not renormalised
    assert np.linalg.norm(got, axis=1).max() < 0.9


def test_a_server_that_ignores_dimensions_is_a_wrong_truncation(caplog: pytest.LogCaptureFixture) -> None:
    """Full-size vectors back for `dimensions: 32`: named, and the client truncates itself."""
    caplog.set_level(logging.WARNING, logger="qembed.client.flow")
    with serve_in_thread(StandinConfig(dim=DIM, dimensions_behaviour="ignore")) as srv, Client(srv.url) as c:
        got = c.embed_documents(TEXTS, dimensions=32)
    np.testing.assert_allclose(got, truncated(TEXTS, 32), atol=1e-6)
    said = fallback_warnings(caplog)
    assert len(said) == 1 and "sends 64 values per vector for `dimensions: 32`" in said[0]


@pytest.mark.parametrize("behaviour", ["vllm", "infinity"])
def test_doctor_does_not_propose_what_already_happens(behaviour: str) -> None:
    """doctor's `dimensions` row: a WARN that says the client already truncates itself, and a fix
    for other clients (not "truncate client-side", which the client does already)."""
    from qembed.fleet import doctor_rows, doctor_server

    cfg = _config(behaviour)
    cfg.model = "Qwen/Qwen3-Embedding-0.6B"  # its 1024-d shape, so the embedding row passes
    cfg.dim = 1024
    with serve_in_thread(cfg) as srv:
        ctx = doctor_rows.Ctx(profile_ref="generic", url=srv.url, python=None, log=None)
        doctor_server.server_checks(ctx, None)
    row = next(r for r in ctx.rows if r.name == "dimensions")
    assert row.status == "WARN"
    assert ("refused" if behaviour == "vllm" else "wrong truncation") in row.found
    assert "already truncates and renormalises itself" in row.found
    assert "nothing to change for qembed's client" in (row.fix or "")
    assert "truncate client-side" not in (row.fix or "")
