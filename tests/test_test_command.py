"""The README's two commands must not fight (issue 23 item 1): the test command has venvs of its
own and never installs into `.venv`, the serving venv of README line 1; the `[serve]` set and the
test set each resolve on their own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _plan(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`scripts/test.sh` in plan mode, in a copy of the repo's scripts with a planted `.venv`."""
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "test.sh", root / "scripts" / "test.sh")
    serving = root / ".venv" / "bin"
    serving.mkdir(parents=True)
    (serving / "python").write_text("#!/bin/sh\necho 'the serving venv was used' >&2; exit 97\n")
    (serving / "python").chmod(0o755)
    (root / ".venv" / "MARKER").write_text("the serving venv\n")
    return subprocess.run(["bash", str(root / "scripts" / "test.sh")], capture_output=True, text=True,
                          timeout=60, cwd=root, env={**os.environ, "QEMBED_TEST_PLAN": "1", **env})


def test_the_test_command_never_installs_into_the_serving_venv(tmp_path: Path) -> None:
    r = _plan(tmp_path)
    assert r.returncode == 0, r.stderr
    plan = [ln.removeprefix("plan: ") for ln in r.stdout.splitlines() if ln.startswith("plan: ")]
    pip = [ln for ln in plan if " -m pip install " in ln]
    assert len(pip) >= 3 and all(ln.startswith(".venv-test/bin/python -m pip install ") for ln in pip), plan
    assert not [ln for ln in plan if ".venv/" in ln or ln.split()[-1] == ".venv"], plan
    assert any(ln.endswith("-m pytest") for ln in plan)
    root = tmp_path / "checkout"
    assert (root / ".venv" / "MARKER").read_text() == "the serving venv\n"
    assert sorted(p.name for p in root.iterdir()) == [".venv", "scripts"]  # the plan changed nothing


def test_the_serving_venv_is_refused_as_the_test_venv(tmp_path: Path) -> None:
    r = _plan(tmp_path, QEMBED_TEST_VENV=".venv")
    assert r.returncode == 2
    assert "error: the test venv must not be .venv" in r.stderr and r.stdout == ""


def test_the_test_set_is_consistent_in_its_own_venv() -> None:
    """The venv this suite runs in holds the test set alone, and pip finds no conflict in it
    (before, `[serve]` and the test set were mixed into one `.venv`: "sglang requires torch==2.14.1")."""
    r = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_serve_set_resolves_on_its_own(tmp_path: Path) -> None:
    """`pip install --dry-run --report` of `.[serve]` alone, as README line 1 installs it: it
    resolves, with SGLang and the torch SGLang pins (not the test set's CPU torch)."""
    report = tmp_path / "serve.json"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--dry-run",
                        "--ignore-installed", "--report", str(report), f"{REPO}[serve]"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    got = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}
    assert got.get("sglang", "").startswith("0.5."), sorted(got)
    assert "torch" in got and "+cpu" not in got["torch"]


def test_a_full_disk_is_said_before_any_install(tmp_path: Path) -> None:
    """With too little free disk for the missing venvs, the test command stops at once with
    `error:`/`hint:` (a CI run once died minutes in, inside pip, on "[Errno 28] No space left")."""
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "test.sh", root / "scripts" / "test.sh")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # a `df -Pk` that reports 1 GiB free, and a python that records it was run
    (bin_dir / "df").write_text("#!/bin/sh\necho 'Filesystem 1024-blocks Used Available Capacity Mounted'\n"
                                "echo '/dev/x 100000000 98951424 1048576 99% /'\n")
    (bin_dir / "python3").write_text(f"#!/bin/sh\ntouch {tmp_path}/python-ran\nexit 0\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    r = subprocess.run(["bash", str(root / "scripts" / "test.sh")], capture_output=True, text=True, timeout=60,
                       cwd=root, env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "QEMBED_TEST_PLAN": ""})
    assert r.returncode == 1
    assert "error: 1 GB free on the disk of" in r.stderr and "needs about 15 GB" in r.stderr, r.stderr
    assert "hint: free space" in r.stderr
    assert not (tmp_path / "python-ran").exists() and not (root / ".venv-test").exists()
