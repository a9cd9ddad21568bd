"""`qembed embed` / `qembed similarity` through Typer's CliRunner (stdout and stderr apart)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from qembed.cli import app
from tests.helpers.cli import invoke, run_main
from tests.standin.server import HashBackend, Running, StandinConfig, serve_in_thread

RETRIEVAL = "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:"
TEXTS = ["what is MRL?", "a second text"]


def ref(texts: list[str]) -> np.ndarray:
    return np.array(HashBackend(32).embed(texts), dtype=np.float32)


@pytest.mark.parametrize("source", ["argument", "file", "stdin"])
@pytest.mark.parametrize("fmt", ["json", "jsonl", "npy", "table"])
def test_sources_by_formats(srv: Running, tmp_path: Path, source: str, fmt: str) -> None:
    args = ["embed", "--query", "--url", srv.url, "--format", fmt]
    stdin = None
    if source == "argument":
        args += TEXTS
    elif source == "stdin":
        args += ["-"]
        stdin = "\n".join(TEXTS) + "\n"
    else:
        (tmp_path / "q.txt").write_text("\n".join(TEXTS) + "\n")
        args += ["--input", str(tmp_path / "q.txt"), "--output", str(tmp_path / "out.npy")]
    result = invoke(args, stdin)
    assert result.exit_code == 0, result.stderr
    assert [r["input"] for r in srv.requests] == [[RETRIEVAL + t for t in TEXTS]]
    expected = ref([RETRIEVAL + t for t in TEXTS])
    if source == "file":  # bulk: vectors in the file, the summary on stderr (or JSON)
        np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-6)
        if fmt == "json":
            assert json.loads(result.stdout)["rows"] == 2
        else:
            assert result.stdout == ""
            assert "wrote 2 vectors of 32 dims" in result.stderr
        return
    assert result.stderr == ""
    if fmt == "json":
        doc = json.loads(result.stdout)
        assert doc["dimensions"] == 32 and [d["index"] for d in doc["data"]] == [0, 1]
        np.testing.assert_allclose([d["embedding"] for d in doc["data"]], expected, atol=1e-6)
    elif fmt == "jsonl":
        rows = [json.loads(x) for x in result.stdout.splitlines()]
        np.testing.assert_allclose([r["embedding"] for r in rows], expected, atol=1e-6)
    elif fmt == "npy":
        arr = np.load(io.BytesIO(result.stdout_bytes))
        np.testing.assert_allclose(arr, expected, atol=1e-6)
    else:
        assert "norm" in result.stdout and "1.0000" in result.stdout and "what is MRL?" in result.stdout


def test_document_is_the_default_and_task_implies_query(srv: Running) -> None:
    assert invoke(["embed", "--url", srv.url, "Paris."]).exit_code == 0
    assert invoke(["embed", "--url", srv.url, "--task", "sts", "a cat"]).exit_code == 0
    assert invoke(["embed", "--url", srv.url, "--prefix", "passage: ", "doc"]).exit_code == 0
    assert [r["input"] for r in srv.requests] == [
        ["Paris."], ["Instruct: Retrieve semantically similar text\nQuery:a cat"], ["passage: doc"]]


def test_dimensions_and_json_alias(srv: Running) -> None:
    result = invoke(["embed", "--url", srv.url, "--dimensions", "32", "--json", "x"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["dimensions"] == 32


def test_skip_reports_on_stderr(srv: Running) -> None:
    result = invoke(["embed", "--url", srv.url, "--on-error", "skip", "--format", "jsonl", "-"], "a\n  \nb\n")
    assert result.exit_code == 0
    assert [json.loads(x)["id"] for x in result.stdout.splitlines()] == [0, 2]
    assert "warning: line 2 of stdin skipped" in result.stderr


def test_similarity_matrix_uses_the_sts_instruction_on_both_sides(srv: Running) -> None:
    result = invoke(["similarity", "--url", srv.url, "--json", "a cat", "a feline"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    sent = srv.requests[-1]["input"]
    assert sent == ["Instruct: Retrieve semantically similar text\nQuery:a cat",
                    "Instruct: Retrieve semantically similar text\nQuery:a feline"]
    e = ref(sent)
    np.testing.assert_allclose(doc["matrix"], e @ e.T, atol=1e-5)
    piped = invoke(["similarity", "--url", srv.url, "a cat", "a feline"])  # stdout is not a terminal
    assert piped.exit_code == 0 and json.loads(piped.stdout)["matrix"] == doc["matrix"]


def test_errors_go_through_the_funnel(srv: Running, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(monkeypatch, capsys, ["embed", "--url", srv.url, "ok", " "])
    assert (code, out) == (2, "")
    assert err.startswith("error: text 2: the text is empty or whitespace only")  # 1-based, as editors count
    assert "hint: remove blank inputs" in err and "`--on-error skip`" in err
    code, out, err = run_main(monkeypatch, capsys, ["embed", "--url", srv.url, "--dimensions", "8", "x"])
    assert (code, out) == (2, "")
    assert "`dimensions` must be between 32 and" in err  # refused before any connection


def test_unreachable_server(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with serve_in_thread(StandinConfig(dim=8)) as s:
        url = s.url
    monkeypatch.setenv("QEMBED_URL", url)
    code, out, err = run_main(monkeypatch, capsys, ["embed", "x"])
    assert (code, out) == (7, "")
    assert f"error: no server answers at {url}" in err and "qembed serve" in err


def test_usage_errors(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(monkeypatch, capsys, ["embed"])
    assert code == 2 and "nothing to embed" in err
    code, _, err = run_main(monkeypatch, capsys, ["embed", "--input", "x.txt"])
    assert code == 2 and "`--input` needs `--output`" in err


def test_bulk_progress_bar_when_stderr_is_a_terminal(srv: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from qembed import output

    monkeypatch.setattr(output, "stderr_is_tty", lambda: True)
    (tmp_path / "in.txt").write_text("".join(f"line {i}\n" for i in range(20)))
    result = invoke(["embed", "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "o.jsonl"),
                     "--url", srv.url, "--chunk-rows", "5"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert "wrote 20 vectors of 32 dims" in result.stderr
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 20


def test_stdin_splits_on_newlines_only(srv: Running) -> None:
    result = invoke(["embed", "--url", srv.url, "--format", "jsonl", "-"], "page one\x0cstill one\u2028same\r\ntwo\n")
    assert result.exit_code == 0, result.stderr
    assert srv.requests[-1]["input"] == ["page one\x0cstill one\u2028same", "two"]


# -- first tries (issue 11) and one writer for vectors (issue 10) -------------------------------


def test_piped_stdin_is_read_without_a_dash(srv: Running) -> None:
    result = invoke(["embed", "--url", srv.url, "--format", "jsonl"], "hello\nworld\n")  # echo ... | qembed embed
    assert result.exit_code == 0, result.stderr
    assert srv.requests[-1]["input"] == ["hello", "world"]
    assert [json.loads(x)["id"] for x in result.stdout.splitlines()] == [0, 1]


def test_output_file_format_comes_from_the_suffix_and_is_confirmed(srv: Running, tmp_path: Path) -> None:
    npy = tmp_path / "v.npy"  # in a pipe the default format is json: the .npy must still be a .npy
    result = invoke(["embed", "--url", srv.url, "-o", str(npy), *TEXTS])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert f"wrote 2 vectors of 32 dims to {npy}" in result.stderr
    np.testing.assert_allclose(np.load(npy), ref(TEXTS), atol=1e-6)
    assert not (tmp_path / "v.ids.jsonl").exists()  # plain row numbers need no sidecar
    for suffix in (".jsonl", ".parquet"):
        dest = tmp_path / f"v{suffix}"
        result = invoke(["embed", "--url", srv.url, "-o", str(dest), *TEXTS])
        assert result.exit_code == 0, result.stderr
        assert f"wrote 2 vectors of 32 dims to {dest}" in result.stderr
    assert list(tmp_path.glob(".*")) == []  # no temporary file left behind


def test_one_jsonl_schema_for_stdout_one_shot_files_and_bulk(srv: Running, tmp_path: Path) -> None:
    piped = invoke(["embed", "--url", srv.url, "--format", "jsonl", *TEXTS]).stdout
    assert invoke(["embed", "--url", srv.url, "-o", str(tmp_path / "one.jsonl"), *TEXTS]).exit_code == 0
    (tmp_path / "in.txt").write_text("\n".join(TEXTS) + "\n")
    bulk = invoke(["embed", "--url", srv.url, "--input", str(tmp_path / "in.txt"), "-o", str(tmp_path / "bulk.jsonl")])
    assert bulk.exit_code == 0, bulk.stderr
    assert piped == (tmp_path / "one.jsonl").read_text() == (tmp_path / "bulk.jsonl").read_text()
    assert list(json.loads(piped.splitlines()[0])) == ["id", "embedding"]


def test_output_with_a_format_it_cannot_hold_is_refused(srv: Running, tmp_path: Path) -> None:
    for fmt, dest in (("table", "v.npy"), ("json", "v.jsonl"), ("npy", "v.jsonl")):
        result = invoke(["embed", "--url", srv.url, "--format", fmt, "-o", str(tmp_path / dest), "x"])
        assert result.exit_code != 0 and "--format" in str(result.exception), (fmt, dest)
    result = invoke(["embed", "--url", srv.url, "-o", str(tmp_path / "v.txt"), "x"])
    assert "unknown output format `.txt`" in str(result.exception)
    assert srv.requests == [] and list(tmp_path.iterdir()) == []


def test_one_shot_npy_with_skipped_inputs_keeps_their_positions(srv: Running, tmp_path: Path) -> None:
    result = invoke(["embed", "--url", srv.url, "--on-error", "skip", "-o", str(tmp_path / "v.npy"), "a", " ", "b"])
    assert result.exit_code == 0, result.stderr
    assert "warning: text 2 skipped" in result.stderr
    assert (tmp_path / "v.ids.jsonl").read_text().split() == ["0", "2"]
    np.testing.assert_allclose(np.load(tmp_path / "v.npy"), ref(["a", "b"]), atol=1e-6)


def test_npy_to_a_terminal_is_refused(srv: Running) -> None:
    import os
    import pty
    import subprocess

    from tests.helpers.paths import REPO

    leader, follower = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "qembed", "embed", "--url", srv.url, "--format", "npy", "x"],
                              stdout=follower, stderr=subprocess.PIPE, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    finally:
        os.close(follower)
        os.close(leader)
    assert proc.returncode == 2
    assert proc.stderr.decode().startswith("error: `--format npy` is binary and stdout is a terminal")
    assert "> vectors.npy" in proc.stderr.decode() and srv.requests == []


# -- issue 23 item 9: one way of counting, one spelling per surface --------------------------------


def test_table_rows_count_from_1_like_errors_and_json_index_stays_0(srv: Running) -> None:
    table = invoke(["embed", "--url", srv.url, "--format", "table", "alpha", "beta"])
    assert table.exit_code == 0, table.stderr
    numbers = [line.replace("│", " ").split()[0] for line in table.stdout.splitlines()
               if "alpha" in line or "beta" in line]
    assert numbers == ["1", "2"]
    doc = json.loads(invoke(["embed", "--url", srv.url, "--json", "alpha", "beta"]).stdout)
    assert [d["index"] for d in doc["data"]] == [0, 1]  # the API's position, as OpenAI's


def test_blank_input_hint_is_the_command_lines_spelling(srv: Running, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    for args, stdin in ((["ok", " "], None), (["-"], "ok\n \n")):
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode())))
        code, _, err = run_main(monkeypatch, capsys, ["embed", "--url", srv.url, *args])
        assert code == 2 and "`--on-error skip`" in err, err
        assert "on_error=" not in err, err  # Python's spelling is for the library
    from qembed import Client
    from qembed.errors import InputError

    with Client(srv.url) as c, pytest.raises(InputError) as exc:
        c.embed(["ok", " "])
    assert exc.value.hint is not None and 'on_error="skip"' in exc.value.hint and "--on-error" not in exc.value.hint


def test_a_bulk_summary_names_skipped_lines_1_based_and_counts_in_words(srv: Running, tmp_path: Path) -> None:
    """`.txt` ids stay 0-based (row k of the output, and what resume journals hash); the summary
    a person reads names the line, as the error for the same line does."""
    (tmp_path / "in.txt").write_text("a\n\nb\n")
    r = invoke(["embed", "--url", srv.url, "--on-error", "skip", "--input", str(tmp_path / "in.txt"),
                "--output", str(tmp_path / "out.jsonl")])
    assert r.exit_code == 0, r.stderr
    assert "warning: 1 input skipped: line 2 (the text is empty" in r.stderr
    assert [json.loads(x)["id"] for x in (tmp_path / "out.jsonl").read_text().splitlines()] == [0, 2]
    one = invoke(["embed", "--url", srv.url, "x", "-o", str(tmp_path / "one.npy")])
    assert "wrote 1 vector of 32 dims" in one.stderr


def test_batch_size_shows_its_default_as_concurrency_does() -> None:
    from qembed.client.flow import DEFAULT_BATCH_SIZE, DEFAULT_CONCURRENCY

    text = " ".join(CliRunner().invoke(app, ["embed", "--help"], env={"COLUMNS": "200"}).stdout.split())
    assert f"Requests in flight. [default: {DEFAULT_CONCURRENCY}; x>=1]" in text
    assert f"Texts per request. [default: {DEFAULT_BATCH_SIZE}; x>=1]" in text
