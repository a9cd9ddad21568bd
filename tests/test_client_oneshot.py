"""The one-shot path: `qembed embed "text"` goes over the standard library's http.client (no
aiohttp, no event loop), and prints exactly what the full (aiohttp) path prints. Startup
imports are checked in tests/test_startup.py; the wall time is in scripts/bench_oneshot.py."""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import qembed.client
from qembed.cli import main
from qembed.transport import StdlibSync
from tests.standin.server import Running, StandinConfig, serve_in_thread

REAL_CLIENT = qembed.client.Client


@pytest.fixture
def srv() -> Iterator[Running]:
    with serve_in_thread(StandinConfig(dim=64, model="Qwen/Qwen3-Embedding-0.6B")) as s:
        yield s


def _run(monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes], args: list[str],
         http: str | None) -> tuple[bytes, list[str]]:
    """Run the CLI in-process; ``http`` forces the client's backend (None: its default).
    Returns stdout and the transports that carried the requests."""
    used: list[str] = []
    real = REAL_CLIENT

    def make(*a: object, **kw: object) -> qembed.client.Client:
        c = real(*a, **kw) if http is None else real(*a, http=http, **kw)  # type: ignore[arg-type]
        # which transport carried each request, observed on the real objects
        io_request = c._io.request

        def counted(req: object) -> object:
            used.append(type(c._io).__name__)
            return io_request(req)  # type: ignore[arg-type]

        c._io.request = counted  # type: ignore[method-assign]
        return c

    monkeypatch.setattr(qembed.client, "Client", functools.wraps(real)(make))
    monkeypatch.setattr(sys, "argv", ["qembed", *args])
    code: object = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    out, err = capsysbinary.readouterr()
    assert code in (0, None), err.decode()
    return out, used


@pytest.mark.parametrize("fmt", ["json", "jsonl", "npy", "table"])
@pytest.mark.parametrize("texts", [["x"], ["one text", "two", "three"]])
def test_light_and_full_path_print_the_same(srv: Running, monkeypatch: pytest.MonkeyPatch,
                                            capsysbinary: pytest.CaptureFixture[bytes], fmt: str,
                                            texts: list[str]) -> None:
    args = ["embed", "--url", srv.url, "--format", fmt, *texts]
    light, light_io = _run(monkeypatch, capsysbinary, args, None)
    full, full_io = _run(monkeypatch, capsysbinary, args, "aiohttp")
    assert light == full and light.strip()
    assert set(light_io) == {StdlibSync.__name__}  # the default: http.client only
    assert set(full_io) == {"_OnLoop"}  # aiohttp on the loop thread
    bodies = list(srv.requests)
    assert bodies[: len(bodies) // 2] == bodies[len(bodies) // 2:]  # the same requests, too


def test_the_default_client_reaches_aiohttp_only_for_concurrent_requests(srv: Running, tmp_path: Path) -> None:
    """`auto`: a call with several requests runs them over aiohttp; one request never loads it."""
    with qembed.client.Client(srv.url, batch_size=2) as c:
        c.embed_documents(["a"])
        assert c._loop is None  # no event loop was needed
        out = c.embed_documents([f"t{i}" for i in range(9)])
        assert c._loop is not None and out.shape == (9, 64)
