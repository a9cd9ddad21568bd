"""Metric names (one table) and a small, strict Prometheus text-format parser.

Every metric name that ``qembed top``, the Grafana dashboard, the alert rules and the KEDA
trigger use lives here, so they cannot drift apart.

* SGLang 0.5.23 (reference ``sglang-0.5.23.md`` section 5, ``metrics_collector.py``). Its
  prefix has appeared both as ``sglang:`` (what 0.5.23 exports) and ``sglang_`` (other
  releases and exporters that rewrite ``:``), so every query matches both: in PromQL with
  ``{__name__=~"sglang[:_]NAME"}``, in :class:`Scrape` by trying each prefix.
* The smg gateway (``smg launch``; names read from the ``/metrics`` of smg 1.13.0 on its
  ``--prometheus-port``, default 29000, run in front of the stand-in worker).
* NVIDIA's DCGM exporter (``DCGM_FI_DEV_*``), for GPU panels and alerts in a cluster.
* kube-state-metrics (``kube_*``), for restarts, OOM kills and replicas in a cluster.

``prometheus_client`` is not installed in qembed's environment, so the text format is parsed
here (https://prometheus.io/docs/instrumenting/exposition_formats/): ``# HELP``/``# TYPE``
comments, ``name{label="value",...} value [timestamp]``, label escapes ``\\\\``, ``\\"``,
``\\n``, and the values ``NaN``, ``+Inf``, ``-Inf``. Anything else is a :class:`ValueError`
naming the line, never a silent skip.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# -- names ------------------------------------------------------------------------------------

#: SGLang's metric prefixes, in the order they are tried.
SGLANG_PREFIXES: tuple[str, ...] = ("sglang:", "sglang_")

#: SGLang metric names without the prefix (reference section 5).
SGLANG: dict[str, str] = {
    "requests_total": "num_requests_total",  # counter, one per request
    "aborted_total": "num_aborted_requests_total",  # counter: aborts and queue-full rejects
    "http_responses_total": "http_responses_total",  # counter {endpoint,status_code,method}
    "e2e_latency": "e2e_request_latency_seconds",  # histogram
    "prompt_tokens_total": "prompt_tokens_total",  # counter: input tokens (embeddings)
    "queue_reqs": "num_queue_reqs",  # gauge
    "running_reqs": "num_running_reqs",  # gauge
    "token_usage": "token_usage",  # gauge: fraction of the KV pool in use
    "max_total_num_tokens": "max_total_num_tokens",  # gauge
    "startup_time": "startup_time_seconds",  # gauge {phase}: set once, when the server is ready
}
# Not here: `queue_time_seconds`. SGLang 0.5.23 defines it, but an embedding server never
# exports it: `Scheduler._handle_embedding_request` builds its `Req` without a metrics
# collector, so `observe_queue_time` never runs (checked against the real /metrics).

#: smg gateway metric names (smg 1.13.0).
GATEWAY: dict[str, str] = {
    "http_requests_total": "smg_http_requests_total",  # counter {method,path}
    "http_responses_total": "smg_http_responses_total",  # counter {path,status_code,error_code}
    "http_duration": "smg_http_request_duration_seconds",  # histogram {method,path}
    "inflight": "smg_admission_inflight",  # gauge
    "worker_pool_size": "smg_worker_pool_size",  # gauge {worker_type,connection_mode,model}
    "worker_health": "smg_worker_health",  # gauge 1/0
}
#: The gateway path whose traffic ``qembed top`` shows (smg's ``path`` label). SGLang's
#: ``http_responses_total`` carries the same value in its ``endpoint`` label.
GATEWAY_EMBEDDINGS_PATH = "/v1/embeddings"

#: NVIDIA DCGM exporter field names (dcgm-exporter default counters).
DCGM: dict[str, str] = {
    "gpu_util": "DCGM_FI_DEV_GPU_UTIL",  # percent
    "fb_used": "DCGM_FI_DEV_FB_USED",  # MiB
    "fb_free": "DCGM_FI_DEV_FB_FREE",  # MiB
}

#: kube-state-metrics names (its docs/metrics: pod, horizontalpodautoscaler and deployment
#: tables). Their ``namespace``/``pod``/``deployment`` labels name the object described, so
#: Prometheus must scrape kube-state-metrics with ``honor_labels`` (both common charts do).
KUBE: dict[str, str] = {
    "restarts_total": "kube_pod_container_status_restarts_total",  # counter {namespace,pod,container}
    "last_terminated_reason": "kube_pod_container_status_last_terminated_reason",  # gauge {..,reason}
    "hpa_current": "kube_horizontalpodautoscaler_status_current_replicas",  # {namespace,horizontalpodautoscaler}
    "hpa_desired": "kube_horizontalpodautoscaler_status_desired_replicas",
    "hpa_max": "kube_horizontalpodautoscaler_spec_max_replicas",
    "deployment_spec": "kube_deployment_spec_replicas",  # {namespace,deployment}
    "deployment_available": "kube_deployment_status_replicas_available",
}

_DCGM_WHY = "NVIDIA's DCGM exporter on a GPU node, not SGLang"
_KSM_WHY = "kube-state-metrics in a Kubernetes cluster, not SGLang"

#: The one allow-list: names qembed uses that the ``/metrics`` of real SGLang 0.5.23 on CPU
#: does not hold, each with the reason. The real-engine lane (tests/engine/test_d_metrics.py)
#: checks every other name qembed's generators, ``qembed top`` and docs/deploy.md use against
#: that scrape after traffic (and the ``smg_*`` names against the real smg 1.13 in front of
#: it); docs/deploy.md lists these.
NOT_FROM_SGLANG: dict[str, str] = {
    **{DCGM[k]: _DCGM_WHY for k in ("gpu_util", "fb_used", "fb_free")},
    **{KUBE[k]: _KSM_WHY for k in KUBE},
}


def sglang_names(key: str) -> list[str]:
    """Both spellings of one SGLang metric: ``['sglang:x', 'sglang_x']``."""
    return [p + SGLANG[key] for p in SGLANG_PREFIXES]


def sglang_selector(key: str, suffix: str = "", labels: str = "") -> str:
    """A PromQL selector matching both prefixes: ``{__name__=~"sglang[:_]x_bucket", ...}``."""
    extra = f", {labels}" if labels else ""
    return f'{{__name__=~"sglang[:_]{SGLANG[key]}{suffix}"{extra}}}'


# -- scoping ----------------------------------------------------------------------------------
# Every query qembed generates for a cluster (KEDA, alerts, dashboard) is scoped to one deployment
# (issue 20: load in `staging` must not scale `prod`, and a chat model must not fire an embedding
# alert). The labels are the ones both common scrape set-ups attach to every pod's series:
# the Prometheus community chart's `kubernetes-pods` job and the Prometheus Operator's
# PodMonitor/ServiceMonitor both write `namespace` and `pod`. A Deployment's pods are named
# `<deployment>-<pod-template-hash>-<suffix>`, so a fully anchored regex picks exactly its pods
# (`qembed-gateway-…` has one segment more and does not match `qembed-…`).

#: the regex of a Deployment's pod names (PromQL regexes are fully anchored)
POD_SUFFIX = "-[a-z0-9]+-[a-z0-9]+"


def pod_regex(deployment: str) -> str:
    """A PromQL regex matching exactly the pods of one Deployment (a DNS-1123 name)."""
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", deployment):
        raise ValueError(f"not a Kubernetes name: {deployment!r}")
    return deployment + POD_SUFFIX


def scope(namespace: str, deployment: str, *more: str) -> str:
    """Label matchers for one Deployment's series: ``namespace="ns", pod=~"name-…"``; with
    ``more`` Deployments, the pods of any of them (``pod=~"a-…|b-…"``)."""
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", namespace):
        raise ValueError(f"not a Kubernetes namespace: {namespace!r}")
    pods = "|".join(pod_regex(d) for d in (deployment, *more))
    return f'namespace="{namespace}", pod=~"{pods}"'


#: the Deployment of the smg gateway in front of Deployment NAME (``qembed deploy k8s --gateway``)
GATEWAY_SUFFIX = "-gateway"


def gateway_deployment(deployment: str) -> str:
    return deployment + GATEWAY_SUFFIX


def keda_hpa(scaled_object: str) -> str:
    """The HPA KEDA creates for a ScaledObject without ``horizontalPodAutoscalerConfig.name``
    (KEDA's ``getHPAName``: ``keda-hpa-<name>``); ``qembed deploy k8s`` names the ScaledObject
    after the Deployment."""
    return f"keda-hpa-{scaled_object}"


# -- parsing ----------------------------------------------------------------------------------

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


@dataclass(frozen=True)
class Sample:
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float

    def label(self, key: str) -> str | None:
        return dict(self.labels).get(key)


def _value(text: str, lineno: int) -> float:
    special = {"NaN": math.nan, "+Inf": math.inf, "Inf": math.inf, "-Inf": -math.inf}
    if text in special:
        return special[text]
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"line {lineno}: bad sample value {text!r}") from None


def _labels(line: str, pos: int, lineno: int) -> tuple[tuple[tuple[str, str], ...], int]:
    """Parse ``{a="x",b="y"}`` starting at ``line[pos] == '{'``; return labels and the end."""
    out: list[tuple[str, str]] = []
    pos += 1
    while True:
        while pos < len(line) and line[pos] in " \t":
            pos += 1
        if pos < len(line) and line[pos] == "}":
            return tuple(out), pos + 1
        m = _LABEL.match(line, pos)
        if not m:
            raise ValueError(f"line {lineno}: bad label name at column {pos + 1}")
        key = m.group(0)
        pos = m.end()
        if line[pos:pos + 2] != '="':
            raise ValueError(f"line {lineno}: expected '=\"' after label {key!r}")
        pos += 2
        chars: list[str] = []
        while True:
            if pos >= len(line):
                raise ValueError(f"line {lineno}: unterminated value of label {key!r}")
            ch = line[pos]
            if ch == "\\":
                nxt = line[pos + 1:pos + 2]
                if nxt not in ("\\", '"', "n"):
                    raise ValueError(f"line {lineno}: bad escape \\{nxt} in label {key!r}")
                chars.append("\n" if nxt == "n" else nxt)
                pos += 2
                continue
            if ch == '"':
                pos += 1
                break
            chars.append(ch)
            pos += 1
        out.append((key, "".join(chars)))
        while pos < len(line) and line[pos] in " \t":
            pos += 1
        if pos < len(line) and line[pos] == ",":
            pos += 1
            continue
        if pos < len(line) and line[pos] == "}":
            return tuple(out), pos + 1
        raise ValueError(f"line {lineno}: expected ',' or '}}' in the labels")


def parse_text(text: str) -> list[Sample]:
    """Parse Prometheus text exposition format (version 0.0.4) into samples.

    Raises:
        ValueError: a line that is not a comment, blank, or a valid sample (names the line).
    """
    samples: list[Sample] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _NAME.match(line)
        if not m:
            raise ValueError(f"line {lineno}: bad metric name in {raw[:80]!r}")
        name = m.group(0)
        pos = m.end()
        labels: tuple[tuple[str, str], ...] = ()
        if pos < len(line) and line[pos] == "{":
            labels, pos = _labels(line, pos, lineno)
        rest = line[pos:].split()
        if not rest or len(rest) > 2 or (pos < len(line) and line[pos] not in " \t"):
            raise ValueError(f"line {lineno}: expected `NAME[{{labels}}] VALUE [TIMESTAMP]`, got {raw[:80]!r}")
        if len(rest) == 2 and not rest[1].lstrip("-").isdigit():
            raise ValueError(f"line {lineno}: bad timestamp {rest[1]!r}")
        samples.append(Sample(name, labels, _value(rest[0], lineno)))
    return samples


# -- reading a scrape -------------------------------------------------------------------------


@dataclass
class Scrape:
    """One ``/metrics`` scrape, indexed by name, with the sums ``qembed top`` needs."""

    samples: list[Sample]
    at: float = 0.0  # time.monotonic() of the scrape
    by_name: dict[str, list[Sample]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        for s in self.samples:
            self.by_name.setdefault(s.name, []).append(s)

    def has(self, names: Iterable[str]) -> bool:
        return any(n in self.by_name for n in names)

    def total(self, names: Sequence[str], *, where: dict[str, str] | None = None) -> float | None:
        """Sum over all label sets of the first name present; ``None`` when none is."""
        for n in names:
            rows = self.by_name.get(n)
            if rows is None:
                continue
            chosen = [s.value for s in rows if not where or all(s.label(k) == v for k, v in where.items())]
            finite = [v for v in chosen if math.isfinite(v)]
            return sum(finite) if finite else (0.0 if not chosen else None)
        return None

    def buckets(self, names: Sequence[str], *, where: dict[str, str] | None = None) -> dict[float, float] | None:
        """Histogram ``_bucket`` counts summed over label sets: ``{le: cumulative count}``."""
        for n in names:
            rows = self.by_name.get(n + "_bucket")
            if rows is None:
                continue
            out: dict[float, float] = {}
            for s in rows:
                if where and not all(s.label(k) == v for k, v in where.items()):
                    continue
                le = s.label("le")
                if le is None:
                    raise ValueError(f"`{n}_bucket` sample without an `le` label")
                bound = _value(le, 0)
                out[bound] = out.get(bound, 0.0) + s.value
            return out
        return None

    def status_total(self, names: Sequence[str], *, status_prefix: str, where: dict[str, str] | None = None) -> float | None:
        """Sum of a responses counter whose ``status_code`` starts with ``status_prefix``."""
        for n in names:
            rows = self.by_name.get(n)
            if rows is None:
                continue
            return sum(s.value for s in rows
                       if (s.label("status_code") or "").startswith(status_prefix)
                       and (not where or all(s.label(k) == v for k, v in where.items())))
        return None


def bucket_delta(new: dict[float, float], old: dict[float, float] | None) -> dict[float, float]:
    """Per-bucket increase between two scrapes (a counter reset counts from zero)."""
    if not old:
        return dict(new)
    out = {}
    for le, v in new.items():
        before = old.get(le, 0.0)
        out[le] = v - before if v >= before else v
    return out


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus's ``histogram_quantile``: linear interpolation inside the bucket.

    Returns ``None`` when the histogram holds no observations. A quantile that falls in the
    ``+Inf`` bucket returns the largest finite bound (as Prometheus does).
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within [0, 1], got {q}")
    bounds = sorted(buckets)
    if not bounds or not math.isinf(bounds[-1]):
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for b in bounds:
        count = buckets[b]
        if count >= rank:
            if math.isinf(b):
                return prev_bound if len(bounds) > 1 else None
            if count == prev_count:
                return b
            lower = prev_bound if prev_bound < b else 0.0
            return lower + (b - lower) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = b, count
    return None


__all__ = [
    "DCGM",
    "GATEWAY",
    "GATEWAY_EMBEDDINGS_PATH",
    "GATEWAY_SUFFIX",
    "KUBE",
    "NOT_FROM_SGLANG",
    "SGLANG",
    "SGLANG_PREFIXES",
    "Sample",
    "Scrape",
    "bucket_delta",
    "gateway_deployment",
    "histogram_quantile",
    "keda_hpa",
    "parse_text",
    "pod_regex",
    "scope",
    "sglang_names",
    "sglang_selector",
]
