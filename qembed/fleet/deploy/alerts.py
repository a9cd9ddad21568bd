"""``qembed deploy alerts``: Prometheus alerting rules for one embedding Deployment.

Every rule is scoped to one deployment (issue 20: a chat model in the same Prometheus fired the
embedding latency alert): the worker series by :func:`qembed.metrics.scope` (the
namespace and the pods of Deployment ``name``), the smg gateway's by the pods of
``<name>-gateway``, kube-state-metrics by the Deployment's pods and KEDA's HPA
``keda-hpa-<name>``. Rules aggregate by ``namespace`` (and ``model_name`` where SGLang sets
it). Each rule carries a ``runbook_url`` annotation: a section of docs/deploy.md.

SGLang names match both ``sglang:`` and ``sglang_`` (:mod:`qembed.metrics`).
``promtool check rules`` validates the output and ``promtool test rules`` runs every alert on
firing, healthy and out-of-scope input in the tests.

SGLang reserves ``--mem-fraction-static`` (0.68-0.82 in the shipped profiles) of GPU memory at
start by design, so the GPU-memory threshold sits well above it (0.97 by default).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from qembed.errors import ConfigError
from qembed.fleet.deploy.k8s import DEFAULT_TARGET_QUEUE
from qembed.metrics import (
    DCGM,
    GATEWAY,
    GATEWAY_EMBEDDINGS_PATH,
    KUBE,
    gateway_deployment,
    keda_hpa,
    scope,
    sglang_selector,
)

#: Where the runbooks live: docs/deploy.md of the repository. qembed's pyproject and README
#: name no project URL, so this is a default to override with ``--runbook-base`` (a mirror, an
#: internal wiki page that keeps the same ``#anchors``).
RUNBOOK_BASE = "https://github.com/qembed/qembed/blob/main/docs/deploy.md"

#: the endpoint whose responses the worker error-rate rule counts (SGLang's `endpoint` label)
EMBEDDINGS = GATEWAY_EMBEDDINGS_PATH


@dataclass(frozen=True)
class AlertSettings:
    namespace: str = "default"  # the Deployment's namespace (`qembed deploy k8s --namespace`)
    name: str = "qembed"  # the worker Deployment (`qembed deploy k8s --name`)
    p99_slo_s: float = 1.0  # seconds
    error_rate: float = 0.05  # fraction of /v1/embeddings responses that are 5xx
    # queued texts per replica that count as full: KEDA's target (`qembed deploy k8s`), so a
    # queue above it for `queue_minutes` means scaling has not caught up
    queue_threshold: float = DEFAULT_TARGET_QUEUE
    queue_minutes: int = 10  # for how long the queue must stay full
    gpu_memory_fraction: float = 0.97
    runbook_base: str = RUNBOOK_BASE

    def check(self) -> AlertSettings:
        try:
            scope(self.namespace, self.name, gateway_deployment(self.name))
        except ValueError as exc:
            raise ConfigError(f"`--namespace`/`--name` must be Kubernetes names: {exc}") from None
        if not self.p99_slo_s > 0:
            raise ConfigError(f"`--p99-slo` must be a positive number of seconds, got {self.p99_slo_s}")
        if not 0 < self.error_rate < 1:
            raise ConfigError(f"`--error-rate` must be a fraction between 0 and 1, got {self.error_rate}")
        if not self.queue_threshold >= 0:
            raise ConfigError(f"`--queue-threshold` must not be negative, got {self.queue_threshold}")
        if self.queue_minutes < 1:
            raise ConfigError(f"`--queue-minutes` must be at least 1, got {self.queue_minutes}")
        if not 0 < self.gpu_memory_fraction <= 1:
            raise ConfigError(f"`--gpu-memory` must be a fraction in (0, 1], got {self.gpu_memory_fraction}")
        if not re.fullmatch(r"https?://[^\s#\"'{}]+", self.runbook_base):
            raise ConfigError(f"`--runbook-base` must be an http(s) URL without a `#fragment`, got {self.runbook_base!r}")
        return self


def _num(x: float) -> str:
    return f"{float(x):g}"


def runbook_anchor(alert: str) -> str:
    """The docs/deploy.md anchor of an alert's runbook: its `### Alert` heading as GitHub
    writes it (lower case)."""
    return alert.lower()


def _rule(alert: str, expr: str, for_: str, severity: str, summary: str, description: str,
          base: str) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": alert, "expr": expr}
    if for_:
        rule["for"] = for_
    rule["labels"] = {"severity": severity}
    rule["annotations"] = {"summary": summary, "description": description,
                           "runbook_url": f"{base}#{runbook_anchor(alert)}"}
    return rule


def rules(s: AlertSettings | None = None) -> dict[str, Any]:
    """The rule file as a dict (``groups: [...]``).

    Raises:
        ConfigError: a setting out of range (named as its CLI flag).
    """
    s = (s or AlertSettings()).check()
    ns, gw = s.namespace, gateway_deployment(s.name)
    worker = scope(ns, s.name)
    gateway = scope(ns, gw)
    pods = scope(ns, s.name, gw)  # kube-state-metrics: both Deployments' pods
    hpa = f'namespace="{ns}", horizontalpodautoscaler="{keda_hpa(s.name)}"'
    lat = sglang_selector("e2e_latency", "_bucket", worker)
    queue = sglang_selector("queue_reqs", labels=worker)
    emb = f'endpoint="{EMBEDDINGS}"'
    resp = sglang_selector("http_responses_total", labels=f"{worker}, {emb}")
    resp5 = sglang_selector("http_responses_total", labels=f'{worker}, {emb}, status_code=~"5.."')
    g_path = f'path="{EMBEDDINGS}"'
    g_resp = f'{GATEWAY["http_responses_total"]}{{{gateway}, {g_path}}}'
    g_resp5 = f'{GATEWAY["http_responses_total"]}{{{gateway}, {g_path}, status_code=~"5.."}}'
    restarts, reason = KUBE["restarts_total"], KUBE["last_terminated_reason"]
    oom = f'{reason}{{{pods}, reason="OOMKilled"}} == 1'
    used, free = f"{DCGM['fb_used']}{{{worker}}}", f"{DCGM['fb_free']}{{{worker}}}"
    where = f"{ns}/{s.name}"
    b = s.runbook_base
    rule_list: list[dict[str, Any]] = [
        _rule("QembedTargetDown", f"up{{{worker}}} == 0", "2m", "critical",
              "embedding worker {{ $labels.namespace }}/{{ $labels.pod }} is down",
              f"Prometheus cannot scrape the worker pod {{{{ $labels.pod }}}} of {where} for 2 minutes.", b),
        _rule("QembedNoWorkers", f"absent({sglang_selector('running_reqs', labels=worker)})", "5m", "critical",
              f"no embedding worker of {where} reports metrics",
              f"No SGLang series from the pods of {where} for 5 minutes: every worker is down or "
              "unscraped, or `metrics` is off in the profile.", b),
        _rule("QembedP99LatencyHigh",
              f"histogram_quantile(0.99, sum by (le, namespace, model_name) (rate({lat}[5m]))) > {_num(s.p99_slo_s)}",
              "10m", "warning",
              "p99 embedding latency of {{ $labels.model_name }} in {{ $labels.namespace }} is above "
              f"{_num(s.p99_slo_s)} s",
              "p99 end-to-end latency is {{ $value | humanizeDuration }} "
              f"(SLO {_num(s.p99_slo_s)} s) for 10 minutes.", b),
        _rule("QembedQueueFull",
              f"avg by (namespace, model_name) (max by (namespace, model_name, pod) ({queue})) > {_num(s.queue_threshold)}",
              f"{s.queue_minutes}m", "warning",
              "the queue of {{ $labels.model_name }} in {{ $labels.namespace }} stays full",
              "{{ $value }} texts wait per replica (threshold " + _num(s.queue_threshold) + f") for {s.queue_minutes} "
              "minutes: add replicas or lower the load.", b),
        _rule("QembedErrorRateHigh",
              f"sum by (namespace) (rate({resp5}[5m])) / sum by (namespace) (rate({resp}[5m])) > {_num(s.error_rate)}",
              "5m", "warning",
              f"more than {s.error_rate:.0%} of the workers' {EMBEDDINGS} responses in {{{{ $labels.namespace }}}} are 5xx",
              "5xx share is {{ $value | humanizePercentage }} for 5 minutes.", b),
        _rule("QembedGatewayErrorRateHigh",
              f"sum by (namespace) (rate({g_resp5}[5m])) / sum by (namespace) (rate({g_resp}[5m])) > {_num(s.error_rate)}",
              "5m", "warning",
              f"more than {s.error_rate:.0%} of the gateway's {EMBEDDINGS} responses in {{{{ $labels.namespace }}}} are 5xx",
              f"smg {gw}: 5xx share is {{{{ $value | humanizePercentage }}}} for 5 minutes.", b),
        _rule("QembedGatewayNoHealthyWorkers",
              f"count by (namespace) ((up{{{gateway}}} == 1) unless on (namespace, pod) "
              f"({GATEWAY['worker_health']}{{{gateway}}} == 1))",
              "2m", "critical",
              f"{{{{ $value }}}} gateway pod(s) of {ns}/{gw} have no healthy worker",
              "A running smg gateway pod counts no healthy worker for 2 minutes: every request "
              "through it fails.", b),
        _rule("QembedPodRestarting",
              f"sum by (namespace, pod, container) (increase({restarts}{{{pods}}}[30m])) > 0 "
              f"unless on (namespace, pod, container) ({oom})",
              "", "warning",
              "{{ $labels.namespace }}/{{ $labels.pod }} restarted",
              "Container {{ $labels.container }} restarted about {{ $value | humanize }} time(s) in 30 "
              "minutes (not an OOM kill).", b),
        _rule("QembedPodOOMKilled",
              f"sum by (namespace, pod, container) (increase({restarts}{{{pods}}}[30m])) > 0 "
              f"and on (namespace, pod, container) ({oom})",
              "", "critical",
              "{{ $labels.namespace }}/{{ $labels.pod }} was OOM-killed",
              "Container {{ $labels.container }} was killed for exceeding its memory limit and restarted.", b),
        _rule("QembedReplicasAtMax",
              f"{KUBE['hpa_current']}{{{hpa}}} >= {KUBE['hpa_max']}{{{hpa}}}",
              "30m", "warning",
              f"{where} runs at its autoscaling maximum",
              f"The autoscaler ({keda_hpa(s.name)}) has held {{{{ $value }}}} replicas, its maximum, for 30 minutes: "
              "load beyond it queues.", b),
        _rule("QembedGpuMemoryNearFull",
              f"{used} / ({used} + {free}) > {_num(s.gpu_memory_fraction)}",
              "15m", "warning",
              "GPU {{ $labels.gpu }} of {{ $labels.namespace }}/{{ $labels.pod }} is nearly full",
              "GPU memory is {{ $value | humanizePercentage }} used for 15 minutes (SGLang reserves its "
              "static fraction at start; this is above it).", b),
    ]
    return {"groups": [{"name": f"qembed-{ns}-{s.name}", "rules": rule_list}]}


def render_rules(s: AlertSettings | None = None) -> str:
    import yaml

    from qembed.fleet.deploy import NoAliasDumper

    return yaml.dump(rules(s), Dumper=NoAliasDumper, sort_keys=False, width=1000)


__all__ = ["RUNBOOK_BASE", "AlertSettings", "render_rules", "rules", "runbook_anchor"]
