"""Prometheus's `promtool`, which checks the rules and queries qembed generates."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


def promtool() -> str:
    path = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if path is None:  # never a skip: scripts/test.sh installs it and fails loudly if it can't
        pytest.fail("promtool is not installed (Debian package `prometheus`); scripts/test.sh installs it")
    return path
