"""``qembed deploy grafana``: a Grafana dashboard (JSON) for one embedding Deployment.

Every query is filtered by the dashboard's variables (issue 20): ``namespace`` (one namespace),
``pod`` (the worker pods of Deployment ``name``; "All" means exactly that Deployment's pods, not
every pod of the namespace) and ``model`` (SGLang's ``model_name``). Gateway panels read the smg
pods of ``<name>-gateway``, the replica panel kube-state-metrics for the Deployment and KEDA's
HPA ``keda-hpa-<name>``, the GPU panels DCGM series of the worker pods (dcgm-exporter's
Kubernetes mode labels each GPU with the pod using it). ``gpu=False`` (CPU profiles) leaves the
DCGM panels out.

SGLang counts each text of a batch as one request, so the rate panel says texts/s. SGLang
0.5.23 never records ``queue_time_seconds`` for embeddings (see :mod:`qembed.metrics`),
so the queue panel shows queue depth per replica instead of queue time. SGLang queries match
both ``sglang:`` and ``sglang_``.
"""

from __future__ import annotations

import json
from typing import Any

from qembed.metrics import (
    DCGM,
    GATEWAY,
    GATEWAY_EMBEDDINGS_PATH,
    KUBE,
    gateway_deployment,
    keda_hpa,
    pod_regex,
    scope,
    sglang_selector,
)

RATE = "$__rate_interval"
NS = 'namespace="$namespace"'
POD = 'pod=~"$pod"'
MODEL = 'model_name=~"$model"'
DS = {"type": "prometheus", "uid": "${datasource}"}
DEFAULT_NAME = "qembed"

#: titles of the panels that need NVIDIA's DCGM exporter (left out with ``gpu=False``)
GPU_PANELS = ("GPU utilisation (DCGM)", "GPU memory used (DCGM)")


def queries(name: str = DEFAULT_NAME, *, gpu: bool = True) -> dict[str, list[tuple[str, str]]]:
    """Panel title -> [(PromQL, legend)]; the one place the dashboard's queries are written.

    Raises:
        ValueError: ``name`` is not a Kubernetes name.
    """
    pod_regex(name)  # a Kubernetes name, or ValueError
    w = f"{NS}, {POD}"  # the worker pods picked in $pod ("All" = this Deployment's pods)
    wm = f"{w}, {MODEL}"
    gw_pods = f'{NS}, pod=~"{pod_regex(gateway_deployment(name))}"'
    path = f'path="{GATEWAY_EMBEDDINGS_PATH}"'
    dep = f'{NS}, deployment="{name}"'
    hpa = f'{NS}, horizontalpodautoscaler="{keda_hpa(name)}"'
    lat = sglang_selector("e2e_latency", "_bucket", wm)
    http5xx = sglang_selector("http_responses_total",
                              labels=f'{w}, endpoint="{GATEWAY_EMBEDDINGS_PATH}", status_code=~"5.."')
    g_lat = f'{GATEWAY["http_duration"]}_bucket{{{gw_pods}, {path}}}'
    out: dict[str, list[tuple[str, str]]] = {
        # SGLang's num_requests_total counts each text of a batch as one request
        "Texts/s": [(f"sum by (model_name) (rate({sglang_selector('requests_total', labels=wm)}[{RATE}]))",
                     "{{model_name}}")],
        "Input tokens/s": [(f"sum by (model_name) (rate({sglang_selector('prompt_tokens_total', labels=wm)}[{RATE}]))",
                            "{{model_name}}")],
        "Latency (end to end)": [
            (f"histogram_quantile({q}, sum by (le) (rate({lat}[{RATE}])))", f"p{int(q * 100)}")
            for q in (0.5, 0.95, 0.99)
        ],
        # queue time is not exported for embeddings by SGLang 0.5.23: queue depth per replica
        "Queue depth per replica": [
            (f"max by (pod) ({sglang_selector('queue_reqs', labels=wm)})", "{{pod}}"),
            (f"avg(max by (pod) ({sglang_selector('queue_reqs', labels=wm)}))", "average per replica"),
        ],
        "Running requests per replica": [
            (f"max by (pod) ({sglang_selector('running_reqs', labels=wm)})", "{{pod}}"),
        ],
        "KV pool usage": [(f"max by (pod) ({sglang_selector('token_usage', labels=wm)})", "{{pod}}")],
        "Worker errors/s": [
            (f"sum(rate({http5xx}[{RATE}]))", f"HTTP 5xx on {GATEWAY_EMBEDDINGS_PATH}"),
            (f"sum(rate({sglang_selector('aborted_total', labels=wm)}[{RATE}]))", "aborted / rejected"),
        ],
        "Startup time": [
            (f"max by (pod, phase) ({sglang_selector('startup_time', labels=wm)})", "{{pod}} {{phase}}"),
        ],
        "Gateway requests/s": [
            (f"sum(rate({GATEWAY['http_requests_total']}{{{gw_pods}, {path}}}[{RATE}]))",
             f"HTTP requests on {GATEWAY_EMBEDDINGS_PATH}"),
        ],
        "Gateway 5xx/s": [
            (f'sum by (status_code) (rate({GATEWAY["http_responses_total"]}{{{gw_pods}, {path}, status_code=~"5.."}}[{RATE}]))',
             "{{status_code}}"),
        ],
        "Gateway latency p99": [
            (f"histogram_quantile(0.99, sum by (le) (rate({g_lat}[{RATE}])))", "p99"),
        ],
        "Gateway workers": [
            (f"sum by (pod) ({GATEWAY['worker_health']}{{{gw_pods}}})", "{{pod}} healthy"),
            (f"sum by (pod) ({GATEWAY['worker_pool_size']}{{{gw_pods}}})", "{{pod}} known"),
        ],
        "Replicas vs desired": [
            (f"sum({KUBE['deployment_available']}{{{dep}}})", "available"),
            (f"sum({KUBE['deployment_spec']}{{{dep}}})", "desired (Deployment)"),
            (f"sum({KUBE['hpa_desired']}{{{hpa}}})", "desired (autoscaler)"),
            (f"sum({KUBE['hpa_max']}{{{hpa}}})", "autoscaler maximum"),
        ],
    }
    if gpu:
        used, free = f"{DCGM['fb_used']}{{{w}}}", f"{DCGM['fb_free']}{{{w}}}"
        out[GPU_PANELS[0]] = [(f"avg by (pod, gpu) ({DCGM['gpu_util']}{{{w}}})", "{{pod}} GPU {{gpu}}")]
        out[GPU_PANELS[1]] = [(f"{used} / ({used} + {free})", "{{pod}} GPU {{gpu}}")]
    return out


_UNITS = {"Texts/s": "short", "Input tokens/s": "short", "Latency (end to end)": "s",
          "Queue depth per replica": "short", "Running requests per replica": "short",
          "KV pool usage": "percentunit", "Worker errors/s": "reqps", "Startup time": "s",
          "Gateway requests/s": "reqps", "Gateway 5xx/s": "reqps", "Gateway latency p99": "s",
          "Gateway workers": "short", "Replicas vs desired": "short",
          "GPU utilisation (DCGM)": "percent", "GPU memory used (DCGM)": "percentunit"}


def _variables(name: str) -> list[dict[str, Any]]:
    texts = sglang_selector("requests_total")[1:-1]  # the __name__ matcher alone
    mine = pod_regex(name)

    def query(var: str, label: str, matchers: str, **extra: Any) -> dict[str, Any]:
        q = f"label_values({{{texts}, {matchers}}}, {label})"
        return {"name": var, "type": "query", "datasource": DS, "label": var, "refresh": 2,
                "query": q, "definition": q, **extra}

    return [
        {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"},
        query("namespace", "namespace", f'pod=~"{mine}"'),
        # "All" is this Deployment's pod regex, so it never widens to other pods
        query("pod", "pod", f'{NS}, pod=~"{mine}"', includeAll=True, multi=True, allValue=mine),
        query("model", "model_name", f"{NS}, {POD}", includeAll=True, multi=True, allValue=".*"),
    ]


def dashboard(title: str = "qembed: Qwen3-Embedding on SGLang", *, name: str = DEFAULT_NAME,
              gpu: bool = True) -> dict[str, Any]:
    """The dashboard as a dict (Grafana's JSON model, schemaVersion 39)."""
    panels: list[dict[str, Any]] = []
    for i, (panel, targets) in enumerate(queries(name, gpu=gpu).items()):
        panels.append({
            "id": i + 1, "type": "timeseries", "title": panel, "datasource": DS,
            "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 8},
            "fieldConfig": {"defaults": {"unit": _UNITS[panel]}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}},
            "targets": [{"refId": chr(ord("A") + j), "datasource": DS, "expr": expr, "legendFormat": legend}
                        for j, (expr, legend) in enumerate(targets)],
        })
    return {
        "title": title, "uid": f"qembed-{name}", "editable": True, "schemaVersion": 39,
        "tags": ["qembed", "sglang", "embeddings"], "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s", "templating": {"list": _variables(name)}, "panels": panels,
    }


def instantiate(expr: str, *, namespace: str, name: str = DEFAULT_NAME, rate: str = "5m",
                model: str = ".*") -> str:
    """A dashboard query as Grafana sends it with ``$namespace`` set, ``$pod`` on "All" and
    ``$model`` set (for running the queries outside Grafana: promtool, a test Prometheus)."""
    scope(namespace, name)  # both are Kubernetes names, or ValueError
    return (expr.replace("$__rate_interval", rate).replace("$namespace", namespace)
            .replace("$pod", pod_regex(name)).replace("$model", model))


def render_dashboard(title: str | None = None, *, name: str = DEFAULT_NAME, gpu: bool = True) -> str:
    dash = dashboard(title, name=name, gpu=gpu) if title else dashboard(name=name, gpu=gpu)
    return json.dumps(dash, indent=2) + "\n"


__all__ = ["GPU_PANELS", "dashboard", "instantiate", "queries", "render_dashboard"]
