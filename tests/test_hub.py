"""`qembed.hub.check_available` and the "silent minute" (issue 23 item 2): a model that is neither
here nor fetchable is refused in seconds, with the cause and the fix. The Hub is a real HTTP
server on loopback (`HF_ENDPOINT`), answering as huggingface.co's `/api/models/{id}` does."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qembed.errors import ConfigError, ExitCode
from qembed.hub import check_available
from tests.helpers.hub import LoopbackHub, loopback_hub
from tests.helpers.paths import REPO

KNOWN = "Qwen/Qwen3-Embedding-0.6B"


@pytest.fixture
def hub() -> Iterator[LoopbackHub]:
    with loopback_hub(KNOWN) as h:
        yield h


def _closed_port() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once closed


def _env(tmp_path: Path, **kw: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN")}
    env.update(HF_HOME=str(tmp_path / "hf"), **kw)
    return env


def test_a_cached_snapshot_needs_no_hub(tmp_path: Path) -> None:
    snap = tmp_path / "hf" / "hub" / ("models--" + KNOWN.replace("/", "--")) / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    got = check_available(KNOWN, environ=_env(tmp_path, HF_HUB_OFFLINE="1", HF_ENDPOINT=_closed_port()))
    assert got.source == "cached" and got.detail == str(snap)


def test_offline_and_not_cached_is_refused_at_once(tmp_path: Path) -> None:
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as ei:
        check_available(KNOWN, environ=_env(tmp_path, HF_HUB_OFFLINE="1"))
    assert time.monotonic() - t0 < 1
    assert "not in the Hugging Face cache" in ei.value.message and "HF_HUB_OFFLINE is set" in ei.value.message
    assert f"hf download {KNOWN}" in (ei.value.hint or "") and "--model DIR" in (ei.value.hint or "")


def test_a_reachable_hub_means_download(tmp_path: Path, hub: LoopbackHub) -> None:
    got = check_available(KNOWN, environ=_env(tmp_path, HF_ENDPOINT=hub.url, HF_TOKEN="hf_x"))
    assert got.source == "download"
    assert hub.seen == [(f"/api/models/{KNOWN}", "Bearer hf_x")]


def test_a_model_the_hub_does_not_have_is_named(tmp_path: Path, hub: LoopbackHub) -> None:
    with pytest.raises(ConfigError) as ei:
        check_available("Qwen/Qwen3-Embeding-4B", environ=_env(tmp_path, HF_ENDPOINT=hub.url))
    assert "has no model `Qwen/Qwen3-Embeding-4B`" in ei.value.message and "anonymously" in ei.value.message
    assert "HF_TOKEN" in (ei.value.hint or "")


def test_an_unreachable_hub_is_said_within_the_deadline(tmp_path: Path) -> None:
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as ei:
        check_available(KNOWN, environ=_env(tmp_path, HF_ENDPOINT=_closed_port()), timeout=2.0)
    assert time.monotonic() - t0 < 5
    assert "is not reachable" in ei.value.message and f"hf download {KNOWN}" in (ei.value.hint or "")


def test_serve_profile_cpu_offline_fails_in_seconds_with_the_cause(tmp_path: Path) -> None:
    """The reproduction: `serve --profile cpu` with the default model not cached and no Hub. Before,
    88 s of silence and "exited before it was ready" (exit 5) with the cause in the log only."""
    env = _env(tmp_path, HF_ENDPOINT=_closed_port(), QEMBED_STATE_DIR=str(tmp_path / "state"),
               PYTHONPATH=str(REPO))
    t0 = time.monotonic()
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = subprocess.run([sys.executable, "-m", "qembed", "serve", "--profile", "cpu", "--port", str(port)],
                       capture_output=True, text=True, env=env, timeout=120)
    took = time.monotonic() - t0
    assert r.returncode == ExitCode.USAGE, r.stderr
    assert took < 30, f"took {took:.0f} s"
    assert "is not reachable" in r.stderr and "hint: fetch it where the Hub is reachable: `hf download" in r.stderr
    assert "Traceback" not in r.stderr
