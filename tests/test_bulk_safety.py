"""Bulk files: nothing destroyed, nothing silently short (issue 9 §3), and what a first try
trips over (issue 11), driven through the library and the CLI as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qembed.client.bulk import embed_file, journal_path
from qembed.client.drivers import Client
from qembed.client.vector_io import lock_path
from qembed.errors import ConfigError, InputError
from tests.fake_site import harness
from tests.helpers.bulk_jobs import TEXTS, interrupted_job, jsonl_input, ref
from tests.helpers.cli import invoke
from tests.helpers.paths import REPO
from tests.standin.server import Fault, Running, StandinConfig, serve_in_thread


def qembed(*args: str | bytes, timeout: float = 120, **kw: object) -> subprocess.CompletedProcess[bytes]:
    """The real `qembed` process: the error funnel, exit codes and stderr exactly as a user sees them."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "qembed", *args], capture_output=True, timeout=timeout, env=env,
                          **kw)  # type: ignore[call-overload, no-any-return]


# -- nothing destroyed -------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["same path", "symlink", "hardlink", "dot-dot"])
def test_an_output_that_is_the_input_is_refused_before_anything_is_written(
        srv: Running, tmp_path: Path, how: str) -> None:
    inp = jsonl_input(tmp_path / "docs.jsonl", TEXTS)
    before = inp.read_bytes()
    out = {"same path": inp, "symlink": tmp_path / "link.jsonl", "hardlink": tmp_path / "hard.jsonl",
           "dot-dot": tmp_path / "sub" / ".." / "docs.jsonl"}[how]
    if how == "symlink":
        out.symlink_to(inp)
    elif how == "hardlink":
        os.link(inp, out)
    elif how == "dot-dot":
        (tmp_path / "sub").mkdir()
    with Client(srv.url) as c, pytest.raises(ConfigError, match="is the input") as exc:
        embed_file(c, inp, out, overwrite=True)
    assert "destroy the input" in exc.value.message
    assert inp.read_bytes() == before
    assert srv.requests == []  # refused before any work
    assert not journal_path(out).exists() and not lock_path(out).exists()


def test_an_existing_output_needs_overwrite(srv: Running, tmp_path: Path) -> None:
    inp = jsonl_input(tmp_path / "docs.jsonl", TEXTS)
    out = tmp_path / "vectors.jsonl"
    out.write_text("precious\n")
    r = qembed("embed", "--url", srv.url, "--input", str(inp), "--output", str(out))
    assert r.returncode == 2, r.stderr
    err = r.stderr.decode()
    assert f"error: `{out}` already exists" in err and "--overwrite" in err and "Traceback" not in err
    assert out.read_text() == "precious\n" and srv.requests == []
    r = qembed("embed", "--url", srv.url, "--input", str(inp), "--output", str(out), "--overwrite")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["id"] for row in rows] == [f"doc-{i}" for i in range(40)]


def test_one_shot_output_also_needs_overwrite(srv: Running, tmp_path: Path) -> None:
    out = tmp_path / "v.npy"
    out.write_bytes(b"precious")
    r = invoke(["embed", "--url", srv.url, "-o", str(out), "hello"])
    assert r.exit_code != 0 and "already exists" in str(r.exception)
    assert out.read_bytes() == b"precious"
    r = invoke(["embed", "--url", srv.url, "-o", str(out), "--overwrite", "hello"])
    assert r.exit_code == 0, r.stderr
    np.testing.assert_allclose(np.load(out), ref(["hello"]), atol=1e-6)


def test_a_second_job_on_the_same_output_is_refused_and_names_the_holder(tmp_path: Path) -> None:
    texts = [f"line {i}" for i in range(300)]
    inp = jsonl_input(tmp_path / "docs.jsonl", texts)
    out = tmp_path / "vectors.jsonl"
    # 150 requests of 30 ms: the first job surely outlives the second one's start-up
    cfg = StandinConfig(dim=32, faults=[Fault("delay", count=10**6, seconds=0.03)])
    with serve_in_thread(cfg) as slow:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        first = subprocess.Popen([sys.executable, "-m", "qembed", "embed", "--url", slow.url, "--input", str(inp),
                                  "--output", str(out), "--chunk-rows", "4", "--batch-size", "2",
                                  "--concurrency", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        with harness.reaped(first):
            harness.wait_while_running(first, lambda: harness.committed_chunks(journal_path(out)) >= 1,
                                       what="the first job's first committed chunk")
            second = qembed("embed", "--url", slow.url, "--input", str(inp), "--output", str(out), "--resume")
            assert first.poll() is None, "the first job ended before the second tried: nothing was tested"
            _, first_err = first.communicate(timeout=120)
    err = second.stderr.decode()
    assert second.returncode == 2, err
    assert f"is being written by another qembed job (pid {first.pid} on" in err
    assert first.returncode == 0, first_err.decode()
    rows = [json.loads(line) for line in out.read_text().splitlines()]  # no torn line, no duplicate
    assert [r["id"] for r in rows] == [f"doc-{i}" for i in range(300)]
    np.testing.assert_allclose([r["embedding"] for r in rows], ref(texts), atol=1e-6)
    assert not lock_path(out).exists()


def test_a_lock_left_by_a_dead_job_does_not_block(srv: Running, tmp_path: Path) -> None:
    inp = jsonl_input(tmp_path / "docs.jsonl", TEXTS[:5])
    out = tmp_path / "v.jsonl"
    lock_path(out).write_text("pid 1 on elsewhere\n")  # the file stays, the flock died with its process
    with Client(srv.url) as c:
        assert embed_file(c, inp, out).rows_out == 5
    from qembed.client.vector_io import OutputLock

    held = OutputLock(out)
    held.acquire()
    try:
        with Client(srv.url) as c, pytest.raises(ConfigError, match=f"pid {os.getpid()}"):
            embed_file(c, inp, out, overwrite=True)
    finally:
        held.release()


# -- resume checks the output and the input ----------------------------------------------------


@pytest.mark.parametrize("dst", [".npy", ".jsonl", ".parquet"])
@pytest.mark.parametrize("damage", ["deleted", "truncated", "bit flipped"])
def test_resume_refuses_an_output_that_no_longer_holds_the_committed_rows(
        srv: Running, tmp_path: Path, dst: str, damage: str) -> None:
    inp = jsonl_input(tmp_path / "docs.jsonl", TEXTS)
    out = tmp_path / f"vectors{dst}"
    with Client(srv.url) as c:
        interrupted_job(c, inp, out, after_rows=12)
        target = out if dst != ".parquet" else sorted(out.with_name(out.name + ".parts").glob("part-*"))[0]
        if damage == "deleted":
            target.unlink()
        elif damage == "truncated":
            os.truncate(target, target.stat().st_size // 2)
        else:
            data = bytearray(target.read_bytes())
            data[len(data) // 2 if dst != ".jsonl" else data.index(b"0.") + 3] ^= 0x01
            target.write_bytes(bytes(data))
        with pytest.raises(InputError, match="cannot resume") as exc:
            embed_file(c, inp, out, chunk_rows=4, resume=True)
    assert "--overwrite" in (exc.value.hint or "")
    assert "12 vectors were saved" in exc.value.message


@pytest.mark.parametrize("dst", [".npy", ".jsonl", ".parquet"])
def test_resume_after_an_interrupt_gives_every_row_once(srv: Running, tmp_path: Path, dst: str) -> None:
    inp = jsonl_input(tmp_path / "docs.jsonl", TEXTS)
    out = tmp_path / f"vectors{dst}"
    with Client(srv.url) as c:
        interrupted_job(c, inp, out, after_rows=12)
        os.utime(inp, ns=(1, 1))  # a new mtime alone does not make it another input
        n_before = len(srv.requests)
        res = embed_file(c, inp, out, chunk_rows=4, resume=True)
    sent = [t for r in srv.requests[n_before:] for t in r["input"]]
    # only the probe (the first record, once) of the done chunks is sent again
    assert [t for t in sent if t in TEXTS[:12]] == [TEXTS[0]] and res.rows_out == 40 and res.chunks_resumed == 3
    if dst == ".npy":
        vecs = np.load(out)
        ids = [json.loads(x) for x in out.with_name("vectors.ids.jsonl").read_text().splitlines()]
    elif dst == ".jsonl":
        rows = [json.loads(x) for x in out.read_text().splitlines()]
        ids, vecs = [r["id"] for r in rows], np.array([r["embedding"] for r in rows])
    else:
        import pyarrow.parquet as pq

        t = pq.read_table(out)
        ids, vecs = t.column("id").to_pylist(), np.array(t.column("embedding").to_pylist())
    assert ids == [f"doc-{i}" for i in range(40)]
    np.testing.assert_allclose(vecs, ref(TEXTS), atol=1e-6)


def test_resume_knows_the_input_by_content_not_size_and_mtime(srv: Running, tmp_path: Path) -> None:
    inp = jsonl_input(tmp_path / "docs.jsonl", TEXTS)
    out = tmp_path / "vectors.npy"
    with Client(srv.url) as c:
        interrupted_job(c, inp, out, after_rows=8)
        st = inp.stat()
        edited = inp.read_text().replace("record number 3", "record NUMBER 3")  # same size
        inp.write_text(edited)
        os.utime(inp, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime
        assert inp.stat().st_size == st.st_size
        with pytest.raises(InputError, match=r"the input .* changed .*records 1\.\.4, chunk 1"):
            embed_file(c, inp, out, chunk_rows=4, resume=True)


def test_resume_without_a_journal_over_a_finished_output_is_refused(srv: Running, tmp_path: Path) -> None:
    inp = jsonl_input(tmp_path / "docs.jsonl", TEXTS[:3])
    out = tmp_path / "v.jsonl"
    with Client(srv.url) as c:
        embed_file(c, inp, out)
        with pytest.raises(ConfigError, match="nothing to resume"):
            embed_file(c, inp, out, resume=True)
        with pytest.raises(ConfigError, match="pass one of them"):
            embed_file(c, inp, out, resume=True, overwrite=True)


# -- ids and alignment -------------------------------------------------------------------------


def test_records_own_id_is_kept_without_a_flag(srv: Running, tmp_path: Path) -> None:
    inp = jsonl_input(tmp_path / "docs.jsonl", TEXTS[:6], ids=[f"k{i}" for i in range(6)])
    r = invoke(["embed", "--url", srv.url, "--input", str(inp), "--output", str(tmp_path / "v.jsonl")])
    assert r.exit_code == 0, r.stderr
    assert [json.loads(x)["id"] for x in (tmp_path / "v.jsonl").read_text().splitlines()] == [f"k{i}" for i in range(6)]
    (tmp_path / "plain.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS[:3]))
    r = invoke(["embed", "--url", srv.url, "--input", str(tmp_path / "plain.jsonl"), "--output", str(tmp_path / "p.jsonl")])
    assert r.exit_code == 0, r.stderr
    assert [json.loads(x)["id"] for x in (tmp_path / "p.jsonl").read_text().splitlines()] == [0, 1, 2]


def test_npy_keeps_ids_and_skipped_rows_stay_traceable(srv: Running, tmp_path: Path) -> None:
    texts = ["a", "  ", "b", "", "c"]
    inp = jsonl_input(tmp_path / "docs.jsonl", texts, ids=["i0", "i1", "i2", "i3", "i4"])
    out = tmp_path / "v.npy"
    r = invoke(["embed", "--url", srv.url, "--input", str(inp), "--output", str(out), "--id-field", "id",
             "--on-error", "skip", "--chunk-rows", "2", "--json"])
    assert r.exit_code == 0, r.stderr
    ids = [json.loads(x) for x in (tmp_path / "v.ids.jsonl").read_text().splitlines()]
    assert ids == ["i0", "i2", "i4"]
    np.testing.assert_allclose(np.load(out), ref(["a", "b", "c"]), atol=1e-6)
    assert [f["id"] for f in json.loads(r.stdout)["failures"]] == ["i1", "i3"]
    # row numbers with skips: the sidecar says which input row each vector is
    (tmp_path / "in.txt").write_text("a\n\nb\n")
    r = invoke(["embed", "--url", srv.url, "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "t.npy"),
             "--on-error", "skip"])
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "t.ids.jsonl").read_text().split() == ["0", "2"]


# -- bad files and directories: error + hint, exit 2, before any work ---------------------------


def test_directories_and_missing_directories_are_named(srv: Running, tmp_path: Path) -> None:
    inp = jsonl_input(tmp_path / "docs.jsonl", TEXTS[:2])
    r = qembed("embed", "--url", srv.url, "--input", str(inp), "--output", str(tmp_path))
    assert r.returncode == 2 and f"error: `{tmp_path}` is a directory" in r.stderr.decode()
    r = qembed("embed", "--url", srv.url, "--input", str(tmp_path), "--output", str(tmp_path / "v.npy"))
    assert r.returncode == 2 and f"error: `{tmp_path}` is a directory; `--input` needs a file" in r.stderr.decode()
    r = qembed("embed", "--url", srv.url, "-o", str(tmp_path), "x")
    assert r.returncode == 2 and "is a directory" in r.stderr.decode()
    missing = tmp_path / "no" / "such"
    r = qembed("embed", "--url", srv.url, "--input", str(inp), "--output", str(missing / "v.npy"))
    err = r.stderr.decode()
    assert r.returncode == 2 and f"the directory `{missing}` of the output does not exist" in err
    assert f"mkdir -p {missing}" in err and not missing.exists()
    assert srv.requests == []


def test_an_unwritable_place_is_an_error_not_a_traceback(srv: Running, tmp_path: Path) -> None:
    inp = jsonl_input(tmp_path / "docs.jsonl", TEXTS[:2])
    # /proc refuses new files even to root (EACCES or ENOENT): a real OS error at the first write
    r = qembed("embed", "--url", srv.url, "--input", str(inp), "--output", "/proc/qembed-test.jsonl")
    err = r.stderr.decode()
    assert r.returncode == 2 and err.startswith("error: ") and "Traceback" not in err, err


@pytest.mark.parametrize("ext", [".txt", ".csv", ".jsonl"])
def test_non_utf8_input_files_name_the_line(srv: Running, tmp_path: Path, ext: str) -> None:
    inp = tmp_path / f"in{ext}"
    head = b"id,text\n" if ext == ".csv" else b""
    line = (b'{"text": "caf\xe9"}' if ext == ".jsonl" else b"1,caf\xe9" if ext == ".csv" else b"caf\xe9")
    good = b'{"text": "ok"}' if ext == ".jsonl" else b"0,ok" if ext == ".csv" else b"ok"
    inp.write_bytes(head + good + b"\n" + line + b"\n")
    r = qembed("embed", "--url", srv.url, "--input", str(inp), "--output", str(tmp_path / "v.npy"))
    err = r.stderr.decode()
    n = 3 if ext == ".csv" else 2
    assert r.returncode == 2, err
    assert err.startswith(f"error: `{inp}` line {n} is not UTF-8") and "iconv" in err


def test_non_utf8_stdin_and_argv(srv: Running) -> None:
    r = qembed("embed", "--url", srv.url, input=b"fine\ncaf\xe9\n")
    assert r.returncode == 2 and r.stderr.decode().startswith("error: line 2 of stdin is not UTF-8")
    r = qembed("embed", "--url", srv.url, "ok", b"caf\xe9")
    assert r.returncode == 2, r.stderr
    assert r.stderr.decode().startswith("error: text 2 is not UTF-8 (the byte 0xe9)")
    assert srv.requests == []


def test_a_missing_text_field_lists_the_fields_found(srv: Running, tmp_path: Path) -> None:
    inp = tmp_path / "docs.jsonl"
    inp.write_text(json.dumps({"id": 1, "body": "x", "title": "t"}) + "\n")
    r = qembed("embed", "--url", srv.url, "--input", str(inp), "--output", str(tmp_path / "v.npy"))
    err = r.stderr.decode()
    assert r.returncode == 2
    assert "line 1 has no field `text`; fields found: `id`, `body`, `title`" in err and "--text-field" in err


def test_bulk_errors_are_1_based_and_name_on_error_skip(srv: Running, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("one\ntwo\n\nfour\n")
    r = qembed("embed", "--url", srv.url, "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "v.npy"))
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert f"error: `{tmp_path / 'in.txt'}` line 3: the text is empty" in err and "`--on-error skip`" in err


def test_a_stale_ids_sidecar_is_never_paired_with_new_vectors(srv: Running, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("a\nb\n")
    stale = tmp_path / "v.ids.jsonl"
    stale.write_text('"old-1"\n"old-2"\n')
    args = ["embed", "--url", srv.url, "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "v.npy")]
    r = invoke(args)
    assert r.exit_code != 0 and "v.ids.jsonl` already exists" in str(r.exception)
    assert stale.exists() and not (tmp_path / "v.npy").exists()
    r = invoke([*args, "--overwrite"])
    assert r.exit_code == 0, r.stderr
    assert not stale.exists()  # plain row numbers: no sidecar, and not the old one either
    stale.write_text('"old"\n')
    r = invoke(["embed", "--url", srv.url, "-o", str(tmp_path / "v.npy"), "--overwrite", "x"])
    assert r.exit_code == 0, r.stderr
    assert not stale.exists()


@pytest.mark.parametrize("dst", [".npy", ".jsonl", ".parquet"])
def test_a_chunk_with_every_row_skipped_keeps_the_job_going(srv: Running, tmp_path: Path, dst: str) -> None:
    # found by Hypothesis: the first chunk all blank used to set the vector size to 0 and crash
    (tmp_path / "in.txt").write_text("\t\n \n\nreal text\n\n")
    out = tmp_path / f"v{dst}"
    with Client(srv.url) as c:
        res = embed_file(c, tmp_path / "in.txt", out, chunk_rows=3, on_error="skip")
    assert (res.rows_in, res.rows_out, res.dimensions) == (5, 1, 32)
    assert [f.index for f in res.failures] == [0, 1, 2, 4]
    if dst == ".npy":
        np.testing.assert_allclose(np.load(out), ref(["real text"]), atol=1e-6)
        assert (tmp_path / "v.ids.jsonl").read_text() == "3\n"


# Root ignores file modes, so EACCES is injected: the real `qembed` process with open()/os.open()
# refusing one path, as a read-only directory or a foreign file would.
_DENY = """
import builtins, errno, os, sys
target = os.environ["DENY_SUFFIX"]
def deny(path):
    if str(path).endswith(target):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))
real_open, real_os_open = builtins.open, os.open
builtins.open = lambda f, *a, **k: deny(f) or real_open(f, *a, **k)
os.open = lambda p, *a, **k: deny(p) or real_os_open(p, *a, **k)
from qembed.cli import main
sys.argv = ["qembed", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize(("denied", "code", "message"), [
    (".lock", 2, "cannot create `{out}.lock` next to the output: Permission denied"),  # before any work
    ("v.npy", 1, "writing `{out}` failed: Permission denied; 0 input rows (0 vectors) are committed"),
    ("in.txt", 2, "cannot read `{inp}`: Permission denied"),
])
def test_permission_denied_is_an_error_with_a_hint(srv: Running, tmp_path: Path, denied: str, code: int,
                                                   message: str) -> None:
    inp, out = tmp_path / "in.txt", tmp_path / "v.npy"
    inp.write_text("a\nb\n")
    r = subprocess.run([sys.executable, "-c", _DENY, "embed", "--url", srv.url, "--input", str(inp), "--output", str(out)],
                       capture_output=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO), "DENY_SUFFIX": denied})
    err = r.stderr.decode()
    assert r.returncode == code, err
    assert err.startswith("error: " + message.format(out=out, inp=inp)), err
    assert "hint: " in err and "Traceback" not in err
