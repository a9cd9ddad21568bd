"""``python -m tests.standin.tiny_backend``: the real-vector stand-in in its own process (what
launcher / verify tests spawn), answering like the in-thread one."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from tests.helpers.paths import REPO
from tests.numerics.reference import Reference, assert_matches, truncate_normalise
from tests.numerics.texts import DOCUMENTS
from tests.numerics.tiny_model import TinyModel
from tests.numerics.wire import post_embeddings

START_TIMEOUT = 60.0  # torch + transformers import and the model load; ~5 s on 2 idle cores


def _read_lines(stream: object, out: queue.Queue[str | None]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        out.put(line)
    out.put(None)


@pytest.fixture(scope="module")
def process_url(tiny_model: TinyModel) -> Iterator[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.standin.tiny_backend",
            "--model",
            str(tiny_model.path),
            "--port",
            "0",
        ],
        cwd=str(REPO),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(proc.stderr, lines), daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + START_TIMEOUT
        url = None
        while url is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(
                    f"no 'standin listening' line within {START_TIMEOUT} s: {''.join(seen)[-2000:]}"
                )
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"server exited (rc={proc.wait()}): {''.join(seen)[-2000:]}")
            seen.append(line)
            if line.startswith("standin listening on "):
                url = "http://" + line.split(" on ", 1)[1].strip()
        yield url
    finally:
        proc.terminate()  # by PID: only the process this fixture started
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        reader.join(timeout=10)
        assert proc.stderr is not None
        proc.stderr.close()


def test_process_server_matches_reference(
    process_url: str, reference: Reference, tiny_model: TinyModel
) -> None:
    got, reply = post_embeddings(process_url, DOCUMENTS, encoding_format="base64")
    assert_matches(got, reference.encode_documents(DOCUMENTS), label="subprocess server docs")
    assert reply["model"] == str(tiny_model.path)
    cut, _ = post_embeddings(process_url, DOCUMENTS, dimensions=32)
    assert_matches(
        cut,
        truncate_normalise(reference.encode_documents(DOCUMENTS), 32),
        label="subprocess server d=32",
    )
