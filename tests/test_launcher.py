"""qembed.serving.launcher: phases, log tail, ports, readiness and shutdown against the fake SGLang.

The process tests spawn ``tests/fake_site`` (a TEST DOUBLE of SGLang 0.5.23) through
:func:`qembed.serving.launcher.spawn` and check by PID that the fake and its ``sglang::scheduler`` child
are gone afterwards. The child has no parent-death signal, so only the group kill removes it.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qembed import net
from qembed.errors import LaunchError, NotReady, PortInUse, ServerExited
from qembed.host import logfiles, ports, procfs
from qembed.redact import redact
from qembed.serving import launcher, readiness
from tests.fake_site import harness

# -- pure functions -----------------------------------------------------------------------------

REAL_LINES = [
    ("[2026-11-26 05:00:00] Load weight begin. avail mem=78.50 GB", "loading"),
    ("[2026-11-26 05:00:09] Load weight end. elapsed=8.61 s, type=Qwen3ForCausalLM, avail mem=70.80 GB, mem usage=7.70 GB.", "loaded"),
    ("[2026-11-26 05:00:10] Memory pool end. avail mem=8.12 GB", "memory_pool"),
    ("[2026-11-26 05:00:10] Capture target prefill CUDA graph begin. backend=breakable, num_tokens=[8192], avail mem=8.10 GB", "cuda_graphs"),
    ("[2026-11-26 05:00:30] Capture target prefill CUDA graph end. elapsed=20.1 s, mem usage=0.50 GB, avail mem=7.60 GB.", "graphs_done"),
    ("[2026-11-26 05:00:31] max_total_num_tokens=500000, chunked_prefill_size=8192, max_prefill_tokens=16384, max_running_requests=2048, context_len=32768, available_gpu_mem=7.60 GB", "scheduler"),
    ("INFO:     Uvicorn running on http://127.0.0.1:30000 (Press CTRL+C to quit)", "warming_up"),
    ("[2026-11-26 05:00:35] The server is fired up and ready to roll!", "warming_up"),
    ("[2026-11-26 05:00:35] Prefill batch, #new-seq: 1, #new-token: 7", None),
]


@pytest.mark.parametrize("line,key", REAL_LINES)
def test_phase_of_sglang_lines(line: str, key: str | None) -> None:
    assert readiness.phase_of(line) == key


def test_phases_are_ordered() -> None:
    ranks = [p.rank for p in readiness.PHASES]
    assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)


def test_log_tail_is_bounded_to_8_kib() -> None:
    tail = logfiles.LogTail()
    for i in range(5000):
        tail.add(f"line {i:05d} " + "x" * 40 + "\n")
    lines = tail.lines()
    assert sum(len(x) + 1 for x in lines) <= 8 * 1024
    assert lines[-1].startswith("line 04999")
    assert len(lines) > 100  # the bound is bytes, not a handful of lines
    assert tail.numbered()[-1][0] == 5000  # line numbers keep counting


def test_log_tail_keeps_end_of_a_huge_line() -> None:
    tail = logfiles.LogTail(max_bytes=100)
    tail.add("a" * 1000 + "END")
    assert tail.lines() == ["a" * 97 + "END"]


@pytest.mark.parametrize("line,shown", [
    ("[t] server_args={'model_path': 'm', 'api_key': 'sk-123', 'admin_api_key': None, 'port': 1}",
     "[t] server_args={'model_path': 'm', 'api_key': '[...]', 'admin_api_key': None, 'port': 1}"),
    ("ServerArgs(api_key='sk-123', host='h')", "ServerArgs(api_key='[...]', host='h')"),
    ("python -c x serve --api-key sk-123 --port 1", "python -c x serve --api-key [...] --port 1"),
    ("serve --api-key=sk-123", "serve --api-key=[...]"),
    ("serve --api-key '[...]' --port 1", "serve --api-key '[...]' --port 1"),
    ("max_total_num_tokens=500000, context_len=32768", "max_total_num_tokens=500000, context_len=32768"),
    ("the key sk-123 leaked", "the key [...] leaked"),
])
def test_redact(line: str, shown: str) -> None:
    assert redact(line, ["sk-123"]) == shown


def test_log_tail_stores_redacted_lines() -> None:
    tail = logfiles.LogTail(secrets=["hunter22"])
    tail.add("password is hunter22")
    tail.add("{'api_key': 'other'}")
    assert tail.lines() == ["password is [...]", "{'api_key': '[...]'}"]


def test_log_follower_handles_partial_lines(tmp_path: Path) -> None:
    p = tmp_path / "log"
    f = logfiles.LogFollower(p)
    assert f.poll() == []  # no file yet
    p.write_bytes(b"one\ntw")
    assert f.poll() == ["one"]
    with open(p, "ab") as fh:
        fh.write(b"o\nthree")
    assert f.poll() == ["two"]
    assert f.flush() == ["three"]
    assert f.tail.lines() == ["one", "two", "three"]
    f.close()


def test_log_follower_reads_a_big_log_in_bounded_pieces(tmp_path: Path) -> None:
    p = tmp_path / "log"
    p.write_bytes(b"".join(b"Prefill batch, #new-seq: 1, #new-token: %d\n" % i for i in range(60_000)))
    f = logfiles.LogFollower(p)
    out = f.poll()
    assert len(out) == 10_000 and out[-1].endswith("#new-token: 59999")
    assert f.tail.lines()[-1].endswith("#new-token: 59999")
    assert f.tail.line_count == 60_000
    f.close()


@pytest.mark.parametrize("host,url", [("127.0.0.1", "http://127.0.0.1:1"), ("0.0.0.0", "http://127.0.0.1:1"),
                                      ("::", "http://[::1]:1"), ("localhost", "http://localhost:1"),
                                      ("10.0.0.5", "http://10.0.0.5:1")])
def test_connect_url(host: str, url: str) -> None:
    assert ports.connect_url(host, 1) == url


def test_launcher_uses_the_one_loopback_test() -> None:
    """ports.py had its own test, which said ``::ffff:127.0.0.1`` and ``a.localhost`` were not loopback."""
    assert net.is_loopback("::ffff:127.0.0.1") and net.is_loopback("a.localhost")
    assert not net.is_loopback("0.0.0.0")


def test_with_no_proxy_keeps_existing_entries() -> None:
    env = launcher.with_no_proxy({"NO_PROXY": "corp.example,localhost", "OTHER": "1"})
    assert env["NO_PROXY"] == env["no_proxy"] == "corp.example,localhost,127.0.0.1,::1"
    assert env["OTHER"] == "1"


def test_busy_port_names_holder_and_a_free_port() -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not ports.port_is_free("127.0.0.1", port)
        assert procfs.port_holder(port) == f"pid {os.getpid()} ({Path('/proc/self/comm').read_text().strip()})"
        with pytest.raises(PortInUse) as exc:
            ports.check_port("127.0.0.1", port)
        assert f"pid {os.getpid()}" in exc.value.message
        assert exc.value.hint is not None
        suggested = int(exc.value.hint.split("`--port ")[1].split("`")[0])
        assert suggested > port and ports.port_is_free("127.0.0.1", suggested)
    assert ports.port_is_free("127.0.0.1", port)
    ports.check_port("127.0.0.1", port)  # no error once free


def test_port_holder_without_psutil_reads_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    """The /proc fallback (no psutil) names the same holder, and nobody for a closed port."""
    monkeypatch.setitem(sys.modules, "psutil", None)  # `import psutil` raises ImportError
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert procfs.port_holder(port) == f"pid {os.getpid()} ({Path('/proc/self/comm').read_text().strip()})"
    assert procfs.port_holder(port) is None


# -- process tests ------------------------------------------------------------------------------


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, object]]:
    """Env for the fake in this process's environment; kills leftovers if a test fails."""
    pidfile = tmp_path / "pids.json"
    ctx: dict[str, object] = {"pidfile": pidfile, "port": harness.free_port(), "log": tmp_path / "sglang.log"}
    for k, v in harness.fake_env(pidfile).items():
        if k.startswith(("FAKE_", "PYTHONPATH")):
            monkeypatch.setenv(k, v)
    yield ctx
    if pidfile.exists():
        harness.kill_leftovers(harness.all_pids(harness.read_pids(pidfile)))


def _spawn(ctx: dict[str, object], monkeypatch: pytest.MonkeyPatch, mode: str, **env: str) -> readiness.Server:
    monkeypatch.setenv("FAKE_SGLANG_MODE", mode)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return launcher.spawn(harness.fake_argv(int(ctx["port"])), host="127.0.0.1", port=int(ctx["port"]),  # type: ignore[call-overload]
                          log_path=ctx["log"], header=["command: test"])  # type: ignore[arg-type]


@pytest.mark.slow
def test_ready_phases_probe_and_clean_stop(fake: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> None:
    server = _spawn(fake, monkeypatch, "ok", FAKE_SGLANG_HEALTH_503="3")
    seen: list[str] = []
    info = server.wait_ready(timeout=30, on_phase=lambda label, t: seen.append(label))
    pids = harness.read_pids(fake["pidfile"])  # type: ignore[arg-type]
    assert os.getpgid(server.pid) == server.pid  # own process group
    assert os.getpgid(pids["children"][0]) == server.pid
    assert pids["env"]["NO_PROXY"].split(",")[-3:] == ["127.0.0.1", "localhost", "::1"]
    labels = {p.key: p.label.format(engine="SGLang") for p in readiness.PHASES}  # the fake runs as SGLang
    assert seen[0] == labels["starting"] and seen[-1] == labels["ready"]
    for key in ("loading", "loaded", "memory_pool", "cuda_graphs", "scheduler", "warming_up", "probe"):
        assert labels[key] in seen
    assert len(seen) == len(set(seen))  # each phase reported once
    assert (info.dimensions, info.context_length) == (2560, 32768)
    assert info.served_model_name == "Qwen/Qwen3-Embedding-4B"
    assert info.url == f"http://127.0.0.1:{fake['port']}"
    rc = server.stop(timeout=10)
    assert rc == 0
    assert "SIGTERM received" in server.log_path.read_text()
    harness.assert_gone(harness.all_pids(pids))


@pytest.mark.slow
def test_exit_before_ready_has_diagnosis_and_group_is_killed(fake: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> None:
    server = _spawn(fake, monkeypatch, "oom")
    with pytest.raises(ServerExited) as exc:
        server.wait_ready(timeout=30)
    pids = harness.read_pids(fake["pidfile"])  # type: ignore[arg-type]
    err = exc.value
    assert err.returncode == -9
    assert "exit code -9" in err.message
    text = "\n".join(err.details)
    assert "torch.OutOfMemoryError: CUDA out of memory" in text
    assert "diagnosis: CUDA out of memory" in text
    assert str(server.log_path) in text
    assert err.hint and "gpu_memory_fraction" in err.hint
    # the "scheduler" child outlives its parent until the group is killed
    assert harness.alive(pids["children"][0])
    server.stop(timeout=5)
    harness.assert_gone(harness.all_pids(pids))


@pytest.mark.slow
def test_hang_raises_not_ready_and_stop_kills(fake: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> None:
    server = _spawn(fake, monkeypatch, "hang")
    t0 = time.monotonic()
    with pytest.raises(NotReady) as exc:
        server.wait_ready(timeout=1.5)
    assert time.monotonic() - t0 < 5
    assert "loading weights" in exc.value.message  # the last phase seen
    pids = harness.read_pids(fake["pidfile"])  # type: ignore[arg-type]
    rc = server.stop(timeout=5)
    assert rc == -signal.SIGTERM  # SIGTERM during load ends SGLang at once
    harness.assert_gone(harness.all_pids(pids))


@pytest.mark.slow
def test_endless_drain_is_cut_by_sigkill(fake: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> None:
    server = _spawn(fake, monkeypatch, "drain-forever")
    server.wait_ready(timeout=30)
    pids = harness.read_pids(fake["pidfile"])  # type: ignore[arg-type]
    t0 = time.monotonic()
    rc = server.stop(timeout=1.0)
    took = time.monotonic() - t0
    assert rc == -signal.SIGKILL
    assert 0.9 <= took < 6
    assert "Draining requests" in server.log_path.read_text()
    harness.assert_gone(harness.all_pids(pids))


@pytest.mark.slow
def test_generator_server_is_refused(fake: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> None:
    server = _spawn(fake, monkeypatch, "not-embedding")
    try:
        with pytest.raises(LaunchError) as exc:
            server.wait_ready(timeout=30)
        assert "not an embedding model" in exc.value.message
        assert exc.value.hint and "--is-embedding" in exc.value.hint
    finally:
        server.stop(timeout=5)


@pytest.mark.slow
def test_api_key_is_sent(fake: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SGLANG_MODE", "ok")
    port = int(fake["port"])  # type: ignore[call-overload]
    server = launcher.spawn(harness.fake_argv(port, "--api-key", "k3y"), host="127.0.0.1", port=port,
                            log_path=fake["log"], api_key="k3y")  # type: ignore[arg-type]
    try:
        assert server.wait_ready(timeout=30).dimensions == 2560
    finally:
        server.stop(timeout=5)
    # without the key the probe is refused (the stand-in enforces --api-key like SGLang)
    harness.assert_gone(harness.all_pids(harness.read_pids(fake["pidfile"])))  # type: ignore[arg-type]
    fake["pidfile"].unlink()  # type: ignore[attr-defined]
    server = launcher.spawn(harness.fake_argv(port, "--api-key", "k3y"), host="127.0.0.1", port=port,
                            log_path=fake["log"])  # type: ignore[arg-type]
    try:
        with pytest.raises(LaunchError, match="401"):
            server.wait_ready(timeout=30)
    finally:
        server.stop(timeout=5)


def test_missing_interpreter_is_a_launch_error(tmp_path: Path) -> None:
    with pytest.raises(LaunchError) as exc:
        launcher.spawn([str(tmp_path / "no-python"), "-c", "pass"], host="127.0.0.1", port=1,
                       log_path=tmp_path / "l.log")
    assert "--python" in (exc.value.hint or "")


# -- readiness proves the listener is this SGLang (issue 9 §4) ------------------------------------


def test_port_owned_by_names_the_listening_process() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert procfs.port_owned_by(port, [os.getpid()]) is True
        assert procfs.port_owned_by(port, [os.getppid()]) is False
    assert procfs.port_owned_by(port, [os.getpid()]) is False  # closed: nobody holds it


@pytest.mark.slow
def test_another_server_on_the_port_is_never_taken_as_ready(fake: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> None:
    """Real SGLang binds only after loading: a server that took the port meanwhile answers
    /health 200 and embeddings (here with 1024-d vectors). That must not be "ready"."""
    from tests.standin.server import StandinConfig, serve_in_thread

    port = int(fake["port"])  # type: ignore[call-overload]
    server = _spawn(fake, monkeypatch, "port-stolen", FAKE_SGLANG_LOAD_DELAY="2", FAKE_SGLANG_BUSY_LINGER="30")
    try:
        harness.read_pids(fake["pidfile"])  # type: ignore[arg-type]  # the fake is "loading"
        with serve_in_thread(StandinConfig(dim=1024), port=port) as other:
            seen: list[str] = []
            t0 = time.monotonic()
            with pytest.raises(PortInUse) as exc:
                server.wait_ready(timeout=30, on_phase=lambda label, t: seen.append(label))
            assert time.monotonic() - t0 < 20  # at SGLang's bind failure, not after its linger
            assert other.requests == []  # no probe embedding went to the other server
        assert server.proc.poll() is None  # SGLang lingers, as the real one does for minutes
        err = exc.value
        assert err.exit_code == 2
        assert f"held by pid {os.getpid()}" in err.message
        assert "[Errno 98]" in "\n".join(err.details)
        assert any(f"port {port} is held by pid {os.getpid()}" in label for label in seen)
        assert "checking an embedding" not in seen and "ready" not in seen
    finally:
        server.stop(timeout=5)
    harness.assert_gone(harness.all_pids(harness.read_pids(fake["pidfile"])))  # type: ignore[arg-type]


def test_failure_summary_cuts_server_args_to_key_fields() -> None:
    line = next(x for x in (Path(__file__).parent / "logs" / "cuda_oom.log").read_text().splitlines() if "server_args=" in x)
    long_line = line[:-1] + ", " + ", ".join(f"opt_{i}=None" for i in range(150)) + ", api_key='sk-1')"
    tail = logfiles.LogTail(max_bytes=64 * 1024)
    tail.add(long_line)
    tail.add("torch.OutOfMemoryError: CUDA out of memory.")
    details, _, _ = readiness.failure_details(tail, profile=None, returncode=-9, log_path=None)
    shown = next(d for d in details if "server_args=" in d)
    assert len(long_line) > 2000 and len(shown) < 300
    assert "model_path='Qwen/Qwen3-Embedding-4B'" in shown and "port=30000" in shown
    assert "mem_fraction_static=0.9" in shown and "api_key" not in shown and "opt_7" not in shown
    assert "(9 of 164 fields shown)" in shown
    assert logfiles.summarize_server_args("no args here") == "no args here"
