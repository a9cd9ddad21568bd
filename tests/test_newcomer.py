"""What a newcomer typed in the end-to-end trial (docs/newcomer-trial.md), driven as they did:
the real `python -m qembed` process, its exit code and its `error:` / `hint:` lines."""

from __future__ import annotations

import itertools
import os
import re
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


OWNED_ELSEWHERE = "examples wider than 80 columns in a file another change owns (docs/newcomer-trial.md)"


@pytest.mark.parametrize("command", [
    [], ["doctor"], ["verify"], ["profiles", "show"], ["profiles", "list"], ["top"], ["gateway"],
    ["deploy", "docker"], ["deploy", "k8s"], ["deploy", "grafana"], ["deploy", "alerts"], ["bench"],
    ["ps"], ["stop"],
    pytest.param(["embed"], marks=pytest.mark.xfail(strict=True, reason=OWNED_ELSEWHERE)),
    pytest.param(["similarity"], marks=pytest.mark.xfail(strict=True, reason=OWNED_ELSEWHERE)),
    pytest.param(["serve"], marks=pytest.mark.xfail(strict=True, reason=OWNED_ELSEWHERE)),
    pytest.param(["logs"], marks=pytest.mark.xfail(strict=True, reason=OWNED_ELSEWHERE)),
])
def test_help_fits_80_columns_and_examples_stay_whole(command: list[str]) -> None:
    proc = qembed(*command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert [x for x in proc.stdout.splitlines() if len(x) > 80] == []
    assert _wrapped_examples(proc.stdout) == []
