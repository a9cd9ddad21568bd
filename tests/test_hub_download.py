"""`qembed.hub.ensure_model` (issue 23 item 2): a model that must come from the Hub is downloaded by
qembed itself before any engine starts, with its progress on stderr, and a Hub that fails is said
in seconds with the cause and the fix. The Hub is a real HTTP server on loopback (`HF_ENDPOINT`)
that serves the tiny model's files as huggingface.co does for `huggingface_hub` (the model API
with `siblings`, and `resolve` with `ETag` / `X-Repo-Commit` / `Content-Length`); the engine is
the fake SGLang (tests/fake_site, a TEST DOUBLE)."""

from __future__ import annotations

import errno
import hashlib
import http.server
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from qembed.errors import ConfigError, ExitCode, LaunchError, StorageError
from qembed.hub import Transfer, _download_error, _wanted, size_text
from tests.fake_site import harness
from tests.numerics.tiny_model import TinyModel

REPO_ID = "tiny-org/Tiny-Embedding"
SHA = "0123456789abcdef0123456789abcdef01234567"
#: served but not what an embedding model needs: never downloaded
EXTRA = {"README.md": b"# tiny\n", "onnx/model.onnx": b"\0" * 4096}


class _Hub(http.server.BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}
    fail: ClassVar[dict[str, int]] = {}  # "[METHOD ]path suffix" -> the status it answers
    downloads: ClassVar[list[str]] = []  # the files sent (GET resolve)

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in {"Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _answer(self) -> None:
        path = self.path.split("?")[0]
        for key, status in self.fail.items():
            method, _, suffix = key.rpartition(" ")
            if path.endswith(suffix) and method in ("", self.command):
                return self._send(status, b'{"error":"injected"}', {"Content-Type": "application/json"})
        if path in (f"/api/models/{REPO_ID}", f"/api/models/{REPO_ID}/revision/main"):
            siblings = []
            for name, data in sorted(self.files.items()):
                sib: dict[str, object] = {"rfilename": name, "size": len(data), "blobId": hashlib.sha1(data).hexdigest()}
                if name.endswith((".safetensors", ".onnx")):
                    sib["lfs"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
                siblings.append(sib)
            body = json.dumps({"id": REPO_ID, "modelId": REPO_ID, "sha": SHA, "private": False,
                               "siblings": siblings}).encode()
            return self._send(200, body, {"Content-Type": "application/json"})
        prefix = f"/{REPO_ID}/resolve/"
        if path.startswith(prefix):
            _rev, _, name = path.removeprefix(prefix).partition("/")
            if name in self.files:
                data = self.files[name]
                if self.command == "GET":
                    self.downloads.append(name)
                return self._send(200, data, {"ETag": f'"{hashlib.sha256(data).hexdigest()}"', "X-Repo-Commit": SHA,
                                              "Content-Type": "application/octet-stream"})
            return self._send(404, b"Entry not found", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": SHA})
        return self._send(404, b'{"error":"Repository not found"}', {"X-Error-Code": "RepoNotFound"})

    do_GET = do_HEAD = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hub(tiny_model: TinyModel) -> Iterator[str]:
    root = Path(tiny_model.path)
    _Hub.files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    _Hub.files.update(EXTRA)
    _Hub.fail, _Hub.downloads = {}, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Serve:
    """`qembed serve -p a100 --model REPO_ID` against the fake SGLang, the loopback Hub and an
    empty HF cache."""

    def __init__(self, tmp_path: Path, hub: str) -> None:
        self.pidfile = tmp_path / "pids.json"
        self.hf = tmp_path / "hf"
        self.env = harness.fake_env(self.pidfile, HF_HOME=str(self.hf), HF_ENDPOINT=hub,
                                    QEMBED_STATE_DIR=str(tmp_path / "state"), FAKE_SGLANG_LOAD_DELAY="0.2")
        for name in ("HF_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "QEMBED_API_KEY"):
            self.env.pop(name, None)
        self.spawned: list[int] = []

    def run(self, *extra: str, timeout: float = 90) -> harness.subprocess.CompletedProcess[str]:
        r = harness.run_qembed(["serve", "-p", "a100", "--python", str(harness.WRAPPER), "--port",
                                str(harness.free_port()), "--model", REPO_ID, "--name", "dl", *extra],
                               self.env, timeout=timeout)
        if self.pidfile.exists():
            self.spawned.extend(harness.all_pids(harness.read_pids(self.pidfile)))
        return r

    def stop(self) -> None:
        r = harness.run_qembed(["stop", "dl"], self.env)
        assert r.returncode == 0, r.stderr
        harness.assert_gone(self.spawned)
        self.pidfile.unlink()

    @property
    def snapshot(self) -> Path:
        return self.hf / "hub" / ("models--" + REPO_ID.replace("/", "--")) / "snapshots" / SHA


@pytest.fixture
def serve(tmp_path: Path, hub: str) -> Iterator[Serve]:
    s = Serve(tmp_path, hub)
    try:
        yield s
    finally:
        harness.kill_leftovers(s.spawned)


@pytest.mark.slow
def test_serve_downloads_the_model_first_with_progress_on_stderr(serve: Serve) -> None:
    r = serve.run("--detach")
    assert r.returncode == 0, r.stderr
    needed = sorted(n for n in _Hub.files if n not in EXTRA)
    # the files land in the cache the engine reads, under the Hub's commit; nothing else is fetched
    assert sorted(_Hub.downloads) == needed
    assert sorted(p.relative_to(serve.snapshot).as_posix() for p in serve.snapshot.rglob("*") if p.is_file()) == needed
    for name in needed:
        assert (serve.snapshot / name).read_bytes() == _Hub.files[name]
    assert (serve.snapshot.parent.parent / "refs" / "main").read_text() == SHA
    assert _Hub.downloads[-1] == "config.json"  # last: a snapshot with config.json is a complete one
    # progress: a line per file with its size, on stderr only, before the engine starts
    err = r.stderr
    assert f"downloading `{REPO_ID}` from the Hub: {len(needed)} files, " in err
    weights = len(_Hub.files["model.safetensors"])
    n = _Hub.downloads.index("model.safetensors") + 1
    line = next(x for x in err.splitlines() if "model.safetensors:" in x)
    assert line.startswith(f"[{n}/{len(needed)}] model.safetensors: {size_text(weights)} in "), line
    assert f"downloaded `{REPO_ID}`: {len(needed)} files, " in err
    assert err.index(f"downloaded `{REPO_ID}`") < err.index("SGLang pid")

    assert "from the Hub" not in r.stdout and "model.safetensors" not in r.stdout and "Traceback" not in err
    # the engine got the id: it finds the files in the cache
    argv = harness.read_pids(serve.pidfile)["argv"]
    assert argv[argv.index("--model-path") + 1] == REPO_ID
    serve.stop()

    again = serve.run("--detach")  # a second run downloads nothing
    assert again.returncode == 0, again.stderr
    assert sorted(_Hub.downloads) == needed and "from the Hub" not in again.stderr
    serve.stop()


@pytest.mark.slow
def test_json_progress_is_events_on_stderr_or_nothing(serve: Serve) -> None:
    quiet = serve.run("--detach", "--json")  # --json alone: the result on stdout, no progress at all
    assert quiet.returncode == 0, quiet.stderr
    assert "from the Hub" not in quiet.stderr and "model.safetensors" not in quiet.stderr and json.loads(quiet.stdout)["model"] == REPO_ID
    serve.stop()
    import shutil

    shutil.rmtree(serve.hf)
    _Hub.downloads.clear()
    r = serve.run("--detach", "--json", "--log-format", "json")
    assert r.returncode == 0, r.stderr
    events = [json.loads(x) for x in r.stderr.splitlines() if x.startswith("{")]
    steps = [e for e in events if e["event"] == "download"]
    assert steps[0]["state"] == "begin" and steps[-1]["state"] == "done"
    files = {e["file"]: e for e in steps if e["state"] == "file"}
    assert sorted(files) == sorted(_Hub.downloads) and files["model.safetensors"]["done_bytes"] == len(
        _Hub.files["model.safetensors"])
    assert "from the Hub" not in r.stdout and json.loads(r.stdout)["model"] == REPO_ID
    serve.stop()


@pytest.mark.slow
@pytest.mark.parametrize(("suffix", "status", "code", "needle"), [
    ("/resolve/main/tokenizer.json", 404, ExitCode.USAGE, "refused `tokenizer.json` of"),
    # the file's GET (huggingface_hub retries a 5xx on its HEAD for about 25 s: a Hub hiccup)
    ("GET /resolve/main/model.safetensors", 500, ExitCode.FAILURE, "downloading `model.safetensors` of"),
    (f"/api/models/{REPO_ID}", 500, ExitCode.FAILURE, f"downloading the file list of `{REPO_ID}`"),
])
def test_a_failing_hub_is_said_in_seconds(serve: Serve, suffix: str, status: int, code: int, needle: str) -> None:
    _Hub.fail = {suffix: status}
    t0 = time.monotonic()
    r = serve.run()
    took = time.monotonic() - t0
    assert r.returncode == code, r.stderr
    assert took < 30, f"took {took:.0f} s"
    error = r.stderr[r.stderr.index("error: "):]
    assert needle in error and f"({serve.env['HF_ENDPOINT']})" in error and f"HTTP {status}" in error, r.stderr
    assert "\nhint: " in error and "Traceback" not in r.stderr
    assert not serve.pidfile.exists()  # no engine was started
    assert not (serve.snapshot / "config.json").exists()  # never taken for a complete snapshot


@pytest.mark.slow
def test_offline_refusal_covers_the_sglang_engines(tmp_path: Path) -> None:
    """Before, only the reference engine was checked; SGLang got a model it could not fetch."""
    s = Serve(tmp_path, "http://127.0.0.1:9")
    s.env["HF_HUB_OFFLINE"] = "1"
    t0 = time.monotonic()
    r = s.run()
    assert r.returncode == ExitCode.USAGE, r.stderr
    assert time.monotonic() - t0 < 30
    assert "HF_HUB_OFFLINE is set" in r.stderr and f"`hf download {REPO_ID}`" in r.stderr
    assert not s.pidfile.exists()


# -- the pieces -----------------------------------------------------------------------------------


class _Sib:
    def __init__(self, name: str, size: int | None = None) -> None:
        self.rfilename, self.size, self.lfs = name, size, None


def test_the_files_an_embedding_model_needs_config_last() -> None:
    names = ["config.json", "1_Pooling/config.json", "README.md", "model.safetensors", "pytorch_model.bin",
             "merges.txt", "tokenizer.json", "onnx/model.onnx", ".gitattributes", "modules.json"]
    got = [n for n, _ in _wanted([_Sib(n, 1) for n in names])]
    assert got == ["1_Pooling/config.json", "merges.txt", "model.safetensors", "modules.json", "tokenizer.json",
                   "config.json"]
    # a repo with no safetensors: its .bin weights
    assert "pytorch_model.bin" in [n for n, _ in _wanted([_Sib("config.json"), _Sib("pytorch_model.bin")])]


def test_a_full_disk_is_a_storage_error() -> None:
    try:
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as inner:
            raise RuntimeError("download failed") from inner
    except RuntimeError as exc:
        err = _download_error("a/b", "model.safetensors", "http://hub", "/c", exc)
    assert isinstance(err, StorageError) and err.exit_code == ExitCode.FAILURE
    assert "into the Hugging Face cache (/c): No space left on device" in err.message
    assert "HF_HOME" in (err.hint or "")
    assert isinstance(_download_error("a/b", "x", "http://hub", "/c", RuntimeError("reset")), LaunchError)
    assert not isinstance(_download_error("a/b", "x", "http://hub", "/c", RuntimeError("reset")), ConfigError)


def test_transfer_lines() -> None:
    t = Transfer("a/b", "file", "model.safetensors", 2_500_000, 2_500_000, 2.0, 3, 9, "/c")
    assert t.message == "[3/9] model.safetensors: 2.5 MB in 2.0 s (1.2 MB/s)"
    assert Transfer("a/b", "progress", "w", 1_000, 4_000, 1.0, 1, 1, "/c").message == "[1/1] w: 1.0 kB / 4.0 kB (1.0 kB/s)"
    assert size_text(999) == "999 B" and size_text(4.9e9) == "4.9 GB" and size_text(None) == "? B"
