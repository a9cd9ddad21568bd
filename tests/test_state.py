"""qembed.host.state: records of running servers, stale-record cleanup, PID reuse, log helpers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from qembed.host import logfiles, procfs, state


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def _record(name: str, pid: int, **kw: object) -> state.Record:
    return state.make_record(name=name, pid=pid, host="127.0.0.1", port=30000,
                             url="http://127.0.0.1:30000", model="Qwen/Qwen3-Embedding-4B",
                             log_path=Path("/tmp/x.log"), **kw)  # type: ignore[arg-type]


def test_state_dir_follows_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QEMBED_STATE_DIR", str(tmp_path / "elsewhere"))
    assert state.state_dir() == tmp_path / "elsewhere"
    log = state.new_log_path("emb", now=datetime(2026, 11, 26, 5, 0, 0, tzinfo=UTC))
    assert log == tmp_path / "elsewhere" / "logs" / "emb-20261126-050000.log"
    log.write_text("x")
    # the same second again: a new file, not the old one
    again = state.new_log_path("emb", now=datetime(2026, 11, 26, 5, 0, 0, tzinfo=UTC))
    assert again != log and again.parent == log.parent


def test_state_dir_default_is_platformdirs(monkeypatch: pytest.MonkeyPatch) -> None:
    import platformdirs

    monkeypatch.delenv("QEMBED_STATE_DIR")
    assert state.state_dir() == Path(platformdirs.user_state_dir("qembed"))


def test_roundtrip_live_record_and_no_key_stored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QEMBED_API_KEY", "s3cret-value")
    rec = _record("emb", os.getpid(), api_key_env="QEMBED_API_KEY", dimensions=2560)
    path = state.save(rec)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert "s3cret-value" not in path.read_text()
    loaded = state.load("emb")
    assert loaded == rec
    assert loaded is not None and loaded.proc_start_time == procfs.process_start_time(os.getpid())
    assert [r.name for r in state.list_records()] == ["emb"]
    assert state.default_server() == rec


def test_dead_process_record_is_removed() -> None:
    proc = _sleeper()
    rec = _record("gone", proc.pid)
    state.save(rec)
    assert state.live("gone") is not None
    proc.kill()
    proc.wait()
    assert state.list_records() == []
    assert not (state.servers_dir() / "gone.json").exists()
    assert state.default_server() is None


def test_reused_pid_is_not_trusted() -> None:
    # A live PID whose start time differs from the recorded one is another program.
    rec = _record("reused", os.getpid())
    assert rec.proc_start_time is not None
    rec.proc_start_time -= 1000
    state.save(rec)
    assert not rec.is_alive()
    assert state.live("reused") is None
    assert state.load("reused") is None  # deleted


def test_corrupt_record_is_cleaned() -> None:
    d = state.servers_dir()
    d.mkdir(parents=True)
    (d / "bad.json").write_text("{not json")
    assert state.list_records() == []
    assert not (d / "bad.json").exists()


def test_default_server_is_most_recent() -> None:
    a = _record("a", os.getpid())
    b = _record("b", os.getpid())
    a.started_at, b.started_at = "2026-11-26T05:00:00+00:00", "2026-11-26T05:01:00+00:00"
    state.save(b)
    state.save(a)
    assert state.default_server() is not None
    assert state.default_server().name == "b"  # type: ignore[union-attr]


def test_remove_if_owned_keeps_a_newer_record() -> None:
    old = _record("emb", os.getpid())
    newer = _record("emb", os.getpid())
    newer.pid = os.getppid()
    newer.proc_start_time = procfs.process_start_time(newer.pid)
    state.save(newer)
    assert not state.remove_if_owned(old)
    assert state.load("emb") == newer


@pytest.mark.parametrize("name,ok", [("emb", True), ("a100-80g", True), ("x.y_z", True),
                                     ("../etc", False), ("", False), ("-x", False), ("a b", False)])
def test_valid_name(name: str, ok: bool) -> None:
    assert state.valid_name(name) is ok
    if not ok:
        assert state.load(name) is None


def test_latest_log(tmp_path: Path) -> None:
    d = state.logs_dir()
    d.mkdir(parents=True)
    older, newer, other = d / "emb-20261126-050000.log", d / "emb-20261126-060000.log", d / "emb2-20261126-070000.log"
    for i, p in enumerate((older, newer, other)):
        p.write_text("x")
        os.utime(p, (1000 + i, 1000 + i))
    assert state.latest_log("emb") == newer
    assert state.latest_log("nope") is None
    assert state.latest_log() == other  # any server's newest log
    (d / "notes.txt").write_text("not a log")
    os.utime(d / "notes.txt", (2000, 2000))
    assert state.latest_log() == other


def test_logs_without_a_live_server_shows_the_newest_log(tmp_path: Path) -> None:
    """After a failed start no record is left: `qembed logs` still shows what happened."""
    from typer.testing import CliRunner

    from qembed.cli import app

    d = state.logs_dir()
    d.mkdir(parents=True)
    (d / "a100-80g-20261126-050000.log").write_text("[2026-11-26 05:00:00] torch.OutOfMemoryError: CUDA out of memory.\n")
    result = CliRunner().invoke(app, ["logs", "--lines", "5"])
    assert result.exit_code == 0, result.output
    assert "CUDA out of memory" in result.stdout


def test_read_log_tail(tmp_path: Path) -> None:
    p = tmp_path / "l.log"
    p.write_text("".join(f"line {i}\n" for i in range(100)))
    assert logfiles.read_log_tail(p, 3) == ["line 97", "line 98", "line 99"]
    # a bounded read drops the first, probably cut, line
    assert logfiles.read_log_tail(p, 1000, max_bytes=20)[0] != "ne 97"


def test_follow_log_stops_when_server_gone(tmp_path: Path) -> None:
    p = tmp_path / "l.log"
    p.write_text("old\n")
    done = threading.Event()
    lines = logfiles.follow_log(p, alive=lambda: not done.is_set(), interval=0.01)
    got: list[str] = []
    t = threading.Thread(target=lambda: got.extend(lines))
    t.start()
    with open(p, "a") as fh:
        fh.write("new 1\nnew 2\npartial")
    done.set()
    t.join(timeout=10)
    assert not t.is_alive()
    assert got == ["new 1", "new 2", "partial"]  # "old" was there before: not repeated


def test_record_json_has_no_unknown_keys_problem() -> None:
    # Records written by a newer qembed with more keys still load.
    rec = _record("emb", os.getpid())
    raw = rec.to_json() | {"future_key": 1}
    d = state.servers_dir()
    d.mkdir(parents=True)
    (d / "emb.json").write_text(json.dumps(raw))
    assert state.load("emb") == rec


# -- claims on a server name and a port (issue 9 §4) ----------------------------------------------


def test_claims_are_exclusive_per_name_and_per_port() -> None:
    from qembed.errors import ExitCode, NameInUse, PortInUse

    first = state.claim("emb", 31000)
    try:
        with pytest.raises(NameInUse) as same_name:
            state.claim("emb", 31001)
        assert same_name.value.exit_code == ExitCode.USAGE
        assert f"pid {os.getpid()}" in same_name.value.message
        with pytest.raises(PortInUse) as same_port:
            state.claim("other", 31000)
        assert "claimed by qembed server `emb`" in same_port.value.message
        assert "qembed stop emb" in (same_port.value.hint or "")
        with state.claim("other", 31001):  # neither taken: fine
            pass
    finally:
        first.release()
    state.claim("emb", 31000).release()  # released: free again


def test_claim_of_a_killed_claimant_does_not_block() -> None:
    code = ("import sys, time; from qembed.host import state; c = state.claim('emb', 31000); "
            "print('claimed', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "claimed"
        from qembed.errors import NameInUse

        with pytest.raises(NameInUse):
            state.claim("emb", 31000)
    finally:
        proc.kill()  # SIGKILL: no cleanup code runs
        proc.communicate()
    state.claim("emb", 31000).release()


def test_claim_lives_on_in_the_process_it_is_passed_to() -> None:
    """A detached server keeps its claim after `qembed serve` exits: SGLang inherits the lock."""
    from qembed.errors import PortInUse

    c = state.claim("emb", 31000)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], pass_fds=c.fds)
    c.set_holder(child.pid)
    c.release()  # qembed exits; the child still holds the lock
    try:
        with pytest.raises(PortInUse) as exc:
            state.claim("new", 31000)
        assert f"pid {child.pid}" in exc.value.message
    finally:
        child.kill()
        child.wait()
    state.claim("new", 31000).release()


@pytest.mark.parametrize("call", ["claim", "new_log_path", "save"])
def test_unusable_state_dir_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str) -> None:
    from qembed.errors import ExitCode, StateDirError

    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("QEMBED_STATE_DIR", str(blocker / "state"))
    with pytest.raises(StateDirError) as exc:
        {"claim": lambda: state.claim("emb", 31000), "new_log_path": lambda: state.new_log_path("emb"),
         "save": lambda: state.save(_record("emb", os.getpid()))}[call]()
    assert exc.value.exit_code == ExitCode.USAGE
    assert str(blocker) in exc.value.message and "QEMBED_STATE_DIR" in (exc.value.hint or "")


def test_missing_state_dir_is_created_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QEMBED_STATE_DIR", str(tmp_path / "new" / "deeper"))
    path = state.new_log_path("emb")
    assert path.parent.is_dir() and oct(path.parent.stat().st_mode & 0o777) == "0o700"


def test_bare_stop_needs_a_name_only_when_several_run() -> None:
    """`qembed stop` with no name: nothing running or several running is exit 2 and names them
    (the one-server case stops it: tests/test_serve_cli.py, test_logs_follow_ends_when_server_exits)."""
    from typer.testing import CliRunner

    from qembed.cli import app
    from qembed.errors import ExitCode, QembedError

    # CliRunner calls the app without the error funnel of `qembed.cli.main`: check the error
    none = CliRunner().invoke(app, ["stop"]).exception
    assert isinstance(none, QembedError) and none.exit_code == ExitCode.USAGE
    assert none.message == "no servers running on this machine"
    for name in ("a", "b"):  # records of this (live) process: nothing is stopped below
        state.save(_record(name, os.getpid()))
    several = CliRunner().invoke(app, ["stop"]).exception
    assert isinstance(several, QembedError) and several.exit_code == ExitCode.USAGE
    assert "2 servers are running: name the one to stop" in several.message
    assert "`a` (started in " in (several.hint or "") and ", `b` (started in " in (several.hint or "")
    assert len(state.list_records()) == 2
