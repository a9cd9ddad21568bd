"""Bulk jobs for the bulk tests: the texts, their reference vectors (the stand-in's hash
backend), a JSONL input file, and a job stopped as Ctrl-C would stop it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from qembed.client.bulk import embed_file, journal_path
from qembed.client.drivers import Client
from tests.standin.server import HashBackend

TEXTS = [f"record number {i}" for i in range(40)]


def ref(texts: list[str]) -> np.ndarray:
    return np.array(HashBackend(32).embed(texts), dtype=np.float32)


def jsonl_input(path: Path, texts: list[str], ids: list[str] | None = None) -> Path:
    ids = ids or [f"doc-{i}" for i in range(len(texts))]
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in zip(ids, texts, strict=True)))
    return path


class _Stop(KeyboardInterrupt):
    pass


def interrupted_job(c: Client, inp: Path, out: Path, after_rows: int, **kw: object) -> None:
    """Run a job and stop it (as Ctrl-C would) once ``after_rows`` rows are committed."""

    def progress(rows: int, total: int | None, tokens: int) -> None:
        if rows >= after_rows:
            raise _Stop

    with pytest.raises(_Stop):
        embed_file(c, inp, out, chunk_rows=4, on_progress=progress, **kw)  # type: ignore[arg-type]
    assert journal_path(out).exists()
