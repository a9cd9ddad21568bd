"""Shared fixtures: an isolated environment for every test, stand-in servers, and the CI rule
that a skipped conformance test is a failure."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.engine.real import Engine
    from tests.numerics.tiny_model import TinyModel
    from tests.standin.server import Running

# tests/fake_site/python (the fake SGLang's interpreter) runs the real Python that runs the tests,
# whatever the test venv is called (.venv-test in CI, .venv in an older checkout)
os.environ.setdefault("FAKE_SGLANG_REAL_PYTHON", sys.executable)


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


@pytest.fixture
def quiet_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No HF cache, roomy /dev/shm, SGLang's parser replaced (its real run is tested elsewhere)."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    from qembed.fleet import doctor
    from qembed.serving import sglang_args

    monkeypatch.setattr(doctor, "shm_size", lambda path="/dev/shm": 16 * 1024**3)
    monkeypatch.setattr(sglang_args, "check_flags",
                        lambda flags, *, python, timeout=180.0, env=None: sglang_args.ParserCheck(True, "", 0.1))
    yield


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

_FAULTS = ("replies and faults real SGLang can't be made to give on demand (malformed, non-finite or "
           "mis-indexed replies, 5xx, resets, slow or stuck answers), by the thousand in seconds")
_FAKE = ("the fake `sglang` package's launch faults (OOM, hang, scheduler death, endless drain, port "
         "stolen mid-load) and exact timings, and the fake NVML")
#: Test modules that a test double still serves (tests/standin: the stand-in server;
#: tests/fake_site: the fake `sglang` package and NVML), and why. Each test in them is marked
#: `standin` with this reason (`pytest -m standin` lists them); what real SGLang can show runs in
#: tests/engine and tests/numerics against it. tests/test_ci_rules.py keeps this table complete.
STANDIN_MODULES: dict[str, str] = {
    "test_bench.py": "bench's arithmetic needs a server of known latency and errors: " + _FAULTS,
    "test_bulk.py": "bulk formats and resume over many chunks with planted delays and faults: " + _FAULTS
                    + "; against real SGLang: tests/engine/test_b_bulk.py",
    "test_bulk_fuzz.py": "property-based bulk runs, hundreds of jobs: " + _FAULTS,
    "test_bulk_safety.py": "output safety under planted faults: " + _FAULTS,
    "test_bulk_round3.py": "planted links, a resume against another server's size or weights: " + _FAULTS,
    "test_client.py": _FAULTS + "; the happy path runs against real SGLang in tests/numerics",
    "test_client_async.py": _FAULTS + "; the happy path runs against real SGLang in tests/numerics",
    "test_client_cli.py": _FAULTS,
    "test_client_faults.py": _FAULTS,
    "test_client_dimensions.py": "vLLM's and Infinity's `dimensions` faults (issue 21) planted on demand; the real "
                                 "runtimes: tests/peers",
    "test_client_oneshot.py": "one-shot CLI paths against a server in this process: " + _FAULTS,
    "test_cpu_engine.py": "an interpreter without SGLang's CPU build (the refusal path), next to the real venv",
    "test_deploy_docker.py": "the generated health probe's exit codes against 503/200 on demand",
    "test_doctor.py": _FAKE + "; doctor's server checks also run against real SGLang (tests/engine)",
    "test_embed_cli.py": _FAULTS,
    "test_gateway.py": "worker deaths at chosen moments, many times; real smg + real SGLang: "
                       "tests/engine/test_f_gateway.py",
    "test_gateway_serve.py": "`serve --gpus N --gateway` needs N GPUs; " + _FAKE,
    "test_interrupts.py": "Ctrl-C at chosen phases: " + _FAKE,
    "test_hub_download.py": "the engine a downloaded model is served by (the download and the Hub are real): " + _FAKE,
    "test_keys.py": "a keyed server to check what reaches it, every transport: " + _FAULTS,
    "test_launcher.py": _FAKE,
    "test_logrotate.py": "log volume on demand: " + _FAKE,
    "test_newcomer.py": "dozens of first-run CLI paths in seconds: " + _FAKE,
    "test_openai_interop.py": "the openai SDK's retries and errors against planted faults: " + _FAULTS,
    "test_probe.py": "what probe_server makes of non-SGLang and broken servers: " + _FAULTS,
    "test_profile_edges.py": "`profiles show`/dry runs on GPU models: " + _FAKE,
    "test_serve_cli.py": "every launch failure and its exit code: " + _FAKE
                         + "; the real lifecycle: tests/engine/test_a_serve.py",
    "test_standin.py": "tests the stand-in itself (its fidelity to the recorded SGLang behaviour)",
    "test_startup.py": _FAKE,
    "test_supervisor.py": _FAKE,
    "test_top.py": "`top` against counters that move on demand: " + _FAULTS,
    "numerics/test_client_numerics.py": "two tests: a server with planted reply faults; the rest is real SGLang",
    "numerics/test_framework_adapters.py": "one test pins a stand-in-only wire detail; the rest is real SGLang",
    "numerics/test_mistakes.py": "numerics mistakes SGLang has no flag for (mean pooling, no normalisation, "
                                 "a space after `Query:`), served by the stand-in's tiny backend",
    "numerics/test_refserver.py": "the reference engine's process lifecycle: " + _FAKE,
    "numerics/test_server_vs_reference.py": "a few cases compare the stand-in's tiny backend itself",
    "numerics/test_verify_hypotheses.py": "the mistakes of peer runtimes (Infinity's whitespace and Matryoshka "
                                          "faults, vLLM's refusal, BOS, token limit, pooling) planted on demand; "
                                          "the real vLLM and Infinity: tests/peers",
    "numerics/test_verify.py": "verify's mistake diagnosis for mistakes SGLang has no flag for; real SGLang: "
                               "tests/engine/test_c_verify.py",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses a real engine is marked `engine` (a skip of one fails CI)."""
    tests_dir = Path(__file__).resolve().parent
    for item in items:
        if ENGINE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.engine)
        rel = Path(str(item.fspath)).resolve().relative_to(tests_dir).as_posix()
        if rel in STANDIN_MODULES:
            item.add_marker(pytest.mark.standin(reason=STANDIN_MODULES[rel]))


_skipped_conformance: list[str] = []


@pytest.hookimpl(tryfirst=True)
def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config):  # type: ignore[no-untyped-def]
    if report.skipped and any(k in report.keywords for k in ("conformance", "engine", "peer")):
        _skipped_conformance.append(report.nodeid)
    return None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With QEMBED_REQUIRE_CONFORMANCE=1 (set by scripts/test.sh), a skipped conformance test
    fails the run: the real SGLang parser must have checked every argv qembed builds."""
    if os.environ.get("QEMBED_REQUIRE_CONFORMANCE") == "1" and _skipped_conformance:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"FAILED: {len(_skipped_conformance)} conformance test(s) were skipped (real-engine tests included) "
                "(QEMBED_REQUIRE_CONFORMANCE=1): " + ", ".join(_skipped_conformance[:5]),
                red=True,
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_configure(config: pytest.Config) -> None:
    """A SIGTERM to pytest (a CI job's cancel, `timeout`) runs the fixtures' teardown, as Ctrl-C
    does: the real engines the fixtures start run in sessions of their own and would otherwise
    outlive the run, holding GBs of RAM (seen: four SGLang engines and an Infinity left behind)."""
    import signal
    import threading

    def _as_interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _as_interrupt)
