"""``qembed deploy alerts``: Prometheus alerting rules for an embedding service.

Rules: a scrape target down, no SGLang worker reporting at all, p99 latency above an SLO you
set, a queue that keeps growing, a 5xx error rate, GPU memory near full (DCGM). SGLang names
match both ``sglang:`` and ``sglang_`` (:mod:`qembed.deploy.metrics`). ``promtool check
rules`` validates the output in the tests.

SGLang reserves ``--mem-fraction-static`` (0.68-0.82 in the shipped profiles) of GPU memory at
start by design, so the GPU-memory threshold sits well above it (0.97 by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qembed.errors import ConfigError

from .metrics import DCGM, sglang_selector


@dataclass(frozen=True)
class AlertSettings:
    p99_slo_s: float = 1.0  # seconds
    error_rate: float = 0.05  # fraction of responses that are 5xx
    queue_threshold: int = 10  # queued requests before a growing queue alerts
    gpu_memory_fraction: float = 0.97
    up_selector: str = 'job="qembed"'  # PromQL label matchers of the workers' scrape job

    def check(self) -> AlertSettings:
        if not self.p99_slo_s > 0:
            raise ConfigError(f"`--p99-slo` must be a positive number of seconds, got {self.p99_slo_s}")
        if not 0 < self.error_rate < 1:
            raise ConfigError(f"`--error-rate` must be a fraction between 0 and 1, got {self.error_rate}")
        if self.queue_threshold < 0:
            raise ConfigError(f"`--queue-threshold` must not be negative, got {self.queue_threshold}")
        if not 0 < self.gpu_memory_fraction <= 1:
            raise ConfigError(f"`--gpu-memory` must be a fraction in (0, 1], got {self.gpu_memory_fraction}")
        if not self.up_selector.strip() or any(c in self.up_selector for c in "{}\n"):
            raise ConfigError(f"`--up-selector` must be label matchers such as `job=\"qembed\"`, got {self.up_selector!r}")
        return self


def _num(x: float) -> str:
    return f"{float(x):g}"


def rules(s: AlertSettings | None = None) -> dict[str, Any]:
    """The rule file as a dict (``groups: [...]``)."""
    s = (s or AlertSettings()).check()
    lat = sglang_selector("e2e_latency", "_bucket")
    queue = sglang_selector("queue_reqs")
    resp = sglang_selector("http_responses_total")
    resp5 = sglang_selector("http_responses_total", labels='status_code=~"5.."')
    used, free = DCGM["fb_used"], DCGM["fb_free"]
    rule_list: list[dict[str, Any]] = [
        {"alert": "QembedTargetDown", "expr": f"up{{{s.up_selector}}} == 0", "for": "2m",
         "labels": {"severity": "critical"},
         "annotations": {"summary": "embedding server {{ $labels.instance }} is down",
                         "description": "Prometheus cannot scrape {{ $labels.instance }} "
                                        f"({s.up_selector}) for 2 minutes."}},
        {"alert": "QembedNoWorkers", "expr": f"absent({sglang_selector('running_reqs')})", "for": "5m",
         "labels": {"severity": "critical"},
         "annotations": {"summary": "no SGLang embedding worker reports metrics",
                         "description": "No series of sglang:num_running_reqs for 5 minutes: every "
                                        "worker is down, or `metrics` is off in the profile."}},
        {"alert": "QembedP99LatencyHigh",
         "expr": f"histogram_quantile(0.99, sum by (le, model_name) (rate({lat}[5m]))) > {_num(s.p99_slo_s)}",
         "for": "10m", "labels": {"severity": "warning"},
         "annotations": {"summary": "p99 embedding latency of {{ $labels.model_name }} is above "
                                    f"{_num(s.p99_slo_s)} s",
                         "description": "p99 end-to-end latency is {{ $value | humanizeDuration }} "
                                        f"(SLO {_num(s.p99_slo_s)} s) for 10 minutes."}},
        {"alert": "QembedQueueGrowing",
         "expr": (f"sum by (model_name) ({queue}) > {s.queue_threshold} "
                  f"and deriv(sum by (model_name) ({queue})[10m:1m]) > 0"),
         "for": "10m", "labels": {"severity": "warning"},
         "annotations": {"summary": "the request queue of {{ $labels.model_name }} keeps growing",
                         "description": "More than " + str(s.queue_threshold) + " requests wait and "
                                        "the queue grew over 10 minutes: add replicas or lower the load."}},
        {"alert": "QembedErrorRateHigh",
         "expr": f"sum(rate({resp5}[5m])) / sum(rate({resp}[5m])) > {_num(s.error_rate)}",
         "for": "5m", "labels": {"severity": "warning"},
         "annotations": {"summary": "more than " + f"{s.error_rate:.0%}" + " of embedding responses are 5xx",
                         "description": "5xx share is {{ $value | humanizePercentage }} for 5 minutes."}},
        {"alert": "QembedGpuMemoryNearFull",
         "expr": f"{used} / ({used} + {free}) > {_num(s.gpu_memory_fraction)}",
         "for": "15m", "labels": {"severity": "warning"},
         "annotations": {"summary": "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} is nearly full",
                         "description": "GPU memory is {{ $value | humanizePercentage }} used for 15 "
                                        "minutes (SGLang reserves its static fraction at start; this "
                                        "is above it)."}},
    ]
    return {"groups": [{"name": "qembed", "rules": rule_list}]}


def render(s: AlertSettings | None = None) -> str:
    import yaml

    from . import NoAliasDumper

    return yaml.dump(rules(s), Dumper=NoAliasDumper, sort_keys=False, width=1000)


__all__ = ["AlertSettings", "render", "rules"]
