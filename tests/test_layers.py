"""The layer contracts (pyproject `[tool.importlinter]`): the real tree keeps them, a planted
upward import or cycle breaks them, and CONTRIBUTING.md's layer list is the contracts' list.

`lint-imports` is import-linter's own command (PyPI `import-linter`, pinned in the test set); it
reads imports inside functions and under TYPE_CHECKING too.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.helpers.paths import REPO

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _contracts() -> list[dict[str, object]]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    contracts: list[dict[str, object]] = config["tool"]["importlinter"]["contracts"]
    return contracts


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` over the `qembed` package under ``root`` (``root`` first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)


def _copy_tree(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "qembed", tmp_path / "qembed", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_tree_keeps_every_contract() -> None:
    proc = _lint(REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(_contracts())} kept, 0 broken" in proc.stdout


@pytest.mark.parametrize(("module", "planted", "broken"), [
    # a base module reaching up into the CLI
    ("qembed/errors.py", "from qembed.cli import app", "qembed.errors -> qembed.cli"),
    # the client reaching into the serving runtime, inside a function (still counted)
    ("qembed/client/bulk.py", "def _planted() -> None:\n    from qembed.serving import launcher",
     "qembed.client.bulk -> qembed.serving.launcher"),
    # the reference engine's server importing the profile model only for type checking
    ("qembed/reference/server.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from qembed.serving.profiles.model import Profile",
     "qembed.reference.server -> qembed.serving.profiles.model"),
])
def test_a_planted_upward_import_fails(tmp_path: Path, module: str, planted: str, broken: str) -> None:
    root = _copy_tree(tmp_path)
    target = root / module
    target.write_text(target.read_text(encoding="utf-8") + "\n\n" + planted + "  # planted\n", encoding="utf-8")
    proc = _lint(root)
    assert proc.returncode != 0
    assert "qembed's layers" in proc.stdout and "BROKEN" in proc.stdout
    assert broken in proc.stdout, proc.stdout


def test_a_planted_cycle_between_siblings_fails(tmp_path: Path) -> None:
    # gpu.py (NVML and the GPU table) importing the launch policy that imports it
    root = _copy_tree(tmp_path)
    target = root / "qembed/serving/gpu.py"
    target.write_text(target.read_text(encoding="utf-8") + "\n\ndef _planted() -> None:\n"
                      "    from qembed.serving import policy  # planted\n", encoding="utf-8")
    proc = _lint(root)
    assert proc.returncode != 0
    assert "No cycles are allowed in qembed.serving" in proc.stdout, proc.stdout


def test_contributing_lists_the_contracts_layers() -> None:
    """CONTRIBUTING.md's "Layers" block is the layers contract, top to bottom, word for word."""
    (layers,) = [c for c in _contracts() if c["type"] == "layers"]
    text = (REPO / "CONTRIBUTING.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- layers -->\n```\n(.*?)```", text, re.S)
    assert block, "CONTRIBUTING.md has no <!-- layers --> block"
    written = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.split("#")[0].strip()]
    assert written == layers["layers"]


def test_every_module_sits_in_a_layer() -> None:
    """`exhaustive`: a new top-level module or package must be placed in a layer."""
    (layers,) = [c for c in _contracts() if c["type"] == "layers"]
    assert layers["exhaustive"] is True
    named = {n.strip() for layer in layers["layers"] for n in re.split(r"[|:]", str(layer))}  # type: ignore[attr-defined]
    on_disk = {p.stem for p in (REPO / "qembed").glob("*.py") if p.name != "__init__.py"}
    on_disk |= {p.name for p in (REPO / "qembed").iterdir() if (p / "__init__.py").exists()}
    assert on_disk == named


def test_interfaces_doc_is_generated_from_the_code() -> None:
    """docs/interfaces.md is what scripts/gen_interfaces.py prints from every `__all__` today."""
    proc = subprocess.run([sys.executable, str(REPO / "scripts/gen_interfaces.py"), "--check"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = (REPO / "docs/interfaces.md").read_text(encoding="utf-8")
    # spot checks that the generator reads the code, not a fixed text
    from qembed.serving.profiles.model import Profile

    assert f"    port: int = {Profile.model_fields['port'].default!r}" in doc
    assert "## `qembed.serving.policy` (qembed/serving/policy.py)" in doc
