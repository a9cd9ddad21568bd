"""Item 5 of the real-engine lane: real SGLang failures end in the right diagnosis or client
error, never a traceback.

- recorded real logs (tests/logs/real, README there) through `diagnose` and `qembed doctor --log`;
- live: a port held before `serve` (refused at once), a port taken after qembed's check (real
  SGLang logs Errno 98 and then hangs: qembed must notice, say so and stop it), a model directory
  without config.json, a KV pool smaller than the context (refused, or the context fitted to the
  pool so a long input is a clear error instead of a request SGLang never answers), an input over
  `context_length`, and a `dimensions` the model can't give.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from qembed.errors import ExitCode
from qembed.serving import diagnose as dg
from tests.engine.real import TEST_KV_TOKENS, Engine, engine_env, qembed, running
from tests.fake_site.harness import alive, assert_gone, free_port
from tests.numerics.tiny_model import TinyModel

REAL_LOGS = Path(__file__).resolve().parent.parent / "logs" / "real"

# (recorded log, diagnosis key, text of the evidence line)
RECORDED = [
    ("port_in_use.log", "port_in_use", "[Errno 98] error while attempting to bind on address ('127.0.0.1', 31777)"),
    ("model_no_config.log", "model_no_config", "Unrecognized model in /tmp/fail/notamodel"),
    ("kv_pool_small.log", "kv_pool_small", "KV pool holds 1024 tokens, fewer than --context-length 8192"),
]


@pytest.mark.parametrize(("log", "key", "evidence"), RECORDED)
def test_recorded_real_logs_are_diagnosed(log: str, key: str, evidence: str, tmp_path: Path) -> None:
    lines = (REAL_LOGS / log).read_text(encoding="utf-8").splitlines()
    found = dg.diagnose(lines, profile=None, returncode=None)
    assert found and found[0].key == key, [d.key for d in found]
    assert evidence in found[0].evidence
    out = qembed(["doctor", "--log", str(REAL_LOGS / log), "--json"], engine_env(tmp_path))
    assert "Traceback" not in out.stderr, out.stderr
    assert key in out.stdout or found[0].title in out.stdout, out.stdout[-2000:]


def test_every_recorded_real_log_is_tested() -> None:
    assert {p.name for p in REAL_LOGS.glob("*.log")} == {c[0] for c in RECORDED}


def _serve_args(model: Path | str, port: int, name: str, py: Path, *sets: str) -> list[str]:
    args = ["serve", "--profile", "xeon", "--model", str(model), "--port", str(port), "--name", name,
            "--python", str(py), "--detach", "--set", "dtype=float32"]
    for s in sets:
        args += ["--set", s]
    return args


def test_a_port_held_before_serve_is_refused_at_once(sglang_python: Path, engine_model: TinyModel,
                                                    tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        out = qembed(_serve_args(engine_model.path, port, "held", sglang_python,
                                 f"max_total_tokens={TEST_KV_TOKENS}"), engine_env(tmp_path), timeout=120)
    assert out.returncode == ExitCode.USAGE, out.stderr
    assert "\nerror: " in out.stderr and f"port {port}" in out.stderr and "hint:" in out.stderr
    assert "Traceback" not in out.stderr and "SGLang pid" not in out.stderr  # nothing was started


def test_a_port_taken_after_the_check_is_named_and_sglang_is_stopped(
        sglang_python: Path, engine_model: TinyModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real SGLang loads the model, fails to bind, logs Errno 98 and then hangs (it never exits by
    itself, tests/logs/real/README.md): qembed must say who holds the port and stop the tree."""
    from qembed.errors import PortInUse
    from qembed.serving.profiles.resolve import load_profile
    from qembed.serving.supervisor import ServingSession

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        prof = load_profile("xeon", overrides=["dtype=float32", f"max_total_tokens={TEST_KV_TOKENS}"],
                            options={"model": str(engine_model.path), "port": port})
        with ServingSession(prof, name="race", api_key=None, python=str(sglang_python)) as session:
            session.prepare()
            server = session.launch(check_port_free=False)  # as if the port was taken after the check
            pids = [server.pid]
            with pytest.raises(PortInUse) as err:
                session.wait_ready()
            import psutil

            pids += [c.pid for c in psutil.Process(server.pid).children(recursive=True)] if alive(server.pid) else []
        assert_gone(pids, timeout=60)
    text = str(err.value) + "\n".join(err.value.details or [])
    assert f"could not bind port {port}" in text
    assert any(d["key"] == "port_in_use" for d in err.value.diagnoses or []), err.value.diagnoses
    assert "Traceback" not in text and 'File "' not in text


def test_a_model_directory_without_config_is_diagnosed(sglang_python: Path, tmp_path: Path) -> None:
    bad = tmp_path / "not-a-model"
    bad.mkdir()
    (bad / "README.md").write_text("weights live elsewhere\n")
    out = qembed(_serve_args(bad, free_port(), "nomodel", sglang_python, f"max_total_tokens={TEST_KV_TOKENS}"),
                 engine_env(tmp_path), timeout=240)
    assert out.returncode == ExitCode.SERVER_EXITED, out.stderr
    assert "diagnosis: model directory has no config.json" in out.stderr
    assert "hint:" in out.stderr and "config.json" in out.stderr.split("hint:")[1]
    # SGLang's stack frames are in the full log, not on the user's terminal
    assert "Traceback" not in out.stderr and 'File "' not in out.stderr, out.stderr


def test_a_context_larger_than_the_kv_pool_is_refused_before_start(
        sglang_python: Path, engine_model: TinyModel, tmp_path: Path) -> None:
    out = qembed(_serve_args(engine_model.path, free_port(), "kvsmall", sglang_python,
                             "max_total_tokens=1024", "context_length=8192"), engine_env(tmp_path), timeout=120)
    assert out.returncode == ExitCode.USAGE, out.stderr
    assert "never answers" in out.stderr and "`context_length: 1024`" in out.stderr
    assert "SGLang pid" not in out.stderr and "Traceback" not in out.stderr


def test_a_small_pool_fits_the_context_so_a_long_input_is_a_clear_error(
        sglang_python: Path, engine_model: TinyModel, tmp_path: Path) -> None:
    """Without qembed's fit, real SGLang never answers a 2,100-token request to a 1,024-token pool
    with an 8,192-token context (tests/logs/real/README.md)."""
    with running("kvfit", engine_model.path, tmp_path, python=sglang_python,
                 sets=("max_total_tokens=2048",)) as eng:
        assert "context_length 2048" in eng.serve.stderr, eng.serve.stderr
        long_text = "word " * 500  # 1,502 tokens with the EOS (3 a word here): fits
        ok = qembed(["embed", "--url", eng.url, "--format", "json", long_text], eng.env, timeout=120)
        assert ok.returncode == 0, ok.stderr
        too_long = "word " * 900  # 2,702 tokens
        out = qembed(["embed", "--url", eng.url, "--format", "json", "--timeout", "60", too_long], eng.env,
                     timeout=120)
    assert out.returncode == ExitCode.USAGE, out.stderr
    assert "longer than the model's context length (2048 tokens)" in out.stderr, out.stderr


def test_an_input_over_the_context_is_a_client_error(engine: Engine) -> None:
    text = "word " * 12000  # about 36,000 tokens: over the tiny model's 32,768
    out = qembed(["embed", "--url", engine.url, "--format", "json", text], engine.env, timeout=120)
    assert out.returncode == ExitCode.USAGE, out.stderr
    assert out.stderr.startswith("error: text 1:") and "context length (32768 tokens)" in out.stderr
    assert "hint:" in out.stderr and "Traceback" not in out.stderr
    skipped = qembed(["embed", "--url", engine.url, "--format", "json", "--on-error", "skip", "ok", text],
                     engine.env, timeout=120)
    assert skipped.returncode == 0, skipped.stderr


def test_a_dimensions_the_model_cannot_give(engine: Engine) -> None:
    import httpx

    raw = httpx.post(engine.url + "/v1/embeddings", json={"input": "x", "model": "m", "dimensions": 999},
                     timeout=60, trust_env=False)
    assert raw.status_code == 400 and "greater than max embedding dimension: 64" in raw.text, raw.text
    out = qembed(["embed", "--url", engine.url, "--dimensions", "999", "x"], engine.env)
    assert out.returncode == ExitCode.USAGE, out.stderr
    assert "`dimensions` must be between 32 and 64" in out.stderr and "Traceback" not in out.stderr
    ok = qembed(["embed", "--url", engine.url, "--dimensions", "64", "--format", "json", "x"], engine.env)
    assert ok.returncode == 0 and len(json.loads(ok.stdout)["data"][0]["embedding"]) == 64
