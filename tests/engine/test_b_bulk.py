"""Item 2 of the real-engine lane (the rest of it runs in tests/numerics, whose `server` is the
shared real engine): a bulk job jsonl -> parquet through real SGLang, SIGKILLed mid-way and
resumed, equals sentence-transformers row for row, with no chunk embedded twice."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from qembed.client.bulk import journal_path
from tests.engine.real import Engine
from tests.engine.wiretap import wiretap
from tests.fake_site import harness
from tests.numerics.st_reference import STReference
from tests.numerics.tiny_model import TinyModel

N = 1200
CHUNK = 8


def test_bulk_jsonl_to_parquet_resumes_after_sigkill(engine: Engine, engine_model: TinyModel,
                                                     tmp_path: Path) -> None:
    texts = [f"document {i}: the quick brown fox {'jumps ' * (i % 7)}over dog {i}" for i in range(N)]
    ids = [f"doc-{i}" for i in range(N)]
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.parquet"
    inp.write_text("".join(json.dumps({"id": i, "body": t}) + "\n" for i, t in zip(ids, texts, strict=True)),
                   encoding="utf-8")
    journal = journal_path(out)
    with wiretap(engine.url, engine.model) as tap:
        argv = [sys.executable, "-m", "qembed", "embed", "--input", str(inp), "--output", str(out),
                "--text-field", "body", "--url", tap.url, "--chunk-rows", str(CHUNK),
                "--batch-size", "2", "--concurrency", "1"]
        log = tmp_path / "killed.log"
        with log.open("wb") as fh, harness.reaped(subprocess.Popen(argv, stdout=fh, stderr=fh,
                                                                  env=engine.env)) as proc:
            harness.wait_while_running(proc, lambda: harness.committed_chunks(journal) >= 5,
                                       what="5 committed chunks", log=log, timeout=180)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        done = harness.committed_chunks(journal)
        assert done < N // CHUNK, "the job finished before it was killed"
        sent_before = len(tap.requests)
        rerun = subprocess.run([*argv, "--resume", "--json"], capture_output=True, text=True,
                               timeout=300, env=engine.env)
        assert rerun.returncode == 0, rerun.stderr
        resent = tap.inputs_since(sent_before)
    summary = json.loads(rerun.stdout)
    assert summary["rows"] == N and summary["chunks_resumed"] == done
    # committed chunks are not embedded again, but for the resume probe: the first record, once
    # (the journal's recorded vector, checked against this server before anything is written)
    committed = set(texts[: CHUNK * done])
    assert [t for t in resent if t in committed] == [texts[0]], "a committed chunk was embedded again"
    assert set(texts[CHUNK * done:]) <= set(resent)
    table = pq.read_table(out)
    assert table.column("id").to_pylist() == ids
    got = np.asarray(table.column("embedding").to_pylist(), dtype=np.float32)
    expected = STReference(engine_model.path).documents(texts)
    cos = np.sum(got.astype(np.float64) * expected, axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert got.shape == (N, 64) and cos.min() >= 1 - 1e-6, cos.min()
    assert not journal.exists()
