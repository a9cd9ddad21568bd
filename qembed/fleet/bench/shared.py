"""What bench asks the server before a run, and which GPU serves it.

:func:`probe_model` goes through :func:`qembed.probe.probe_server` (every reply checked by the
client's decoder). The token estimate that sizes the inputs is the client's
(:func:`qembed.client.flow.estimate_tokens`), so inputs are sized as requests are.
"""

from __future__ import annotations

from qembed.errors import ServerError, ServerUnreachable
from qembed.net import auth_headers

__all__ = ["local_gpu_name", "probe_model"]


def _auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Content-Type": "application/json", **auth_headers(api_key)}


def probe_model(url: str, *, api_key: str | None, timeout: float = 10.0) -> str | None:
    """The model path the server reports in ``/v1/models`` (``root``, else ``id``), after one
    probe embedding has passed the client's checks (:func:`qembed.probe.probe_server`).

    Raises:
        ServerUnreachable: nothing answers at ``url``.
        ServerError: the server rejected the API key (401).
        BadReply: the probe embedding is not a valid reply (wrong size, NaN, not unit length, ...):
            a sweep against this server would measure wrong vectors.
    """
    from qembed.errors import BadReply
    from qembed.probe import probe_server

    facts = probe_server(url, api_key, timeout=timeout, health=False)
    err = facts.embedding_error
    if isinstance(err, ServerUnreachable | BadReply) or (isinstance(err, ServerError) and err.status == 401):
        raise err  # a 401 carries the probe's hint (qembed.probe.API_KEY_HINT)
    return facts.model_path


def local_gpu_name(url: str) -> str | None:
    """The first visible GPU's NVML name when ``url`` points at this machine, else ``None``."""
    from urllib.parse import urlparse

    from qembed.net import is_this_machine

    if not is_this_machine(urlparse(url).hostname or ""):
        return None
    from qembed.serving.gpu import snapshot

    snap = snapshot()
    return snap.gpus[0].name if snap.gpus else None
