"""`qembed ps` and `qembed stop` on records that don't describe a healthy server: a record whose
process can't be proven to be the server (`proc_start_time: null`) is never signalled; a
stopped (SIGSTOP), hung or draining server is shown as such, quickly, not as `loading`.
Issue 19, "Smaller" (docs/serving.md, "ps and stop")."""

from __future__ import annotations

import http.server
import json
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from qembed.host import state
from qembed.serving import launcher
from tests.helpers.cli import invoke, run_main


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def _record(name: str, pid: int, port: int, **kw: Any) -> state.Record:
    rec = state.make_record(name=name, pid=pid, host="127.0.0.1", port=port, url=f"http://127.0.0.1:{port}",
                            model="m", log_path=state.logs_dir() / f"{name}.log")
    for k, v in kw.items():
        setattr(rec, k, v)
    state.save(rec)
    return rec


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_stop_never_signals_a_pid_without_a_recorded_start_time(sleeper: subprocess.Popen[bytes]) -> None:
    _record("ghost", sleeper.pid, _free_port(), proc_start_time=None)
    r = invoke(["stop", "ghost"])
    assert sleeper.poll() is None, "an unrelated process was signalled"
    assert r.exit_code != 0 or "not running" in r.output
    r = invoke(["stop", "--all"])
    assert sleeper.poll() is None
    assert state.load("ghost") is None  # the unprovable record is dropped, the process left alone


def test_stop_never_signals_a_reused_pid(sleeper: subprocess.Popen[bytes]) -> None:
    rec = _record("reused", sleeper.pid, _free_port())
    assert rec.proc_start_time is not None
    rec.proc_start_time -= 1
    state.save(rec)
    assert not launcher.stop_server(rec, timeout=1)
    assert sleeper.poll() is None


def _status(name: str) -> str:
    r = invoke(["ps", "--json"])
    assert r.exit_code == 0, r.output
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    return str(rows[name]["status"])


def test_ps_shows_a_sigstopped_server_as_stopped_without_probing_it(sleeper: subprocess.Popen[bytes]) -> None:
    with socket.socket() as listener:  # accepts connections in the kernel, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        _record("frozen", sleeper.pid, listener.getsockname()[1], dimensions=16)
        sleeper.send_signal(signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            status = _status("frozen")
            took = time.monotonic() - t0
        finally:
            sleeper.send_signal(signal.SIGCONT)
    assert status == "stopped (SIGSTOP)"
    assert took < 2.0  # no health probe for a process that can't answer


def test_ps_bounds_the_probe_of_a_hung_server(sleeper: subprocess.Popen[bytes],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    assert launcher.PS_HEALTH_TIMEOUT <= 3.0
    monkeypatch.setattr(launcher, "PS_HEALTH_TIMEOUT", 0.3)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        _record("hung", sleeper.pid, listener.getsockname()[1], dimensions=16)
        assert _status("hung") == "not answering"


class _Draining(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_ps_tells_draining_from_starting_and_gone_from_loading(sleeper: subprocess.Popen[bytes]) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Draining)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        _record("draining", sleeper.pid, port, dimensions=16)  # was ready, now 503
        _record("starting", sleeper.pid, port)  # never ready yet: 503 is start-up
        closed = _free_port()
        _record("gone", sleeper.pid, closed, dimensions=16)  # was ready, port closed
        _record("loading", sleeper.pid, closed)  # never ready, port not open yet
        r = invoke(["ps", "--json"])
    finally:
        server.shutdown()
        server.server_close()
    rows = {row["name"]: row["status"] for row in json.loads(r.stdout)}
    assert rows == {"draining": "draining", "starting": "starting", "gone": "not answering", "loading": "loading"}


# -- servers of other checkouts, jobs and machines (issue 23 item 9) ------------------------------


def _session_sleeper() -> subprocess.Popen[bytes]:
    """A process that leads its own group, as a served engine does (so `stop` may signal it)."""
    return subprocess.Popen(["sleep", "60"], start_new_session=True)


def test_a_bare_stop_refuses_two_servers_and_ps_tells_them_apart(monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    procs = [_session_sleeper() for _ in range(3)]
    try:
        _record("emb", procs[0].pid, _free_port(), cwd="/work/checkout-a", profile="a100")
        _record("gw", procs[1].pid, _free_port(), cwd="/work/checkout-b", profile="a100", role="gateway")
        _record("gw-0", procs[2].pid, _free_port(), cwd="/work/checkout-b", profile="a100", role="replica", group="gw")
        # a server recorded by another machine that shares this state dir (a shared home)
        _record("far", 999_999, _free_port(), cwd="/home/u/job-7", hostname="other-node")
        code, _, err = run_main(monkeypatch, capsys, ["stop"])
        assert code == 2, err
        assert "error: 2 servers are running: name the one to stop" in err  # the group counts once
        assert "`emb` (started in /work/checkout-a, profile a100)" in err and "`gw` (started in /work/checkout-b" in err
        assert all(p.poll() is None for p in procs), "a bare stop signalled a server it could not know was meant"
        monkeypatch.setenv("COLUMNS", "200")
        r = invoke(["ps"])
        assert r.exit_code == 0 and "DIR" in r.stdout
        lines = {name: line for line in r.stdout.splitlines() for name in ("emb", "gw", "far")
                 if line.replace("│", " ").split()[:1] == [name]}
        assert "/work/checkout-a" in lines["emb"] and "/work/checkout-b" in lines["gw"]
        assert "on host other-node" in lines["far"] and "/home/u/job-7" in lines["far"]
        code, _, err = run_main(monkeypatch, capsys, ["stop", "far"])
        assert code == 2 and "runs on host `other-node`" in err
        code, _, err = run_main(monkeypatch, capsys, ["serve", "-p", "a100", "--name", "far", "--port", str(_free_port())])
        assert code == 2 and "a server named `far` is recorded on host `other-node`" in err, err
        procs[0].kill()
        procs[0].wait()
        # exactly one server (the group) left here: a bare stop stops it, gateway and replica
        r = invoke(["stop", "--timeout", "1"])
        assert r.exit_code == 0, r.stderr
        assert "stopping gw (pid" in r.stderr and "started in /work/checkout-b" in r.stderr
        assert procs[1].wait(timeout=10) is not None and procs[2].wait(timeout=10) is not None
        assert state.load("far") is not None, "another machine's record was removed from here"
    finally:
        for p in procs:
            p.kill()
            p.wait()
