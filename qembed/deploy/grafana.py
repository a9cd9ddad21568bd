"""``qembed deploy grafana``: a Grafana dashboard (JSON) for an embedding service.

Panels: requests/s, input tokens/s, end-to-end latency p50/p95/p99, queue and running
requests, KV-pool usage, errors (5xx and aborts), GPU utilisation and memory from NVIDIA's
DCGM exporter. SGLang queries match both ``sglang:`` and ``sglang_`` (names from
:mod:`qembed.deploy.metrics`); a ``model`` variable filters on SGLang's ``model_name`` label.
"""

from __future__ import annotations

import json
from typing import Any

from .metrics import DCGM, SGLANG, sglang_selector

RATE = "$__rate_interval"
MODEL = 'model_name=~"$model"'
DS = {"type": "prometheus", "uid": "${datasource}"}


def queries() -> dict[str, list[tuple[str, str]]]:
    """Panel title -> [(PromQL, legend)]; the one place the dashboard's queries are written."""
    lat = sglang_selector("e2e_latency", "_bucket", MODEL)
    http5xx = sglang_selector("http_responses_total", labels='status_code=~"5.."')
    return {
        "Requests/s": [(f"sum by (model_name) (rate({sglang_selector('requests_total', labels=MODEL)}[{RATE}]))",
                        "{{model_name}}")],
        "Input tokens/s": [(f"sum by (model_name) (rate({sglang_selector('prompt_tokens_total', labels=MODEL)}[{RATE}]))",
                            "{{model_name}}")],
        "Latency (end to end)": [
            (f"histogram_quantile({q}, sum by (le) (rate({lat}[{RATE}])))", f"p{int(q * 100)}")
            for q in (0.5, 0.95, 0.99)
        ],
        "Queue and running requests": [
            (f"sum({sglang_selector('queue_reqs', labels=MODEL)})", "queued"),
            (f"sum({sglang_selector('running_reqs', labels=MODEL)})", "running"),
        ],
        "KV pool usage": [(f"max by (instance) ({sglang_selector('token_usage', labels=MODEL)})", "{{instance}}")],
        "Errors/s": [
            (f"sum(rate({http5xx}[{RATE}]))", "HTTP 5xx"),
            (f"sum(rate({sglang_selector('aborted_total', labels=MODEL)}[{RATE}]))", "aborted / rejected"),
        ],
        "GPU utilisation (DCGM)": [(f"avg by (Hostname, gpu) ({DCGM['gpu_util']})", "{{Hostname}} GPU {{gpu}}")],
        "GPU memory used (DCGM)": [
            (f"{DCGM['fb_used']} / ({DCGM['fb_used']} + {DCGM['fb_free']})", "{{Hostname}} GPU {{gpu}}"),
        ],
    }


_UNITS = {"Requests/s": "reqps", "Input tokens/s": "short", "Latency (end to end)": "s",
          "Queue and running requests": "short", "KV pool usage": "percentunit", "Errors/s": "reqps",
          "GPU utilisation (DCGM)": "percent", "GPU memory used (DCGM)": "percentunit"}


def dashboard(title: str = "qembed: Qwen3-Embedding on SGLang") -> dict[str, Any]:
    """The dashboard as a dict (Grafana's JSON model, schemaVersion 39)."""
    panels: list[dict[str, Any]] = []
    for i, (name, targets) in enumerate(queries().items()):
        panels.append({
            "id": i + 1, "type": "timeseries", "title": name, "datasource": DS,
            "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 8},
            "fieldConfig": {"defaults": {"unit": _UNITS[name]}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}},
            "targets": [{"refId": chr(ord("A") + j), "datasource": DS, "expr": expr, "legendFormat": legend}
                        for j, (expr, legend) in enumerate(targets)],
        })
    names = SGLANG["requests_total"]
    return {
        "title": title, "uid": "qembed-embeddings", "editable": True, "schemaVersion": 39,
        "tags": ["qembed", "sglang", "embeddings"], "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"},
            {"name": "model", "type": "query", "datasource": DS, "label": "model", "includeAll": True,
             "multi": True, "allValue": ".*", "refresh": 2,
             "query": f'label_values({{__name__=~"sglang[:_]{names}"}}, model_name)',
             "definition": f'label_values({{__name__=~"sglang[:_]{names}"}}, model_name)'},
        ]},
        "panels": panels,
    }


def render(title: str | None = None) -> str:
    return json.dumps(dashboard(title) if title else dashboard(), indent=2) + "\n"


__all__ = ["dashboard", "queries", "render"]
