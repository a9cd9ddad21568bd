"""CI's own rules, checked: a skipped conformance test fails the run when
QEMBED_REQUIRE_CONFORMANCE=1 (what scripts/test.sh sets), and only then."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers.paths import REPO


def _run_conformance(require: str, target: str = "tests/test_conformance.py") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, QEMBED_SGLANG_PARSER_PYTHON="/nonexistent/python", QEMBED_REQUIRE_CONFORMANCE=require)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", target],
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


def test_a_skipped_real_engine_test_fails_when_required() -> None:
    """Without the test SGLang venv the real-engine lane skips, and CI counts that as a failure."""
    r = _run_conformance("1", "tests/engine/test_a_serve.py")
    assert r.returncode == 1, r.stdout[-2000:]
    assert "conformance test(s) were skipped" in r.stdout and "test_a_serve" in r.stdout


def test_every_module_a_test_double_serves_says_why() -> None:
    """tests/conftest.py STANDIN_MODULES lists exactly the test modules that use the stand-in or
    the fake `sglang` package, each with its reason."""
    import re

    from tests.conftest import STANDIN_MODULES

    tests = REPO / "tests"
    uses = re.compile(r"^\s*from tests\.(standin|fake_site)\b|\bstandin_server\b|\bsrv\b", re.M)
    # a shared helper (tests/helpers) that uses a test double passes it on to every importer
    doubles = [p.stem for p in (tests / "helpers").glob("*.py") if uses.search(p.read_text(encoding="utf-8"))]
    if doubles:
        uses = re.compile(uses.pattern + r"|^\s*from tests\.helpers\.(" + "|".join(doubles) + r")\b", re.M)
    found = {p.relative_to(tests).as_posix() for p in tests.rglob("test_*.py")
             if "engine" not in p.relative_to(tests).parts and uses.search(p.read_text(encoding="utf-8"))}
    assert found == set(STANDIN_MODULES), (found ^ set(STANDIN_MODULES))
    assert all(len(why) > 20 for why in STANDIN_MODULES.values())


def test_a_skipped_peer_test_fails_when_required() -> None:
    """Without the Infinity venv (scripts/setup_peers.sh infinity) the peer lane skips, and CI
    counts that as a failure."""
    env = dict(os.environ, QEMBED_INFINITY_VENV="/nonexistent", QEMBED_REQUIRE_CONFORMANCE="1")
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/peers/test_infinity.py"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert r.returncode == 1, r.stdout[-2000:]
    assert "conformance test(s) were skipped" in r.stdout and "test_infinity" in r.stdout
