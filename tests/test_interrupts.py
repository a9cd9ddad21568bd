"""Ctrl-C and a full disk, on the real `qembed` process: what was kept, and the exact command to
continue (issue 11 "Interruptions", issue 9 §8). Waits are on conditions (a committed journal
line), with deadlines; never sleeps as synchronisation."""

from __future__ import annotations

import json
import os
import resource
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from qembed.client.bulk import journal_path
from qembed.client.vector_io import lock_path
from tests.fake_site import harness
from tests.helpers.paths import REPO
from tests.standin.server import Fault, HashBackend, Running, StandinConfig, serve_in_thread

TEXTS = [f"line {i}" for i in range(200)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _as_argv(command: str) -> list[str]:
    """The printed `qembed ...` command, run the same way as the test ran it."""
    words = shlex.split(command)
    assert words[0] == "qembed"
    return [sys.executable, "-m", "qembed", *words[1:]]


def _interrupt_after_two_chunks(srv: Running, inp: Path, out: Path) -> str:
    """Run a bulk job against ``srv``, Ctrl-C it once two chunks are committed; its stderr."""
    argv = [sys.executable, "-m", "qembed", "embed", "--input", str(inp), "--output", str(out),
            "--url", srv.url, "--chunk-rows", "4", "--batch-size", "2", "--concurrency", "1"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(),
                            preexec_fn=harness.default_sigint)
    with harness.reaped(proc):
        harness.wait_while_running(proc, lambda: harness.committed_chunks(journal_path(out)) >= 2,
                                   what="two committed chunks")
        proc.send_signal(signal.SIGINT)
        _, err_b = proc.communicate(timeout=60)
    err = err_b.decode()
    assert proc.returncode == 130, err
    return err


def _slow_server() -> StandinConfig:
    return StandinConfig(dim=32, faults=[Fault("delay", count=10**6, seconds=0.02)])


def test_ctrl_c_during_a_bulk_job_says_what_was_saved_and_how_to_continue(tmp_path: Path) -> None:
    inp = tmp_path / "docs.txt"
    inp.write_text("".join(t + "\n" for t in TEXTS))
    out = tmp_path / "vectors.npy"
    with serve_in_thread(_slow_server()) as srv:
        err = _interrupt_after_two_chunks(srv, inp, out)
        saved = harness.committed_chunks(journal_path(out)) * 4
        assert saved < len(TEXTS), "the job finished before the interrupt"
        assert "interrupted" in err and f"{saved} input rows are saved in `{out}`" in err, err
        hint = [line for line in err.splitlines() if line.startswith("hint: continue with: ")]
        assert len(hint) == 1, err
        command = hint[0].removeprefix("hint: continue with: ")
        assert command.endswith("--resume") and "Traceback" not in err
        assert not lock_path(out).exists()
        srv.state.config.faults.clear()
        rerun = subprocess.run(_as_argv(command), capture_output=True, env=_env(), timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert f"({saved // 4} chunks from before --resume)" in rerun.stderr.decode()
    np.testing.assert_allclose(np.load(out), np.array(HashBackend(32).embed(TEXTS)), atol=1e-6)


def test_ctrl_c_during_a_parquet_job_names_the_part_files(tmp_path: Path) -> None:
    """A streamed `.parquet` exists only once the job finishes: the message must say the rows are
    in `<output>.parts/`, not in a file that is not there (issue 23 item 5)."""
    inp = tmp_path / "docs.txt"
    inp.write_text("".join(t + "\n" for t in TEXTS))
    out = tmp_path / "vectors.parquet"
    with serve_in_thread(_slow_server()) as srv:
        err = _interrupt_after_two_chunks(srv, inp, out)
    assert not out.exists()
    parts = out.with_name(out.name + ".parts")
    assert parts.is_dir() and any(parts.iterdir())
    assert f"are saved in the part files of `{parts}`" in err, err
    assert f"are saved in `{out}`" not in err


def test_ctrl_c_in_any_command_is_reported(tmp_path: Path) -> None:
    cfg = StandinConfig(dim=32, faults=[Fault("hang", count=10**6)])
    with serve_in_thread(cfg) as srv:
        proc = subprocess.Popen([sys.executable, "-m", "qembed", "embed", "--url", srv.url, "hello"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(), preexec_fn=harness.default_sigint)
        with harness.reaped(proc):
            harness.wait_while_running(proc, lambda: len(srv.requests) >= 1, what="the request to arrive")
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.decode().strip() == "interrupted" and out == b""


def _limit_file_size() -> None:
    harness.default_sigint()
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # the child sees EFBIG past 4 KiB


def test_a_full_disk_says_what_is_committed_and_resume_finishes(tmp_path: Path) -> None:
    inp = tmp_path / "docs.jsonl"
    inp.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    out = tmp_path / "vectors.jsonl"  # ~700 bytes a row at d=32: 4 KiB holds about 5 rows
    with serve_in_thread(StandinConfig(dim=32)) as srv:
        argv = [sys.executable, "-m", "qembed", "embed", "--input", str(inp), "--output", str(out),
                "--url", srv.url, "--chunk-rows", "2"]
        full = subprocess.run(argv, capture_output=True, env=_env(), timeout=120, preexec_fn=_limit_file_size)
        err = full.stderr.decode()
        assert full.returncode == 1, err
        committed = sum(json.loads(x)["rows_in"] for x in journal_path(out).read_text().splitlines()[1:])
        assert 0 < committed < len(TEXTS)
        assert err.startswith(f"error: writing `{out}` failed: the file size limit was reached; "
                              f"{committed} input rows ({committed} vectors) are committed"), err
        assert "Traceback" not in err and "--resume" in err
        command = err.split("--resume` to continue from there: ", 1)[1].strip()
        rerun = subprocess.run(_as_argv(command), capture_output=True, env=_env(), timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"d{i}" for i in range(len(TEXTS))]
    np.testing.assert_allclose([r["embedding"] for r in rows], HashBackend(32).embed(TEXTS), atol=1e-6)
