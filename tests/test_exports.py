"""`qembed.__all__` lists exactly the public names, and each one resolves (httpx's
tests/test_exported_members.py habit)."""

from __future__ import annotations

import qembed


def test_all_matches_the_lazy_table() -> None:
    assert set(qembed.__all__) == {"__version__", *qembed._LAZY}


def test_every_public_name_resolves() -> None:
    for name in qembed.__all__:
        assert getattr(qembed, name) is not None, name
