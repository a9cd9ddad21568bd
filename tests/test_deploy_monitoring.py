"""`qembed deploy grafana` and `qembed deploy alerts`: parsed, field-checked, and their PromQL
checked by the real `promtool` (never skipped: scripts/test.sh installs it).

Every alert runs under `promtool test rules` from a rule file and a test file generated here:
it fires on its bad input, stays silent on healthy input, and stays silent when the same bad
series come from another namespace, or from another Deployment's pods serving a chat model
(issue 20: scoping). Every dashboard query is run by `promtool` on in-scope series (it finds
them) and on the same series out of scope (it finds nothing). Input series of kube-state-metrics
and of NVIDIA's DCGM exporter are synthetic (no cluster, no GPU here); the generated files say so.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from qembed.errors import ConfigError
from qembed.fleet.deploy import alerts, grafana
from qembed.metrics import DCGM, KUBE, NOT_FROM_SGLANG, keda_hpa, pod_regex, scope
from tests.helpers.promtool import promtool

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "deploy.md"

NS, NAME = "prod", "qembed"
MODEL = "Qwen/Qwen3-Embedding-4B"
#: in scope, and the two ways out of it: another namespace; another Deployment (a chat model)
IN_SCOPE = {"ns": NS, "pod": "qembed-7d9f8b6c5-abcde", "gwpod": "qembed-gateway-6b5c4d3e2-fghij",
            "dep": NAME, "model": MODEL}
OTHER_NAMESPACE = {**IN_SCOPE, "ns": "staging"}
CHAT_MODEL = {"ns": NS, "pod": "chat-7d9f8b6c5-abcde", "gwpod": "chat-gateway-6b5c4d3e2-fghij",
              "dep": "chat", "model": "Qwen/Qwen3-8B"}
SYNTHETIC = ("# Input series of kube-state-metrics (kube_*) and of NVIDIA's DCGM exporter (DCGM_*) are\n"
             "# synthetic: no Kubernetes cluster and no GPU here. Their labels follow those exporters' docs.\n")


def check_rules(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)


def promtool_test(tmp_path: Path, rules: dict[str, Any], tests: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    doc = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "test.yaml").write_text(SYNTHETIC + yaml.safe_dump(doc, sort_keys=False))
    return subprocess.run([promtool(), "test", "rules", "test.yaml"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)


def _series(templates: list[tuple[str, str]], where: dict[str, str]) -> list[dict[str, str]]:
    return [{"series": s.format(**where), "values": v} for s, v in templates]


# -- grafana ----------------------------------------------------------------------------------

PANELS = ["Texts/s", "Input tokens/s", "Latency (end to end)", "Queue depth per replica",
          "Running requests per replica", "KV pool usage", "Worker errors/s", "Startup time",
          "Gateway requests/s", "Gateway 5xx/s", "Gateway latency p99", "Gateway workers",
          "Replicas vs desired", "GPU utilisation (DCGM)", "GPU memory used (DCGM)"]


def test_dashboard_panels_variables_and_filters() -> None:
    dash = json.loads(grafana.render_dashboard())
    assert [p["title"] for p in dash["panels"]] == PANELS
    assert "Requests/s" not in [p["title"] for p in dash["panels"]]  # SGLang counts texts, not requests
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert set(variables) == {"datasource", "namespace", "pod", "model"}
    # "All" pods is this Deployment's pods, never every pod of the namespace
    assert variables["pod"]["allValue"] == pod_regex(NAME) and variables["pod"]["includeAll"]
    assert f'pod=~"{pod_regex(NAME)}"' in variables["pod"]["query"]
    gw = pod_regex(NAME + "-gateway")
    for p in dash["panels"]:
        for t in p["targets"]:
            e = t["expr"]
            assert 'namespace="$namespace"' in e, (p["title"], e)  # every query, one namespace
            assert "sglang:" not in e and "sglang_" not in e, e  # never one spelling alone
            if "sglang[:_]" in e or "DCGM" in e:
                assert 'pod=~"$pod"' in e, (p["title"], e)
            if "smg_" in e:
                assert f'pod=~"{gw}"' in e and ('path="/v1/embeddings"' in e or "worker" in e), e
            if "kube_" in e:
                assert f'deployment="{NAME}"' in e or f'horizontalpodautoscaler="{keda_hpa(NAME)}"' in e, e
    exprs = {p["title"]: [t["expr"] for t in p["targets"]] for p in dash["panels"]}
    assert [t["legendFormat"] for t in dash["panels"][2]["targets"]] == ["p50", "p95", "p99"]
    assert any(DCGM["gpu_util"] in e for e in exprs["GPU utilisation (DCGM)"])
    assert any("startup_time_seconds" in e for e in exprs["Startup time"])
    assert any('endpoint="/v1/embeddings"' in e for e in exprs["Worker errors/s"])
    ids = [p["id"] for p in dash["panels"]]
    assert len(set(ids)) == len(ids)


def test_dashboard_for_another_deployment_and_without_gpus() -> None:
    dash = grafana.dashboard(name="emb", gpu=False)
    assert [p["title"] for p in dash["panels"]] == [t for t in PANELS if t not in grafana.GPU_PANELS]
    assert not any(DCGM["gpu_util"] in t["expr"] for p in dash["panels"] for t in p["targets"])
    text = json.dumps(dash)
    assert pod_regex("emb") in text and pod_regex("emb-gateway") in text and keda_hpa("emb") in text
    assert pod_regex("qembed") not in text
    with pytest.raises(ValueError):
        grafana.queries("Not_A_Name")


@pytest.mark.parametrize(("args", "gpu"), [([], True), (["--no-gpu"], False), (["-p", "xeon"], False),
                                           (["-p", "h100"], True)])
def test_cli_gpu_panels_follow_the_profile(args: list[str], gpu: bool) -> None:
    proc = subprocess.run([sys.executable, "-m", "qembed", "deploy", "grafana", *args], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    titles = {p["title"] for p in json.loads(proc.stdout)["panels"]}
    assert (set(grafana.GPU_PANELS) <= titles) is gpu


def _dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every variable's selector, instantiated."""
    dash = grafana.dashboard()
    out = [(f"{p['title']}/{t['refId']}", t["expr"]) for p in dash["panels"] for t in p["targets"]]
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            m = re.fullmatch(r"label_values\((.*),\s*[a-zA-Z_]+\)", v["query"])
            assert m, v["query"]
            out.append((f"${v['name']}", m.group(1)))
    return [(w, grafana.instantiate(e, namespace=NS, name=NAME)) for w, e in out]


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    rules = [{"record": f"qembed:q{i}", "expr": e} for i, (_, e) in enumerate(_dashboard_queries())]
    path = tmp_path / "panels.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    proc = check_rules(path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


#: one series for every name the dashboard reads ({ns}, {pod}, ... filled per scope)
PANEL_INPUT = [
    ('sglang:num_requests_total{{namespace="{ns}", pod="{pod}", model_name="{model}"}}', "0+10x20"),
    ('sglang:prompt_tokens_total{{namespace="{ns}", pod="{pod}", model_name="{model}"}}', "0+90x20"),
    ('sglang:e2e_request_latency_seconds_bucket{{namespace="{ns}", pod="{pod}", model_name="{model}", le="0.5"}}', "0+8x20"),
    ('sglang:e2e_request_latency_seconds_bucket{{namespace="{ns}", pod="{pod}", model_name="{model}", le="+Inf"}}', "0+10x20"),
    ('sglang:num_queue_reqs{{namespace="{ns}", pod="{pod}", model_name="{model}"}}', "3x20"),
    ('sglang:num_running_reqs{{namespace="{ns}", pod="{pod}", model_name="{model}"}}', "2x20"),
    ('sglang:token_usage{{namespace="{ns}", pod="{pod}", model_name="{model}"}}', "0.1x20"),
    ('sglang:http_responses_total{{namespace="{ns}", pod="{pod}", endpoint="/v1/embeddings", status_code="500", method="POST"}}', "0+1x20"),
    ('sglang:num_aborted_requests_total{{namespace="{ns}", pod="{pod}", model_name="{model}"}}', "0+1x20"),
    ('sglang:startup_time_seconds{{namespace="{ns}", pod="{pod}", model_name="{model}", phase="load_weight"}}', "42x20"),
    ('smg_http_requests_total{{namespace="{ns}", pod="{gwpod}", method="POST", path="/v1/embeddings"}}', "0+5x20"),
    ('smg_http_responses_total{{namespace="{ns}", pod="{gwpod}", path="/v1/embeddings", status_code="503", error_code=""}}', "0+1x20"),
    ('smg_http_request_duration_seconds_bucket{{namespace="{ns}", pod="{gwpod}", method="POST", path="/v1/embeddings", le="1"}}', "0+5x20"),
    ('smg_http_request_duration_seconds_bucket{{namespace="{ns}", pod="{gwpod}", method="POST", path="/v1/embeddings", le="+Inf"}}', "0+5x20"),
    ('smg_worker_health{{namespace="{ns}", pod="{gwpod}", worker="http://10.0.0.7:30000"}}', "1x20"),
    ('smg_worker_pool_size{{namespace="{ns}", pod="{gwpod}", worker_type="regular", connection_mode="http", model="{model}"}}', "1x20"),
    # synthetic: kube-state-metrics
    ('kube_deployment_status_replicas_available{{namespace="{ns}", deployment="{dep}"}}', "2x20"),
    ('kube_deployment_spec_replicas{{namespace="{ns}", deployment="{dep}"}}', "2x20"),
    ('kube_horizontalpodautoscaler_status_desired_replicas{{namespace="{ns}", horizontalpodautoscaler="keda-hpa-{dep}"}}', "2x20"),
    ('kube_horizontalpodautoscaler_spec_max_replicas{{namespace="{ns}", horizontalpodautoscaler="keda-hpa-{dep}"}}', "4x20"),
    # synthetic: DCGM exporter in Kubernetes mode (the pod using the GPU)
    ('DCGM_FI_DEV_GPU_UTIL{{namespace="{ns}", pod="{pod}", container="sglang", gpu="0", Hostname="n1"}}', "80x20"),
    ('DCGM_FI_DEV_FB_USED{{namespace="{ns}", pod="{pod}", container="sglang", gpu="0", Hostname="n1"}}', "60000x20"),
    ('DCGM_FI_DEV_FB_FREE{{namespace="{ns}", pod="{pod}", container="sglang", gpu="0", Hostname="n1"}}', "20000x20"),
]


def test_every_dashboard_query_sees_this_deployment_only(tmp_path: Path) -> None:
    queries = _dashboard_queries()
    found = [{"expr": f"count({e}) > bool 0", "eval_time": "15m", "exp_samples": [{"labels": "{}", "value": 1}]}
             for _, e in queries]
    tests = [{"name": "in scope: every query finds its series", "interval": "1m",
              "input_series": _series(PANEL_INPUT, IN_SCOPE), "promql_expr_test": found}]
    for label, where in (("another namespace", OTHER_NAMESPACE), ("a chat model's Deployment", CHAT_MODEL)):
        # the $namespace picker lists every namespace this Deployment's pods run in, by design
        nothing = [{"expr": f"count({e}) > bool 0", "eval_time": "15m", "exp_samples": []}
                   for w, e in queries if not (w == "$namespace" and where is OTHER_NAMESPACE)]
        tests.append({"name": f"{label}: no query sees it", "interval": "1m",
                      "input_series": _series(PANEL_INPUT, where), "promql_expr_test": nothing})
    proc = promtool_test(tmp_path, {"groups": []}, tests)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


# -- alerts -----------------------------------------------------------------------------------

ALERTS = {"QembedTargetDown", "QembedNoWorkers", "QembedP99LatencyHigh", "QembedQueueFull", "QembedErrorRateHigh",
          "QembedGatewayErrorRateHigh", "QembedGatewayNoHealthyWorkers", "QembedPodRestarting",
          "QembedPodOOMKilled", "QembedReplicasAtMax", "QembedGpuMemoryNearFull"}


def _by_name(settings: alerts.AlertSettings | None = None) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in alerts.rules(settings)["groups"] for r in g["rules"]}


def test_alert_rules_pass_promtool_and_are_scoped(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(alerts.render_rules(alerts.AlertSettings(namespace="ml", name="emb", p99_slo_s=0.5)))
    proc = check_rules(path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    by_name = {r["alert"]: r for r in yaml.safe_load(path.read_text())["groups"][0]["rules"]}
    assert set(by_name) == ALERTS
    assert by_name["QembedP99LatencyHigh"]["expr"].endswith("> 0.5")
    worker, gateway = scope("ml", "emb"), scope("ml", "emb-gateway")
    for name, r in by_name.items():
        e = r["expr"]
        assert 'namespace="ml"' in e, name
        assert worker in e or gateway in e or scope("ml", "emb", "emb-gateway") in e \
            or f'horizontalpodautoscaler="{keda_hpa("emb")}"' in e, (name, e)
        assert 'job="qembed"' not in e, e  # never matched annotation-based scraping
        assert r["labels"]["severity"] in ("warning", "critical") and r["annotations"]["summary"]
        assert "sglang:" not in e and "sglang_" not in e, e
    assert 'endpoint="/v1/embeddings"' in by_name["QembedErrorRateHigh"]["expr"]
    assert "sum by (le, namespace, model_name)" in by_name["QembedP99LatencyHigh"]["expr"]
    assert DCGM["fb_used"] in by_name["QembedGpuMemoryNearFull"]["expr"]


def test_every_alert_has_a_runbook_section_in_docs_deploy_md() -> None:
    docs = DOCS.read_text(encoding="utf-8")
    runbooks = docs.split("\n## Runbooks\n", 1)[1].split("\n## ", 1)[0]
    sections = dict(re.findall(r"^### (Qembed\w+)\n(.*?)(?=^### |\Z)", runbooks, flags=re.M | re.S))
    assert set(sections) == ALERTS, set(sections) ^ ALERTS  # one per alert, none stale
    base = "https://example.internal/wiki/qembed/deploy.md"
    for name, r in _by_name(alerts.AlertSettings(runbook_base=base)).items():
        url = r["annotations"]["runbook_url"]
        assert url == f"{base}#{name.lower()}", url
        # GitHub's anchor of `### QembedX` is `qembedx`: the heading exists, so the anchor does
        assert name.lower() == alerts.runbook_anchor(name)
        body = sections[name]
        for part in ("**Means:**", "**First checks:**", "**Fix:**"):
            assert part in body, (name, part)
        assert "```" in body, f"{name}: the first checks give commands"
    assert _by_name()["QembedTargetDown"]["annotations"]["runbook_url"].startswith(alerts.RUNBOOK_BASE + "#")


@dataclass
class Case:
    """One alert under promtool: firing inputs (with the labels it fires with), healthy inputs,
    and when it is checked (``at``)."""

    fire: list[tuple[list[tuple[str, str]], dict[str, str]]]
    healthy: list[list[tuple[str, str]]]
    at: str
    #: True for absent(): out-of-scope series alone must fire it (they do not count as ours)
    inverted: bool = False
    notes: list[str] = field(default_factory=list)


W = 'namespace="{ns}", pod="{pod}"'
G = 'namespace="{ns}", pod="{gwpod}"'
LAT = "sglang:e2e_request_latency_seconds_bucket{{" + W + ', model_name="{model}", le="{le}"}}'
RESP = "sglang:http_responses_total{{" + W + ', endpoint="{ep}", status_code="{code}", method="POST"}}'
GRESP = "smg_http_responses_total{{" + G + ', path="{path}", status_code="{code}", error_code=""}}'
RESTARTS = "kube_pod_container_status_restarts_total{{" + W + ', container="sglang", job="kube-state-metrics"}}'
REASON = "kube_pod_container_status_last_terminated_reason{{" + W + ', container="sglang", job="kube-state-metrics", reason="{reason}"}}'
HPA = 'namespace="{ns}", horizontalpodautoscaler="keda-hpa-{dep}", job="kube-state-metrics"'
GPU = W + ', container="sglang", gpu="0", Hostname="n1"'


def _lat(le: str) -> str:
    return LAT.replace('le="{le}"', f'le="{le}"')


def _resp(ep: str, code: str) -> str:
    return RESP.replace('"{ep}"', f'"{ep}"').replace('"{code}"', f'"{code}"')


def _gresp(path: str, code: str) -> str:
    return GRESP.replace('"{path}"', f'"{path}"').replace('"{code}"', f'"{code}"')


def _reason(reason: str) -> str:
    return REASON.replace('"{reason}"', f'"{reason}"')


POD_LABELS = {"namespace": NS, "pod": IN_SCOPE["pod"]}
CASES: dict[str, Case] = {
    "QembedTargetDown": Case(
        fire=[([("up{{" + W + ', job="kubernetes-pods", instance="10.0.0.5:30000"}}', "0x10")],
               {**POD_LABELS, "job": "kubernetes-pods", "instance": "10.0.0.5:30000"})],
        healthy=[[("up{{" + W + ', job="kubernetes-pods", instance="10.0.0.5:30000"}}', "1x10")]], at="5m"),
    "QembedNoWorkers": Case(
        fire=[([("sglang:num_running_reqs{{" + W + ', model_name="{model}"}}', "1x10")], {"namespace": NS})],
        healthy=[[("sglang:num_running_reqs{{" + W + ', model_name="{model}"}}', "1x10")],
                 [("sglang_num_running_reqs{{" + W + ', model_name="{model}"}}', "0x10")]],
        at="8m", inverted=True),
    "QembedP99LatencyHigh": Case(
        fire=[([(_lat("1"), "0+1x30"), (_lat("4"), "0+10x30"), (_lat("+Inf"), "0+10x30")],
               {"namespace": NS, "model_name": MODEL}),
              ([(_lat(le).replace("sglang:", "sglang_"), v) for le, v in (("1", "0+1x30"), ("4", "0+10x30"), ("+Inf", "0+10x30"))],
               {"namespace": NS, "model_name": MODEL})],
        healthy=[[(_lat("1"), "0+10x30"), (_lat("+Inf"), "0+10x30")]], at="20m"),
    "QembedQueueFull": Case(
        fire=[([("sglang:num_queue_reqs{{" + W + ', model_name="{model}", tp_rank="0"}}', "600x20")],
               {"namespace": NS, "model_name": MODEL})],
        # per replica: 300 queued on one pod and 100 on another is 200 per replica, under 256
        healthy=[[("sglang:num_queue_reqs{{" + W + ', model_name="{model}", tp_rank="0"}}', "2x20")],
                 [("sglang:num_queue_reqs{{" + W + ', model_name="{model}", tp_rank="0"}}', "300x20"),
                  ('sglang:num_queue_reqs{{namespace="{ns}", pod="{pod}x", model_name="{model}", tp_rank="0"}}', "100x20")],
                 # full for 5 minutes only (the rule waits 10)
                 [("sglang:num_queue_reqs{{" + W + ', model_name="{model}", tp_rank="0"}}', "0x9 600x5 0x5")]],
        at="15m"),
    "QembedErrorRateHigh": Case(
        fire=[([(_resp("/v1/embeddings", "200"), "0+90x20"), (_resp("/v1/embeddings", "503"), "0+10x20")],
               {"namespace": NS})],
        # 5xx on another endpoint are not embedding errors
        healthy=[[(_resp("/v1/embeddings", "200"), "0+90x20"), (_resp("/health", "503"), "0+50x20")]], at="15m"),
    "QembedGatewayErrorRateHigh": Case(
        fire=[([(_gresp("/v1/embeddings", "200"), "0+90x20"), (_gresp("/v1/embeddings", "502"), "0+10x20")],
               {"namespace": NS})],
        healthy=[[(_gresp("/v1/embeddings", "200"), "0+90x20"), (_gresp("/workers", "500"), "0+50x20")]], at="15m"),
    "QembedGatewayNoHealthyWorkers": Case(
        fire=[([("up{{" + G + ', job="kubernetes-pods", instance="10.0.0.9:29000"}}', "1x10"),
                ("smg_worker_health{{" + G + ', worker="http://10.0.0.7:30000"}}', "0x10")], {"namespace": NS}),
              ([("up{{" + G + ', job="kubernetes-pods", instance="10.0.0.9:29000"}}', "1x10")], {"namespace": NS})],
        healthy=[[("up{{" + G + ', job="kubernetes-pods", instance="10.0.0.9:29000"}}', "1x10"),
                  ("smg_worker_health{{" + G + ', worker="http://10.0.0.7:30000"}}', "0x10"),
                  ("smg_worker_health{{" + G + ', worker="http://10.0.0.8:30000"}}', "1x10")]], at="5m"),
    "QembedPodRestarting": Case(
        fire=[([(RESTARTS, "0 0 0 1 1 1 1 1 1 1"), (_reason("Error"), "1x10")], {**POD_LABELS, "container": "sglang"}),
              ([(RESTARTS.replace("{pod}", "{gwpod}"), "0 0 0 1 1 1 1 1 1 1")],
               {"namespace": NS, "pod": IN_SCOPE["gwpod"], "container": "sglang"})],
        # no restart; an OOM kill is QembedPodOOMKilled's, not this one's
        healthy=[[(RESTARTS, "0x10")], [(RESTARTS, "0 0 0 1 1 1 1 1 1 1"), (_reason("OOMKilled"), "1x10")]],
        at="8m"),
    "QembedPodOOMKilled": Case(
        fire=[([(RESTARTS, "0 0 0 1 1 1 1 1 1 1"), (_reason("OOMKilled"), "1x10")], {**POD_LABELS, "container": "sglang"})],
        # an old OOM kill (no restart in 30 minutes); a restart for another reason
        healthy=[[(RESTARTS, "1x10"), (_reason("OOMKilled"), "1x10")],
                 [(RESTARTS, "0 0 0 1 1 1 1 1 1 1"), (_reason("Error"), "1x10")]], at="8m"),
    "QembedReplicasAtMax": Case(
        fire=[([("kube_horizontalpodautoscaler_status_current_replicas{{" + HPA + "}}", "4x40"),
                ("kube_horizontalpodautoscaler_spec_max_replicas{{" + HPA + "}}", "4x40")],
               {"namespace": NS, "horizontalpodautoscaler": keda_hpa(NAME), "job": "kube-state-metrics"})],
        healthy=[[("kube_horizontalpodautoscaler_status_current_replicas{{" + HPA + "}}", "3x40"),
                  ("kube_horizontalpodautoscaler_spec_max_replicas{{" + HPA + "}}", "4x40")]], at="35m"),
    "QembedGpuMemoryNearFull": Case(
        fire=[([("DCGM_FI_DEV_FB_USED{{" + GPU + "}}", "79000x30"), ("DCGM_FI_DEV_FB_FREE{{" + GPU + "}}", "1000x30")],
               {**POD_LABELS, "container": "sglang", "gpu": "0", "Hostname": "n1"})],
        # SGLang's own static reservation (~0.82) does not alert
        healthy=[[("DCGM_FI_DEV_FB_USED{{" + GPU + "}}", "66000x30"), ("DCGM_FI_DEV_FB_FREE{{" + GPU + "}}", "14000x30")]],
        at="20m"),
}


def _bare_rules(alert: str) -> dict[str, Any]:
    """The one alert's rule, as generated for (NS, NAME); promtool compares annotations
    exactly, so they are left out (promtool check rules validates their templates)."""
    rule = dict(_by_name(alerts.AlertSettings(namespace=NS, name=NAME))[alert])
    rule.pop("annotations")
    return {"groups": [{"name": alert, "rules": [rule]}]}


def test_every_alert_has_a_promtool_case() -> None:
    assert set(CASES) == ALERTS == set(_by_name())


def test_a_full_queue_is_one_above_the_autoscaler_target() -> None:
    from qembed.fleet.deploy.k8s import DEFAULT_TARGET_QUEUE

    assert alerts.AlertSettings().queue_threshold == DEFAULT_TARGET_QUEUE
    assert _by_name()["QembedQueueFull"]["expr"].endswith(f"> {DEFAULT_TARGET_QUEUE}")
    documented = re.findall(r"`--queue-threshold` \((\d+)\)|\(`--queue-threshold`, (\d+) by", DOCS.read_text(encoding="utf-8"))
    assert documented and all(int(a or b) == DEFAULT_TARGET_QUEUE for a, b in documented), documented


@pytest.mark.parametrize("alert", sorted(CASES))
def test_alert_fires_stays_silent_and_is_scoped(tmp_path: Path, alert: str) -> None:
    case = CASES[alert]
    severity = _by_name()[alert]["labels"]["severity"]

    def run(name: str, series: list[tuple[str, str]], where: dict[str, str], expected: list[dict[str, str]]) -> dict[str, Any]:
        return {"name": name, "interval": "1m", "input_series": _series(series, where),
                "alert_rule_test": [{"eval_time": case.at, "alertname": alert,
                                     "exp_alerts": [{"exp_labels": {**e, "severity": severity}} for e in expected]}]}

    tests = []
    for i, (series, labels) in enumerate(case.fire):
        if case.inverted:  # absent(): only out-of-scope workers report, so ours are missing
            tests.append(run(f"fires {i}: another namespace's workers only", series, OTHER_NAMESPACE, [labels]))
            tests.append(run(f"fires {i}: a chat model's workers only", series, CHAT_MODEL, [labels]))
            continue
        tests.append(run(f"fires {i}", series, IN_SCOPE, [labels]))
        tests.append(run(f"scoped {i}: the same in another namespace", series, OTHER_NAMESPACE, []))
        tests.append(run(f"scoped {i}: the same from a chat model's Deployment", series, CHAT_MODEL, []))
    for i, series in enumerate(case.healthy):
        tests.append(run(f"healthy {i}", series, IN_SCOPE, []))
    proc = promtool_test(tmp_path, _bare_rules(alert), tests)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_a_promtool_case_can_fail(tmp_path: Path) -> None:
    # guard: a firing case run on the healthy expectation fails, so the cases above can fail
    case = CASES["QembedQueueFull"]
    series, _ = case.fire[0]
    test = {"name": "wrong on purpose", "interval": "1m", "input_series": _series(series, IN_SCOPE),
            "alert_rule_test": [{"eval_time": case.at, "alertname": "QembedQueueFull", "exp_alerts": []}]}
    assert promtool_test(tmp_path, _bare_rules("QembedQueueFull"), [test]).returncode != 0


def test_promtool_check_fails_on_bad_promql(tmp_path: Path) -> None:
    # guard: the checks above can fail
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [{"record": "x:y", "expr": "sum(rate(foo[5m]"}]}]}))
    assert check_rules(path).returncode != 0


@pytest.mark.parametrize("kw", [{"p99_slo_s": 0}, {"error_rate": 1.5}, {"gpu_memory_fraction": 0},
                                {"queue_threshold": -1}, {"queue_minutes": 0}, {"namespace": "Prod"},
                                {"name": "q_embed"}, {"runbook_base": "docs/deploy.md"},
                                {"runbook_base": "https://x/deploy.md#top"}])
def test_bad_settings_are_refused(kw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        alerts.rules(alerts.AlertSettings(**kw))


def test_names_outside_sglang_are_allow_listed_with_a_reason() -> None:
    # every kube-state-metrics and DCGM name the artefacts use is on the one allow-list
    used = {n for r in _by_name().values() for n in re.findall(r"\b(?:kube_|DCGM_)\w+", r["expr"])}
    used |= {n for p in grafana.dashboard()["panels"] for t in p["targets"]
             for n in re.findall(r"\b(?:kube_|DCGM_)\w+", t["expr"])}
    assert used and used <= set(NOT_FROM_SGLANG), used - set(NOT_FROM_SGLANG)
    assert set(KUBE.values()) <= set(NOT_FROM_SGLANG)
    assert all(len(why) > 20 for why in NOT_FROM_SGLANG.values())


def test_cli_writes_both_files(tmp_path: Path) -> None:
    for args, name in ((["grafana", "--name", "emb"], "qembed-dashboard.json"),
                       (["alerts", "--p99-slo", "0.25", "--namespace", "ml", "--name", "emb",
                         "--runbook-base", "https://wiki.example/deploy"], "qembed-alerts.yaml")):
        proc = subprocess.run([sys.executable, "-m", "qembed", "deploy", *args, "-o", str(tmp_path)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / name).exists()
    by_name = {r["alert"]: r for r in yaml.safe_load((tmp_path / "qembed-alerts.yaml").read_text())["groups"][0]["rules"]}
    assert re.search(r"> 0\.25$", by_name["QembedP99LatencyHigh"]["expr"])
    assert scope("ml", "emb") in by_name["QembedTargetDown"]["expr"]
    assert by_name["QembedTargetDown"]["annotations"]["runbook_url"] == "https://wiki.example/deploy#qembedtargetdown"
    assert check_rules(tmp_path / "qembed-alerts.yaml").returncode == 0
    assert pod_regex("emb") in (tmp_path / "qembed-dashboard.json").read_text()


def test_cli_refuses_a_bad_name_with_error_and_hint() -> None:
    proc = subprocess.run([sys.executable, "-m", "qembed", "deploy", "alerts", "--namespace", "Prod"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and proc.stderr.startswith("error:") and "--namespace" in proc.stderr, proc.stderr
