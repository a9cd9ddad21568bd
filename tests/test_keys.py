"""API keys as they arrive from the world: a trailing newline or CR (CRLF `.env` files,
`kubectl create secret --from-file`) is stripped on both sides, the same way; any other control
character is refused with an error naming where the key came from, never the key itself.
Issue 19, finding 9 (docs/client.md, "API key")."""

from __future__ import annotations

import asyncio
import http.server
import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest

from qembed.client.drivers import AsyncClient, Client
from qembed.errors import ConfigError, ExitCode, QembedError
from qembed.net import auth_headers, clean_api_key
from qembed.serving.profiles.model import Profile
from qembed.serving.profiles.resolve import resolve_api_key
from tests.helpers.cli import invoke, run_main
from tests.standin.server import StandinConfig, serve_in_thread

KEY = "k3y-Secret-0123456789"


@pytest.fixture
def keyed() -> Any:
    with serve_in_thread(StandinConfig(dim=16, api_key=KEY)) as s:
        yield s


@pytest.mark.parametrize("suffix", ["\n", "\r", "\r\n", " \r\n"])
@pytest.mark.parametrize("how", ["httpx", "aiohttp", "stdlib", "auto", "async"])
def test_a_key_with_a_trailing_newline_works_with_every_transport(keyed: Any, how: str, suffix: str) -> None:
    if how == "async":
        async def run() -> Any:
            async with AsyncClient(keyed.url, api_key=KEY + suffix, max_retries=0) as ac:
                return await ac.embed_documents(["a"])
        vecs = asyncio.run(run())
    else:
        with Client(keyed.url, api_key=KEY + suffix, http=how, max_retries=0) as c:  # type: ignore[arg-type]
            vecs = c.embed_documents(["a"])
    assert len(vecs) == 1


@pytest.mark.parametrize("cmd", [["embed", "hi"], ["similarity", "a", "b"]])
def test_cli_strips_a_crlf_key_from_the_environment(keyed: Any, monkeypatch: pytest.MonkeyPatch,
                                                   cmd: list[str]) -> None:
    monkeypatch.setenv("QEMBED_API_KEY", KEY + "\r\n")
    r = invoke([cmd[0], "--url", keyed.url, *cmd[1:]])
    assert r.exit_code == 0, r.output
    assert KEY not in r.output


@pytest.mark.parametrize("bad", ["\x01", "\x1b[31m", "\r\nX-Evil: 1", "\x7f", "\u0085", "é", "\t"])
def test_cli_refuses_a_key_with_a_control_character_naming_the_variable(
        keyed: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], bad: str) -> None:
    monkeypatch.setenv("QEMBED_API_KEY", KEY[:8] + bad + KEY[8:])
    code, out, err = run_main(monkeypatch, capsys, ["embed", "--url", keyed.url, "hi"])
    assert code == ExitCode.USAGE
    assert err.startswith("error: `QEMBED_API_KEY` ")
    assert "Traceback" not in err
    assert KEY[:8] not in err and KEY[8:] not in err
    assert out == ""


@pytest.mark.parametrize("how", ["httpx", "aiohttp", "stdlib", "auto"])
def test_no_exception_text_contains_the_key(how: str) -> None:
    key = KEY[:8] + "\x01" + KEY[8:]
    with pytest.raises(ConfigError) as info, \
            Client("http://127.0.0.1:9", api_key=key, http=how, max_retries=0) as c:  # type: ignore[arg-type]
        c.embed_documents(["a"])
    text = f"{info.value} {info.value.hint} {info.value!r}"
    assert "`api_key`" in str(info.value)
    assert KEY[:8] not in text and KEY[8:] not in text


def test_the_server_side_and_the_client_side_strip_the_same_way(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    for raw in (KEY + "\n", KEY + "\r\n", "  " + KEY + "\r", KEY):
        monkeypatch.setenv("QEMBED_API_KEY", raw)
        assert resolve_api_key(Profile(name="t", model="m")) == clean_api_key(raw) == KEY
        assert auth_headers(raw) == {"Authorization": f"Bearer {KEY}"}
    monkeypatch.setenv("MY_KEY", KEY[:4] + "\x07" + KEY[4:])
    with pytest.raises(QembedError, match="`MY_KEY`") as info:
        resolve_api_key(Profile(name="t", model="m", api_key_env="MY_KEY"))
    assert KEY[4:] not in str(info.value)
    f = tmp_path / "key"
    f.write_bytes(KEY.encode() + b"\x1b\r\n")
    with pytest.raises(QembedError, match="`api_key_file`") as info:
        resolve_api_key(Profile(name="t", model="m", api_key_env="UNSET_KEY_VAR", api_key_file=str(f)))
    assert KEY not in str(info.value)


class _Redirecting(http.server.BaseHTTPRequestHandler):
    """Answers every request with 307/308 to /elsewhere, and records what reaches /elsewhere."""

    hits: ClassVar[list[tuple[str, str | None]]] = []
    status = 307

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self.path.startswith("/elsewhere"):
            type(self).hits.append((self.path, self.headers.get("Authorization")))
        self.send_response(type(self).status)
        self.send_header("Location", "/elsewhere" + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize("status", [301, 302, 307, 308])
@pytest.mark.parametrize("how", ["httpx", "aiohttp", "stdlib", "async"])
def test_no_transport_follows_a_redirect(how: str, status: int) -> None:
    handler = type("H", (_Redirecting,), {"hits": [], "status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(QembedError) as info:
            if how == "async":
                async def run() -> Any:
                    async with AsyncClient(url, api_key=KEY, max_retries=0) as ac:
                        return await ac.embed_documents(["secret document"])
                asyncio.run(run())
            else:
                with Client(url, api_key=KEY, http=how, max_retries=0) as c:  # type: ignore[arg-type]
                    c.embed_documents(["secret document"])
    finally:
        server.shutdown()
        server.server_close()
    assert handler.hits == []
    assert str(status) in str(info.value)
    assert KEY not in f"{info.value} {info.value.hint}"
