"""Real SGLang 0.5.23 on this machine's CPU, started and stopped the way users do it.

Every engine here is ``qembed serve --profile xeon`` run as a subprocess (the real CLI, the real
supervisor, the real SGLang launch code) with the test SGLang venv (``scripts/setup_sglang.sh``:
SGLang's torch-native CPU path, plus the one sgl_kernel op as test support). Test engines pin
``max_total_tokens`` and ``dtype: float32`` instead of sizing from free RAM or choosing bf16, so
that the vectors compare at fp32 tolerances and three engines fit at once.

Starts are slow (20-60 s on 2 cores), so the lane shares them: one session engine for the client,
metrics, verify and diagnosis tests; module engines only where a test needs another setting.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.fake_site.harness import REPO, alive, free_port, run_qembed

#: pinned KV pool for every test engine (the issue: never size test engines from free RAM)
TEST_KV_TOKENS = 65536
START_TIMEOUT = 240.0


def engine_python() -> Path | None:
    """The test SGLang venv's interpreter (``QEMBED_SGLANG_PARSER_PYTHON``: one venv serves the
    parser checks and the engine), or None when it is not built."""
    configured = os.environ.get("QEMBED_SGLANG_PARSER_PYTHON")
    path = Path(configured) if configured else REPO / ".venv-sglang" / "bin" / "python"
    return path if path.exists() else None


def engine_env(state_dir: Path, **extra: str) -> dict[str, str]:
    """A clean environment for ``qembed`` subprocesses: no QEMBED_* or proxy leaks, offline HF."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("QEMBED_") and k.lower() not in {"http_proxy", "https_proxy", "all_proxy"}}
    env.update(QEMBED_STATE_DIR=str(state_dir), HF_HUB_OFFLINE="1", NO_COLOR="1",
               PYTHONPATH=str(REPO))
    env.update(extra)
    return env


def qembed(args: list[str], env: Mapping[str, str], *, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """``python -m qembed ARGS`` to completion, with a deadline (:func:`harness.run_qembed`)."""
    return run_qembed(args, env, timeout=timeout)


@dataclass
class HealthTrace:
    """What ``GET /health`` answered while the engine came up: (seconds, status or None)."""

    url: str
    seen: list[tuple[float, int | None]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        import httpx

        t0 = time.monotonic()
        with httpx.Client(timeout=2.0, trust_env=False) as http:
            while not self._stop.is_set():
                try:
                    status: int | None = http.get(self.url + "/health").status_code
                except httpx.HTTPError:
                    status = None
                if not self.seen or self.seen[-1][1] != status:
                    self.seen.append((time.monotonic() - t0, status))
                if status == 200:
                    return
                self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()


@dataclass
class Engine:
    """A running real engine: what ``qembed serve`` said, and how to reach and stop it."""

    name: str
    url: str
    port: int
    model: str
    env: dict[str, str]
    serve: subprocess.CompletedProcess[str]
    health: HealthTrace
    record: dict[str, object]
    started_in: float

    @property
    def pid(self) -> int:
        return int(self.record["pid"])  # type: ignore[call-overload]

    def tree(self) -> list[int]:
        """The server and every process below it (scheduler, detokenizer, helpers)."""
        import psutil

        try:
            proc = psutil.Process(self.pid)
            return [self.pid, *(c.pid for c in proc.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []

    def stop(self, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return qembed(["stop", self.name], self.env, timeout=timeout)


def start_engine(name: str, model: Path | str, state_dir: Path, *, sets: tuple[str, ...] = (),
                 port: int | None = None, python: Path | None = None,
                 api_key: str | None = None) -> Engine:
    """``qembed serve --profile xeon --detach`` on the tiny model; returns once it is ready.

    Raises AssertionError with qembed's output when the start fails."""
    py = python or engine_python()
    if py is None:
        raise AssertionError("no test SGLang venv: run `bash scripts/setup_sglang.sh`")
    port = port or free_port()
    env = engine_env(state_dir, **({"QEMBED_API_KEY": api_key} if api_key else {}))
    url = f"http://127.0.0.1:{port}"
    args = ["serve", "--profile", "xeon", "--model", str(model), "--port", str(port),
            "--name", name, "--python", str(py), "--detach",
            "--set", "dtype=float32", "--set", f"max_total_tokens={TEST_KV_TOKENS}"]
    for s in sets:
        args += ["--set", s]
    health = HealthTrace(url)
    watcher = threading.Thread(target=health.run, daemon=True)
    watcher.start()
    t0 = time.monotonic()
    try:
        out = qembed(args, env, timeout=START_TIMEOUT)
    finally:
        health.stop()
        watcher.join(timeout=5)
    took = time.monotonic() - t0
    if out.returncode != 0:
        raise AssertionError(f"qembed serve {name} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    ps = qembed(["ps", "--json"], env, timeout=30)
    records = [r for r in json.loads(ps.stdout) if r.get("name") == name]
    assert records, f"`qembed ps --json` has no server {name}: {ps.stdout}"
    return Engine(name=name, url=url, port=port, model=str(model), env=env, serve=out,
                  health=health, record=records[0], started_in=took)


@contextlib.contextmanager
def running(name: str, model: Path | str, state_dir: Path, **kw: object) -> Iterator[Engine]:
    """:func:`start_engine`, and ``qembed stop`` (SIGKILL of the tree as a last resort) after."""
    eng = start_engine(name, model, state_dir, **kw)  # type: ignore[arg-type]
    try:
        yield eng
    finally:
        pids = eng.tree()
        if any(alive(p) for p in pids):
            eng.stop()
        for p in pids:
            if alive(p):
                with contextlib.suppress(OSError):
                    os.kill(p, 9)
