"""Bulk and one-shot files, issue 19 (data findings 1-7 and the two smaller bulk items): no file
touched through a planted link, no resume that mixes two vector sizes or two models, one lock for
every writer, parquet ids keep their type, a BOM is not text, piped stdin is streamed.

Driven through the CLI with real files, as a user would, against the stand-in server."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from qembed.client.bulk import embed_file, journal_path
from qembed.client.drivers import Client
from qembed.client.vector_io import OutputLock, lock_path
from qembed.errors import QembedError, ServerUnreachable, StorageError
from tests.helpers.bulk_jobs import TEXTS, interrupted_job, jsonl_input, ref
from tests.helpers.paths import REPO
from tests.standin.server import Fault, HashBackend, Input, Running, StandinConfig, serve_in_thread


def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``qembed ARGS`` through ``main()`` and its error funnel: (exit code, stdout, stderr)."""
    from qembed.cli import main

    monkeypatch.setattr(sys, "argv", ["qembed", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def parts_of(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


# -- 1. side files never followed through a link ---------------------------------------------


@pytest.mark.parametrize("side", ["lock", "journal", "ids"])
def test_a_side_file_that_is_a_link_is_refused_and_its_target_untouched(
        srv: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        side: str) -> None:
    inp = jsonl_input(tmp_path / "docs.jsonl", TEXTS[:6])
    out = tmp_path / "out.npy"
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    link = {"lock": lock_path(out), "journal": journal_path(out), "ids": tmp_path / "out.ids.jsonl"}[side]
    link.symlink_to(victim)
    code, _, err = cli(monkeypatch, capsys, "embed", "--url", srv.url, "--input", str(inp), "--output", str(out))
    assert code == 2, err
    assert f"`{link}` is a symbolic link" in err and "hint:" in err and "Traceback" not in err
    assert victim.read_text() == "precious\n" and link.is_symlink()  # the evidence stays
    assert srv.requests == [] and not out.exists()


def test_a_planted_parquet_tmp_link_is_refused(srv: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    inp = jsonl_input(tmp_path / "docs.jsonl", TEXTS[:6])
    out = tmp_path / "out.parquet"
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out.with_name("out.parquet.tmp").symlink_to(victim)
    code, _, err = cli(monkeypatch, capsys, "embed", "--url", srv.url, "--input", str(inp), "--output", str(out))
    assert code == 2 and "is a symbolic link" in err, err
    assert victim.read_text() == "precious\n" and not out.exists() and not out.is_symlink()


def test_a_parts_folder_that_is_a_link_keeps_every_file_it_points_to(
        srv: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    inp = jsonl_input(tmp_path / "docs.jsonl", TEXTS[:6])
    out = tmp_path / "out.parquet"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "thesis.tex").write_text("years of work")
    parts_of(out).symlink_to(scratch)
    code, _, err = cli(monkeypatch, capsys, "embed", "--url", srv.url, "--input", str(inp), "--output", str(out),
                       "--overwrite")
    assert code == 2 and f"`{parts_of(out)}` is a symbolic link" in err, err
    assert (scratch / "thesis.tex").read_text() == "years of work" and parts_of(out).is_symlink()


def test_a_parts_folder_holding_foreign_files_is_not_emptied(
        srv: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    inp = jsonl_input(tmp_path / "docs.jsonl", TEXTS[:6])
    out = tmp_path / "out.parquet"
    parts_of(out).mkdir()
    (parts_of(out) / "notes.txt").write_text("mine")
    code, _, err = cli(monkeypatch, capsys, "embed", "--url", srv.url, "--input", str(inp), "--output", str(out),
                       "--overwrite")
    assert code == 2 and "notes.txt" in err and "not written by qembed" in err, err
    assert (parts_of(out) / "notes.txt").read_text() == "mine"


def test_an_output_that_is_a_link_is_refused_for_bulk(srv: Running, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    inp = jsonl_input(tmp_path / "docs.jsonl", TEXTS[:6])
    victim = tmp_path / "victim.npy"
    victim.write_bytes(b"precious")
    out = tmp_path / "out.npy"
    out.symlink_to(victim)
    code, _, err = cli(monkeypatch, capsys, "embed", "--url", srv.url, "--input", str(inp), "--output", str(out),
                       "--overwrite")
    assert code == 2 and "is a symbolic link" in err and str(victim) in err, err
    assert victim.read_bytes() == b"precious"


# -- 2 and 3. a resume never mixes two vector sizes or two models ----------------------------


class SaltedBackend(HashBackend):
    """Other weights, same size: every vector differs from HashBackend's."""

    def embed(self, items: Sequence[Input]) -> list[list[float]]:
        return super().embed([f"salt:{x}" if isinstance(x, str) else x for x in items])


class NoisyBackend(HashBackend):
    """The same weights with last-bit noise that differs on every request (an honest server)."""

    calls = 0

    def embed(self, items: Sequence[Input]) -> list[list[float]]:
        NoisyBackend.calls += 1
        rng = np.random.default_rng(NoisyBackend.calls)
        out = []
        for v in super().embed(items):
            a = np.asarray(v) + rng.normal(0, 2e-4, len(v))
            out.append((a / np.linalg.norm(a)).tolist())
        return out


def _snapshot(out: Path) -> dict[str, bytes]:
    files = [out, journal_path(out), out.with_name(out.stem + ".ids.jsonl")]
    files += sorted(parts_of(out).glob("*")) if parts_of(out).is_dir() else []
    return {str(p): p.read_bytes() for p in files if p.exists()}


@pytest.mark.parametrize("dst", [".npy", ".jsonl", ".parquet"])
@pytest.mark.parametrize("other", ["size", "model name", "weights"])
def test_resume_against_another_server_is_refused_before_anything_is_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        dst: str, other: str) -> None:
    inp = jsonl_input(tmp_path / "docs.jsonl", TEXTS)
    out = tmp_path / f"v{dst}"
    with serve_in_thread(StandinConfig(dim=32)) as first, Client(first.url) as c:
        interrupted_job(c, inp, out, after_rows=12)
    before = _snapshot(out)
    cfg, backend = {"size": (StandinConfig(dim=64), None),
                    "model name": (StandinConfig(dim=32, model="Qwen/Qwen3-Embedding-8B"), None),
                    "weights": (StandinConfig(dim=32), SaltedBackend(32))}[other]
    with serve_in_thread(cfg, backend) as second:
        code, _, err = cli(monkeypatch, capsys, "embed", "--url", second.url, "--input", str(inp), "--output",
                           str(out), "--chunk-rows", "4", "--resume")
        assert len(second.requests) == 1  # the probe, nothing else
    assert code == 2, err
    why = {"size": "64 dims, not the 32", "model name": "`Qwen/Qwen3-Embedding-8B`, not",
           "weights": "another model"}[other]
    assert "cannot resume" in err and why in err and "Traceback" not in err
    assert "--overwrite" in err
    assert _snapshot(out) == before


def test_resume_tolerates_an_honest_servers_last_bit_noise(tmp_path: Path) -> None:
    inp = jsonl_input(tmp_path / "docs.jsonl", TEXTS)
    out = tmp_path / "v.npy"
    with serve_in_thread(StandinConfig(dim=32), NoisyBackend(32)) as s, Client(s.url) as c:
        interrupted_job(c, inp, out, after_rows=12)
        res = embed_file(c, inp, out, chunk_rows=4, resume=True)
    assert res.rows_out == 40 and res.chunks_resumed == 3


def test_a_chunk_of_another_size_mid_job_is_never_written(tmp_path: Path) -> None:
    """The server behind the URL changes size between chunks: the job stops, the file stays whole."""
    inp = jsonl_input(tmp_path / "docs.jsonl", TEXTS)
    out = tmp_path / "v.npy"

    class Growing(HashBackend):
        def embed(self, items: Sequence[Input]) -> list[list[float]]:
            if any(isinstance(x, str) and x.endswith(" 20") for x in items):
                self.dim = 64
            return super().embed(items)

    with serve_in_thread(StandinConfig(dim=64), Growing(32)) as s, Client(s.url) as c, \
            pytest.raises(QembedError) as exc:
        embed_file(c, inp, out, chunk_rows=4)
    assert "64" in exc.value.message and "20 input rows (20 vectors) are committed" in exc.value.message
    assert "--resume" in (exc.value.hint or "")
    assert np.load(out).shape == (20, 32)


# -- 4. one lock for every writer --------------------------------------------------------------


@pytest.mark.parametrize("dst", [".npy", ".jsonl"])
def test_a_one_shot_write_respects_a_bulk_jobs_lock(srv: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str], dst: str) -> None:
    out = tmp_path / f"v{dst}"
    out.write_bytes(b"the bulk job's rows")
    held = OutputLock(out)
    held.acquire()
    try:
        code, _, err = cli(monkeypatch, capsys, "embed", "--url", srv.url, "-o", str(out), "--overwrite", "hi")
    finally:
        held.release()
    assert code == 2 and f"pid {os.getpid()}" in err, err
    assert out.read_bytes() == b"the bulk job's rows"


def test_a_bulk_job_whose_output_was_replaced_does_not_report_success(srv: Running, tmp_path: Path) -> None:
    inp = jsonl_input(tmp_path / "docs.jsonl", TEXTS)
    out = tmp_path / "v.npy"

    def replace_output(rows: int, total: int | None, tokens: int) -> None:
        if rows == 8:
            tmp = tmp_path / "other.npy"
            np.save(tmp, np.zeros((1, 32), dtype=np.float32))
            os.replace(tmp, out)

    with Client(srv.url) as c, pytest.raises(StorageError, match="was replaced") as exc:
        embed_file(c, inp, out, chunk_rows=4, on_progress=replace_output)
    assert "--overwrite" in (exc.value.hint or "")


# -- 5. parquet ids keep their type ------------------------------------------------------------


@pytest.mark.parametrize(("ids", "arrow"), [([1, 2, 3], "int64"), (["1", "2", "3"], "string")])
def test_parquet_ids_keep_their_type(srv: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str], ids: list[object], arrow: str) -> None:
    import pyarrow.parquet as pq

    inp = tmp_path / "docs.jsonl"
    inp.write_text("".join(json.dumps({"id": i, "text": f"t {i}"}) + "\n" for i in ids))
    out = tmp_path / "v.parquet"
    code, _, err = cli(monkeypatch, capsys, "embed", "--url", srv.url, "--input", str(inp), "--output", str(out))
    assert code == 0, err
    t = pq.read_table(out)
    assert str(t.schema.field("id").type) == arrow and t.column("id").to_pylist() == ids


@pytest.mark.parametrize("ids", [[1, "1"], ["a", None], [1, {"a": 1}], [True, 2], [1.5, 2]])
def test_parquet_refuses_ids_it_cannot_keep(srv: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str], ids: list[object]) -> None:
    inp = tmp_path / "docs.jsonl"
    inp.write_text("".join(json.dumps({"id": i, "text": f"t {k}"}) + "\n" for k, i in enumerate(ids)))
    out = tmp_path / "v.parquet"
    code, _, err = cli(monkeypatch, capsys, "embed", "--url", srv.url, "--input", str(inp), "--output", str(out),
                       "--chunk-rows", "1")
    assert code == 2, err
    assert "record 2" in err or "record 1" in err
    assert ".jsonl" in err and "Traceback" not in err and not out.exists()


# -- 6. a byte-order mark is not text ----------------------------------------------------------


@pytest.mark.parametrize("ext", [".txt", ".jsonl", ".csv"])
def test_a_leading_bom_is_dropped_in_every_text_format(srv: Running, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str], ext: str) -> None:
    body = {".txt": "alpha\nbeta\n", ".jsonl": '{"id": "a", "text": "alpha"}\n{"id": "b", "text": "beta"}\n',
            ".csv": "id,text\na,alpha\nb,beta\n"}[ext]
    inp = tmp_path / f"docs{ext}"
    inp.write_bytes(b"\xef\xbb\xbf" + body.encode())
    out = tmp_path / "v.jsonl"
    code, _, err = cli(monkeypatch, capsys, "embed", "--url", srv.url, "--input", str(inp), "--output", str(out))
    assert code == 0, err
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    np.testing.assert_allclose([r["embedding"] for r in rows], ref(["alpha", "beta"]), atol=1e-6)
    if ext != ".txt":
        assert [r["id"] for r in rows] == ["a", "b"]  # the id field is found through the BOM too


def test_a_leading_bom_on_stdin_is_dropped(srv: Running) -> None:
    r = subprocess.run([sys.executable, "-m", "qembed", "embed", "--url", srv.url, "--format", "jsonl"],
                       input=b"\xef\xbb\xbfalpha\nbeta\n", capture_output=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr.decode()
    rows = [json.loads(x) for x in r.stdout.decode().splitlines()]
    np.testing.assert_allclose([x["embedding"] for x in rows], ref(["alpha", "beta"]), atol=1e-6)


# -- 7. piped stdin is streamed ----------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_piped_stdin_prints_each_chunk_before_eof(srv: Running, fmt: str) -> None:
    with subprocess.Popen([sys.executable, "-m", "qembed", "embed", "--url", srv.url, "--format", fmt],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          env={**os.environ, "PYTHONPATH": str(REPO)}) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        _first_then_rest(proc, fmt)


def _first_then_rest(proc: subprocess.Popen[bytes], fmt: str) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(b"first line\n")
        proc.stdin.flush()  # the producer pauses here, stdin still open
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "nothing printed before EOF"
        first = os.read(proc.stdout.fileno(), 1 << 16)
        assert b"embedding" in first
        proc.stdin.write(b"second line\n")
        proc.stdin.close()
        rest = proc.stdout.read()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = (first + rest).decode()
    if fmt == "jsonl":
        rows = [json.loads(x) for x in text.splitlines()]
        assert [r["id"] for r in rows] == [0, 1]
        vecs = [r["embedding"] for r in rows]
    else:
        doc = json.loads(text)
        assert [d["index"] for d in doc["data"]] == [0, 1] and doc["dimensions"] == 32
        vecs = [d["embedding"] for d in doc["data"]]
    np.testing.assert_allclose(vecs, ref(["first line", "second line"]), atol=1e-6)


# -- smaller: a dead server and the on-error flag --------------------------------------------


def test_a_bulk_job_whose_server_died_says_what_is_committed_and_names_resume(tmp_path: Path) -> None:
    inp = jsonl_input(tmp_path / "docs.jsonl", TEXTS)
    out = tmp_path / "v.npy"
    with serve_in_thread(StandinConfig(dim=32)) as s:
        def kill_server(rows: int, total: int | None, tokens: int) -> None:
            if rows >= 8:  # from here on, no answer: the connection closes, as a dead server's does
                s.state.config.faults.append(Fault("reset", count=10**6))

        with Client(s.url, max_retries=0) as c, pytest.raises(Exception) as exc:
            embed_file(c, inp, out, chunk_rows=4, on_progress=kill_server)
    msg = str(exc.value)
    assert isinstance(exc.value, ServerUnreachable), msg
    assert "12 input rows (12 vectors) are committed" in msg
    assert "--resume" in (getattr(exc.value, "hint", "") or "")


def test_resume_without_on_error_skip_names_the_flag(srv: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    inp = tmp_path / "docs.txt"
    inp.write_text("".join(f"line {i}\n" for i in range(40)))
    out = tmp_path / "v.npy"
    with Client(srv.url) as c:
        interrupted_job(c, inp, out, after_rows=12, on_error="skip")
    code, _, err = cli(monkeypatch, capsys, "embed", "--url", srv.url, "--input", str(inp), "--output", str(out),
                       "--chunk-rows", "4", "--resume")
    assert code == 2, err
    assert "`--on-error skip`" in err and "ids_file" not in err
