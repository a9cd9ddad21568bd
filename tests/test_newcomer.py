"""What a newcomer typed in the end-to-end trial (docs/newcomer-trial.md), driven as they did:
the real `python -m qembed` process, its exit code and its `error:` / `hint:` lines."""

from __future__ import annotations

import os
import subprocess
import sys
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
