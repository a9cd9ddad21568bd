"""`qembed profiles list` / `qembed profiles show` through the real CLI funnel."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qembed.cli import app
from qembed.models import GiB
from qembed.serving import gpu as gpu_mod
from qembed.serving.gpu import GPUInfo, GPUSnapshot

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_list_table() -> None:
    code, out, _err = run("profiles", "list")
    assert code == 0
    for name in ("a100-80g", "a100-40g", "h100", "l4", "a10", "rtx4090", "t4", "auto", "generic"):
        assert name in out
    assert "A100 80GB" in out


def test_list_json() -> None:
    code, out, _ = run("profiles", "list", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["a100-80g"]["aliases"] == ["a100"]
    assert rows["t4"]["gpu"].startswith("T4")
    assert Path(rows["l4"]["path"]).name == "l4.yaml"


def test_show_json_values_sources_and_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QEMBED_API_KEY", "sk-cli-secret")
    code, out, _ = run("profiles", "show", "a10", "--set", "port=31000", "--python", "/opt/py", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["name"] == "a10" and data["chain"] == ["a10", "l4"]
    assert data["values"]["port"] == 31000 and data["sources"]["port"] == "override"
    assert data["sources"]["context_length"] == "l4.yaml"
    argv = data["command"]["argv"]
    assert argv[0] == "/opt/py" and "--is-embedding" in argv
    assert argv[argv.index("--port") + 1] == "31000"
    assert "--api-key" not in argv  # the keyed entry passes it in memory (issue 20)
    assert data["api_key"] == "set"
    assert "sk-cli-secret" not in out


def test_show_human(monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = run("profiles", "show", "t4", "--set", "torch_compile=true")
    assert code == 0
    assert "--dtype float16" in out
    assert "--enable-torch-compile" in out
    assert "l4.yaml" not in out
    assert "torch_compile" in err and "no effect" in err  # warnings go to stderr


def test_show_auto_uses_gpu_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    h100 = GPUInfo(index=0, name="NVIDIA H100 80GB HBM3", uuid="GPU-0", memory_total=int(79.6 * GiB),
                   memory_free=int(79 * GiB), memory_used=0, compute_capability=(9, 0))
    monkeypatch.setattr(gpu_mod, "snapshot", lambda: GPUSnapshot(gpus=(h100,)), raising=False)
    code, out, _ = run("profiles", "show", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["name"] == "h100" and data["requested"] == "auto"
    assert "H100" in data["auto_reason"]


def test_show_unknown_profile_is_a_usage_error() -> None:
    result = subprocess.run([sys.executable, "-m", "qembed", "profiles", "show", "a100-80"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "error: unknown profile `a100-80`" in result.stderr
    assert "hint: did you mean `a100-80g`?" in result.stderr


def test_show_habit_override_names_equivalent() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "qembed", "profiles", "show", "generic", "--set", "gpu_memory_utilization=0.9"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "`gpu_memory_fraction`" in result.stderr and "--mem-fraction-static" in result.stderr
