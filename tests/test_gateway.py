"""`qembed gateway`: the REAL smg 1.13 binary in front of stand-in workers on loopback.

Workers are `python -m tests.standin.server` processes, so "a worker dies" is a real process
exit (SIGKILL, or the stand-in's `die_after`), and "comes back" is a new process on the same
port. Every wait is a condition with a deadline (tests/fake_site/harness.py).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from qembed.client.drivers import Client
from qembed.errors import ConfigError, QembedError, ServerUnreachable
from qembed.net import PROXY_VARS
from qembed.serving import gateway
from tests.fake_site import harness
from tests.standin.server import HashBackend

REPO = harness.REPO
DIM = 64
MODEL = "Qwen/Qwen3-Embedding-4B"

pytestmark = pytest.mark.slow  # spawns smg and stand-in worker processes


class Worker:
    """One stand-in SGLang server in its own process (restartable on the same port)."""

    def __init__(self, port: int | None = None, **config: Any) -> None:
        self.port = port or harness.free_port()
        self.config = {"dim": DIM, "metrics": True, **config}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, **config: Any) -> Worker:
        cfg = {**self.config, **config}
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.standin.server", "--port", str(self.port), "--config", json.dumps(cfg)],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        harness.wait_until(self._answers, timeout=20, what=f"stand-in worker on {self.port}")
        return self

    def _answers(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, "the stand-in worker exited"
        try:
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def served(self) -> int:
        """Embedding requests this worker process has answered (its /metrics counter)."""
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        m = re.search(r"sglang:num_requests_total\{[^}]*\} (\d+)", text)
        assert m, text
        return int(m.group(1))


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    made: list[Worker] = []
    yield made
    for w in made:
        w.kill()


def start_workers(made: list[Worker], n: int, **config: Any) -> list[Worker]:
    for _ in range(n):
        made.append(Worker(**config))  # listed first: the fixture kills it even if start fails
        made[-1].start()
    return made[-n:]


class Gateway:
    def __init__(self, tmp: Path, urls: list[str], *, api_key: str | None = None, policy: str = "round_robin") -> None:
        gateway.require_smg()
        self.server = gateway.start_gateway(urls, host="127.0.0.1", port=harness.free_port(), policy=policy,
                                            api_key=api_key, log_path=tmp / "smg.log",
                                            metrics_port=harness.free_port(), health_interval=1, ready_timeout=60)
        self.url = self.server.url

    def stop(self) -> None:
        pid = self.server.pid
        self.server.stop(timeout=5)
        harness.assert_gone([pid])

    def healthy(self) -> set[str]:
        return {w.url for w in gateway.worker_health(self.url, api_key=self.server.admin_key) if w.healthy}


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[list[Gateway]]:
    made: list[Gateway] = []
    yield made
    for g in made:
        g.stop()


def up(gw: list[Gateway], tmp: Path, urls: list[str], **kw: Any) -> Gateway:
    g = Gateway(tmp, urls, **kw)
    gw.append(g)
    gateway.wait_gateway(g.server, timeout=60, min_healthy=len(urls))
    return g


def embed(url: str, texts: list[str], **body: Any) -> httpx.Response:
    return httpx.post(f"{url}/v1/embeddings", json={"model": MODEL, "input": texts, **body}, timeout=30)


def ref(texts: list[str], dim: int = DIM) -> np.ndarray:
    return np.array(HashBackend(dim).embed(texts), dtype=np.float32)


# -- flags, probing, bad input ---------------------------------------------------------------------


def test_flags_pass_smg_own_parser() -> None:
    from smg.launch_router import parse_router_args

    flags = gateway.gateway_flags(["http://127.0.0.1:1", "http://127.0.0.1:2"], host="127.0.0.1", port=30000,
                                  policy="power_of_two", metrics_port=29001)
    args = parse_router_args(flags[1:])  # smg's own argparse: exits 2 on an unknown flag
    assert args.worker_urls == ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    assert args.policy == "power_of_two" and args.host == "127.0.0.1" and args.prometheus_host == "127.0.0.1"
    for policy in gateway.POLICIES:  # every policy qembed offers is one smg accepts
        assert parse_router_args(gateway.gateway_flags(["http://h:1"], host="h", port=1, policy=policy)[1:]).policy == policy
    with pytest.raises(ConfigError, match="cache_aware"):
        gateway.gateway_flags(["http://h:1"], host="h", port=1, policy="cache_aware")


def test_api_key_never_on_the_command_line() -> None:
    argv = gateway.gateway_argv(gateway.gateway_flags(["http://h:1"], host="h", port=1))
    assert "--api-key" not in argv[3:]  # only the entry code mentions it; the value comes from env


def test_unreachable_worker_is_refused_with_its_url(workers: list[Worker]) -> None:
    (good,) = start_workers(workers, 1)
    dead = f"http://127.0.0.1:{harness.free_port()}"
    with pytest.raises(ServerUnreachable) as exc:
        gateway.probe_workers([good.url, dead], timeout=3)
    assert dead in exc.value.message


def test_non_embedding_server_is_refused_with_its_url(workers: list[Worker]) -> None:
    (gen,) = start_workers(workers, 1, is_embedding=False)
    with pytest.raises(ConfigError) as exc:
        gateway.probe_workers([gen.url])
    assert gen.url in exc.value.message and "generator" in exc.value.message


def test_a_server_that_is_no_embedding_server_at_all_is_refused(tmp_path: Path) -> None:
    import http.server
    import threading

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        with pytest.raises(ConfigError) as exc:
            gateway.probe_workers([url])
    finally:
        srv.shutdown()
        srv.server_close()
    assert url in exc.value.message and "not an embedding server" in exc.value.message


@pytest.mark.parametrize("other", [{"dim": DIM * 2}, {"model": "Qwen/Qwen3-Embedding-0.6B"}])
def test_mismatched_workers_are_refused(workers: list[Worker], other: dict[str, Any]) -> None:
    a = start_workers(workers, 1)[0]
    b = start_workers(workers, 1, **other)[0]
    with pytest.raises(ConfigError, match="must not mix vector spaces") as exc:
        gateway.probe_workers([a.url, b.url])
    assert any(b.url in d for d in exc.value.details)


def test_missing_smg_names_the_install_command(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from qembed.cli import main

    monkeypatch.setattr(gateway, "smg_available", lambda: False)
    monkeypatch.setattr(sys, "argv", ["qembed", "gateway", "--worker", "http://127.0.0.1:9"])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    assert "pip install 'qembed[gateway]'" in capsys.readouterr().err


# -- through the real gateway ----------------------------------------------------------------------


def test_clients_work_unchanged_through_the_gateway(tmp_path: Path, workers: list[Worker], gw: list[Gateway]) -> None:
    import openai

    ws = start_workers(workers, 2)
    g = up(gw, tmp_path, [w.url for w in ws])
    texts = [f"text number {i}" for i in range(50)]
    with Client(g.url, batch_size=4, concurrency=4) as client:  # 13 requests
        vecs = client.embed(texts)
        small = client.embed(texts[:5], dimensions=32)
    np.testing.assert_allclose(vecs, ref(texts), atol=1e-6)  # order kept across workers
    full = ref(texts[:5])[:, :32]
    np.testing.assert_allclose(small, full / np.linalg.norm(full, axis=1, keepdims=True), atol=1e-6)
    assert all(w.served() >= 5 for w in ws), "round_robin used both workers"

    oa = openai.OpenAI(base_url=f"{g.url}/v1", api_key="none")
    r = oa.embeddings.create(model=MODEL, input=texts[:3])  # the SDK asks for base64 itself
    np.testing.assert_allclose(np.array([d.embedding for d in r.data]), ref(texts[:3]), atol=1e-6)
    assert [d.index for d in r.data] == [0, 1, 2]
    assert r.usage.prompt_tokens == sum(len(t.split()) + 1 for t in texts[:3])
    r = oa.embeddings.create(model=MODEL, input=texts[:2], dimensions=32, encoding_format="float")
    assert [len(d.embedding) for d in r.data] == [32, 32]


def test_api_key_from_env_is_enforced_and_forwarded(tmp_path: Path, workers: list[Worker], gw: list[Gateway]) -> None:
    ws = start_workers(workers, 2, api_key="s3cret")
    infos = gateway.probe_workers([w.url for w in ws], api_key="s3cret")
    g = up(gw, tmp_path, [i.url for i in infos], api_key="s3cret")
    assert "s3cret" not in " ".join(Path(f"/proc/{g.server.pid}/cmdline").read_text().split("\0"))
    ok = httpx.post(f"{g.url}/v1/embeddings", json={"model": MODEL, "input": ["a"]},
                    headers={"Authorization": "Bearer s3cret"}, timeout=30)
    assert ok.status_code == 200, ok.text
    assert embed(g.url, ["a"]).status_code == 401


def test_a_client_key_cannot_register_a_worker(tmp_path: Path, workers: list[Worker], gw: list[Gateway]) -> None:
    """Issue 20: with `--api-key` alone, smg 1.13 answered 202 to `POST /workers` with the client
    key. The real smg, started by qembed, must keep its control plane to the admin key."""
    (w,) = start_workers(workers, 1, api_key="client-key")
    g = up(gw, tmp_path, [w.url], api_key="client-key")
    admin = g.server.admin_key
    assert admin and admin != "client-key"
    intruder = {"url": f"http://127.0.0.1:{harness.free_port()}"}
    for key in ("client-key", None, "wrong"):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        r = httpx.post(f"{g.url}/workers", json=intruder, headers=headers, timeout=10)
        assert r.status_code == 401, (key, r.status_code, r.text)
        assert httpx.get(f"{g.url}/workers", headers=headers, timeout=10).status_code == 401
    # the admin key manages workers, but cannot embed: the two keys do not overlap
    assert httpx.get(f"{g.url}/workers", headers={"Authorization": f"Bearer {admin}"}, timeout=10).status_code == 200
    assert httpx.post(f"{g.url}/v1/embeddings", json={"model": MODEL, "input": ["a"]},
                      headers={"Authorization": f"Bearer {admin}"}, timeout=30).status_code == 401
    assert httpx.post(f"{g.url}/v1/embeddings", json={"model": MODEL, "input": ["a"]},
                      headers={"Authorization": "Bearer client-key"}, timeout=30).status_code == 200
    cmdline = " ".join(Path(f"/proc/{g.server.pid}/cmdline").read_text().split("\0"))
    assert admin not in cmdline and "client-key" not in cmdline  # both keys travel in memory
    assert admin not in (tmp_path / "smg.log").read_text()


def test_a_keyless_loopback_gateway_still_closes_its_control_plane(
        tmp_path: Path, workers: list[Worker], gw: list[Gateway]) -> None:
    (w,) = start_workers(workers, 1)
    g = up(gw, tmp_path, [w.url])
    assert httpx.post(f"{g.url}/workers", json={"url": "http://127.0.0.1:1"}, timeout=10).status_code == 401
    assert embed(g.url, ["a"]).status_code == 200


def test_admin_key_must_differ_from_the_client_key() -> None:
    with pytest.raises(ConfigError, match="equals the client key"):
        gateway.admin_key("same", "same")
    assert gateway.admin_key("k", "a:b") == "a:b"  # smg's parser keeps `:` in the key
    assert gateway.admin_key("k", None) != gateway.admin_key("k", None)  # random per run
    assert gateway.admin_key("k", "other") == "other"


def test_dead_worker_traffic_moves_and_a_returning_worker_is_used_again(
        tmp_path: Path, workers: list[Worker], gw: list[Gateway]) -> None:
    a, b = start_workers(workers, 2)
    g = up(gw, tmp_path, [a.url, b.url])
    texts = [f"t{i}" for i in range(40)]
    a.kill()
    # at once, before the health check notices: the client's retries and smg's cover it
    with Client(g.url, batch_size=2, concurrency=2) as client:
        np.testing.assert_allclose(client.embed(texts), ref(texts), atol=1e-6)
    harness.wait_until(lambda: g.healthy() == {b.url}, timeout=30, what="the gateway to mark the dead worker unhealthy")
    before = b.served()
    for i in range(6):
        assert embed(g.url, [f"x{i}"]).status_code == 200
    assert b.served() - before == 6, "every request went to the live worker"

    a.start()  # back on the same port
    harness.wait_until(lambda: g.healthy() == {a.url, b.url}, timeout=30, what="the worker to be healthy again")
    for i in range(6):
        assert embed(g.url, [f"y{i}"]).status_code == 200
    assert a.served() >= 2, "the returning worker gets traffic again"


def test_all_workers_gone_is_a_clear_error(tmp_path: Path, workers: list[Worker], gw: list[Gateway]) -> None:
    ws = start_workers(workers, 2)
    g = up(gw, tmp_path, [w.url for w in ws])
    for w in ws:
        w.kill()
    harness.wait_until(lambda: not g.healthy(), timeout=30, what="every worker to be unhealthy")
    with Client(g.url, max_retries=1, backoff=0.05) as client, pytest.raises(QembedError) as exc:
        client.embed(["hello"])
    text = f"{exc.value.message} {exc.value.hint or ''}"
    assert "503" in text and "All workers are unavailable" in text, text


def _run_bulk(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=180,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO)


def test_bulk_resume_across_worker_failure(tmp_path: Path, workers: list[Worker], gw: list[Gateway]) -> None:
    from qembed.client.bulk import journal_path

    # Both workers crash mid-job (after 6 requests each): the job stops with an error, its
    # journal keeps the finished chunks; one worker comes back and --resume completes it.
    a, b = start_workers(workers, 2, die_after=6)
    g = up(gw, tmp_path, [a.url, b.url])
    texts = [f"row {i}" for i in range(200)]
    inp, out = tmp_path / "in.txt", tmp_path / "out.npy"
    inp.write_text("".join(t + "\n" for t in texts))
    argv = [sys.executable, "-m", "qembed", "embed", "--input", str(inp), "--output", str(out), "--url", g.url,
            "--chunk-rows", "10", "--batch-size", "5", "--concurrency", "1", "--json"]
    first = _run_bulk(argv)
    assert first.returncode != 0, first.stdout
    assert "Traceback" not in first.stderr and "error:" in first.stderr
    assert journal_path(out).exists()
    harness.wait_until(lambda: a.proc is not None and a.proc.poll() is not None
                       and b.proc is not None and b.proc.poll() is not None, timeout=30, what="both workers to die")
    b.start(die_after=None)
    harness.wait_until(lambda: b.url in g.healthy(), timeout=30, what="the worker to come back")
    second = _run_bulk([*argv, "--resume"])
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout)
    assert summary["rows"] == 200 and summary["chunks_resumed"] >= 1
    np.testing.assert_allclose(np.load(out), ref(texts), atol=1e-6)
    assert not journal_path(out).exists()


def test_gateway_cli_shows_worker_health_and_stop_leaves_nothing(tmp_path: Path, workers: list[Worker]) -> None:
    ws = start_workers(workers, 2)
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1", "QEMBED_GATEWAY_ADMIN_KEY": "adm1n"}
    port = harness.free_port()
    r = harness.run_qembed(["gateway", "--worker", ws[0].url, "--worker", ws[1].url, "--port", str(port),
                            "--metrics-port", str(harness.free_port()), "--detach", "--json", "--name", "gw"], env,
                           timeout=90)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    # ready means at least one healthy worker (smg checks the others on its own schedule); what
    # it shows is each worker it knows and whether it is healthy
    assert info["healthy_workers"] >= 1
    assert {w["url"] for w in info["workers"]} <= {w.url for w in ws}
    assert info["healthy_workers"] == sum(w["healthy"] for w in info["workers"])
    pid = info["pid"]
    try:
        deadline = time.monotonic() + 60
        while sum(w.healthy for w in gateway.worker_health(f"http://127.0.0.1:{port}", api_key="adm1n")) < 2:
            assert time.monotonic() < deadline, "smg did not count both workers healthy in 60 s"
            time.sleep(0.2)
        assert embed(f"http://127.0.0.1:{port}", ["hi"]).status_code == 200
        ps = json.loads(harness.run_qembed(["ps", "--json"], env).stdout)
        assert [(p["name"], p["role"], p["status"]) for p in ps] == [("gw", "gateway", "ready")]
        stop = harness.run_qembed(["stop", "gw"], env)
        assert stop.returncode == 0, stop.stderr
        harness.assert_gone([pid])
    finally:
        harness.kill_leftovers([pid])


def test_no_key_on_a_network_address_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="without an API key"):
        gateway.start_gateway(["http://127.0.0.1:9"], host="0.0.0.0", port=harness.free_port(),
                              log_path=tmp_path / "smg.log")
    assert not (tmp_path / "smg.log").exists()  # nothing was started


def test_cli_refuses_a_dead_worker_with_error_and_hint() -> None:
    dead = f"http://127.0.0.1:{harness.free_port()}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
    r = harness.run_qembed(["gateway", "--worker", dead, "--port", str(harness.free_port())], env)
    assert r.returncode == 7, r.stderr  # ExitCode.UNREACHABLE
    assert f"error: worker `{dead}` does not answer" in r.stderr and "hint:" in r.stderr
    assert "Traceback" not in r.stderr


def test_smg_gets_no_proxy_variables(tmp_path: Path, workers: list[Worker], gw: list[Gateway],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 19, finding 8: worker traffic (the key and every document) never goes through a proxy."""
    (w,) = start_workers(workers, 1)
    for name in PROXY_VARS:
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens: a proxied request fails
    g = up(gw, tmp_path, [w.url])
    with httpx.Client(trust_env=False) as http:  # this test's own request goes direct
        r = http.post(f"{g.url}/v1/embeddings", json={"model": MODEL, "input": ["through the gateway"]}, timeout=30)
    assert r.status_code == 200, r.text  # smg reached the worker without the (dead) proxy


def test_the_gateway_child_environment_has_no_proxy_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The mechanism of finding 8: start_gateway hands launcher.spawn the proxy names to drop."""
    from qembed.serving import launcher

    for name in PROXY_VARS:
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    real_spawn = launcher.spawn

    def spawn(argv: Any, **kw: Any) -> Any:  # run a child that writes its environment instead of smg
        return real_spawn([sys.executable, "-c", "import os; print(sorted(os.environ))"], **kw)

    monkeypatch.setattr(launcher, "spawn", spawn)
    monkeypatch.setattr(gateway, "require_smg", lambda: None)
    server = gateway.start_gateway(["http://10.0.0.5:30000"], host="127.0.0.1", port=harness.free_port(),
                                   log_path=tmp_path / "smg.log", metrics_port=harness.free_port())
    assert server.proc.wait(timeout=30) == 0
    server.stop(timeout=5)  # reaps the log watcher too
    log = (tmp_path / "smg.log").read_text()
    assert "HOME" in log or "PATH" in log
    assert not [n for n in PROXY_VARS if f"'{n}'" in log], log
