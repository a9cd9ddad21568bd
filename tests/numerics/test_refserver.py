"""`qembed serve --profile cpu`: the reference engine as a server, run for real as subprocesses.

One server for the module: `qembed serve --profile cpu --model TINY --detach --verify` with a fake
NVML that finds no driver (so the GPU check must be skipped) and an API key. Then the HTTP API
is checked against the transformers recipe, and `ps` / `stop` manage it like an SGLang server.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from qembed.errors import ExitCode
from qembed.fleet.verify import verify
from qembed.fleet.verify_texts import TEXTS
from qembed.reference.engine import ReferenceEngine
from tests.fake_site import harness
from tests.numerics.reference import Reference, assert_matches, truncate_normalise
from tests.numerics.texts import DOCUMENTS, MIXED, QUERIES
from tests.numerics.tiny_model import TinyModel

pytestmark = pytest.mark.slow

KEY = "s3cret-key-value"


@dataclass
class CpuServer:
    url: str
    env: dict[str, str]
    ready_out: str
    ready_err: str
    pid: int


def _qembed(args: list[str], env: dict[str, str], timeout: float = 240.0) -> subprocess.CompletedProcess[str]:
    return harness.run_qembed(args, env, timeout=timeout)


@pytest.fixture(scope="module")
def cpu_server(tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CpuServer]:
    tmp = tmp_path_factory.mktemp("cpu-serve")
    env = harness.fake_env(tmp / "pids.json", QEMBED_FAKE_NVML="no-driver", QEMBED_STATE_DIR=str(tmp / "state"),
                           QEMBED_API_KEY=KEY, HF_HUB_OFFLINE="1")
    port = harness.free_port()
    r = _qembed(["serve", "--profile", "cpu", "--model", str(tiny_model.path), "--port", str(port),
                 "--detach", "--name", "ref", "--verify"], env)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = json.loads(_qembed(["ps", "--json"], env).stdout)
    assert [(x["name"], x["status"]) for x in rows] == [("ref", "ready")]
    srv = CpuServer(f"http://127.0.0.1:{port}", env, r.stdout, r.stderr, int(rows[0]["pid"]))
    try:
        yield srv
    finally:
        stop = _qembed(["stop", "ref", "--timeout", "10"], env)
        assert stop.returncode == 0, stop.stderr
        harness.assert_gone([srv.pid])


def _post(srv: CpuServer, body: dict[str, Any], *, key: str | None = KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{srv.url}/v1/embeddings", json=body, headers=headers, timeout=120, trust_env=False)


def _rows(reply: dict[str, Any]) -> np.ndarray:
    out = []
    for pos, item in enumerate(reply["data"]):
        assert item["index"] == pos
        emb = item["embedding"]
        out.append(np.frombuffer(base64.b64decode(emb), dtype="<f4") if isinstance(emb, str)
                   else np.asarray(emb, dtype=np.float32))
    return np.stack(out).astype(np.float32)


def test_serve_profile_cpu_starts_without_a_gpu_and_passes_verify(cpu_server: CpuServer) -> None:
    out, err = cpu_server.ready_out, cpu_server.ready_err
    assert "vector size:    64" in out
    # issue 23 item 6: the engine that runs is named, and the size it gives
    assert "this server gives 64-d vectors" in err and "4B" not in err
    assert "] starting the reference engine" in err and "SGLang" not in err
    assert "The reference engine sends little-endian float32" in out and "SGLang" not in out
    assert "not production" in err and "texts/s" in err
    assert "verify: PASS" in err and f"over {len(TEXTS)} texts, fp32 tolerance" in err


def test_the_api_matches_the_transformers_recipe(cpu_server: CpuServer, reference: Reference,
                                                  tiny_model: TinyModel) -> None:
    floats = _post(cpu_server, {"input": DOCUMENTS, "model": "x"})
    assert floats.status_code == 200, floats.text
    reply = floats.json()
    assert_matches(_rows(reply), reference.encode_documents(DOCUMENTS), label="cpu server docs float")
    tokens = sum(len(reference.tokenizer(d)["input_ids"]) for d in DOCUMENTS)  # EOS included
    assert reply["usage"]["prompt_tokens"] == reply["usage"]["total_tokens"] == tokens
    assert reply["model"] == str(tiny_model.path)
    b64 = _post(cpu_server, {"input": DOCUMENTS, "encoding_format": "base64"}).json()
    assert np.array_equal(_rows(b64), _rows(reply))
    cut = _post(cpu_server, {"input": DOCUMENTS, "dimensions": 32}).json()
    assert_matches(_rows(cut), truncate_normalise(reference.encode_documents(DOCUMENTS), 32),
                   label="cpu server d=32")
    # token ids are used as given (no EOS appended, as SGLang): ids with the EOS equal the text
    ids = [reference.tokenizer(d)["input_ids"] for d in DOCUMENTS[:4]]
    by_ids = _post(cpu_server, {"input": ids}).json()
    assert_matches(_rows(by_ids), reference.encode_documents(DOCUMENTS[:4]), label="cpu server ids")


def test_concurrent_requests_are_batched_and_keep_their_order(cpu_server: CpuServer, reference: Reference) -> None:
    batches = [MIXED[i::4] for i in range(4)] + [QUERIES, DOCUMENTS[::-1]]
    with ThreadPoolExecutor(len(batches)) as pool:
        replies = list(pool.map(lambda b: _post(cpu_server, {"input": b}), batches))
    for batch, resp in zip(batches, replies, strict=True):
        assert resp.status_code == 200, resp.text
        assert_matches(_rows(resp.json()), reference.encode(batch), label="cpu server concurrent")


@pytest.mark.parametrize("body,status,message", [
    ({"input": "   "}, 400, "Input cannot be empty or whitespace only"),
    ({"input": ["ok", ""]}, 400, "Input at index 1 cannot be empty"),
    ({"input": "a", "dimensions": 65}, 400, "greater than max embedding dimension: 64"),
    ({"input": "a", "dimensions": True}, 400, "Input should be a valid integer, got a boolean"),
    ({"input": "a", "dimensions": 0}, 400, "Requested dimensions must be greater than 0"),
    ({"input": "a", "encoding_format": "int8"}, 400, "encoding_format must be either"),
    ({"input": [[1, -2]]}, 400, "must be non-negative"),
    ({"input": "hello " * 33_000}, 400, "longer than the model's context length (32768 tokens)"),
    ({"text": "no input"}, 400, "Field required"),
])
def test_bad_requests_get_sglang_errors(cpu_server: CpuServer, body: dict[str, Any], status: int,
                                        message: str) -> None:
    resp = _post(cpu_server, body)
    assert resp.status_code == status
    err = resp.json()
    assert message in err["message"] and err["object"] == "error" and err["code"] == status


def test_auth_health_models_metrics(cpu_server: CpuServer, tiny_model: TinyModel) -> None:
    assert _post(cpu_server, {"input": "a"}, key=None).status_code == 401
    assert _post(cpu_server, {"input": "a"}, key="wrong").status_code == 401
    get = lambda path, **kw: httpx.get(cpu_server.url + path, timeout=30, trust_env=False, **kw)  # noqa: E731
    assert get("/health").status_code == 200  # exempt from the key, as in SGLang
    assert get("/v1/models").status_code == 401
    models = get("/v1/models", headers={"Authorization": f"Bearer {KEY}"}).json()["data"][0]
    assert models["owned_by"] == "qembed-reference" and models["max_model_len"] == 32768
    assert models["id"] == str(tiny_model.path)
    metrics = get("/metrics").text
    for name in ("sglang:num_requests_total", "sglang:prompt_tokens_total", "sglang:e2e_request_latency_seconds_bucket",
                 "sglang:num_queue_reqs", "sglang:num_running_reqs", "sglang:context_len",
                 'sglang:http_responses_total{endpoint="/v1/embeddings",status_code="401"'):
        assert name in metrics, name


def test_verify_picks_the_fp32_tolerance_for_the_reference_server(
        cpu_server: CpuServer, ref_engine: ReferenceEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QEMBED_API_KEY", KEY)
    subset = [t for t in TEXTS if t.id in ("q-en", "q-ko", "d-tabs", "d-lines", "sts-es")]
    report = verify(cpu_server.url, engine=ref_engine, texts=subset)
    assert report.ok and report.tolerance.name == "fp32"
    assert report.results[1].truncation == "server"


def test_dry_run_shows_the_reference_command_without_the_key(cpu_server: CpuServer, tiny_model: TinyModel) -> None:
    r = _qembed(["serve", "--profile", "cpu", "--model", str(tiny_model.path), "--dry-run", "--json"],
                cpu_server.env, timeout=60)
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert shown["argv"][1:3] == ["-m", "qembed.reference.server"] and "--enable-metrics" in shown["argv"]
    assert KEY not in r.stdout and shown["env"]["QEMBED_REFSERVER_API_KEY"] != KEY


def test_the_reference_engine_is_named_in_its_failures_and_stop_line(tiny_model: TinyModel, tmp_path: Path) -> None:
    """Issue 23 item 6: not ready, and Ctrl-C after ready, name the engine that ran (not SGLang)."""
    import signal

    env = harness.fake_env(tmp_path / "pids.json", QEMBED_FAKE_NVML="no-driver", QEMBED_STATE_DIR=str(tmp_path / "s"),
                           HF_HUB_OFFLINE="1")
    base = ["serve", "--profile", "cpu", "--model", str(tiny_model.path), "--port", str(harness.free_port())]
    r = _qembed([*base, "--ready-timeout", "0.5"], env)
    assert r.returncode == ExitCode.NOT_READY, r.stderr
    assert "error: The reference engine was not ready after 0 s (last phase: " in r.stderr
    assert "] starting the reference engine" in r.stderr and "SGLang" not in r.stderr
    proc = harness.start_qembed(base, env)
    with harness.reaped(proc):
        assert proc.stdout is not None
        for line in proc.stdout:
            if "Press Ctrl-C to stop." in line:
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.INTERRUPTED, err
    assert "stopping the reference engine" in err and "stopped (the reference engine exit code 0)" in err
    assert "SGLang" not in err
    help_ = _qembed(["serve", "--help"], {**env, "COLUMNS": "200"}).stdout
    assert "Start an embedding server (SGLang; `--profile cpu`: the reference engine)" in help_


def test_no_gpu_refusal_names_the_cpu_profile(tmp_path: Path) -> None:
    env = harness.fake_env(tmp_path / "pids.json", QEMBED_FAKE_NVML="no-driver",
                           QEMBED_STATE_DIR=str(tmp_path / "state"))
    env.pop("QEMBED_API_KEY", None)
    r = _qembed(["serve", "-p", "a100", "--python", str(harness.WRAPPER), "--port", str(harness.free_port())],
                env, timeout=60)
    assert r.returncode == ExitCode.NO_GPU, r.stderr
    assert "qembed serve --profile cpu" in r.stderr
    assert not (tmp_path / "pids.json").exists()


def test_refserver_refuses_a_missing_model(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(harness.REPO)}
    r = subprocess.run([sys.executable, "-m", "qembed.reference.server", "--model", str(tmp_path / "none"),
                        "--port", str(harness.free_port())], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    # said before any load (qembed.hub.check_available), not after sentence-transformers' retries
    assert f"error: the model directory `{tmp_path / 'none'}` does not exist" in r.stderr
    assert "Traceback" not in r.stderr


def test_serve_verify_failure_stops_the_server(tiny_model: TinyModel, tmp_path: Path) -> None:
    """`serve --verify` against the fake SGLang (hash vectors, 2560-d): verify fails, exit 1,
    and nothing is left running."""
    pidfile = tmp_path / "pids.json"
    env = harness.fake_env(pidfile, QEMBED_STATE_DIR=str(tmp_path / "state"), HF_HUB_OFFLINE="1")
    env.pop("QEMBED_API_KEY", None)
    spawned: list[int] = []
    try:
        r = _qembed(["serve", "-p", "a100", "--python", str(harness.WRAPPER), "--port", str(harness.free_port()),
                     "--model", str(tiny_model.path), "--verify", "--detach"], env)
        spawned = harness.all_pids(harness.read_pids(pidfile))
        assert r.returncode == 1, r.stdout + r.stderr
        assert "error: the server's vectors differ from the reference" in r.stderr
        assert "Traceback" not in r.stderr
        assert "the server's vectors have 2560 values, the reference's 64" in r.stderr
        harness.assert_gone(spawned)
        assert json.loads(_qembed(["ps", "--json"], env).stdout) == []
    finally:
        harness.kill_leftovers(spawned)
