"""The one-shot path: `qembed embed "text"` goes over the standard library's http.client (no
aiohttp, no event loop), and prints exactly what the full (aiohttp) path prints. Startup
imports are checked in tests/test_startup.py; the wall time is in scripts/bench_oneshot.py."""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import qembed.client.drivers
from qembed.cli import main
from qembed.transport import StdlibSync
from tests.standin.server import Running, StandinConfig, serve_in_thread

REAL_CLIENT = qembed.client.drivers.Client


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

    def make(*a: object, **kw: object) -> qembed.client.drivers.Client:
        c = real(*a, **kw) if http is None else real(*a, http=http, **kw)  # type: ignore[arg-type]
        # which transport carried each request, observed on the real objects
        io_request = c._io.request

        def counted(req: object) -> object:
            used.append(type(c._io).__name__)
            return io_request(req)  # type: ignore[arg-type]

        c._io.request = counted  # type: ignore[method-assign]
        return c

    monkeypatch.setattr(qembed.client.drivers, "Client", functools.wraps(real)(make))
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
    with qembed.client.drivers.Client(srv.url, batch_size=2) as c:
        c.embed_documents(["a"])
        assert c._loop is None  # no event loop was needed
        out = c.embed_documents([f"t{i}" for i in range(9)])
        assert c._loop is not None and out.shape == (9, 64)


CALLS: list[tuple[str, dict[str, object], str, dict[str, object]]] = [
    # (Embeddings method, its arguments, embed_lists kind, its arguments)
    ("embed_documents", {}, "document", {}),
    ("embed_queries", {}, "query", {}),
    ("embed_queries", {"task": "sts", "dimensions": 32}, "query", {"task": "sts", "dimensions": 32}),
    ("embed", {"instruction": "Find it", "on_error": "skip"}, "raw", {"instruction": "Find it", "on_error": "skip"}),
    ("embed", {"prefix": "p: "}, "raw", {"prefix": "p: "}),
    ("embed_documents", {"task": "sts"}, "document", {"task": "sts"}),
]


@pytest.mark.parametrize("matryoshka", [True, False])  # False: the client truncates and renormalises
@pytest.mark.parametrize("encoding", ["base64", "float"])
def test_embed_lists_is_embed_as_lists(matryoshka: bool, encoding: str) -> None:
    texts = ["a cat", " ", "a dog sat", "x" * 50]
    for method, kw, kind, lkw in CALLS:
        with serve_in_thread(StandinConfig(dim=64, matryoshka=matryoshka)) as s:
            with REAL_CLIENT(s.url, batch_size=2) as c:
                c._encoding = encoding
                arrays = getattr(c, method)(texts if kw.get("on_error") else [t for t in texts if t.strip()], **kw)
            first = list(s.requests)
        with serve_in_thread(StandinConfig(dim=64, matryoshka=matryoshka)) as s:
            with REAL_CLIENT(s.url, batch_size=2) as c:
                c._encoding = encoding
                lists = c.embed_lists(texts if kw.get("on_error") else [t for t in texts if t.strip()], kind=kind,
                                      **lkw)  # type: ignore[arg-type]
            second = list(s.requests)
        assert first == second, method  # the same requests
        assert lists.vectors == arrays.tolist(), (method, kw)
        assert lists.dimensions == arrays.shape[1]
        assert lists.indices == (None if arrays.indices is None else arrays.indices.tolist())
        assert (lists.failures, lists.model, lists.prompt_tokens) == (arrays.failures, arrays.model,
                                                                      arrays.prompt_tokens)


def test_url_is_the_name_base_url_its_alias(srv: Running) -> None:
    """`Client(url=...)` as the CLI's `--url` and the adapters' `url=` (issue 23 item 7);
    `base_url=` as the openai SDK spells it; both at once is refused, never a raw TypeError. Run
    as a user script would, in a fresh interpreter."""
    import subprocess

    script = f"""
import qembed
from qembed.errors import ConfigError
for make in (lambda: qembed.Client(url={srv.url!r}), lambda: qembed.Client(base_url={srv.url!r}),
             lambda: qembed.Client({srv.url!r}), lambda: qembed.AsyncClient(url={srv.url!r})):
    c = make()
    print(c.base_url)
with qembed.Client(url={srv.url!r}) as c:
    print(len(c.embed_documents(["a text"])[0]))
try:
    qembed.Client(url={srv.url!r}, base_url={srv.url!r})
except ConfigError as exc:
    print("refused:", exc.message)
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                       cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:4] == [srv.url] * 4
    assert lines[4] == "64"
    assert lines[5].startswith("refused: pass the server's address once: `url=` or `base_url=`")
