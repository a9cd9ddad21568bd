"""The test SGLang parser venv (scripts/setup_sglang_parser.sh): the real parser qembed's argv
is checked against."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.paths import REPO


def parser_python() -> str:
    configured = os.environ.get("QEMBED_SGLANG_PARSER_PYTHON")
    path = Path(configured) if configured else REPO / ".venv-sglang" / "bin" / "python"
    if not path.exists():
        pytest.skip(f"no SGLang parser interpreter at {path}: run `bash scripts/setup_sglang_parser.sh` "
                    "(or set QEMBED_SGLANG_PARSER_PYTHON)")
    return str(path)
