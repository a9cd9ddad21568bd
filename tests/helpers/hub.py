"""A loopback Hugging Face Hub (`HF_ENDPOINT`) answering `/api/models/{id}` as huggingface.co
does: 200 for the ids it knows, else 401 anonymously / 404 with a token."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from collections.abc import Iterator


class LoopbackHub:
    def __init__(self, known: set[str]) -> None:
        self.known = known
        self.seen: list[tuple[str, str | None]] = []  # (path, Authorization)
        self.url = ""


@contextlib.contextmanager
def loopback_hub(*known: str) -> Iterator[LoopbackHub]:
    hub = LoopbackHub(set(known))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hub.seen.append((self.path, self.headers.get("Authorization")))
            model = self.path.removeprefix("/api/models/")
            if self.path.startswith("/api/models/") and model in hub.known:
                body = json.dumps({"id": model, "siblings": [{"rfilename": "config.json"}]}).encode()
                self.send_response(200)
            else:
                body = b'{"error":"Repository not found"}'
                self.send_response(401 if self.headers.get("Authorization") is None else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
