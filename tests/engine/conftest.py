"""The real-engine lane (tests/engine): fixtures live in tests/conftest.py (the shared engine is
also the numerics suite's `server`); this file only marks the lane's tests."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.engine)
