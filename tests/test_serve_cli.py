"""The real `qembed serve` / `ps` / `stop` / `logs`, run as subprocesses against the fake SGLang.

``tests/fake_site`` is a TEST DOUBLE: a fake ``sglang`` package and a fake ``pynvml`` on the
PYTHONPATH of the spawned ``qembed``, and ``tests/fake_site/python`` as ``--python`` (SGLang's
launch and parser check run plain ``python``, no ``-I``, so the wrapper's PYTHONPATH counts). Each
process test records the PIDs of the fake and its ``sglang::scheduler`` child and asserts that
none survive.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qembed.errors import ExitCode
from tests.fake_site import harness

pytestmark = pytest.mark.slow


class Env:
    def __init__(self, tmp_path: Path) -> None:
        self.pidfile = tmp_path / "pids.json"
        self.port = harness.free_port()
        self.env = harness.fake_env(self.pidfile)
        self.state = Path(self.env["QEMBED_STATE_DIR"])
        self.spawned: list[int] = []

    def args(self, *extra: str) -> list[str]:
        return ["serve", "-p", "a100", "--python", str(harness.WRAPPER), "--port", str(self.port), *extra]

    def with_(self, **kw: str) -> dict[str, str]:
        return {**self.env, **kw}

    def pids(self) -> list[int]:
        pids = harness.all_pids(harness.read_pids(self.pidfile))
        self.spawned.extend(pids)
        return pids


@pytest.fixture
def fx(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    if e.pidfile.exists():
        e.spawned.extend(harness.all_pids(harness.read_pids(e.pidfile)))
    harness.kill_leftovers(e.spawned)


def _wait_ready_line(proc: harness.subprocess.Popen[str]) -> list[str]:
    """Read stdout until the ready block ends (or fail with what qembed said)."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            err = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"qembed exited ({proc.wait()}) before ready:\n{''.join(lines)}\n{err}")
        lines.append(line)
        if "Press Ctrl-C to stop." in line:
            return lines
    raise AssertionError("no ready block within 40 s")


# -- foreground: ready, Ctrl-C, SIGTERM ---------------------------------------------------------


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, ExitCode.INTERRUPTED), (signal.SIGTERM, 0)])
def test_ready_then_signal_stops_the_whole_tree(fx: Env, sig: signal.Signals, code: int) -> None:
    proc = harness.start_qembed(fx.args(), fx.env)
    out = "".join(_wait_ready_line(proc))
    pids = fx.pids()
    assert f"http://127.0.0.1:{fx.port}" in out
    assert "vector size:    2560" in out
    assert "context length: 32768 tokens" in out
    assert f'base_url="http://127.0.0.1:{fx.port}/v1"' in out and "curl -s" in out
    # recorded while it runs (foreground servers show in `qembed ps` too)
    rec = json.loads((fx.state / "servers" / "a100-80g.json").read_text())
    assert rec["pid"] == pids[0] and rec["dimensions"] == 2560 and rec["detached"] is False
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    assert "stopping SGLang" in err and "stopped (SGLang exit code 0)" in err
    harness.assert_gone(pids)
    assert not (fx.state / "servers" / "a100-80g.json").exists()
    log = next((fx.state / "logs").glob("a100-80g-*.log")).read_text()
    assert "SIGTERM received" in log  # SGLang got SIGTERM and drained
    # phases were shown on stderr (not a TTY: plain lines, each once)
    for label in ("loading weights", "weights loaded", "port bound, warming up", "ready"):
        assert sum(line.endswith("] " + label) for line in err.splitlines()) == 1, err


def test_ctrl_c_while_loading_stops_everything(fx: Env) -> None:
    proc = harness.start_qembed(fx.args(), fx.with_(FAKE_SGLANG_MODE="hang"))
    pids = fx.pids()  # the fake is up and "loading"
    log = harness.wait_until(lambda: next((fx.state / "logs").glob("*.log"), None), timeout=10, what="the log")
    harness.wait_until(lambda: "Load weight begin" in log.read_text(), timeout=10, what="loading")
    rows = json.loads(harness.run_qembed(["ps", "--json"], fx.env).stdout)
    assert [(r["name"], r["status"], r["detached"]) for r in rows] == [("a100-80g", "loading", False)]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == ExitCode.INTERRUPTED, err
    assert f"stopped (SGLang exit code -{int(signal.SIGTERM)})" in err
    harness.assert_gone(pids)
    assert list((fx.state / "servers").glob("*.json")) == []


def test_endless_drain_is_killed_after_shutdown_timeout(fx: Env) -> None:
    proc = harness.start_qembed(fx.args("--shutdown-timeout", "1"), fx.with_(FAKE_SGLANG_MODE="drain-forever"))
    _wait_ready_line(proc)
    pids = fx.pids()
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 8
    assert "SGLang exit code -9" in err
    harness.assert_gone(pids)


def test_second_ctrl_c_kills_at_once(fx: Env) -> None:
    proc = harness.start_qembed(fx.args("--shutdown-timeout", "60"), fx.with_(FAKE_SGLANG_MODE="drain-forever"))
    _wait_ready_line(proc)
    pids = fx.pids()
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    log = next((fx.state / "logs").glob("a100-80g-*.log"))
    harness.wait_until(lambda: "Draining requests" in log.read_text(), timeout=10, what="the drain")
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == ExitCode.INTERRUPTED
    assert time.monotonic() - t0 < 15
    harness.assert_gone(pids)


def test_sglang_is_stopped_even_if_qembed_is_sigkilled(fx: Env) -> None:
    # qembed cannot clean up after SIGKILL; the parent-death signal makes SGLang shut down.
    proc = harness.start_qembed(fx.args(), fx.env)
    _wait_ready_line(proc)
    pids = fx.pids()
    proc.kill()
    proc.communicate(timeout=10)
    harness.assert_gone(pids)
    log = next((fx.state / "logs").glob("a100-80g-*.log")).read_text()
    assert "SIGTERM received" in log


# -- failures before ready ----------------------------------------------------------------------

FAILURES = [
    # mode, returncode text, a log line that must be quoted, the diagnosis title
    ("oom", "exit code -9", "torch.OutOfMemoryError: CUDA out of memory", "CUDA out of memory"),
    ("no-kv", "exit code -9", "Loaded weights leave no GPU memory", "no GPU memory left for the KV cache"),
    ("not-enough-memory", "exit code -9", "Not enough memory", "KV cache pool is empty"),
    ("host-oom", "exit code 1", "Rank 0 scheduler died during initialization", "host out of memory"),
    ("port-busy", "exit code -9", "[Errno 98] error while attempting to bind", "HTTP port already in use"),
    ("proxy-warmup", "exit code -9", "res=<Response [502]>", "proxy"),
    ("bad-model", "exit code 1", "Unrecognized model in", "config.json"),
]


@pytest.mark.parametrize("mode,rc_text,quoted,title", FAILURES, ids=[f[0] for f in FAILURES])
def test_exit_before_ready_is_diagnosed(fx: Env, mode: str, rc_text: str, quoted: str, title: str) -> None:
    r = harness.run_qembed(fx.args(), fx.with_(FAKE_SGLANG_MODE=mode, FAKE_SGLANG_LOAD_DELAY="0.2"))
    pids = fx.pids()
    assert r.returncode == ExitCode.SERVER_EXITED, r.stderr
    assert "error: SGLang exited before it was ready" in r.stderr
    assert rc_text in r.stderr
    assert quoted in r.stderr  # the last log lines are shown
    diag = [line for line in r.stderr.splitlines() if line.strip().startswith("diagnosis:")]
    assert diag and title in diag[0], r.stderr
    assert "hint: " in r.stderr
    assert "full log: " in r.stderr
    harness.assert_gone(pids)  # the scheduler child included
    assert list((fx.state / "servers").glob("*.json")) == []


def test_failure_output_hides_the_api_key(fx: Env) -> None:
    r = harness.run_qembed(fx.args(), fx.with_(FAKE_SGLANG_MODE="oom", QEMBED_API_KEY="k3y-value"))
    assert r.returncode == ExitCode.SERVER_EXITED, r.stderr
    assert "k3y-value" not in r.stdout + r.stderr
    # SGLang's ~2 KB server_args line is summarised to its key fields, not echoed
    args_line = next(line for line in r.stderr.splitlines() if "server_args=" in line)
    assert "server_args=ServerArgs(model_path='Qwen/Qwen3-Embedding-4B'" in args_line
    assert f"port={fx.port}" in args_line and "fields shown)" in args_line
    assert "api_key" not in args_line and len(args_line) < 400
    harness.assert_gone(fx.pids())


def test_hang_hits_ready_timeout_and_is_stopped(fx: Env) -> None:
    r = harness.run_qembed(fx.args("--ready-timeout", "2"), fx.with_(FAKE_SGLANG_MODE="hang"))
    assert r.returncode == ExitCode.NOT_READY, r.stderr
    assert "not ready after 2 s" in r.stderr and "loading weights" in r.stderr
    assert "--ready-timeout" in r.stderr
    harness.assert_gone(fx.pids())


def test_generator_without_is_embedding_is_explained(fx: Env) -> None:
    r = harness.run_qembed(fx.args(), fx.with_(FAKE_SGLANG_MODE="not-embedding"))
    assert r.returncode == ExitCode.FAILURE, r.stderr
    assert "not an embedding model" in r.stderr and "--is-embedding" in r.stderr
    harness.assert_gone(fx.pids())


def test_exit_after_ready_is_reported(fx: Env) -> None:
    r = harness.run_qembed(fx.args(), fx.with_(FAKE_SGLANG_MODE="crash-after-ready", FAKE_SGLANG_CRASH_AFTER="0.5"))
    assert r.returncode == ExitCode.SERVER_EXITED, r.stderr
    assert "SGLang exited while serving (exit code -9" in r.stderr
    assert "CUDA out of memory" in r.stderr
    harness.assert_gone(fx.pids())


# -- checks before spawning ---------------------------------------------------------------------


def test_busy_port_fails_before_spawn(fx: Env) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", fx.port))
        s.listen()
        t0 = time.monotonic()
        r = harness.run_qembed(fx.args(), fx.env)
    assert time.monotonic() - t0 < 15
    assert r.returncode == ExitCode.USAGE, r.stderr
    assert f"port {fx.port} on 127.0.0.1 is already in use by pid " in r.stderr
    assert "hint: pass `--port " in r.stderr
    assert not fx.pidfile.exists()  # nothing was started


def test_bad_flag_fails_fast_via_sglang_parser(fx: Env) -> None:
    r = harness.run_qembed(fx.args("--set", 'extra_args=["--no-such-flag"]'), fx.env)
    assert r.returncode == ExitCode.USAGE, r.stderr
    assert "unrecognized arguments: --no-such-flag" in r.stderr
    assert not fx.pidfile.exists()


def test_dry_run_redacts_key_and_checks_flags(fx: Env) -> None:
    r = harness.run_qembed(fx.args("--dry-run"), fx.with_(QEMBED_API_KEY="sup3r-s3cret"))
    assert r.returncode == 0, r.stderr
    assert "sup3r-s3cret" not in r.stdout + r.stderr
    # issue 20: the key goes to SGLang through its environment and the keyed entry, never argv
    assert "QEMBED_SGLANG_API_KEY=[...]" in r.stdout
    assert not re.search(r"(^|\s)--api-key(\s|$)", r.stdout)  # not a flag of the command line
    assert "--is-embedding" in r.stdout and f"--port {fx.port}" in r.stdout
    assert "NO_PROXY=127.0.0.1,localhost,::1" in r.stdout
    assert "profile: a100-80g" in r.stdout
    assert "parser accepts" in r.stderr
    assert not fx.pidfile.exists()
    j = harness.run_qembed(fx.args("--dry-run", "--json"), fx.with_(QEMBED_API_KEY="sup3r-s3cret"))
    assert j.returncode == 0, j.stderr
    data = json.loads(j.stdout)
    assert "--api-key" not in data["argv"] and "sup3r-s3cret" not in j.stdout


def test_sglang_python_from_env(fx: Env) -> None:
    args = ["serve", "-p", "a100", "--port", str(fx.port), "--dry-run", "--json"]
    r = harness.run_qembed(args, fx.with_(QEMBED_SGLANG_PYTHON=str(harness.WRAPPER)))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["argv"][0] == str(harness.WRAPPER)


def test_non_loopback_without_key_warns(fx: Env) -> None:
    r = harness.run_qembed(fx.args("--host", "0.0.0.0", "--dry-run"), fx.env)
    assert r.returncode == 0, r.stderr
    assert "warning: SGLang will listen on `0.0.0.0`" in r.stderr
    assert "QEMBED_API_KEY" in r.stderr
    quiet = harness.run_qembed(fx.args("--host", "0.0.0.0", "--dry-run"), fx.with_(QEMBED_API_KEY="k"))
    assert "will listen on" not in quiet.stderr


def test_gpu_check_refuses_an_old_driver(fx: Env) -> None:
    r = harness.run_qembed(fx.args(), fx.with_(QEMBED_FAKE_NVML="old-driver"))
    assert r.returncode == ExitCode.NO_GPU, r.stderr
    assert not fx.pidfile.exists()


# -- detach, ps, logs, stop ---------------------------------------------------------------------


def test_detach_ps_logs_stop(fx: Env) -> None:
    env = fx.with_(QEMBED_API_KEY="k3y-value")
    r = harness.run_qembed(fx.args("--detach", "--name", "emb", "--json"), env)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["name"] == "emb" and info["dimensions"] == 2560 and info["detached"] is True
    assert info["openai_base_url"] == f"http://127.0.0.1:{fx.port}/v1"
    pids = fx.pids()
    assert all(harness.alive(p) for p in pids)  # qembed exited, the server did not
    for pid in pids:  # the key reaches SGLang through its environment, not argv (`ps`)
        assert "k3y-value" not in Path(f"/proc/{pid}/cmdline").read_text()
    record_text = (fx.state / "servers" / "emb.json").read_text()
    assert "k3y-value" not in record_text and '"api_key_env": "QEMBED_API_KEY"' in record_text

    # a second server with the same name is bad input (exit 2) while the first is alive
    dup = harness.run_qembed(fx.args("--detach", "--name", "emb"), env)
    assert dup.returncode == ExitCode.USAGE and "already running" in dup.stderr, dup.stderr

    ps = harness.run_qembed(["ps", "--json"], env)
    rows = json.loads(ps.stdout)
    assert [(x["name"], x["status"], x["pid"]) for x in rows] == [("emb", "ready", pids[0])]
    table = harness.run_qembed(["ps"], env)
    assert "emb" in table.stdout and "ready" in table.stdout

    logs = harness.run_qembed(["logs", "emb", "--lines", "200"], env)
    assert logs.returncode == 0
    assert "The server is fired up and ready to roll!" in logs.stdout
    # SGLang logs server_args with the key; the keyed entry redacts it before any handler (issue
    # 20), so even the private file never holds it
    log_file = Path(info["log_path"])
    assert "k3y-value" not in log_file.read_text() and "'api_key': '[...]'" in log_file.read_text()
    assert oct(log_file.stat().st_mode & 0o777) == "0o600"
    assert "k3y-value" not in logs.stdout and "'api_key': '[...]'" in logs.stdout
    no_env = {k: v for k, v in env.items() if k != "QEMBED_API_KEY"}
    assert "k3y-value" not in harness.run_qembed(["logs", "emb", "--lines", "200"], no_env).stdout

    stop = harness.run_qembed(["stop", "emb", "--timeout", "10"], env)
    assert stop.returncode == 0, stop.stderr
    assert "stopped emb" in stop.stderr
    harness.assert_gone(pids)
    assert json.loads(harness.run_qembed(["ps", "--json"], env).stdout) == []
    # the log outlives the record
    assert "SIGTERM received" in harness.run_qembed(["logs", "emb"], env).stdout


def test_logs_follow_ends_when_server_exits(fx: Env) -> None:
    r = harness.run_qembed(fx.args("--detach", "--name", "f"), fx.env)
    assert r.returncode == 0, r.stderr
    pids = fx.pids()
    follower = harness.start_qembed(["logs", "f", "-f", "--lines", "1"], fx.env)
    stop = harness.run_qembed(["stop"], fx.env)  # the only server: no name needed
    assert stop.returncode == 0, stop.stderr
    assert "stopped f" in stop.stderr
    out, err = follower.communicate(timeout=20)
    assert follower.returncode == 0, err
    assert "SIGTERM received" in out
    harness.assert_gone(pids)


def test_stale_record_is_cleaned_and_stop_all(fx: Env) -> None:
    servers = fx.state / "servers"
    servers.mkdir(parents=True)
    dead = {"name": "ghost", "pid": 2**22 + 12345, "pgid": 2**22 + 12345, "host": "127.0.0.1",
            "port": fx.port, "url": f"http://127.0.0.1:{fx.port}", "profile": "a100-80g",
            "model": "Qwen/Qwen3-Embedding-4B", "log_path": "/nonexistent.log",
            "started_at": "2026-11-26T05:00:00+00:00", "proc_start_time": 1}
    (servers / "ghost.json").write_text(json.dumps(dead))
    # a live PID with another start time: a reused PID, not our server
    reused = dict(dead, name="reused", pid=1, pgid=1)
    (servers / "reused.json").write_text(json.dumps(reused))
    ps = harness.run_qembed(["ps", "--json"], fx.env)
    assert json.loads(ps.stdout) == []
    assert list(servers.glob("*.json")) == []
    stop = harness.run_qembed(["stop", "ghost"], fx.env)
    assert stop.returncode == ExitCode.USAGE and "no running server named `ghost`" in stop.stderr
    assert harness.run_qembed(["stop", "--all"], fx.env).returncode == 0


def test_help_has_examples() -> None:
    r = harness.run_qembed(["serve", "--help"], harness.fake_env(Path("/nonexistent")))
    assert r.returncode == 0
    assert "qembed serve --detach --name emb" in r.stdout and "QEMBED_PROFILE" in r.stdout


# -- claims, a stolen port, the state directory (issue 9 §4) ------------------------------------


@pytest.mark.parametrize("same", ["name", "port"])
def test_two_concurrent_serves_exactly_one_wins(fx: Env, tmp_path: Path, same: str) -> None:
    """Two real `qembed serve` started together with the same name (or port): one serves, the
    other exits 2 before its SGLang starts, and the winner stays in `ps` and `stop --all`."""
    port2 = fx.port if same == "port" else harness.free_port()
    names = ("emb", "emb") if same == "name" else ("a", "b")
    pidfiles = [tmp_path / "p1.json", tmp_path / "p2.json"]
    procs = [
        harness.start_qembed(["serve", "-p", "a100", "--python", str(harness.WRAPPER), "--port", str(p),
                              "--name", n, "--detach", "--json"],
                             fx.with_(FAKE_SGLANG_PIDFILE=str(pf), FAKE_SGLANG_LOAD_DELAY="1.5"))
        for p, n, pf in zip((fx.port, port2), names, pidfiles, strict=True)
    ]
    results = [p.communicate(timeout=60) for p in procs]
    for pf in pidfiles:
        if pf.exists():
            fx.spawned.extend(harness.all_pids(harness.read_pids(pf)))
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, ExitCode.USAGE], results
    loser = next(i for i, p in enumerate(procs) if p.returncode == ExitCode.USAGE)
    winner = 1 - loser
    err = results[loser][1]
    assert ("already running or starting" if same == "name" else f"port {fx.port} is already claimed") in err, err
    assert "Traceback" not in err
    assert not pidfiles[loser].exists()  # its SGLang never started
    info = json.loads(results[winner][0])
    rows = json.loads(harness.run_qembed(["ps", "--json"], fx.env).stdout)
    assert [(r["name"], r["pid"]) for r in rows] == [(info["name"], info["pid"])]
    stop = harness.run_qembed(["stop", "--all"], fx.env)
    assert stop.returncode == 0 and f"stopped {info['name']}" in stop.stderr
    harness.assert_gone(harness.all_pids(harness.read_pids(pidfiles[winner])))
    # the claims went with the server: the name and the port are free again
    again = harness.run_qembed(fx.args("--detach", "--name", names[loser], "--json"), fx.env)
    assert again.returncode == 0, again.stderr
    fx.spawned.extend(fx.pids())
    assert harness.run_qembed(["stop", "--all"], fx.env).returncode == 0


def test_another_server_on_the_port_is_not_reported_ready(fx: Env) -> None:
    """The port is free at the pre-check; another server takes it while SGLang loads and
    answers /health and embeddings (1024-d). qembed must not say "ready" with its vector size."""
    from tests.standin.server import StandinConfig, serve_in_thread

    proc = harness.start_qembed(fx.args(), fx.with_(FAKE_SGLANG_MODE="port-stolen", FAKE_SGLANG_LOAD_DELAY="2",
                                                   FAKE_SGLANG_BUSY_LINGER="60"))
    pids = fx.pids()  # the fake is up and "loading"
    with serve_in_thread(StandinConfig(dim=1024), port=fx.port) as other:
        out, err = proc.communicate(timeout=60)
        assert other.requests == []  # no probe went to it
    assert proc.returncode == ExitCode.USAGE, err
    assert "ready" not in out and "1024" not in out
    assert f"SGLang could not bind port {fx.port} after loading: it is held by pid {os.getpid()}" in err
    assert "[Errno 98]" in err and "hint: pass `--port " in err
    assert f"port {fx.port} is held by pid {os.getpid()}" in err  # said while it waited
    harness.assert_gone(pids)  # the lingering SGLang was stopped, not left for minutes
    assert list((fx.state / "servers").glob("*.json")) == []


def test_unusable_state_dir_is_a_clear_error(fx: Env, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    r = harness.run_qembed(fx.args(), fx.with_(QEMBED_STATE_DIR=str(blocker / "state")))
    assert r.returncode == ExitCode.USAGE, r.stderr
    assert r.stderr.startswith("error: the qembed state directory is not usable"), r.stderr
    assert "hint: point `QEMBED_STATE_DIR` at a writable directory" in r.stderr
    assert "Traceback" not in r.stderr
    assert not fx.pidfile.exists()


# -- --log-format json (issue 14, logging) --------------------------------------------------------


def _json_lines(stderr: str) -> list[dict[str, object]]:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "no events"
    return [json.loads(line) for line in lines]  # every stderr line is one JSON object


def test_log_format_json_failure_carries_the_diagnosis(fx: Env) -> None:
    r = harness.run_qembed(fx.args("--log-format", "json"), fx.with_(FAKE_SGLANG_MODE="oom", FAKE_SGLANG_LOAD_DELAY="0.2"))
    assert r.returncode == ExitCode.SERVER_EXITED, r.stderr
    events = _json_lines(r.stderr)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "spawned" and kinds[-1] == "error", kinds
    assert {"ts", "level", "message"} <= set(events[0]) and events[0]["pid"] == fx.pids()[0]
    assert ("phase", "loading") in [(e["event"], e.get("phase")) for e in events]
    err = events[-1]
    assert err["level"] == "error" and err["exit_code"] == ExitCode.SERVER_EXITED
    assert str(err["message"]).startswith("SGLang exited before it was ready")
    diags = err["diagnoses"]
    assert isinstance(diags, list) and diags and diags[0]["title"] == "CUDA out of memory"
    assert "CUDA out of memory" in str(diags[0]["evidence"]) and err["hint"]
    harness.assert_gone(fx.pids())


def test_log_format_json_ready_and_stop(fx: Env) -> None:
    proc = harness.start_qembed(fx.args("--log-format", "json", "--json"), fx.env)
    assert proc.stdout is not None
    info = json.loads(proc.stdout.readline())  # --json: the ready object on stdout
    pids = fx.pids()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    events = _json_lines(err)
    kinds = [e["event"] for e in events]
    assert kinds[-3:] == ["ready", "stopping", "stopped"], kinds
    ready = events[-3]
    assert ready["dimensions"] == info["dimensions"] == 2560 and ready["url"] == f"http://127.0.0.1:{fx.port}"
    assert events[-1]["exit_code"] == 0 and events[-1]["by"] == "SIGTERM"
    phases = [e["phase"] for e in events if e["event"] == "phase"]
    assert phases[:2] == ["starting", "loading"] and phases[-1] == "ready"
    harness.assert_gone(pids)


def test_bad_log_format_is_usage_error(fx: Env) -> None:
    r = harness.run_qembed(fx.args("--log-format", "xml"), fx.env)
    assert r.returncode == ExitCode.USAGE and "--log-format xml" in r.stderr
    assert not fx.pidfile.exists()


# -- one SGLang target: dry run, doctor and launch agree (issue 22, bug 1) -----------------------


def test_profile_env_pythonpath_reaches_every_parser_check(fx: Env, tmp_path: Path) -> None:
    """SGLang importable ONLY through the profile's `env.PYTHONPATH`: the dry run, doctor and the
    real launch must reach the same verdict. Before issue 22 the launch's parser check ran without
    the profile's env and refused with exit 2 ("SGLang cannot be imported") while the dry run and
    doctor passed."""
    import sys

    nvml_only = tmp_path / "nvml-only"  # qembed itself sees the fake NVML, but no sglang
    nvml_only.mkdir()
    (nvml_only / "pynvml.py").symlink_to(harness.FAKE_SITE / "pynvml.py")
    plain = tmp_path / "plain-python"  # an interpreter that adds nothing to the path itself
    plain.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    plain.chmod(0o755)
    profile = tmp_path / "viaenv.yaml"
    profile.write_text(f"extends: a100-80g\npython: {plain}\n"
                       f"env:\n  PYTHONPATH: \"{harness.FAKE_SITE}{os.pathsep}{harness.REPO}\"\n")
    env = fx.with_(PYTHONPATH=os.pathsep.join([str(nvml_only), str(harness.REPO)]))

    dry = harness.run_qembed(["serve", "-p", str(profile), "--port", str(fx.port), "--dry-run"], env)
    assert dry.returncode == 0, dry.stderr
    assert "parser accepts" in dry.stderr
    doc = harness.run_qembed(["doctor", "-p", str(profile), "--port", str(fx.port), "--json"], env)
    rows = [r for r in json.loads(doc.stdout)["checks"] if r["name"] == "flags"]
    assert rows and all(r["status"] == "PASS" for r in rows), doc.stdout
    up = harness.run_qembed(["serve", "-p", str(profile), "--port", str(fx.port), "--detach",
                             "--name", "viaenv"], env)
    assert up.returncode == 0, up.stderr
    assert "cannot be imported" not in up.stderr
    fx.pids()
    down = harness.run_qembed(["stop", "viaenv"], env)
    assert down.returncode == 0, down.stderr


def test_dry_run_says_what_serve_would_refuse_or_warn(fx: Env, tmp_path: Path) -> None:
    """`serve --dry-run` runs the session's own checks (issue 22, bug 2): a missing model
    directory is refused (exit 2, as `serve`), and the profile warnings are shown."""
    missing = harness.run_qembed(fx.args("-m", "./no-such-dir", "--set", "torch_compile=true", "--dry-run"),
                                 fx.env)
    assert missing.returncode == ExitCode.USAGE, missing.stderr
    assert "the model directory `./no-such-dir` does not exist" in missing.stderr
    real = harness.run_qembed(fx.args("-m", "./no-such-dir"), fx.env)
    assert real.returncode == ExitCode.USAGE and "does not exist" in real.stderr
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    warned = harness.run_qembed(fx.args("-m", str(model_dir), "--set", "torch_compile=true", "--dry-run"), fx.env)
    assert warned.returncode == 0, warned.stderr
    assert "`torch_compile` has no effect" in warned.stderr
    assert not fx.pidfile.exists()


def test_duplicate_name_is_exit_2_for_serve_and_gateway(fx: Env) -> None:
    """A name in use is NameInUse (exit 2) from `serve` and from `qembed gateway` alike (issue 22,
    bug 3: the gateway said exit 1)."""
    first = harness.run_qembed(fx.args("--detach", "--name", "dup"), fx.env)
    assert first.returncode == 0, first.stderr
    fx.pids()
    try:
        again = harness.run_qembed(["serve", "-p", "a100", "--python", str(harness.WRAPPER), "--port",
                                    str(harness.free_port()), "--name", "dup", "--dry-run"], fx.env)
        serve = harness.run_qembed(["serve", "-p", "a100", "--python", str(harness.WRAPPER), "--port",
                                    str(harness.free_port()), "--name", "dup"], fx.env)
        gw = harness.run_qembed(["gateway", "--worker", f"http://127.0.0.1:{fx.port}", "--name", "dup",
                                 "--port", str(harness.free_port())], fx.env)
        assert serve.returncode == ExitCode.USAGE, serve.stderr
        assert gw.returncode == ExitCode.USAGE, gw.stderr
        for r in (serve, gw):
            assert "a server named `dup` is already running" in r.stderr
        assert again.returncode == 0  # a dry run claims nothing
    finally:
        assert harness.run_qembed(["stop", "dup"], fx.env).returncode == 0


def test_a_closed_pipe_never_orphans_the_server(fx: Env) -> None:
    """`qembed serve --detach ... 2>&1 | head -3` (issue 23): the reader goes away after three
    lines. qembed must still finish the start, keep the record, and exit 0, so that `qembed ps`
    shows the server and `qembed stop` stops it. Before, the BrokenPipeError hit the abort path
    half-way: the record went, the engine kept listening."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "qembed", *fx.args("--detach", "--name", "pipetest")],
                            env=fx.env, cwd=harness.REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    for _ in range(3):
        assert proc.stdout.readline(), "qembed said fewer than 3 lines"
    proc.stdout.close()  # what `head -3` does
    try:
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    fx.pids()
    ps = harness.run_qembed(["ps", "--json"], fx.env)
    names = [s["name"] for s in json.loads(ps.stdout)]
    assert "pipetest" in names, ps.stdout
    assert rc == 0
    down = harness.run_qembed(["stop", "pipetest"], fx.env)
    assert down.returncode == 0, down.stderr
    from qembed.host.ports import port_is_free

    assert port_is_free("127.0.0.1", fx.port)  # `stop` drained it: nothing is left listening


# -- the parser verdict cache (issue 23 item 3) --------------------------------------------------


def test_a_repeated_dry_run_or_doctor_imports_no_sglang(fx: Env, tmp_path: Path) -> None:
    """The second `serve --dry-run` / `doctor` for the same SGLang target, install and argv spawns
    no parser (the fake counts its parses); a change to the environment that affects imports,
    to the installed SGLang's RECORD, or to the argv checks again."""
    import shutil

    site = tmp_path / "site"  # a private copy of the fake SGLang: its RECORD can change
    shutil.copytree(harness.FAKE_SITE, site, ignore=shutil.ignore_patterns("__pycache__"))
    record = site / "sglang-0.5.23.dist-info" / "RECORD"
    record.write_text("sglang/__init__.py,,\n")  # the repo's fake has an empty RECORD: never cached
    py = str(site / "python")
    parses = tmp_path / "parses.log"
    env = fx.with_(FAKE_SGLANG_PARSE_LOG=str(parses))

    def count() -> int:
        return len(parses.read_text().splitlines()) if parses.exists() else 0

    def dry(*extra: str, environ: dict[str, str] = env) -> str:
        r = harness.run_qembed(["serve", "-p", "a100", "--python", py, "--port", str(fx.port),
                                "--dry-run", *extra], environ)
        assert r.returncode == 0, r.stderr
        return r.stderr

    first = dry()
    assert count() == 1 and "first time for this SGLang install" in first
    again = dry()
    assert count() == 1, "the second dry run imported SGLang's parser again"
    assert "cached verdict" in again and "first time" not in again
    doc = harness.run_qembed(["doctor", "-p", "a100", "--python", py, "--port", str(fx.port), "--json"], env)
    flags = [r for r in json.loads(doc.stdout)["checks"] if r["name"] == "flags"]
    assert flags and "cached verdict" in flags[0]["found"] and count() == 1
    dry("--set", "chunked_prefill_size=2048")  # another argv
    assert count() == 2
    extra_path = tmp_path / "more"
    extra_path.mkdir()
    dry(environ={**env, "PYTHONPATH": f"{env['PYTHONPATH']}{os.pathsep}{extra_path}"})  # another import path
    assert count() == 3
    record.write_text(record.read_text() + "sglang/new_file.py,,\n")  # another SGLang install
    dry()
    assert count() == 4
    dry()
    assert count() == 4


def _fingerprinted_site(tmp_path: Path) -> str:
    """A private copy of the fake SGLang whose RECORD is not empty (the repo's is: never cached)."""
    import shutil

    site = tmp_path / "site"
    shutil.copytree(harness.FAKE_SITE, site, ignore=shutil.ignore_patterns("__pycache__"))
    (site / "sglang-0.5.23.dist-info" / "RECORD").write_text("sglang/__init__.py,,\n")
    return str(site / "python")


def test_serve_pays_the_parser_import_once(fx: Env, tmp_path: Path) -> None:
    """With no verdict cached, `serve` runs no separate parser check: the server's own parser
    decides (one import, not two), and its acceptance is remembered once ready, so the next dry
    run imports nothing. A flag the server's parser rejects is still exit 2 with its message, and
    nothing is left running."""
    py = _fingerprinted_site(tmp_path)
    parses = tmp_path / "parses.log"
    env = fx.with_(FAKE_SGLANG_PARSE_LOG=str(parses))

    def count() -> int:
        return len(parses.read_text().splitlines()) if parses.exists() else 0

    base = ["serve", "-p", "a100", "--python", py, "--port", str(fx.port)]
    up = harness.run_qembed([*base, "--detach", "--name", "once"], env)
    assert up.returncode == 0, up.stderr
    fx.pids()
    assert count() == 1, "serve imported SGLang's parser twice (a pre-check and the server)"
    assert harness.run_qembed(["stop", "once"], env).returncode == 0
    dry = harness.run_qembed([*base, "--dry-run"], env)
    assert dry.returncode == 0 and "cached verdict" in dry.stderr, dry.stderr
    assert count() == 1

    bad = harness.run_qembed([*base, "--set", 'extra_args=["--no-such-flag"]'], env)
    fx.pids()
    assert bad.returncode == ExitCode.USAGE, bad.stderr
    assert "unrecognized arguments: --no-such-flag" in bad.stderr
    harness.assert_gone(fx.spawned)


def test_the_final_message_carries_the_childs_own_error_line(fx: Env) -> None:
    """A child that dies before it is ready: its own last error line is in the `error:` line, not
    only in the log (issue 23 item 2)."""
    r = harness.run_qembed(fx.args(), fx.with_(FAKE_SGLANG_MODE="bad-model", FAKE_SGLANG_LOAD_DELAY="0.2"))
    fx.pids()
    assert r.returncode == ExitCode.SERVER_EXITED, r.stderr
    first = next(line for line in r.stderr.splitlines() if line.startswith("error: "))
    assert first.startswith("error: SGLang exited before it was ready (exit code 1, after ")
    assert first.endswith("): ValueError: Unrecognized model in Qwen/Qwen3-Embedding-4B. Should have a `model_type` "
                          "key in its config.json, or contain one of the following strings in its name: albert, bert, qwen3")
