"""Fixtures for the numerics suite: the tiny Qwen3 model (built once per session), the
reference recipe on it, the sentence-transformers reference, the tiny-model backend, and
stand-in servers (once per module)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.engine.wiretap import Wiretap, wiretap
from tests.numerics.reference import MEASURED, Reference
from tests.numerics.tiny_model import TinyModel, build_tiny_model
from tests.standin.server import Running, StandinConfig, serve_in_thread
from tests.standin.tiny_backend import TinyBackend

if TYPE_CHECKING:
    from qembed.reference.engine import ReferenceEngine
    from tests.engine.real import Engine
    from tests.numerics.st_reference import STReference


@pytest.fixture(scope="session")
def tiny_model_no_eos(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """Same weights, but a tokenizer without the EOS post-processor (older snapshots)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen3-no-eos"), eos_post_processor=False)


@pytest.fixture(scope="session")
def reference(tiny_model: TinyModel) -> Reference:
    return Reference(tiny_model.path)


@pytest.fixture(scope="session")
def ref_engine(tiny_model: TinyModel) -> ReferenceEngine:
    """qembed's reference engine (sentence-transformers) on the fixture directory."""
    from qembed.reference.engine import ReferenceEngine
    from tests.numerics.reference import offline

    with offline():
        return ReferenceEngine(str(tiny_model.path), threads=2)


@pytest.fixture(scope="module")
def st(tiny_model: TinyModel) -> STReference:
    """The model card's sentence-transformers recipe on the fixture model (the framework tests)."""
    from tests.numerics.st_reference import STReference

    return STReference(tiny_model.path)


@pytest.fixture(scope="session")
def backend(tiny_model: TinyModel) -> TinyBackend:
    return TinyBackend(tiny_model.path)


@pytest.fixture(scope="module")
def server(engine: Engine) -> Iterator[Wiretap]:
    """Real SGLang 0.5.23 on CPU (the session's shared engine: fp32, Matryoshka on), behind a
    recording pass-through so tests can also check what the client sent."""
    with wiretap(engine.url, engine.model) as tap:
        yield tap


@pytest.fixture(scope="module")
def server_no_mrl(engine_no_mrl: Engine) -> Iterator[Wiretap]:
    """Real SGLang started without `is_matryoshka`: every `dimensions` request is HTTP 400."""
    with wiretap(engine_no_mrl.url, engine_no_mrl.model) as tap:
        yield tap


@pytest.fixture(scope="module")
def standin_server(tiny_model: TinyModel, backend: TinyBackend) -> Iterator[Running]:
    """The stand-in with the correct tiny backend, for what real SGLang can't be made to show."""
    cfg = StandinConfig(dim=backend.dim, model=str(tiny_model.path), matryoshka=True)
    with serve_in_thread(cfg, backend) as srv:
        yield srv


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    """With ``-v``, list every numerics comparison (the numbers docs/numerics.md quotes)."""
    if not MEASURED or config.option.verbose < 1:
        return
    terminalreporter.section("numerics: measured comparisons")
    for result in MEASURED:
        terminalreporter.write_line(("PASS " if result.ok else "FAIL ") + result.summary())
