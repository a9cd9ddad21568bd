"""qembed.host.logrotate: SGLang's log is rotated by size while the server runs (issue 14, logging)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from qembed.host import logfiles, logrotate
from qembed.serving import launcher
from tests.fake_site import harness


def test_rotate_keeps_n_private_backups_newest_first(tmp_path: Path) -> None:
    log = tmp_path / "emb.log"
    for i in range(5):
        log.write_text(f"generation {i}\n")
        logrotate.rotate(log, backups=3)
        assert log.read_bytes() == b""  # truncated in place: SGLang's O_APPEND fd writes on
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.log", "emb.log.1", "emb.log.2", "emb.log.3"]
    assert [(tmp_path / f"emb.log.{n}").read_text() for n in (1, 2, 3)] == ["generation 4\n", "generation 3\n", "generation 2\n"]
    assert oct((tmp_path / "emb.log.1").stat().st_mode & 0o777) == "0o600"


def test_appending_writer_continues_at_the_start_after_rotation(tmp_path: Path) -> None:
    log = tmp_path / "emb.log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # as spawn opens it
    try:
        os.write(fd, b"x" * 5000 + b"\n")
        logrotate.rotate(log, backups=1)
        os.write(fd, b"after\n")
    finally:
        os.close(fd)
    assert log.read_bytes() == b"after\n"  # no hole of NUL bytes before it
    assert (tmp_path / "emb.log.1").stat().st_size == 5001


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def test_watch_rotates_while_the_process_lives_then_ends(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    log = tmp_path / "emb.log"
    log.write_bytes(b"line\n" * 1000)
    t = threading.Thread(target=logrotate.watch, args=(log, sleeper.pid),
                         kwargs={"max_bytes": 1000, "backups": 2, "interval": 0.01})
    t.start()
    harness.wait_until(lambda: (tmp_path / "emb.log.1").exists(), timeout=10, what="a rotation")
    assert log.stat().st_size <= 1000
    sleeper.kill()
    sleeper.wait()
    t.join(timeout=10)
    assert not t.is_alive()  # the watcher ends with the process it watches


def test_log_follower_and_follow_log_survive_a_rotation(tmp_path: Path) -> None:
    log = tmp_path / "emb.log"
    log.write_text("one\ntwo\n")
    follower = logfiles.LogFollower(log)
    assert follower.poll() == ["one", "two"]
    logrotate.rotate(log, backups=1)
    with open(log, "a") as fh:
        fh.write("three\n")
    assert follower.poll() == ["three"]
    follower.close()

    done = threading.Event()
    lines = logfiles.follow_log(log, alive=lambda: not done.is_set(), interval=0.01)
    got: list[str] = []
    t = threading.Thread(target=lambda: got.extend(lines))
    t.start()
    with open(log, "a") as fh:
        fh.write("four\n" * 50)
    harness.wait_until(lambda: len(got) >= 50, timeout=10, what="the lines before the rotation")
    logrotate.rotate(log, backups=1)
    with open(log, "a") as fh:
        fh.write("five\n")
    harness.wait_until(lambda: got[-1:] == ["five"], timeout=10, what="the line after the rotation")
    done.set()
    t.join(timeout=10)


@pytest.mark.slow
def test_a_running_server_log_is_rotated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pidfile = tmp_path / "pids.json"
    for k, v in harness.fake_env(pidfile).items():
        if k.startswith(("FAKE_", "PYTHONPATH")):
            monkeypatch.setenv(k, v)
    port = harness.free_port()
    log = tmp_path / "sglang.log"
    server = launcher.spawn(harness.fake_argv(port), host="127.0.0.1", port=port, log_path=log,
                            header=["command: test"], log_max_bytes=1500, log_backups=2)
    try:
        assert server.rotator is not None
        assert server.wait_ready(timeout=30).dimensions == 2560
        harness.wait_until(lambda: (tmp_path / "sglang.log.1").exists(), timeout=15, what="a rotation")
        rotated = "".join(p.read_text() for p in sorted(tmp_path.glob("sglang.log.*")))
        assert "server_args=" in rotated  # the early lines moved to the backups
    finally:
        server.stop(timeout=5)
    harness.assert_gone(harness.all_pids(harness.read_pids(pidfile)))
    assert server.rotator.poll() is not None  # the watcher went with the server
    assert not (tmp_path / "sglang.log.3").exists()  # two backups at most
