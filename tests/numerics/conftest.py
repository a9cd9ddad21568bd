"""Fixtures for the numerics suite: the tiny Qwen3 model (built once per session), the
reference recipe on it, the sentence-transformers reference, the tiny-model backend, and
stand-in servers (once per module)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.numerics.reference import MEASURED, Reference
from tests.numerics.tiny_model import TinyModel, build_tiny_model
from tests.standin.server import Running, StandinConfig, serve_in_thread
from tests.standin.tiny_backend import TinyBackend

if TYPE_CHECKING:
    from qembed.reference import ReferenceEngine
    from tests.numerics.st_reference import STReference


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """The fixture model directory (tokenizer appends ``<|endoftext|>``, like current snapshots)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen3-embedding"))


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
    from qembed.reference import ReferenceEngine
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
def server(tiny_model: TinyModel, backend: TinyBackend) -> Iterator[Running]:
    """The stand-in SGLang server with the correct tiny backend and Matryoshka enabled."""
    cfg = StandinConfig(dim=backend.dim, model=str(tiny_model.path), matryoshka=True)
    with serve_in_thread(cfg, backend) as srv:
        yield srv


@pytest.fixture(scope="module")
def server_no_mrl(tiny_model: TinyModel, backend: TinyBackend) -> Iterator[Running]:
    """The same, launched without Matryoshka: a ``dimensions`` request is rejected with 400."""
    cfg = StandinConfig(dim=backend.dim, model=str(tiny_model.path), matryoshka=False)
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
