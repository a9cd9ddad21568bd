"""Item D of the real-engine lane: every metric name qembed uses, checked against the `/metrics`
of real SGLang 0.5.23 after real traffic.

The names are read out of what qembed generates, never copied by hand: the PromQL of
`qembed deploy alerts`, `qembed deploy grafana` and the KEDA trigger of `qembed deploy k8s
--autoscale`, the `sglang_names(...)` calls of qembed/fleet/top.py, the name table itself
(qembed/metrics.py) and the PromQL users copy from docs/deploy.md (the HPA sketch, the
`qembed top` table). Each name must be in the real scrape, a series Prometheus makes itself
(`up`), or in the one allow-list, `metrics.NOT_FROM_SGLANG` (DCGM, kube-state-metrics), with
its reason; each `smg_*` name must be in the `/metrics` of the real smg 1.13 (from qembed's own
venv) routing embeddings to the real engine. `qembed top --once --json` must show the
requests sent here.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from qembed import metrics
from tests.engine.real import Engine, qembed
from tests.fake_site.harness import REPO, free_port, terminate
from tests.helpers.promql import promql_names

#: the smg gateway from qembed's own venv (the `gateway` extra)
SMG = Path(sys.executable).parent / "smg"

#: embedding requests sent, one text each (one HTTP request, one SGLang request apiece)
TRAFFIC = 5

#: series Prometheus writes for every scrape target itself, never exported by a server
#: (https://prometheus.io/docs/concepts/jobs_instances/#automatically-generated-labels-and-time-series)
PROMETHEUS_SYNTHETIC = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped",
                                  "scrape_samples_post_metric_relabeling", "scrape_series_added"})

_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


# -- names out of PromQL ----------------------------------------------------------------------


def test_promql_names_reads_every_shape() -> None:
    # the extractor itself can fail: a name it missed would never be checked
    expr = ('histogram_quantile(0.99, sum by (le, model_name) (rate({__name__=~"sglang[:_]a_bucket", '
            'model_name=~"$model"}[$__rate_interval]))) > 1e-3 and deriv(sum by (m) (b{x="}["})[10m:1m]) '
            '> 0 or up{job="q"} == 0 unless DCGM_X / (DCGM_X + c_total offset 5m)')
    assert promql_names(expr) == {"sglang:a_bucket", "b", "up", "DCGM_X", "c_total"}
    with pytest.raises(ValueError):
        promql_names('{__name__=~"sglang.*"}')


# -- the artefacts ----------------------------------------------------------------------------


def _run(args: list[str], engine: Engine) -> str:
    out = qembed(args, engine.env, timeout=60)
    assert out.returncode == 0, f"qembed {' '.join(args)}: {out.stderr}"
    return out.stdout


def alert_names(engine: Engine) -> dict[str, set[str]]:
    data = yaml.safe_load(_run(["deploy", "alerts"], engine))
    rules = [r for g in data["groups"] for r in g["rules"]]
    assert rules
    return {f"alert {r['alert']}": promql_names(r["expr"]) for r in rules}


def grafana_names(engine: Engine) -> dict[str, set[str]]:
    dash = json.loads(_run(["deploy", "grafana"], engine))
    out = {f"panel {p['title']!r}": set().union(*(promql_names(t["expr"]) for t in p["targets"]))
           for p in dash["panels"]}
    for var in dash["templating"]["list"]:
        if var.get("type") == "query":
            m = re.fullmatch(r"label_values\((.*),\s*[a-zA-Z_]+\)", var["query"])
            assert m, f"unexpected Grafana variable query {var['query']!r}"
            out[f"variable ${var['name']}"] = promql_names(m.group(1))
    return out


def keda_names(engine: Engine, tmp_path: Path) -> dict[str, set[str]]:
    _run(["deploy", "k8s", "-p", "h100", "--autoscale", "1:4", "--prometheus-url",
          "http://prometheus-operated.monitoring.svc:9090", "-o", str(tmp_path)], engine)
    (obj,) = yaml.safe_load_all((tmp_path / "autoscale.yaml").read_text())
    return {f"KEDA trigger {i}": promql_names(t["metadata"]["query"])
            for i, t in enumerate(obj["spec"]["triggers"]) if t["type"] == "prometheus"}


def top_names() -> dict[str, set[str]]:
    """The SGLang names qembed/fleet/top.py reads: its ``sglang_names("key")`` calls, through the table."""
    tree = ast.parse((REPO / "qembed" / "fleet" / "top.py").read_text())
    keys: set[str] = {n.args[0].value for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "sglang_names"
            and n.args and isinstance(n.args[0], ast.Constant) and isinstance(n.args[0].value, str)}
    assert keys, "qembed/fleet/top.py reads no SGLang metric through sglang_names()"
    return {f"qembed top ({k})": {metrics.sglang_names(k)[0]} for k in sorted(keys)}


def table_names() -> dict[str, set[str]]:
    return {f"metrics.SGLANG[{k!r}]": {metrics.sglang_names(k)[0]} for k in metrics.SGLANG}


def doc_names() -> dict[str, set[str]]:
    """``sglang:NAME`` and ``sglang[:_]NAME`` in docs/deploy.md (image tags ``sglang:v0...`` and
    process names ``sglang::scheduler`` are not metrics)."""
    text = (REPO / "docs" / "deploy.md").read_text()
    found = set(re.findall(r"sglang(?::|\[:_\])(?!v[\d<])([a-z][a-z0-9_]*)", text))
    assert found, "docs/deploy.md names no SGLang metric"
    return {"docs/deploy.md": {metrics.SGLANG_PREFIXES[0] + n for n in found}}


# -- the real scrape --------------------------------------------------------------------------


@dataclass
class RealMetrics:
    text: str
    samples: list[metrics.Sample]
    types: dict[str, str]  # family -> counter/gauge/histogram/...

    @property
    def names(self) -> set[str]:
        """Sample names, plus the family name of each histogram (``x`` for ``x_bucket``)."""
        out = {s.name for s in self.samples}
        out |= {f for f, t in self.types.items() if t == "histogram" and f + "_bucket" in out}
        return out

    def missing(self, name: str) -> bool:
        if name in self.names:
            if name.endswith("_bucket"):  # a real histogram, not a metric that happens to end so
                return self.types.get(name[: -len("_bucket")]) != "histogram"
            return False
        return True


def scrape(engine: Engine) -> RealMetrics:
    import httpx

    r = httpx.get(engine.url + "/metrics", timeout=30, trust_env=False)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", r.text, flags=re.M))
    return RealMetrics(r.text, metrics.parse_text(r.text), types)


def top_once(engine: Engine) -> dict[str, Any]:
    out = qembed(["top", "--once", "--json", "--url", engine.url, "--interval", "1"], engine.env, timeout=60)
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)
    assert row["ok"] and row["kind"] == "worker", row
    return dict(row)


@dataclass
class Traffic:
    before: RealMetrics
    after: RealMetrics
    top_before: dict[str, Any]
    top_after: dict[str, Any]


@pytest.fixture(scope="module")
def traffic(engine: Engine) -> Traffic:
    """A first snapshot, TRAFFIC embedding requests through qembed's Client, one
    ``/abort_request`` (SGLang exports its aborted counter from the first abort on), then the
    second snapshot."""
    import httpx

    from qembed import Client

    top_before = top_once(engine)
    before = scrape(engine)
    with Client(engine.url, max_retries=0) as client:
        for i in range(TRAFFIC):
            assert client.embed(f"metrics check {i}").shape == (1, 64)
    # nothing is in flight (the lane runs one test at a time), so this aborts nothing, but
    # SGLang counts it (TokenizerManager.abort_request -> observe_one_aborted_request)
    r = httpx.post(engine.url + "/abort_request", json={"abort_all": True}, timeout=30, trust_env=False)
    assert r.status_code == 200, r.text
    return Traffic(before, scrape(engine), top_before, top_once(engine))


# -- the checks -------------------------------------------------------------------------------


def _unknown(used: dict[str, set[str]], real: RealMetrics, smg: RealMetrics | None = None) -> dict[str, list[str]]:
    bad: dict[str, list[str]] = {}
    for where, names in used.items():
        for n in sorted(names):
            scrape_ = smg if n.startswith("smg_") and smg is not None else real
            if scrape_.missing(n) and n not in PROMETHEUS_SYNTHETIC and n not in metrics.NOT_FROM_SGLANG:
                bad.setdefault(n, []).append(where)
    return bad


@pytest.fixture(scope="module")
def smg_scrape(engine: Engine, traffic: Traffic) -> Iterator[RealMetrics]:
    """The `/metrics` of the real smg 1.13 after TRAFFIC embeddings through it to the engine."""
    import httpx

    assert SMG.exists(), f"smg is not installed at {SMG} (qembed's `gateway` extra)"
    port, mport = free_port(), free_port()
    proc = subprocess.Popen([str(SMG), "launch", "--worker-urls", engine.url, "--policy", "round_robin",
                             "--host", "127.0.0.1", "--port", str(port), "--prometheus-port", str(mport),
                             "--prometheus-host", "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        models = httpx.get(engine.url + "/v1/models", timeout=30, trust_env=False).json()
        url, body = f"http://127.0.0.1:{port}", {"model": models["data"][0]["id"], "input": ["metrics check"]}
        deadline = time.monotonic() + 60
        sent = 0
        while sent < TRAFFIC:  # smg answers 404 until it has registered the worker
            assert proc.poll() is None, "smg exited"
            assert time.monotonic() < deadline, "smg did not route an embedding in 60 s"
            try:
                ok = httpx.post(f"{url}/v1/embeddings", json=body, timeout=30, trust_env=False).status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                sent += 1
            else:
                time.sleep(0.2)  # polling a readiness condition, not synchronising on time
        r = httpx.get(f"http://127.0.0.1:{mport}/metrics", timeout=30, trust_env=False)
        assert r.status_code == 200, r.status_code
        types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", r.text, flags=re.M))
        yield RealMetrics(r.text, metrics.parse_text(r.text), types)
    finally:
        terminate(proc)


@pytest.fixture(scope="module")
def generated(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """Names in the PromQL of `qembed deploy alerts`, `grafana` and `k8s --autoscale`."""
    return {**alert_names(engine), **grafana_names(engine), **keda_names(engine, tmp_path_factory.mktemp("k8s"))}


def test_the_generated_artefacts_name_only_real_metrics(generated: dict[str, set[str]], traffic: Traffic,
                                                         smg_scrape: RealMetrics) -> None:
    bad = _unknown(generated, traffic.after, smg_scrape)
    assert not bad, f"names real SGLang 0.5.23 / smg 1.13 do not export (not allow-listed): {bad}"
    # the extraction found what each generator is known to query
    every = set().union(*generated.values())
    assert {"sglang:num_queue_reqs", "sglang:num_running_reqs", "sglang:e2e_request_latency_seconds_bucket",
            "sglang:startup_time_seconds", "sglang:http_responses_total", "up", metrics.DCGM["fb_used"],
            metrics.KUBE["restarts_total"], metrics.GATEWAY["worker_health"],
            metrics.GATEWAY["http_duration"] + "_bucket"} <= every, sorted(every)


def test_the_gateway_names_are_real(smg_scrape: RealMetrics) -> None:
    # every smg name in the table, and the labels the alerts and the dashboard filter on
    missing = [n for n in metrics.GATEWAY.values() if smg_scrape.missing(n)]
    assert not missing, missing
    rows = [s for s in smg_scrape.samples if s.name == metrics.GATEWAY["http_responses_total"]]
    assert any(s.label("path") == metrics.GATEWAY_EMBEDDINGS_PATH and s.label("status_code") == "200"
               for s in rows), rows
    assert any(s.label("worker") for s in smg_scrape.samples if s.name == metrics.GATEWAY["worker_health"])


def test_qembed_top_and_the_name_table_use_real_metrics(traffic: Traffic) -> None:
    bad = _unknown({**top_names(), **table_names()}, traffic.after)
    assert not bad, f"names real SGLang 0.5.23 does not export (not allow-listed): {bad}"


def test_the_docs_name_only_real_metrics(traffic: Traffic) -> None:
    bad = _unknown(doc_names(), traffic.after)
    assert not bad, f"docs/deploy.md names metrics real SGLang 0.5.23 does not export: {bad}"


def test_the_allow_list_is_needed_and_documented(traffic: Traffic) -> None:
    # an entry the CPU engine exports after all does not need the allow-list: drop it
    allowed = set(metrics.NOT_FROM_SGLANG)
    assert not (allowed & traffic.after.names), allowed & traffic.after.names
    # docs/deploy.md shows the same list, with the same reasons
    docs = (REPO / "docs" / "deploy.md").read_text()
    section = docs.split("### Metric names", 1)[1].split("\n#", 1)[0]
    table = dict(re.findall(r"^\| `([^`]+)` \| (.+?) \|$", section, flags=re.M))
    assert table == metrics.NOT_FROM_SGLANG
    assert all(why.strip() for why in metrics.NOT_FROM_SGLANG.values())


def test_real_sglang_uses_the_first_prefix(traffic: Traffic) -> None:
    sglang = {n for n in traffic.after.names if n.startswith("sglang")}
    assert sglang and all(n.startswith(metrics.SGLANG_PREFIXES[0]) for n in sglang), sorted(sglang)[:5]


def test_the_traffic_moved_the_counters(traffic: Traffic) -> None:
    def total(real: RealMetrics, key: str) -> float:
        v = metrics.Scrape(real.samples).total(metrics.sglang_names(key))
        assert v is not None, key
        return v

    assert total(traffic.after, "requests_total") - total(traffic.before, "requests_total") >= TRAFFIC
    assert total(traffic.after, "prompt_tokens_total") - total(traffic.before, "prompt_tokens_total") >= TRAFFIC
    ok = metrics.Scrape(traffic.after.samples).status_total(metrics.sglang_names("http_responses_total"),
                                                            status_prefix="2", where={"endpoint": "/v1/embeddings"})
    assert ok is not None and ok >= TRAFFIC


def test_qembed_top_shows_the_requests_sent(traffic: Traffic) -> None:
    before, after = traffic.top_before, traffic.top_after
    assert after["requests_total"] - before["requests_total"] >= TRAFFIC, (before, after)
    # every worker number qembed top shows is read from a name the real engine exports
    for key in ("queue", "running", "kv_usage", "requests_per_s", "tokens_per_s", "errors_per_s"):
        assert after[key] is not None, (key, after)


def test_qembed_top_percentiles_from_real_buckets(engine: Engine) -> None:
    from qembed import Client
    from qembed.fleet.top import Watcher

    w = Watcher([engine.url], gpus=False)
    (first,) = w.refresh()
    assert first.ok, first.error
    with Client(engine.url, max_retries=0) as client:
        for i in range(TRAFFIC):
            client.embed(f"latency check {i}")
    (st,) = w.refresh()
    assert st.ok, st.error
    assert st.requests_per_s is not None and st.requests_per_s > 0, st
    assert st.p50_s is not None and st.p99_s is not None and 0 < st.p50_s <= st.p99_s, st


def test_promtool_parses_the_real_exposition(generated: dict[str, set[str]], traffic: Traffic) -> None:
    from tests.helpers.promtool import promtool  # never a skip: scripts/test.sh installs it

    proc = subprocess.run([promtool(), "check", "metrics"], input=traffic.after.text, capture_output=True,
                          text=True, timeout=60)
    # exit 1 is a parse error; 3 is lint only (SGLang's own names break several lint rules, e.g.
    # every `sglang:` name has a ':', which Prometheus keeps for recording rules)
    assert proc.returncode in (0, 3) and "error while linting" not in proc.stderr, proc.stderr[-2000:]
    # the names qembed uses break no rule but the ':' of SGLang's prefix (counters end in
    # _total, histograms are histograms, no unit abbreviations)
    used = set().union(*generated.values(), *top_names().values(), *table_names().values())
    families = {n[: -len(sfx)] if n.endswith(sfx) else n for n in used for sfx in _HISTOGRAM_SUFFIXES}
    lint = [line for line in (proc.stdout + proc.stderr).splitlines()
            if line.split(" ", 1)[0] in used | families and not line.endswith("should not contain ':'")]
    assert not lint, lint
