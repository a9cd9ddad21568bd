"""Where the repository is."""

from __future__ import annotations

from pathlib import Path

#: the repository root (the directory holding ``qembed/`` and ``tests/``)
REPO = Path(__file__).resolve().parent.parent.parent
