"""CI's own rules, checked: a skipped conformance test fails the run when
QEMBED_REQUIRE_CONFORMANCE=1 (what scripts/test.sh sets), and only then."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO


def _run_conformance(require: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, QEMBED_SGLANG_PARSER_PYTHON="/nonexistent/python", QEMBED_REQUIRE_CONFORMANCE=require)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_conformance.py"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )


def test_skipped_conformance_fails_when_required() -> None:
    r = _run_conformance("1")
    assert r.returncode == 1, r.stdout[-2000:]
    assert "conformance test(s) were skipped" in r.stdout


def test_skipped_conformance_is_only_a_skip_in_a_dev_checkout() -> None:
    r = _run_conformance("0")
    assert r.returncode == 0, r.stdout[-2000:]
    assert "skipped" in r.stdout and "were skipped (QEMBED_REQUIRE_CONFORMANCE=1)" not in r.stdout
