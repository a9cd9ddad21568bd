"""Shared fixtures: an isolated environment for every test, stand-in servers, and the CI rule
that a skipped conformance test is a failure."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.engine.real import Engine
    from tests.numerics.tiny_model import TinyModel
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


# -- real SGLang 0.5.23 on CPU (tests/engine/real.py): one shared engine for the session --------

@pytest.fixture(scope="session")
def sglang_python() -> Path:
    """The test SGLang venv (scripts/setup_sglang.sh): the parser and the engine."""
    from tests.engine.real import engine_python

    py = engine_python()
    if py is None:
        pytest.skip("no test SGLang venv: run `bash scripts/setup_sglang.sh` (CI fails on this skip)")
    return py


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """The fixture model directory (tokenizer appends ``<|endoftext|>``, like current snapshots)."""
    from tests.numerics.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen3-embedding"))


@pytest.fixture(scope="session")
def engine_model(tiny_model: TinyModel) -> TinyModel:
    """The tiny Qwen3 model the real engines serve: the numerics suite's `tiny_model`."""
    return tiny_model


@pytest.fixture(scope="session")
def engine_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """QEMBED_STATE_DIR of the real engines (records, claims, logs), shared by the session."""
    return tmp_path_factory.mktemp("engine-state")


@pytest.fixture(scope="session")
def engine(sglang_python: Path, engine_model: TinyModel, engine_state: Path) -> Iterator[Engine]:
    """The session's shared real engine: `qembed serve --profile xeon`, fp32, pinned KV pool.

    Its teardown checks `qembed stop`: exit 0 and no process of the tree left."""
    from tests.engine.real import running
    from tests.fake_site.harness import assert_gone

    with running("real", engine_model.path, engine_state, python=sglang_python) as eng:
        pids = eng.tree()
        yield eng
        out = eng.stop()
        assert out.returncode == 0, out.stderr
        assert_gone(pids, timeout=30)


@pytest.fixture(scope="session")
def engine_no_mrl(sglang_python: Path, engine_model: TinyModel, engine_state: Path) -> Iterator[Engine]:
    """A second real engine, started with `matryoshka: false` (no `is_matryoshka` override):
    real SGLang then refuses every `dimensions` request with HTTP 400."""
    from tests.engine.real import running

    with running("real-no-mrl", engine_model.path, engine_state, python=sglang_python,
                 sets=("matryoshka=false",)) as eng:
        yield eng


ENGINE_FIXTURES = {"engine", "engine_no_mrl"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses a real engine is marked `engine` (a skip of one fails CI)."""
    for item in items:
        if ENGINE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.engine)


_skipped_conformance: list[str] = []


@pytest.hookimpl(tryfirst=True)
def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config):  # type: ignore[no-untyped-def]
    if report.skipped and ("conformance" in report.keywords or "engine" in report.keywords):
        _skipped_conformance.append(report.nodeid)
    return None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With QEMBED_REQUIRE_CONFORMANCE=1 (set by scripts/test.sh), a skipped conformance test
    fails the run: the real SGLang parser must have checked every argv qembed builds."""
    if os.environ.get("QEMBED_REQUIRE_CONFORMANCE") == "1" and _skipped_conformance:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"FAILED: {len(_skipped_conformance)} conformance or real-engine test(s) were skipped "
                "(QEMBED_REQUIRE_CONFORMANCE=1): " + ", ".join(_skipped_conformance[:5]),
                red=True,
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
