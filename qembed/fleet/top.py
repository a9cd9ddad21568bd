"""``qembed top``: live numbers of a worker or a gateway from its Prometheus ``/metrics``.

Each refresh scrapes ``/metrics`` and compares with the previous scrape: requests/s and
tokens/s from counters, p50/p95/p99 from the increase of the latency histogram's buckets over
the interval (as Prometheus's ``histogram_quantile(rate(...))`` does), queue, running requests
and KV usage from gauges. A worker is SGLang (``sglang:``/``sglang_`` names); a gateway is smg
(``smg_`` names, served on its ``--prometheus-port``, 29000 by default). Metric names come from
:mod:`qembed.metrics`. For a server on this machine, GPU utilisation and memory come
from NVML. This module never prints.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from qembed.errors import ConfigError, ServerError, ServerUnreachable
from qembed.metrics import (
    GATEWAY,
    GATEWAY_EMBEDDINGS_PATH,
    Scrape,
    bucket_delta,
    histogram_quantile,
    parse_text,
    sglang_names,
)

if TYPE_CHECKING:
    import httpx

#: ``/metrics`` scrape timeout (SGLang renders it from files; a gateway answers at once).
SCRAPE_TIMEOUT_S = 5.0
MIN_INTERVAL_S = 1.0
MAX_INTERVAL_S = 10.0
#: seconds between refreshes of the live view (`qembed top --interval`)
DEFAULT_INTERVAL_S = 2.0


@dataclass(frozen=True)
class GPUUsage:
    index: int
    name: str
    utilization_pct: float | None
    memory_used: int
    memory_total: int


@dataclass
class Stats:
    """One refresh of one server. Rates are ``None`` until two scrapes exist."""

    url: str
    kind: str  # "worker", "gateway" or "unknown"
    ok: bool = True
    error: str | None = None
    requests_per_s: float | None = None
    tokens_per_s: float | None = None
    errors_per_s: float | None = None
    p50_s: float | None = None
    p95_s: float | None = None
    p99_s: float | None = None
    queue: float | None = None
    running: float | None = None
    kv_usage: float | None = None  # fraction of the KV pool in use
    requests_total: float | None = None
    workers: float | None = None  # gateway: workers in the pool
    healthy_workers: float | None = None
    interval_s: float | None = None
    gpus: list[GPUUsage] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for k, v in out.items():  # JSON has no NaN/Inf
            if isinstance(v, float) and not math.isfinite(v):
                out[k] = None
        return out


def metrics_url(url: str) -> str:
    """``h:p`` or ``http://h:p`` -> ``http://h:p/metrics``; a URL that already ends in
    ``/metrics`` is kept, any other path (``/v1``, ``/v1/embeddings``) is the server's base.

    Raises:
        ConfigError: not an http(s) URL.
    """
    from qembed.net import base_url

    u = url.strip().rstrip("/")
    if u.endswith("/metrics"):
        return base_url(u[: -len("/metrics")]) + "/metrics"
    parts = urlsplit(base_url(u))
    return urlunsplit((parts.scheme, parts.netloc, "/metrics", "", ""))


def is_local(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host in ("127.0.0.1", "localhost", "::1", "0.0.0.0")


def fetch(url: str, *, client: httpx.Client | None = None, timeout: float = SCRAPE_TIMEOUT_S) -> Scrape:
    """Scrape ``url`` (a ``/metrics`` URL) and parse it.

    Raises:
        ServerUnreachable: nothing answers.
        ServerError: an error status (404 means SGLang runs without ``--enable-metrics``), or a
            body that is not Prometheus text.
    """
    import httpx

    own = client is None
    c = client or httpx.Client(timeout=timeout, trust_env=False)
    try:
        resp = c.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        raise ServerUnreachable(f"cannot reach `{url}`: {exc}",
                                hint="check the URL; `qembed ps` lists the servers qembed started") from exc
    finally:
        if own:
            c.close()
    if resp.status_code == 404:
        raise ServerError(f"`{url}` answered 404: the server exports no metrics", status=404,
                          hint="start it with `metrics: true` in the profile (`--set metrics=true`, "
                          "SGLang's `--enable-metrics`); a gateway serves them on its "
                          "`--prometheus-port` (29000)")
    if resp.status_code != 200:
        raise ServerError(f"`{url}` answered HTTP {resp.status_code}", status=resp.status_code,
                          body=resp.text[:200])
    try:
        samples = parse_text(resp.text)
    except ValueError as exc:
        raise ServerError(f"`{url}` did not answer Prometheus text: {exc}", status=200,
                          hint="point `--url` at the server's base URL or its `/metrics`") from exc
    return Scrape(samples, at=time.monotonic())


def _rate(new: float | None, old: float | None, dt: float) -> float | None:
    if new is None or dt <= 0:
        return None
    # labelled series (SGLang's http_responses_total, smg's counters) appear with their first
    # event, so a counter missing from the previous scrape counted zero then
    old = 0.0 if old is None else old
    return (new - old if new >= old else new) / dt  # a reset counts from zero


def kind_of(s: Scrape) -> str:
    if s.has(sglang_names("requests_total")) or s.has(sglang_names("running_reqs")):
        return "worker"
    if s.has([GATEWAY["http_requests_total"]]):
        return "gateway"
    return "unknown"


def compute(url: str, cur: Scrape, prev: Scrape | None) -> Stats:
    """Numbers for one refresh from the current and the previous scrape."""
    kind = kind_of(cur)
    dt = cur.at - prev.at if prev is not None else 0.0
    st = Stats(url=url, kind=kind, interval_s=dt or None)
    if kind == "worker":
        req, tok = sglang_names("requests_total"), sglang_names("prompt_tokens_total")
        st.requests_total = cur.total(req)
        st.queue = cur.total(sglang_names("queue_reqs"))
        st.running = cur.total(sglang_names("running_reqs"))
        usage = [s.value for n in sglang_names("token_usage") for s in cur.by_name.get(n, [])]
        st.kv_usage = max(usage) if usage else None
        lat_names = sglang_names("e2e_latency")
        new_b = cur.buckets(lat_names)
        old_b = prev.buckets(lat_names) if prev is not None else None
        if prev is not None:
            st.requests_per_s = _rate(st.requests_total, prev.total(req), dt)
            st.tokens_per_s = _rate(cur.total(tok), prev.total(tok), dt)
            resp = sglang_names("http_responses_total")
            st.errors_per_s = _rate(cur.status_total(resp, status_prefix="5"),
                                    prev.status_total(resp, status_prefix="5"), dt)
    elif kind == "gateway":
        path = {"path": GATEWAY_EMBEDDINGS_PATH}
        req = [GATEWAY["http_requests_total"]]
        st.requests_total = cur.total(req, where=path)
        st.running = cur.total([GATEWAY["inflight"]])
        st.workers = cur.total([GATEWAY["worker_pool_size"]])
        st.healthy_workers = cur.total([GATEWAY["worker_health"]])
        lat_names = [GATEWAY["http_duration"]]
        new_b = cur.buckets(lat_names, where=path)
        old_b = prev.buckets(lat_names, where=path) if prev is not None else None
        if prev is not None:
            st.requests_per_s = _rate(st.requests_total, prev.total(req, where=path), dt)
            resp = [GATEWAY["http_responses_total"]]
            st.errors_per_s = _rate(cur.status_total(resp, status_prefix="5", where=path),
                                    prev.status_total(resp, status_prefix="5", where=path), dt)
    else:
        st.ok = False
        st.error = "no SGLang (`sglang:`/`sglang_`) or smg (`smg_`) metrics in this scrape"
        return st
    if new_b is not None and prev is not None:
        window = bucket_delta(new_b, old_b)
        st.p50_s, st.p95_s, st.p99_s = (histogram_quantile(q, window) for q in (0.5, 0.95, 0.99))
    return st


def local_gpus() -> list[GPUUsage]:
    """Utilisation and memory of this machine's GPUs (NVML); empty when NVML is unusable."""
    from qembed.serving import gpu

    snap = gpu.snapshot()
    if snap.error or not snap.gpus:
        return []
    util: dict[int, float] = {}
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            for g in snap.gpus:
                try:
                    h = pynvml.nvmlDeviceGetHandleByIndex(g.index)
                    util[g.index] = float(pynvml.nvmlDeviceGetUtilizationRates(h).gpu)
                except Exception:  # NotSupported on some boards: utilisation stays unknown
                    continue
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        util = {}
    return [GPUUsage(g.index, g.name, util.get(g.index), g.memory_used, g.memory_total) for g in snap.gpus]


class Watcher:
    """Keeps the previous scrape of each URL and turns the next one into :class:`Stats`.

    Example:
        >>> w = Watcher(["http://127.0.0.1:30000"])      # doctest: +SKIP
        >>> stats = w.refresh()                           # doctest: +SKIP
    """

    def __init__(self, urls: list[str], *, gpus: bool = True, client: httpx.Client | None = None) -> None:
        if not urls:
            raise ConfigError("no server to watch", hint="pass `--url URL` or a server NAME")
        self.urls = [metrics_url(u) for u in urls]
        self.gpus = gpus and any(is_local(u) for u in self.urls)
        self._prev: dict[str, Scrape] = {}
        self._client = client

    def refresh(self) -> list[Stats]:
        out: list[Stats] = []
        for url in self.urls:
            try:
                cur = fetch(url, client=self._client)
            except (ServerUnreachable, ServerError) as exc:
                self._prev.pop(url, None)
                out.append(Stats(url=url, kind="unknown", ok=False, error=exc.message))
                continue
            out.append(compute(url, cur, self._prev.get(url)))
            self._prev[url] = cur
        if self.gpus and out:
            out[0].gpus = local_gpus()
        return out


def once(urls: list[str], *, interval: float = 1.0, gpus: bool = True) -> list[Stats]:
    """Two scrapes ``interval`` seconds apart (rates need two points), then the numbers.

    Raises:
        ServerUnreachable / ServerError: the first scrape of a URL failed (scripts get an exit
            code, not a row of blanks).
    """
    w = Watcher(urls, gpus=gpus)
    for url in w.urls:  # fail fast, with the error's own exit code
        w._prev[url] = fetch(url, client=w._client)
    deadline = time.monotonic() + interval
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(left)
    return w.refresh()


def check_interval(interval: float) -> float:
    if not MIN_INTERVAL_S <= interval <= MAX_INTERVAL_S:
        raise ConfigError(f"`--interval` must be between {MIN_INTERVAL_S:g} and {MAX_INTERVAL_S:g} "
                          f"seconds, got {interval:g}")
    return interval


__all__ = ["DEFAULT_INTERVAL_S", "GPUUsage", "Stats", "Watcher", "check_interval", "compute", "fetch", "kind_of",
           "local_gpus", "metrics_url", "once"]
