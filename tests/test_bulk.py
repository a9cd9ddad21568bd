"""Bulk files: formats in and out, skipped rows reported, and resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from qembed.client.bulk import embed_file, journal_path
from qembed.client.drivers import Client
from qembed.errors import ConfigError, InputError
from tests.fake_site import harness
from tests.standin.server import Fault, HashBackend, StandinConfig, serve_in_thread

TEXTS = [f"record number {i}" for i in range(37)]


def reference(texts: list[str], dim: int = 32) -> np.ndarray:
    return np.array(HashBackend(dim).embed(texts), dtype=np.float32)


def write_input(path: Path, texts: list[str], ids: list[str]) -> None:
    ext = path.suffix
    if ext == ".txt":
        path.write_text("".join(t + "\n" for t in texts))
    elif ext == ".jsonl":
        path.write_text("".join(json.dumps({"id": i, "body": t}) + "\n" for i, t in zip(ids, texts, strict=True)))
    elif ext == ".csv":
        import csv

        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "body"])
            w.writerows(zip(ids, texts, strict=True))
    else:
        pq.write_table(pa.table({"id": ids, "body": texts}), path)


def read_output(path: Path) -> tuple[list[object] | None, np.ndarray]:
    if path.suffix == ".npy":
        return None, np.load(path)
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        return [r["id"] for r in rows], np.array([r["embedding"] for r in rows], dtype=np.float32)
    t = pq.read_table(path)
    return t.column("id").to_pylist(), np.array(t.column("embedding").to_pylist(), dtype=np.float32)


@pytest.mark.parametrize("src", [".txt", ".jsonl", ".csv", ".parquet"])
@pytest.mark.parametrize("dst", [".npy", ".jsonl", ".parquet"])
def test_every_input_and_output_format(tmp_path: Path, src: str, dst: str) -> None:
    ids = [f"doc-{i}" for i in range(len(TEXTS))]
    inp, out = tmp_path / f"in{src}", tmp_path / f"out{dst}"
    write_input(inp, TEXTS, ids)
    with serve_in_thread(StandinConfig(dim=32)) as srv, Client(srv.url, batch_size=4) as c:
        res = embed_file(c, inp, out, text_field="body", id_field=None if src == ".txt" else "id", chunk_rows=8)
    got_ids, vecs = read_output(out)
    np.testing.assert_allclose(vecs, reference(TEXTS), atol=1e-6)
    if got_ids is not None:
        assert got_ids == (list(range(len(TEXTS))) if src == ".txt" else ids)
    assert (res.rows_out, res.rows_in, res.chunks, res.dimensions) == (37, 37, 5, 32)
    assert res.tokens == sum(len(t.split()) + 1 for t in TEXTS)
    assert not journal_path(out).exists()
    assert not out.with_name(out.name + ".parts").exists()


def test_skipped_rows_are_reported_with_ids_not_written(tmp_path: Path) -> None:
    texts = ["a", "", "b", "   ", "c"]
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp, texts, ["i0", "i1", "i2", "i3", "i4"])
    with serve_in_thread(StandinConfig(dim=32)) as srv, Client(srv.url) as c:
        res = embed_file(c, inp, out, text_field="body", id_field="id", chunk_rows=2, on_error="skip")
        with pytest.raises(InputError, match=r"record 2 \(id 'i1'\)") as exc:
            embed_file(c, inp, tmp_path / "raise.npy", text_field="body", id_field="id", chunk_rows=2)
    assert exc.value.index == 1
    assert "--on-error skip" in (exc.value.hint or "")
    assert [(f.id, f.index) for f in res.failures] == [("i1", 1), ("i3", 3)]
    got_ids, vecs = read_output(out)
    assert got_ids == ["i0", "i2", "i4"]
    np.testing.assert_allclose(vecs, reference(["a", "b", "c"]), atol=1e-6)


def test_an_unfinished_journal_needs_resume(tmp_path: Path) -> None:
    inp, out = tmp_path / "in.txt", tmp_path / "out.npy"
    write_input(inp, TEXTS, [])
    journal_path(out).write_text(json.dumps({"qembed_journal": 1}) + "\n")
    with serve_in_thread(StandinConfig(dim=32)) as srv, Client(srv.url) as c, pytest.raises(ConfigError) as exc:
        embed_file(c, inp, out)
    assert "--resume" in (exc.value.hint or "")


@pytest.mark.slow
@pytest.mark.parametrize("dst", [".npy", ".jsonl", ".parquet"])
def test_resume_after_sigkill_has_no_gaps_and_no_duplicates(tmp_path: Path, dst: str) -> None:
    texts = [f"line {i}" for i in range(120)]
    ids = [f"id{i}" for i in range(120)]
    inp, out = tmp_path / "in.jsonl", tmp_path / f"out{dst}"
    write_input(inp, texts, ids)
    journal = journal_path(out)
    # every request is slow, so the job is surely mid-way when it is killed
    cfg = StandinConfig(dim=32, faults=[Fault("delay", count=10**6, seconds=0.02)])
    with serve_in_thread(cfg) as srv:
        argv = [sys.executable, "-m", "qembed", "embed", "--input", str(inp), "--output", str(out),
                "--text-field", "body", "--id-field", "id", "--url", srv.url,
                "--chunk-rows", "4", "--batch-size", "2", "--concurrency", "1"]
        log = open(tmp_path / "killed.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(argv, stdout=log, stderr=log, env=dict(os.environ))
        try:
            with harness.reaped(proc):
                harness.wait_while_running(proc, lambda: harness.committed_chunks(journal) >= 5,
                                           what="5 committed chunks", log=tmp_path / "killed.log")
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        finally:
            log.close()
        done_before = harness.committed_chunks(journal)
        assert done_before < 30, "the job finished before it was killed"
        srv.state.config.faults.clear()
        n_requests_before = len(srv.requests)
        rerun = subprocess.run([*argv, "--resume", "--json"], capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr
        summary = json.loads(rerun.stdout)
        # a request the killed process had in flight may land after the snapshot; it is for a
        # chunk that was not committed, so the check below still holds
        resent = [t for r in srv.requests[n_requests_before:] if isinstance(r, dict)
                  for t in r.get("input", [])]
    assert summary["rows"] == 120 and summary["chunks_resumed"] == done_before
    # done chunks were not re-embedded, but for the probe: the first record, once (the server must
    # still make the vectors it made, issue 19 finding 3)
    assert [t for t in resent if t in set(texts[: 4 * done_before])] == [texts[0]]
    assert set(texts[4 * done_before:]) <= set(resent)
    got_ids, vecs = read_output(out)
    if got_ids is not None:
        assert got_ids == ids
    assert vecs.shape == (120, 32)
    np.testing.assert_allclose(vecs, reference(texts), atol=1e-6)
    assert not journal.exists()
