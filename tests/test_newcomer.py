"""What a newcomer typed in the end-to-end trial (docs/newcomer-trial.md), driven as they did:
the real `python -m qembed` process, its exit code and its `error:` / `hint:` lines."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def qembed(*args: str, columns: int = 80, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "qembed", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("target", [["docker"], ["docker", "--compose"], ["k8s"]])
def test_deploy_refuses_the_cpu_profile(target: list[str]) -> None:
    """`-p cpu` runs the reference engine; a GPU SGLang container built from it serves something else."""
    proc = qembed("deploy", *target, "-p", "cpu")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""
    assert "error: profile `cpu` runs the reference engine, not SGLang" in proc.stderr
    assert "hint: pick a GPU profile" in proc.stderr
    assert "Traceback" not in proc.stderr


def _wrapped_examples(text: str) -> list[str]:
    """Lines that continue a `qembed ...` example without a `\\` (Click re-wrapped the command)."""
    lines = text.splitlines()
    bad = []
    for prev, line in itertools.pairwise(lines):
        indent = len(line) - len(line.lstrip())
        if (re.match(r"([A-Z_]+=\S+ )*qembed ", prev.strip()) and not prev.rstrip().endswith("\\") and line.strip()
                and indent == len(prev) - len(prev.lstrip())
                and not line.lstrip().startswith(("qembed", "#", "cat ", "echo ", "kubectl", "QEMBED_"))):
            bad.append(f"{prev.strip()} / {line.strip()}")
    return bad


@pytest.mark.parametrize("command", [
    [], ["doctor"], ["verify"], ["profiles", "show"], ["profiles", "list"], ["top"], ["gateway"],
    ["deploy", "docker"], ["deploy", "k8s"], ["deploy", "grafana"], ["deploy", "alerts"], ["bench"],
    ["ps"], ["stop"],
    ["embed"],
    ["similarity"],
    ["serve"],
    ["logs"],
])
def test_help_fits_80_columns_and_examples_stay_whole(command: list[str]) -> None:
    proc = qembed(*command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert [x for x in proc.stdout.splitlines() if len(x) > 80] == []
    assert _wrapped_examples(proc.stdout) == []


def test_doctor_checks_what_serve_profile_cpu_runs(tmp_path: Path) -> None:
    """`doctor --profile cpu` checks the reference engine, not a driver, GPU and SGLang it never uses."""
    from tests.numerics.tiny_model import build_tiny_model

    model = build_tiny_model(tmp_path / "tiny")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "QEMBED_STATE_DIR": str(tmp_path / "state"),
           "QEMBED_URL": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "qembed", "doctor", "--profile", "cpu", "--model", str(model.path),
                           "--json"], capture_output=True, text=True, timeout=120, env=env)
    rows = {(r["section"], r["name"]): r["status"] for r in __import__("json").loads(proc.stdout)["checks"]}
    assert rows[("Reference engine", "sentence-transformers")] == "PASS"
    assert rows[("Reference engine", "torch")] == "PASS"
    assert rows[("NVIDIA driver", "GPU")] == "SKIP"
    assert not [k for k in rows if k[0] in ("SGLang", "Torch/CUDA", "Memory fit")]
    assert rows[("Model", "model")] == "PASS"


def test_bench_table_in_80_columns_cuts_no_number() -> None:
    """`qembed bench` at 80 columns: 11 columns fit without the box instead of ending in "…"."""
    from tests.standin.server import serve_in_thread

    with serve_in_thread() as srv:
        proc = qembed("bench", "--url", f"http://127.0.0.1:{srv.port}", "-c", "1,2", "-b", "1,4", "-l", "64", "-n", "2", "--warmup", "0")
    assert proc.returncode == 0, proc.stderr
    assert "…" not in proc.stdout
    lines = proc.stdout.splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith("conc"))
    assert [x for x in lines[start:] if len(x) > 80] == []
    header = lines[start]
    assert header.split() == ["conc", "batch", "len", "req/s", "texts/s", "tok/s", "p50", "p95", "p99", "err", "MFU"]


def test_small_dimensions_hint_names_the_sizes() -> None:
    proc = qembed("embed", "x", "--dimensions", "8", "--url", "http://127.0.0.1:9")
    assert proc.returncode == 2
    assert "error: `dimensions` must be between 32 and the model's full size, got 8\n" in proc.stderr
    assert "hint: pick a value from 32 up to the model's vector size (0.6B: 1024, 4B: 2560, 8B: 4096)" in proc.stderr


def test_missing_input_file_has_a_hint(tmp_path: Path) -> None:
    proc = qembed("embed", "--input", "no-such-docs.jsonl", "--output", str(tmp_path / "v.npy"))
    assert proc.returncode == 2
    assert "error: input file `no-such-docs.jsonl` does not exist" in proc.stderr
    assert f"hint: check the file name and its folder (relative paths start in `{Path.cwd()}`)" in proc.stderr


def test_top_once_is_readable_in_80_columns() -> None:
    """`qembed top --once` at 80 columns: no "serv…", "http…", "work…" cells."""
    from tests.standin.server import StandinConfig, serve_in_thread

    with serve_in_thread(StandinConfig(dim=8, metrics=True)) as srv:
        proc = qembed("top", "--url", f"http://127.0.0.1:{srv.port}", "--once", "--interval", "1")
    assert proc.returncode == 0, proc.stderr
    assert "…" not in proc.stdout
    assert [x for x in proc.stdout.splitlines() if len(x) > 80] == []
    row = next(x for x in proc.stdout.splitlines() if x.startswith("127.0.0.1:"))
    assert row.split()[:2] == [f"127.0.0.1:{srv.port}", "worker"]


@pytest.fixture
def standin_url() -> Iterator[str]:
    from tests.standin.server import serve_in_thread

    with serve_in_thread() as srv:
        yield srv.url


def _qembed(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # stdin is a pipe either way (empty when no input): `embed` reads piped stdin
    return subprocess.run([sys.executable, "-m", "qembed", *args], capture_output=True, text=True,
                          timeout=120, env=env, input=input or "")


def test_similarity_reads_piped_stdin_without_a_dash(standin_url: str) -> None:
    """`printf 'a\\nb\\n' | qembed similarity` was "Missing argument 'texts'" (newcomer trial)."""
    proc = _qembed("similarity", "--url", standin_url, input="a cat\na feline\n")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["texts"] == ["a cat", "a feline"] and len(doc["matrix"]) == 2


def test_a_url_with_another_scheme_is_bad_input() -> None:
    """`--url htp://x` ended in "NonHttpUrlClientError", exit 7; it is bad input (exit 2)."""
    proc = _qembed("embed", "x", "--url", "htp://127.0.0.1:9")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error:") and "is not an http(s) URL" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_top_takes_the_same_urls_as_the_client() -> None:
    """A URL without `http://`, or one naming `/v1/embeddings`, reaches the server's /metrics."""
    from qembed.fleet.top import metrics_url

    base = "http://127.0.0.1:30000"
    assert metrics_url("127.0.0.1:30000") == metrics_url(base + "/v1/embeddings") == base + "/metrics"
    assert metrics_url(base + "/metrics") == base + "/metrics"
    assert metrics_url(base + "/v1/") == base + "/metrics"


@pytest.mark.parametrize(("args", "says"), [
    (["embed", "x", "--dimension", "32"], "No such option: --dimension"),
    (["emebd", "x"], "No such command 'emebd'. Did you mean 'embed'?"),
])
def test_a_typo_is_an_error_with_a_hint_not_clicks_usage_block(args: list[str], says: str) -> None:
    """A typo'd flag or command printed Click's own "Usage: ... Error: ..." block (newcomer trial)."""
    proc = _qembed(*args)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {says}"), proc.stderr
    assert "hint: see `qembed" in proc.stderr and "--help`" in proc.stderr
    assert "Traceback" not in proc.stderr and "Usage:" not in proc.stderr


def test_a_missing_model_directory_is_refused_before_anything_starts(tmp_path: Path) -> None:
    """`serve -p cpu --model /tmp/nope` waited 19 s for the engine to die on it (newcomer trial)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "QEMBED_STATE_DIR": str(tmp_path / "state")}
    proc = subprocess.run([sys.executable, "-m", "qembed", "serve", "-p", "cpu", "--model", str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"error: the model directory `{tmp_path / 'nope'}` does not exist"), proc.stderr
    assert "hint:" in proc.stderr and "Traceback" not in proc.stderr
    assert not list((tmp_path / "state").rglob("*.log"))  # nothing was started
