"""Every import the docs show works, in a fresh interpreter, and every name in `qembed.__all__`
resolves to something real (httpx's tests/test_exported_members.py habit).

The docs are read, not copied: each ```python block and inline snippet of README.md and docs/*.md
is scanned for `from qembed... import ...`, `import qembed...` and `qembed.Name`, so a rename that
forgets the docs fails here."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import qembed

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_FROM = re.compile(r"^\s*from (qembed(?:\.[a-z_]+)*) import \(?([A-Za-z_][A-Za-z0-9_, ]*)", re.M)
_ATTR = re.compile(r"\bqembed\.([A-Z][A-Za-z0-9_]*)\b")


def documented_imports() -> dict[str, set[str]]:
    """``{module: {names}}`` from every doc page (``qembed.X`` counts as ``from qembed import X``)."""
    out: dict[str, set[str]] = {}
    for page in DOCS:
        text = page.read_text(encoding="utf-8")
        for mod, names in _FROM.findall(text):
            out.setdefault(mod, set()).update(n.strip() for n in names.split(",") if n.strip())
        out.setdefault("qembed", set()).update(_ATTR.findall(text))
    return out


def test_the_docs_show_some_imports() -> None:
    found = documented_imports()
    assert {"Client", "AsyncClient"} <= found["qembed"]
    assert "qembed.integrations.langchain" in found


def test_every_documented_import_works_in_a_fresh_interpreter() -> None:
    lines = [f"from {mod} import {', '.join(sorted(names))}" for mod, names in sorted(documented_imports().items())
             if names]
    r = subprocess.run([sys.executable, "-c", "\n".join(lines)], capture_output=True, text=True, timeout=120,
                       cwd=REPO)
    assert r.returncode == 0, f"{r.stderr}\n--- the imports the docs show ---\n" + "\n".join(lines)


def test_every_public_name_resolves() -> None:
    for name in qembed.__all__:
        assert getattr(qembed, name) is not None, name
    assert "__version__" in qembed.__all__ and qembed.__version__


def test_the_package_says_it_is_typed() -> None:
    """PEP 561: `qembed/py.typed` lets a user's mypy read qembed's annotations. The wheel ships it
    because hatch packages every file under `qembed/` (pyproject `packages = ["qembed"]`)."""
    assert (Path(qembed.__file__).parent / "py.typed").is_file()
    assert 'packages = ["qembed"]' in (REPO / "pyproject.toml").read_text()
