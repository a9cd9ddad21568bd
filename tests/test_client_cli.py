"""`qembed embed` as a user runs it against a misbehaving server: `--timeout`, the dimension
range before any connection, bad replies as `error:` / `hint:` with exit 1, no traceback."""

from __future__ import annotations

import sys
import time

import pytest

from tests.helpers.cli import run_main
from tests.standin.server import Fault, StandinConfig, serve_in_thread


def test_timeout_bounds_a_trickling_server(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with serve_in_thread(StandinConfig(dim=16, faults=[Fault("bad", mode="trickle", seconds=0.3, count=10)])) as srv:
        t0 = time.monotonic()
        code, out, err = run_main(monkeypatch, capsys, ["embed", "--url", srv.url, "--timeout", "1", "hello"])
        took = time.monotonic() - t0
    assert (code, out) == (7, "")
    assert err.startswith(f"error: {srv.url} sent no complete answer within the 1 s request deadline")
    assert "hint:" in err and "Traceback" not in err
    assert took < 15  # 1 s per attempt, 4 retries with short backoff: bounded, not the 300 s trickle


@pytest.mark.parametrize(("args", "what"), [
    (["--dimensions", "16"], "between 32 and the model's full size"),
    (["--dimensions", "2561", "--model", "Qwen/Qwen3-Embedding-4B"], "between 32 and 2560"),
    (["--dimensions", "1025", "--model", "Qwen3-Embedding-0.6B"], "between 32 and 1024"),
])
def test_dimensions_out_of_range_exit_2_before_any_connection(monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str],
                                                               args: list[str], what: str) -> None:
    # nothing listens on port 9: a connection would exit 7 ("no server answers")
    code, out, err = run_main(monkeypatch, capsys, ["embed", "--url", "http://127.0.0.1:9", *args, "x"])
    assert (code, out) == (2, "")
    assert f"error: `dimensions` must be {what}" in err


@pytest.mark.parametrize("mode", ["repeated_index", "nan", "html_200", "short_base64"])
def test_a_bad_reply_is_error_and_hint_with_exit_1(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                                    mode: str) -> None:
    with serve_in_thread(StandinConfig(dim=16, faults=[Fault("bad", mode=mode, count=99)])) as srv:
        # two texts learn the size from the first request; a third request is checked against it
        code, out, err = run_main(monkeypatch, capsys, ["embed", "--url", srv.url, "--format", "json", "a", "b"])
    assert (code, out) == (1, "")
    assert err.startswith(f"error: the reply from {srv.url}/v1/embeddings is invalid: ")
    assert "hint: no vector from it was used" in err and "Traceback" not in err


def test_a_huge_retry_after_is_shown_on_stderr() -> None:
    """A real process (pytest's log capture would swallow the CLI's logging set-up); the cap is
    lowered in the child so the test does not wait the real 60 s."""
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    with serve_in_thread(StandinConfig(dim=16, faults=[Fault("bad", mode="retry_after", seconds=3600)])) as srv:
        script = ("import sys, qembed.client.flow as c; c.MAX_RETRY_AFTER = 0.01\n"
                  "from qembed.cli import main\n"
                  f"sys.argv = ['qembed', 'embed', '--url', {srv.url!r}, '--format', 'json', 'a']\nmain()\n")
        r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=root,
                           env={**os.environ, "PYTHONPATH": str(root)})
    assert r.returncode == 0 and '"dimensions": 16' in r.stdout, r.stderr
    assert f"{srv.url} asked to wait 3600 s (Retry-After); waiting 0.01 s" in r.stderr
