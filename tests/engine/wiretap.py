"""A recording pass-through in front of a real engine: what did the client put on the wire?

Real SGLang does not log request bodies, and the numerics suite checks what qembed's client and
the framework adapters *send* (the instruction, token ids, `dimensions`, how a batch was split)
as well as what comes back. This forwards every request unchanged to the real engine and keeps
the JSON bodies of `POST /v1/embeddings`, with the same `requests` / `inputs_since` view the
stand-in has. It changes nothing that passes through: status, headers and body are the engine's.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "content-encoding"}


@dataclass
class Wiretap:
    upstream: str
    model: str
    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def inputs_since(self, start: int) -> list[Any]:
        """Every input (text or token ids) received since request number ``start``, flattened."""
        from tests.standin.server import inputs_of

        return inputs_of(self.requests[start:])


@contextmanager
def wiretap(upstream: str, model: str) -> Iterator[Wiretap]:
    import httpx

    tap = Wiretap(upstream=upstream, model=model)
    http = httpx.Client(base_url=upstream, timeout=300.0, trust_env=False)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _forward(self, method: str) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
            if method == "POST" and self.path.rstrip("/").endswith("/embeddings"):
                try:
                    with tap.lock:
                        tap.requests.append(json.loads(body))
                except ValueError:
                    pass
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            try:
                resp = http.request(method, self.path, content=body, headers=headers)
            except httpx.HTTPError as exc:
                self.send_error(502, f"wiretap: upstream failed: {exc}")
                return
            self.send_response(resp.status_code)
            for k, v in resp.headers.items():
                if k.lower() not in _HOP:
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(resp.content)))
            self.end_headers()
            self.wfile.write(resp.content)

        def do_GET(self) -> None:
            self._forward("GET")

        def do_POST(self) -> None:
            self._forward("POST")

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    tap.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield tap
    finally:
        srv.shutdown()
        srv.server_close()
        http.close()
