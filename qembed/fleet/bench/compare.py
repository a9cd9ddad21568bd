"""``qembed bench --compare``: the same texts through qembed's client and the patterns users
write by hand with the plain openai SDK, as texts/s and client CPU per text."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qembed.errors import MissingDependency
from qembed.fleet.bench.shared import probe_model
from qembed.fleet.bench.texts import TextSource


@dataclass
class CompareRow:
    pattern: str
    texts: int
    seconds: float
    texts_per_s: float
    client_cpu_us_per_text: float
    speedup: float | None = None  # qembed texts/s divided by this row's (1.0 for qembed)
    #: qembed's client CPU per text divided by this row's (1.0 for qembed; below 1: qembed uses less)
    cpu_ratio: float | None = None


#: at most this many CPUs, a server on the same machine competes with the client for them
SMALL_MACHINE_CPUS = 8


def compare_caveat(url: str, *, cpus: int | None = None) -> str | None:
    """The caveat for ``--compare`` when client and server share a small machine, else ``None``.

    On a shared 2-core box, the server's own CPU work (tokenizing, a CPU stand-in's forward
    pass) runs on the cores the client needs, so wall-clock texts/s measure both; client CPU per
    text is what compares the clients.
    """
    import os
    from urllib.parse import urlparse

    from qembed.net import is_loopback

    host = urlparse(url).hostname or ""
    n = cpus if cpus is not None else (os.cpu_count() or 1)
    if not is_loopback(host) or n > SMALL_MACHINE_CPUS:
        return None
    return (f"client and server share this {n}-CPU machine: wall-clock texts/s include the "
            "server's share of the CPUs, so compare the clients by client CPU per text")


def compare(url: str, *, api_key: str | None = None, texts: int = 256, tokens: int = 512,
            batch: int = 32, model: str | None = None, dimensions: int | None = None,
            seed: int = 0) -> list[CompareRow]:
    """Embed the same ``texts`` inputs with qembed and with the plain openai SDK; return the rates.

    Patterns: qembed ``Client.embed`` (its own batching and base64); openai, one text per call
    with ``encoding_format="float"`` (the naive loop); openai, ``batch`` texts per call with the
    SDK's defaults (it asks for base64 and decodes to lists).

    Raises:
        MissingDependency: openai is not installed.
    """
    try:
        import openai
    except ImportError as exc:
        raise MissingDependency("`--compare` needs the openai package",
                                hint="pip install openai") from exc
    model = model or probe_model(url, api_key=api_key) or "default"
    inputs = TextSource(seed=seed).texts(tokens, 0, texts)
    warm = TextSource(seed=seed + 1).texts(tokens, 0, 2)
    rows: list[CompareRow] = []
    kw: dict[str, Any] = {} if dimensions is None else {"dimensions": dimensions}

    def timed(name: str, run: Callable[[], int]) -> None:
        # set-up and one warm-up call happen before this; only `run` is on the clock
        t0, c0 = time.perf_counter(), time.process_time()
        n = run()
        t, c = time.perf_counter() - t0, time.process_time() - c0
        rows.append(CompareRow(name, n, t, n / t, c / n * 1e6))

    from qembed.client.drivers import Client

    with Client(url, api_key=api_key, model=model) as client:
        client.embed(warm, **kw)  # connection, /v1/models, the vector size
        timed("qembed Client.embed", lambda: len(client.embed(inputs, **kw)))

    # the SDK's own httpx client and defaults, minus HTTP(S)_PROXY, as qembed's transports
    oa = openai.OpenAI(base_url=url.rstrip("/") + "/v1", api_key=api_key or "none", max_retries=0,
                       http_client=openai.DefaultHttpxClient(trust_env=False))
    try:
        oa.embeddings.create(model=model, input=warm[0], encoding_format="float", **kw)

        def run_naive() -> int:
            n = 0
            for t in inputs:
                n += len(oa.embeddings.create(model=model, input=t, encoding_format="float", **kw).data)
            return n

        timed("openai, 1 text/call, float", run_naive)

        def run_batched() -> int:
            n = 0
            for i in range(0, len(inputs), batch):
                n += len(oa.embeddings.create(model=model, input=inputs[i:i + batch], **kw).data)
            return n

        timed(f"openai, {batch} texts/call, SDK defaults", run_batched)
    finally:
        oa.close()
    base, base_cpu = rows[0].texts_per_s, rows[0].client_cpu_us_per_text
    for r in rows:
        r.speedup = base / r.texts_per_s if r.texts_per_s else None
        r.cpu_ratio = base_cpu / r.client_cpu_us_per_text if r.client_cpu_us_per_text else None
    return rows
