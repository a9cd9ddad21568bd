"""`qembed embed` / `qembed similarity` end to end: what the CLI prints or writes must be the
official recipe's vectors (prompt choice, Matryoshka, and no precision lost in JSON/JSONL/npy)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from qembed.cli import app
from tests.engine.wiretap import Wiretap
from tests.numerics.reference import Reference, assert_matches, format_query, truncate_normalise
from tests.numerics.texts import DOCUMENTS, MIXED, QUERIES

STS = "Retrieve semantically similar text"  # the official STS instruction


def _invoke(args: list[str]) -> Any:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def _json_rows(stdout: str, n: int) -> np.ndarray:
    doc = json.loads(stdout)
    assert [d["index"] for d in doc["data"]] == list(range(n))
    return np.asarray([d["embedding"] for d in doc["data"]], dtype=np.float32)


def test_cli_query_json_matches_reference(server: Wiretap, reference: Reference) -> None:
    out = _invoke(["embed", "--url", server.url, "--query", "--format", "json", *QUERIES])
    assert_matches(
        _json_rows(out.stdout, len(QUERIES)),
        reference.encode_queries(QUERIES),
        label="cli --query json",
    )


def test_cli_documents_npy_matches_reference(
    server: Wiretap, reference: Reference, tmp_path: Path
) -> None:
    path = tmp_path / "docs.npy"
    _invoke(["embed", "--url", server.url, "--format", "npy", "--output", str(path), *DOCUMENTS])
    got = np.load(path)
    assert got.dtype == np.float32
    assert_matches(got, reference.encode_documents(DOCUMENTS), label="cli documents npy")


def test_cli_dimensions_jsonl_matches_reference(server: Wiretap, reference: Reference) -> None:
    out = _invoke(
        ["embed", "--url", server.url, "--dimensions", "32", "--format", "jsonl", *DOCUMENTS]
    )
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    assert [r["id"] for r in rows] == list(range(len(DOCUMENTS)))
    got = np.asarray([r["embedding"] for r in rows], dtype=np.float32)
    expected = truncate_normalise(reference.encode_documents(DOCUMENTS), 32)
    assert_matches(got, expected, label="cli documents d=32 jsonl")


@pytest.mark.parametrize("suffix", [".npy", ".jsonl"])
def test_cli_bulk_file_matches_reference(
    server: Wiretap, reference: Reference, tmp_path: Path, suffix: str
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(
        "".join(json.dumps({"id": f"t{i}", "text": t}) + "\n" for i, t in enumerate(MIXED)),
        encoding="utf-8",
    )
    dst = tmp_path / f"out{suffix}"
    _invoke(
        [
            "embed",
            "--url",
            server.url,
            "--input",
            str(src),
            "--id-field",
            "id",
            "--output",
            str(dst),
            "--batch-size",
            "3",
            "--chunk-rows",
            "7",
        ]
    )
    if suffix == ".npy":
        got = np.load(dst)
    else:
        rows = [json.loads(line) for line in dst.read_text(encoding="utf-8").splitlines()]
        assert [r["id"] for r in rows] == [f"t{i}" for i in range(len(MIXED))]
        got = np.asarray([r["embedding"] for r in rows], dtype=np.float32)
    assert_matches(got, reference.encode_documents(MIXED), label=f"cli bulk {suffix}")


def test_cli_similarity_matrix_matches_reference(server: Wiretap, reference: Reference) -> None:
    texts = QUERIES[:5]
    out = _invoke(["similarity", "--url", server.url, "--json", *texts])
    matrix = np.asarray(json.loads(out.stdout)["matrix"])
    vecs = reference.encode([format_query(STS, t) for t in texts])
    np.testing.assert_allclose(matrix, vecs @ vecs.T, atol=2e-6)  # printed rounded to 6 places
