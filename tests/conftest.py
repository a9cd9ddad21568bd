"""Shared fixtures: an isolated environment for every test, stand-in servers, and the CI rule
that a skipped conformance test is a failure."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.standin.server import Running

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No QEMBED_* variable leaks in from the developer's shell; state goes to tmp_path."""
    for name in list(os.environ):
        if name.startswith("QEMBED_") and name not in {"QEMBED_SGLANG_PARSER_PYTHON", "QEMBED_REQUIRE_CONFORMANCE"}:
            monkeypatch.delenv(name, raising=False)
    for name in ("HF_HUB_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("QEMBED_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("NO_COLOR", "1")
    yield


@pytest.fixture
def srv() -> Iterator[Running]:
    """A stand-in server with 32-d vectors (the CLI tests)."""
    from tests.standin.server import StandinConfig, serve_in_thread

    with serve_in_thread(StandinConfig(dim=32)) as s:
        yield s


@pytest.fixture
def standin() -> Iterator[Running]:
    """A stand-in server with 16-d vectors (the client fault and probe tests)."""
    from tests.standin.server import StandinConfig, serve_in_thread

    with serve_in_thread(StandinConfig(dim=16)) as s:
        yield s


_skipped_conformance: list[str] = []


@pytest.hookimpl(tryfirst=True)
def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config):  # type: ignore[no-untyped-def]
    if report.skipped and "conformance" in report.keywords:
        _skipped_conformance.append(report.nodeid)
    return None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With QEMBED_REQUIRE_CONFORMANCE=1 (set by scripts/test.sh), a skipped conformance test
    fails the run: the real SGLang parser must have checked every argv qembed builds."""
    if os.environ.get("QEMBED_REQUIRE_CONFORMANCE") == "1" and _skipped_conformance:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"FAILED: {len(_skipped_conformance)} conformance test(s) were skipped "
                "(QEMBED_REQUIRE_CONFORMANCE=1): " + ", ".join(_skipped_conformance[:5]),
                red=True,
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
