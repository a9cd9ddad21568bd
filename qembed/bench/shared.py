"""What bench asks the server before a run, and the token estimate that sizes its inputs.

These are bench's own copies of facts the client also holds: :func:`probe_model` (``/v1/models``)
and :func:`estimate_tokens` (UTF-8 bytes per token). They sit together so that one change can
point both at the shared versions (``qembed.probe``, the client's estimate).
"""

from __future__ import annotations

import contextlib

from qembed.errors import ServerError, ServerUnreachable

BYTES_PER_TOKEN = 4  # the estimate when no tokenizer is on disk (byte-level BPE, multilingual)


def estimate_tokens(text: str) -> int:
    """Estimated tokens of ``text`` as the server counts them: ``utf8 bytes // 4 + 1`` (the EOS)."""
    return len(text.encode("utf-8")) // BYTES_PER_TOKEN + 1


def _auth_headers(api_key: str | None) -> dict[str, str]:
    h = {"Content-Type": "application/json"}
    if api_key:
        h["Authorization"] = f"Bearer {api_key}"
    return h


def probe_model(url: str, *, api_key: str | None, timeout: float = 10.0) -> str | None:
    """The model path the server reports in ``/v1/models`` (``root``, else ``id``).

    Raises:
        ServerUnreachable: nothing answers at ``url``.
    """
    import httpx

    try:
        r = httpx.get(url.rstrip("/") + "/v1/models", headers=_auth_headers(api_key), timeout=timeout)
    except httpx.HTTPError as exc:
        raise ServerUnreachable(f"no server answers at {url}",
                                hint="start one with `qembed serve`, or pass `--profile NAME`") from exc
    if r.status_code == 401:
        raise ServerError("the server rejected the API key (HTTP 401)", status=401,
                          hint="pass `--api-key` or set QEMBED_API_KEY")
    if r.status_code != 200:
        return None
    with contextlib.suppress(ValueError, KeyError, IndexError, TypeError):
        first = r.json()["data"][0]
        return str(first.get("root") or first["id"])
    return None


def local_gpu_name(url: str) -> str | None:
    """The first visible GPU's NVML name when ``url`` points at this machine, else ``None``."""
    from urllib.parse import urlparse

    host = (urlparse(url).hostname or "").lower()
    if host not in ("127.0.0.1", "localhost", "::1", "0.0.0.0"):
        return None
    from qembed.gpu import snapshot

    snap = snapshot()
    return snap.gpus[0].name if snap.gpus else None
