"""`qembed top` end to end: the stand-in exposes SGLang's real metric names, the real smg
gateway runs in front of it, and the Prometheus text parser is checked on its own."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from qembed.errors import ConfigError, ServerError, ServerUnreachable
from qembed.fleet import top
from qembed.metrics import Scrape, bucket_delta, histogram_quantile, parse_text
from tests.fake_site import harness
from tests.helpers.paths import REPO
from tests.standin.server import Fault, StandinConfig, serve_in_thread

SMG = Path(sys.executable).parent / "smg"


def embed(url: str, n: int, text: str = "one two three") -> None:
    with httpx.Client(trust_env=False, timeout=30) as c:
        for _ in range(n):
            c.post(f"{url}/v1/embeddings", json={"input": [text]})


def scrape(url: str) -> Scrape:
    return top.fetch(top.metrics_url(url))


# -- the parser -------------------------------------------------------------------------------


def test_parser_reads_labels_escapes_specials_and_timestamps() -> None:
    text = (
        "# HELP x A help line with {braces}\n"
        "# TYPE x counter\n"
        'x{a="1",b="q\\"uote\\\\ back\\nnl"} 3.5\n'
        "y NaN\n"
        'z_bucket{le="+Inf"} +Inf 1700000000000\n'
        'w{a="x",} -2e-3\n'
        "\n"
    )
    s = parse_text(text)
    assert [x.name for x in s] == ["x", "y", "z_bucket", "w"]
    assert dict(s[0].labels) == {"a": "1", "b": 'q"uote\\ back\nnl'} and s[0].value == 3.5
    assert math.isnan(s[1].value) and s[2].value == math.inf and s[3].value == -0.002


@pytest.mark.parametrize("bad", ["x{a=1} 2", 'x{a="1"', "x", "x 1 2 3", "x abc", '9x 1', 'x{a="\\q"} 1',
                                 "x 1 notatime"])
def test_parser_rejects_malformed_lines(bad: str) -> None:
    with pytest.raises(ValueError, match="line 2"):
        parse_text("ok 1\n" + bad + "\n")


def test_histogram_quantile_matches_prometheus() -> None:
    b = {0.1: 0.0, 0.2: 10.0, math.inf: 10.0}
    assert histogram_quantile(0.5, b) == pytest.approx(0.15)
    assert histogram_quantile(0.99, b) == pytest.approx(0.1 + 0.1 * 9.9 / 10)
    assert histogram_quantile(0.5, {1.0: 5.0, math.inf: 10.0}) == pytest.approx(1.0)
    assert histogram_quantile(0.99, {1.0: 5.0, math.inf: 10.0}) == 1.0  # +Inf bucket -> largest finite bound
    assert histogram_quantile(0.5, {1.0: 0.0, math.inf: 0.0}) is None
    assert bucket_delta({1.0: 5.0, math.inf: 7.0}, {1.0: 2.0, math.inf: 8.0}) == {1.0: 3.0, math.inf: 7.0}


# -- a worker (the stand-in) -------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["sglang:", "sglang_"])
def test_worker_numbers_end_to_end(prefix: str) -> None:
    cfg = StandinConfig(dim=8, metrics=True, metrics_prefix=prefix, queue_reqs=3, running_reqs=2,
                        token_usage=0.25, faults=[Fault("status", count=2, status=503)])
    with serve_in_thread(cfg) as srv:
        w = top.Watcher([srv.url], gpus=False)
        (first,) = w.refresh()
        assert first.ok and first.kind == "worker" and first.requests_per_s is None  # one scrape: no rate yet
        embed(srv.url, 12)  # 2 answered 503 by the fault, 10 embedded (4 tokens each, EOS included)
        (s,) = w.refresh()
    assert s.ok and s.kind == "worker"
    assert s.requests_total == 12
    dt = s.interval_s
    assert dt is not None and dt > 0
    assert s.requests_per_s == pytest.approx(12 / dt)
    assert s.tokens_per_s == pytest.approx(40 / dt)
    assert s.errors_per_s == pytest.approx(2 / dt)
    assert (s.queue, s.running, s.kv_usage) == (3, 2, 0.25)
    # the stand-in answers in well under 100 ms: every percentile lies in SGLang's first bucket
    for q in (s.p50_s, s.p95_s, s.p99_s):
        assert q is not None and 0 < q <= 0.1
    assert s.p50_s <= s.p95_s <= s.p99_s  # type: ignore[operator]


def test_metrics_off_is_a_clear_error() -> None:
    with serve_in_thread(StandinConfig(dim=8, metrics=False)) as srv:
        with pytest.raises(ServerError, match="404") as info:
            scrape(srv.url)
        assert "metrics: true" in (info.value.hint or "")
        (row,) = top.Watcher([srv.url], gpus=False).refresh()
    assert not row.ok and "404" in (row.error or "")


def test_unreachable_and_bad_urls() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ServerUnreachable):
        scrape(f"http://127.0.0.1:{port}")
    with pytest.raises(ConfigError):
        top.metrics_url("ftp://localhost:30000")
    assert top.metrics_url("localhost:30000") == "http://localhost:30000/metrics"  # as the client takes it
    assert top.metrics_url("http://h:1") == "http://h:1/metrics"
    assert top.metrics_url("http://h:29000/metrics") == "http://h:29000/metrics"
    with pytest.raises(ConfigError):
        top.check_interval(0.2)


def test_cli_once_json_and_table() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QEMBED_URL")}
    with serve_in_thread(StandinConfig(dim=8, metrics=True, running_reqs=1)) as srv:
        embed(srv.url, 3)
        proc = subprocess.run([sys.executable, "-m", "qembed", "top", "--url", srv.url, "--once", "--json",
                               "--interval", "1"], capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
        table = subprocess.run([sys.executable, "-m", "qembed", "top", "--url", srv.url, "--once", "--interval", "1"],
                               capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)
    assert row["kind"] == "worker" and row["requests_total"] == 3 and row["running"] == 1
    assert table.returncode == 0 and "req/s" in table.stdout and "worker" in table.stdout


def test_cli_once_against_nothing_exits_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run([sys.executable, "-m", "qembed", "top", "--url", f"http://127.0.0.1:{port}", "--once",
                           "--json", "--interval", "1"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 7 and proc.stderr.startswith("error: cannot reach") and proc.stdout == ""


# -- the real smg gateway ----------------------------------------------------------------------


@pytest.fixture
def gateway() -> Iterator[tuple[str, str]]:
    assert SMG.exists(), f"smg is not installed at {SMG}"
    with serve_in_thread(StandinConfig(dim=8, metrics=True)) as srv:
        port, mport = harness.free_port(), harness.free_port()
        proc = subprocess.Popen([str(SMG), "launch", "--worker-urls", srv.url, "--policy", "round_robin",
                                 "--host", "127.0.0.1", "--port", str(port), "--prometheus-port", str(mport),
                                 "--prometheus-host", "127.0.0.1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            url = f"http://127.0.0.1:{port}"
            # smg answers /health before it has registered the worker (an embedding gets 404
            # until then): ready means an embedding goes through, as `qembed gateway` waits
            body = {"model": "Qwen/Qwen3-Embedding-4B", "input": ["ready?"]}
            while True:
                assert proc.poll() is None, "smg exited"
                try:
                    if httpx.post(f"{url}/v1/embeddings", json=body, timeout=5, trust_env=False).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "smg did not route an embedding in 60 s"
                time.sleep(0.2)
            yield url, f"http://127.0.0.1:{mport}"
        finally:
            harness.terminate(proc)


@pytest.mark.slow
def test_gateway_numbers_end_to_end(gateway: tuple[str, str]) -> None:
    url, metrics = gateway
    w = top.Watcher([metrics], gpus=False)
    (first,) = w.refresh()
    assert first.ok and first.kind == "gateway", first.error
    with httpx.Client(trust_env=False, timeout=30) as c:
        for _ in range(5):
            r = c.post(f"{url}/v1/embeddings", json={"model": "Qwen/Qwen3-Embedding-4B", "input": ["a b"]})
            assert r.status_code == 200
    (s,) = w.refresh()
    assert s.kind == "gateway" and s.workers == 1 and s.healthy_workers == 1
    assert s.requests_per_s is not None and s.requests_per_s > 0
    assert s.requests_total is not None and s.requests_total >= 5
    assert s.p50_s is not None and s.p99_s is not None and s.p50_s <= s.p99_s
    assert s.tokens_per_s is None and s.queue is None  # the gateway does not count them


@pytest.mark.parametrize("argv", [["top", "--help"], ["deploy", "--help"], ["deploy", "k8s", "--help"],
                                  ["deploy", "docker", "--help"]])
def test_help_stays_light(argv: list[str]) -> None:
    from tests.helpers.startup import run_help

    _, loaded = run_help(argv)
    # Typer itself imports pydantic for a subcommand's parameters (see tests/test_startup.py)
    assert [m for m in loaded if m != "pydantic"] == []


def test_local_gpus_from_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from tests import fake_nvml

    fake = fake_nvml.install(monkeypatch, "a100")
    monkeypatch.setattr(fake, "nvmlDeviceGetUtilizationRates", lambda h: SimpleNamespace(gpu=37, memory=12),
                        raising=False)
    (g,) = top.local_gpus()
    assert g.utilization_pct == 37.0 and g.name.startswith("NVIDIA A100")
    assert 0 < g.memory_used < g.memory_total
    with serve_in_thread(StandinConfig(dim=8, metrics=True)) as srv:
        (row,) = top.Watcher([srv.url]).refresh()  # a 127.0.0.1 server: the local GPUs are shown
        assert [x.utilization_pct for x in row.gpus] == [37.0]
        (remote,) = top.Watcher([srv.url.replace("127.0.0.1", "localhost")], gpus=False).refresh()
        assert remote.gpus == []
    monkeypatch.delattr(fake, "nvmlDeviceGetUtilizationRates")
    (g2,) = top.local_gpus()
    assert g2.utilization_pct is None  # NVML without the call: unknown, not an error


def test_no_gpu_means_no_gpu_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests import fake_nvml

    fake_nvml.install(monkeypatch, "no-driver")
    assert top.local_gpus() == []
