"""Helpers for tests that spawn processes: the fake SGLang, qembed itself (TEST CODE, not a
double itself).

Import as ``from tests.fake_site import harness``. Everything waits on a condition with a
deadline; nothing sleeps a fixed time as synchronisation.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

FAKE_SITE = Path(__file__).resolve().parent
REPO = FAKE_SITE.parent.parent
WRAPPER = FAKE_SITE / "python"  # interpreter for --python: sees the fake sglang
P = TypeVar("P", bound="subprocess.Popen[Any]")

ENTRY = ["-c", "from sglang.cli.main import main; main()", "serve", "--model-type", "llm"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@functools.cache
def fake_hf_cache() -> Path:
    """An HF cache (``HF_HUB_CACHE``) that holds the known Qwen3-Embedding ids, each a snapshot with
    only a ``config.json`` of its shape (:data:`qembed.models.KNOWN_SHAPES`, so every estimate is
    the table's): ``serve`` has its model here, or downloads it, before any engine starts
    (:func:`qembed.hub.ensure_model`), and the fake SGLang needs no weights. One per process."""
    from qembed.models import KNOWN_SHAPES

    root = Path(tempfile.mkdtemp(prefix="qembed-fake-hf-"))
    atexit.register(shutil.rmtree, root, True)
    for name, s in KNOWN_SHAPES.items():
        snap = root / ("models--" + name.replace("/", "--")) / "snapshots" / ("0" * 40)
        snap.mkdir(parents=True)
        (snap / "config.json").write_text(json.dumps({
            "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": s.hidden_size,
            "num_hidden_layers": s.num_layers, "num_attention_heads": s.num_heads,
            "num_key_value_heads": s.num_kv_heads, "head_dim": s.head_dim,
            "intermediate_size": s.intermediate_size, "vocab_size": s.vocab_size,
            "max_position_embeddings": s.max_position_embeddings,
            "tie_word_embeddings": s.tie_word_embeddings}))
    return root


def fake_env(pidfile: Path, mode: str = "ok", **extra: str) -> dict[str, str]:
    """The environment for a spawned ``qembed serve`` / fake SGLang (the known model ids are in
    :func:`fake_hf_cache`, unless ``extra`` names ``HF_HOME`` or ``HF_HUB_CACHE``)."""
    env = dict(os.environ)
    if not {"HF_HOME", "HF_HUB_CACHE"} & extra.keys():
        env["HF_HUB_CACHE"] = str(fake_hf_cache())
    env.update(
        PYTHONPATH=os.pathsep.join([str(FAKE_SITE), str(REPO)]),
        FAKE_SGLANG_REAL_PYTHON=sys.executable,
        FAKE_SGLANG_MODE=mode,
        FAKE_SGLANG_PIDFILE=str(pidfile),
        FAKE_SGLANG_LOAD_DELAY=extra.pop("FAKE_SGLANG_LOAD_DELAY", "0.8"),
        QEMBED_FAKE_NVML=extra.pop("QEMBED_FAKE_NVML", "a100"),
        NO_COLOR="1",
    )
    env.update(extra)
    return env


def wait_until(cond: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll ``cond`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def wait_while_running(proc: subprocess.Popen[Any], cond: Callable[[], Any], *, what: str,
                       timeout: float = 60.0, log: Path | None = None) -> None:
    """Poll ``cond`` until it holds; fail at once, with the process's output (or ``log``), if
    ``proc`` exits first, and after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            output = log.read_text(errors="replace") if log is not None else proc.communicate()
            raise AssertionError(f"the process exited ({proc.returncode}) before {what}: {output}")
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


@contextlib.contextmanager
def reaped(proc: P) -> Iterator[P]:
    """Kill ``proc`` if it still runs when the block ends (however it ends), and reap it."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def terminate(proc: subprocess.Popen[Any], *, timeout: float = 20.0) -> None:
    """SIGTERM ``proc`` and reap it; SIGKILL when it has not exited within ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def committed_chunks(journal: Path) -> int:
    """Chunks a bulk job's journal records as committed (whole lines after the header line)."""
    if not journal.exists():
        return 0
    return max(0, len(journal.read_bytes().split(b"\n")[:-1]) - 1)


def read_pids(pidfile: Path, *, timeout: float = 20.0) -> dict[str, Any]:
    """The fake's pidfile (``main``, ``children``, ``env``, ``argv``), once written."""

    def load() -> dict[str, Any] | None:
        try:
            return json.loads(pidfile.read_text())  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return None

    return wait_until(load, timeout=timeout, what=f"{pidfile} to be written")  # type: ignore[no-any-return]


def all_pids(info: Mapping[str, Any]) -> list[int]:
    return [int(info["main"]), *(int(p) for p in info.get("children", []))]


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (PID 1 here may not reap orphans)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def assert_gone(pids: Iterable[int], *, timeout: float = 10.0) -> None:
    pids = list(pids)
    wait_until(lambda: not any(alive(p) for p in pids), timeout=timeout,
               what=f"processes {[p for p in pids if alive(p)]} to be gone")


def kill_leftovers(pids: Iterable[int]) -> None:
    """Cleanup for a failed test: SIGKILL whatever is still there."""
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def default_sigint() -> None:
    # A background job of a non-interactive shell starts with SIGINT ignored, and children
    # inherit that; qembed must see Ctrl-C as a terminal would deliver it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_qembed(args: list[str], env: Mapping[str, str], *, cwd: Path = REPO) -> subprocess.Popen[str]:
    """``python -m qembed ARGS`` as a subprocess (stdout/stderr captured as text)."""
    return subprocess.Popen(
        [sys.executable, "-m", "qembed", *args],
        env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint,
    )


def run_qembed(args: list[str], env: Mapping[str, str], *, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    proc = start_qembed(args, env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"qembed {' '.join(args)} did not finish in {timeout} s\n{out}\n{err}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def fake_argv(port: int, *extra: str) -> list[str]:
    """A full fake-SGLang argv, as sglang_args builds it (for launcher-level tests)."""
    return [str(WRAPPER), *ENTRY, "--model-path", "Qwen/Qwen3-Embedding-4B", "--is-embedding",
            "--host", "127.0.0.1", "--port", str(port),
            "--json-model-override-args", '{"is_matryoshka": true}', *extra]
