"""`qembed deploy grafana` and `qembed deploy alerts`: parsed, field-checked, and their PromQL
checked by the real `promtool` (never skipped: scripts/test.sh installs it). The alert rules
are also unit-tested with `promtool test rules`, fed with both metric prefixes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from qembed.deploy import alerts, grafana
from qembed.deploy.metrics import DCGM
from qembed.errors import ConfigError
from tests.test_deploy_k8s import promtool


def check_rules(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)


# -- grafana ----------------------------------------------------------------------------------


def test_dashboard_panels_and_prefixes() -> None:
    dash = json.loads(grafana.render())
    titles = [p["title"] for p in dash["panels"]]
    assert titles == ["Requests/s", "Input tokens/s", "Latency (end to end)", "Queue and running requests",
                      "KV pool usage", "Errors/s", "GPU utilisation (DCGM)", "GPU memory used (DCGM)"]
    exprs = {p["title"]: [t["expr"] for t in p["targets"]] for p in dash["panels"]}
    for title, items in exprs.items():
        for e in items:
            assert "sglang:" not in e and "sglang_" not in e, e  # never one spelling alone
            if "DCGM" not in title:
                assert "sglang[:_]" in e, e
    assert [t["legendFormat"] for t in dash["panels"][2]["targets"]] == ["p50", "p95", "p99"]
    assert any(DCGM["gpu_util"] in e for e in exprs["GPU utilisation (DCGM)"])
    assert any(DCGM["fb_used"] in e for e in exprs["GPU memory used (DCGM)"])
    assert {v["name"] for v in dash["templating"]["list"]} == {"datasource", "model"}
    ids = [p["id"] for p in dash["panels"]]
    assert len(set(ids)) == len(ids)


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    rules = []
    for i, p in enumerate(json.loads(grafana.render())["panels"]):
        for t in p["targets"]:
            expr = t["expr"].replace("$__rate_interval", "5m").replace("$model", ".*")
            rules.append({"record": f"qembed:panel{i}_{t['refId']}", "expr": expr})
    path = tmp_path / "panels.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    proc = check_rules(path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_check_fails_on_bad_promql(tmp_path: Path) -> None:
    # guard: the check above can fail
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [{"record": "x:y", "expr": "sum(rate(foo[5m]"}]}]}))
    assert check_rules(path).returncode != 0


# -- alerts -----------------------------------------------------------------------------------


def test_alert_rules_pass_promtool_and_have_every_alert(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(alerts.render(alerts.AlertSettings(p99_slo_s=0.5)))
    proc = check_rules(path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = yaml.safe_load(path.read_text())
    by_name = {r["alert"]: r for r in data["groups"][0]["rules"]}
    assert set(by_name) == {"QembedTargetDown", "QembedNoWorkers", "QembedP99LatencyHigh", "QembedQueueGrowing",
                            "QembedErrorRateHigh", "QembedGpuMemoryNearFull"}
    assert by_name["QembedP99LatencyHigh"]["expr"].endswith("> 0.5")
    assert "sglang[:_]e2e_request_latency_seconds_bucket" in by_name["QembedP99LatencyHigh"]["expr"]
    assert DCGM["fb_used"] in by_name["QembedGpuMemoryNearFull"]["expr"]
    for r in by_name.values():
        assert r["labels"]["severity"] in ("warning", "critical") and r["annotations"]["summary"]


def _bare(rules_text: str) -> str:
    # promtool compares annotations exactly; the unit tests check expr, `for` and labels
    data = yaml.safe_load(rules_text)
    for r in data["groups"][0]["rules"]:
        r.pop("annotations", None)
    return yaml.safe_dump(data)


def _unit(tmp_path: Path, series: list[dict[str, str]], alert: str, at: str, expected: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    (tmp_path / "rules.yaml").write_text(_bare(alerts.render()))
    test = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": series,
        "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": expected}]}]}
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test))
    return subprocess.run([promtool(), "test", "rules", "test.yaml"], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)


@pytest.mark.parametrize("prefix", ["sglang:", "sglang_"])
def test_p99_alert_fires_for_both_prefixes(tmp_path: Path, prefix: str) -> None:
    b = f"{prefix}e2e_request_latency_seconds_bucket"
    slow = [{"series": f'{b}{{le="1",model_name="m"}}', "values": "0+1x40"},
            {"series": f'{b}{{le="4",model_name="m"}}', "values": "0+10x40"},
            {"series": f'{b}{{le="+Inf",model_name="m"}}', "values": "0+10x40"}]
    proc = _unit(tmp_path, slow, "QembedP99LatencyHigh", "30m",
                 [{"exp_labels": {"severity": "warning", "model_name": "m"}}])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    fast = [{"series": f'{b}{{le="1",model_name="m"}}', "values": "0+10x40"},
            {"series": f'{b}{{le="+Inf",model_name="m"}}', "values": "0+10x40"}]
    proc = _unit(tmp_path, fast, "QembedP99LatencyHigh", "30m", [])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_queue_alert_needs_a_growing_queue(tmp_path: Path) -> None:
    growing = [{"series": 'sglang:num_queue_reqs{model_name="m"}', "values": "0+2x40"}]
    proc = _unit(tmp_path, growing, "QembedQueueGrowing", "30m", [{"exp_labels": {"severity": "warning", "model_name": "m"}}])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    flat = [{"series": 'sglang_num_queue_reqs{model_name="m"}', "values": "50x40"}]
    proc = _unit(tmp_path, flat, "QembedQueueGrowing", "30m", [])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_error_rate_and_gpu_memory_alerts(tmp_path: Path) -> None:
    r = "sglang:http_responses_total"
    series = [{"series": f'{r}{{status_code="200"}}', "values": "0+90x40"},
              {"series": f'{r}{{status_code="503"}}', "values": "0+10x40"}]
    proc = _unit(tmp_path, series, "QembedErrorRateHigh", "30m", [{"exp_labels": {"severity": "warning"}}])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    gpu = [{"series": f'{DCGM["fb_used"]}{{gpu="0",Hostname="n1"}}', "values": "79000x40"},
           {"series": f'{DCGM["fb_free"]}{{gpu="0",Hostname="n1"}}', "values": "1000x40"}]
    proc = _unit(tmp_path, gpu, "QembedGpuMemoryNearFull", "30m",
                 [{"exp_labels": {"severity": "warning", "gpu": "0", "Hostname": "n1"}}])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # SGLang's own static reservation (~0.82) does not alert
    normal = [{"series": f'{DCGM["fb_used"]}{{gpu="0",Hostname="n1"}}', "values": "66000x40"},
              {"series": f'{DCGM["fb_free"]}{{gpu="0",Hostname="n1"}}', "values": "14000x40"}]
    proc = _unit(tmp_path, normal, "QembedGpuMemoryNearFull", "30m", [])
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("kw", [{"p99_slo_s": 0}, {"error_rate": 1.5}, {"gpu_memory_fraction": 0},
                                {"up_selector": "job=\"x\"}"}, {"queue_threshold": -1}])
def test_bad_settings_are_refused(kw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        alerts.rules(alerts.AlertSettings(**kw))


def test_cli_writes_both_files(tmp_path: Path) -> None:
    for args, name in ((["grafana"], "qembed-dashboard.json"), (["alerts", "--p99-slo", "0.25"], "qembed-alerts.yaml")):
        proc = subprocess.run([sys.executable, "-m", "qembed", "deploy", *args, "-o", str(tmp_path)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / name).exists()
    assert re.search(r"> 0\.25$", yaml.safe_load((tmp_path / "qembed-alerts.yaml").read_text())["groups"][0]["rules"][2]["expr"])
    assert check_rules(tmp_path / "qembed-alerts.yaml").returncode == 0
