"""`qembed serve` commands (placeholder: being built)."""

from __future__ import annotations

from . import app  # noqa: F401
