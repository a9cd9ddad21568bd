"""Raw ``/v1/embeddings`` calls (httpx, no qembed), for the tests that must not depend on the client."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np


def post_embeddings(
    url: str,
    inputs: str | list[str] | list[int] | list[list[int]],
    *,
    dimensions: int | None = None,
    encoding_format: str = "float",
) -> tuple[np.ndarray, dict[str, Any]]:
    """POST one request; return the rows (float32, in ``index`` order, which must equal the
    position) and the whole JSON body."""
    import httpx

    body: dict[str, Any] = {"input": inputs, "model": "default", "encoding_format": encoding_format}
    if dimensions is not None:
        body["dimensions"] = dimensions
    with httpx.Client(base_url=url, timeout=60.0) as http:
        resp = http.post("/v1/embeddings", json=body)
    assert resp.status_code == 200, resp.text
    reply: dict[str, Any] = resp.json()
    rows: list[np.ndarray] = []
    for pos, item in enumerate(reply["data"]):
        assert item["index"] == pos, f"data[{pos}] has index {item['index']}"
        emb = item["embedding"]
        if encoding_format == "base64":
            rows.append(np.frombuffer(base64.b64decode(emb), dtype="<f4").astype(np.float32))
        else:
            rows.append(np.asarray(emb, dtype=np.float32))
    return np.stack(rows), reply
