"""Real Infinity (infinity-emb[server,torch] 0.0.78, `--url-prefix /v1`) on the tiny Qwen3 model,
on CPU, in fp32, against sentence-transformers on the same directory.

Infinity has two faults of its own (docs/peers.md): it strips leading and trailing whitespace
from every input (its pydantic input type sets `strip_whitespace=True`), and with `dimensions`
it cuts the normalised vector without renormalising it. The client, the adapters and bulk jobs
must still give the reference vectors for texts without whitespace at the ends, and
`dimensions` through qembed must equal truncate-then-renormalise; verify must fail the server
and name both faults.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.helpers.peers import st_for
from tests.numerics.st_reference import STReference
from tests.peers import checks
from tests.peers.peer import Peer


@pytest.fixture(scope="module")
def st(infinity: Peer) -> STReference:
    return st_for(infinity)


def test_infinity_really_has_both_faults(infinity: Peer) -> None:
    """What the rest of this module builds on, seen on the wire: the same vector with and
    without edge whitespace, and a 32-value cut of the unit vector with its norm below 1."""
    body = {"model": infinity.model, "input": ["Paris is the capital.", "  Paris is the capital.\n"]}
    r = httpx.post(infinity.url + "/v1/embeddings", json=body, timeout=60, trust_env=False)
    assert r.status_code == 200, r.text
    a, b = (np.asarray(d["embedding"]) for d in r.json()["data"])
    assert np.array_equal(a, b), "Infinity no longer strips whitespace: update docs/peers.md and checks.py"
    r = httpx.post(infinity.url + "/v1/embeddings", json={**body, "dimensions": checks.DIMS},
                   timeout=60, trust_env=False)
    assert r.status_code == 200, r.text
    norms = [float(np.linalg.norm(d["embedding"])) for d in r.json()["data"]]
    assert all(len(d["embedding"]) == checks.DIMS for d in r.json()["data"])
    assert max(norms) < 0.99, f"Infinity now renormalises after `dimensions` ({norms}): update docs/peers.md"


def test_client_matches_sentence_transformers(infinity: Peer, st: STReference) -> None:
    checks.client_full_size(infinity, st, strips_whitespace=True)


def test_dimensions_32_is_truncate_then_renormalise(infinity: Peer, st: STReference,
                                                    qenv: dict[str, str]) -> None:
    checks.client_dimensions(infinity, st, qenv)


def test_bulk_job_killed_and_resumed_equals_an_uninterrupted_run(infinity: Peer, st: STReference,
                                                                 qenv: dict[str, str], tmp_path: Path) -> None:
    checks.bulk_resume(infinity, st, qenv, tmp_path)


def test_langchain_and_llamaindex_adapters(infinity: Peer, st: STReference) -> None:
    checks.adapters(infinity, st)


def test_verify_fails_infinity_and_names_both_faults(infinity: Peer, qenv: dict[str, str]) -> None:
    rc, report, err = checks.verify(infinity, qenv)
    assert rc == 1, (rc, err)
    found = checks.reproducing(report)
    stripped, cut = checks.named(found, "whitespace"), checks.named(found, "renormalis")
    assert stripped, f"whitespace stripping not named: {report.get('diagnosis')}"
    assert cut, f"no-renormalise not named at {checks.DIMS}: {report.get('diagnosis')}"
    assert len(found) == len(stripped) + len(cut), f"a cause Infinity does not have is named too: {found}"
