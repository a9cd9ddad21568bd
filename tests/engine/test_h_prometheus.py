"""Item H of the real-engine lane (issue 20, "Proof with real components"): a real Prometheus 2.42
(Debian's `prometheus`, the package that ships `promtool`) scrapes two real SGLang 0.5.23 workers
and the real smg 1.13 gateway, and evaluates what qembed generates through its HTTP API: the KEDA
query of `qembed deploy k8s --autoscale`, every alert expression of `qembed deploy alerts` and every
query of `qembed deploy grafana` (its variables set to concrete values).

The targets carry the `namespace`/`pod` labels a `kubernetes_sd_configs` relabeling writes
(the community chart's `kubernetes-pods` job, the Prometheus Operator's PodMonitor):

* worker A, the session engine (`engine`): namespace `prod`, pod `qembed-5d9f7c-abcde`
* worker B, the session's second engine (`engine_no_mrl`): namespace `staging`, pod `qembed-5d9f7c-fghij`
* smg in front of A: namespace `prod`, pod `qembed-gateway-6c8d9-klmno`

Both workers serve the same model (same `model_name`), so only the namespace and pod labels tell
them apart: the case where an unscoped query lets load in `staging` scale `prod`. Load goes to
`staging` only. Series that cannot exist here (kube-state-metrics, NVIDIA DCGM) must evaluate
to nothing; their firing is covered by `promtool test rules` with synthetic input series
(tests/test_deploy_monitoring.py).
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from qembed import metrics
from qembed.fleet.deploy import alerts, grafana, k8s
from qembed.serving.profiles.resolve import load_profile
from tests.engine import prometheus
from tests.engine.prometheus import Prometheus, Target, rate_bounds
from tests.engine.real import Engine, engine_env, qembed
from tests.fake_site.harness import free_port, kill_leftovers, wait_until
from tests.helpers.promql import promql_names

#: the worker Deployment's name in both namespaces (`qembed deploy k8s --name`, its default)
NAME = "qembed"
PROD, STAGING = "prod", "staging"
#: a namespace where nothing runs: every query for it must be empty ("no data is not idle")
NOWHERE = "dev"
#: the scrape job, as the Prometheus community chart names its annotation-based pod job
JOB = "kubernetes-pods"
#: pod names as a Deployment gives them: <deployment>-<pod-template-hash>-<suffix>
PROD_POD, STAGING_POD = "qembed-5d9f7c-abcde", "qembed-5d9f7c-fghij"
GATEWAY_POD = "qembed-gateway-6c8d9-klmno"
GW_NAME = "prom-gw"
ADMIN_KEY = "engine-test-prometheus-admin"
#: what the ScaledObject names as its Prometheus (not reached here: the query is what is tested)
KEDA_PROMETHEUS = "http://prometheus-operated.monitoring.svc:9090"

#: load: concurrent clients and texts per request. About 60 tokens a text, so the 192 texts in
#: flight hold ~11k tokens, well over the 4,096 of one prefill chunk (SGLang's
#: `chunked_prefill_size` on CPU): the rest waits, and `num_queue_reqs` > 0.
CLIENTS, BATCH = 6, 32
LOAD_TIMEOUT_S = 60.0
FIGURES: dict[str, Any] = {}

#: names no target here exports (kube-state-metrics, DCGM): queries on them must be empty here
ABSENT_HERE = frozenset(metrics.NOT_FROM_SGLANG)


def sglang(key: str) -> str:
    """An SGLang name as :func:`promql_names` reads it (``sglang[:_]x`` -> ``sglang:x``)."""
    return metrics.SGLANG_PREFIXES[0] + metrics.SGLANG[key]


GATEWAY_NAMES = frozenset(metrics.GATEWAY.values())


@dataclass
class Stack:
    prom: Prometheus
    prod: Engine
    staging: Engine
    gateway_url: str
    model: str


@pytest.fixture(scope="module")
def stack(engine: Engine, engine_no_mrl: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    t0 = time.monotonic()
    tmp = tmp_path_factory.mktemp("prometheus")
    # the gateway's own state dir: a client without --url elsewhere must never find it
    env = {**engine_env(tmp / "state"), "QEMBED_GATEWAY_ADMIN_KEY": ADMIN_KEY}
    metrics_port = free_port()
    # started before Prometheus: its start-up probe (one embedding request to A) is outside every window
    out = qembed(["gateway", "--worker", engine.url, "--port", str(free_port()), "--metrics-port", str(metrics_port),
                  "--name", GW_NAME, "--detach", "--json"], env, timeout=150)
    assert out.returncode == 0, f"qembed gateway failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
    info = json.loads(out.stdout)
    gw_pid = int(info["pid"])
    FIGURES["gateway_start_s"] = round(time.monotonic() - t0, 1)
    try:
        assert info["healthy_workers"] == 1, info
        targets = [Target("prod worker", f"127.0.0.1:{engine.port}", PROD, PROD_POD),
                   Target("staging worker", f"127.0.0.1:{engine_no_mrl.port}", STAGING, STAGING_POD),
                   Target("prod gateway", f"127.0.0.1:{metrics_port}", PROD, GATEWAY_POD)]
        t1 = time.monotonic()
        with prometheus.running(targets, tmp, job=JOB) as prom:
            FIGURES["prometheus_ready_s"] = round(time.monotonic() - t1, 1)
            yield Stack(prom=prom, prod=engine, staging=engine_no_mrl, gateway_url=info["url"], model=engine.model)
    finally:
        stop = qembed(["stop", GW_NAME], env, timeout=60)
        kill_leftovers([gw_pid])
        assert stop.returncode == 0, stop.stderr
        FIGURES["module_s"] = round(time.monotonic() - t0, 1)
        print("\n[test_h_prometheus] measured: " + json.dumps(FIGURES, sort_keys=True))


# -- what qembed generates -----------------------------------------------------------------------


def keda_query(model: str, namespace: str, name: str = NAME) -> str:
    """The query of the ScaledObject `qembed deploy k8s --autoscale` writes for this deployment."""
    profile = load_profile("h100", options={"model": model})
    result = k8s.manifests(profile, name=name, namespace=namespace, autoscale=(1, 4), prometheus_url=KEDA_PROMETHEUS)
    (obj,) = [d for d in result.documents() if d["kind"] == "ScaledObject"]
    (trigger,) = [t for t in obj["spec"]["triggers"] if t["type"] == "prometheus"]
    return str(trigger["metadata"]["query"])


def alert_rules(namespace: str, **settings: Any) -> dict[str, str]:
    """alert name -> expression, for one deployment."""
    data = alerts.rules(alerts.AlertSettings(namespace=namespace, name=NAME, **settings))
    return {r["alert"]: r["expr"] for g in data["groups"] for r in g["rules"]}


def grafana_escape(value: str) -> str:
    """How Grafana writes a selected value into a Prometheus regex matcher (its Prometheus data
    source's `prometheusSpecialRegexEscape`): regex metacharacters escaped, the backslash doubled
    for the PromQL string."""
    return re.sub(r"[$^*{}\[\]'+?.()|\\]", lambda m: "\\\\" + m.group(0), value)


def dashboard_vars(dash: dict[str, Any], namespace: str, model: str, window_s: int) -> dict[str, str]:
    """A concrete value for each variable the dashboard declares, as a user picking this
    deployment would set them, plus Grafana's built-in intervals (set to the whole run)."""
    values = {"__rate_interval": f"{window_s}s", "__interval": f"{window_s}s", "__range": f"{window_s}s"}
    for var in dash["templating"]["list"]:
        n = var["name"]
        if var["type"] == "datasource":
            continue
        if n == "namespace":
            values[n] = namespace
        elif n == "model":
            values[n] = grafana_escape(model)
        elif n in ("instance", "pod") and var.get("includeAll"):
            values[n] = var.get("allValue") or ".*"  # "All": every instance of this deployment
        else:
            raise AssertionError(f"dashboard variable ${n} ({var}): the test has no value for it; teach it one")
    return values


_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def substitute(expr: str, values: dict[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        n = m.group(1) or m.group(2) or m.group(3)
        if n not in values:
            raise AssertionError(f"unknown Grafana variable ${n} in {expr!r}")
        return values[n]

    out = _VAR.sub(one, expr)
    assert "$" not in out, out
    return out


def dashboard_targets() -> list[tuple[str, str]]:
    """(panel title, expression) for every query of the dashboard."""
    dash = grafana.dashboard(name=NAME)
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]


def values(rows: list[tuple[dict[str, str], float]]) -> list[float]:
    return [v for _, v in rows]


# -- 1. the scrape labels and scope() ------------------------------------------------------------


def test_scope_selects_each_deployments_pods_and_no_other(stack: Stack) -> None:
    """metrics.scope() in the real Prometheus (RE2, fully anchored regexes): the worker regex does
    not take the gateway's pod, the gateway's does not take the workers'."""
    def instances(ns: str, deployment: str) -> set[str]:
        return {m["pod"] for m, v in stack.prom.query(f"up{{{metrics.scope(ns, deployment)}}}") if v == 1}

    assert instances(PROD, NAME) == {PROD_POD}
    assert instances(STAGING, NAME) == {STAGING_POD}
    assert instances(PROD, metrics.gateway_deployment(NAME)) == {GATEWAY_POD}
    assert instances(STAGING, metrics.gateway_deployment(NAME)) == set()
    assert instances(NOWHERE, NAME) == set()


# -- 2. KEDA, idle and absent ----------------------------------------------------------------------


def test_keda_query_is_zero_when_idle_and_empty_without_data(stack: Stack) -> None:
    """Before any load: the deployments that exist give one sample, 0; a deployment with no series
    gives no sample at all, so KEDA's `fallback` applies instead of scaling to the minimum."""
    for ns in (PROD, STAGING):
        q = keda_query(stack.model, ns)
        assert "vector(" not in q, f"`or vector(0)` turns no data into idle: {q}"
        got = stack.prom.query(q)
        assert values(got) == [0.0], f"idle {ns}: {q} -> {got}"
    for ns, name in ((NOWHERE, NAME), (PROD, "other")):
        q = keda_query(stack.model, ns, name)
        got = stack.prom.query(q)
        assert got == [], f"no series for {ns}/{name}, yet {q} -> {got}: no data reads as idle"


# -- 3. load on staging only -----------------------------------------------------------------------


@dataclass
class Traffic:
    texts: int  # texts staging answered with 200, each one SGLang request
    at: float  # a Unix time by which Prometheus has scraped every text
    window_s: int  # from before Prometheus's first scrape to `at`
    staging_keda: list[float] = field(default_factory=list)  # what the query gave while loaded
    prod_keda: list[list[float]] = field(default_factory=list)


@pytest.fixture(scope="module")
def traffic(stack: Stack) -> Traffic:
    """Embedding requests to staging from CLIENTS threads until Prometheus has seen staging's
    KEDA signal above 0; then the requests in flight finish, and Prometheus scrapes every text."""
    keda = {ns: keda_query(stack.model, ns) for ns in (PROD, STAGING)}

    def watch(ns: str) -> list[float]:
        return values(stack.prom.query(keda[ns]))

    stop = threading.Event()
    sent = [0]
    failures: list[str] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        try:
            with httpx.Client(timeout=120, trust_env=False) as http:
                i = 0
                while not stop.is_set():
                    texts = [f"staging load {k}.{i}.{j}: " + "lorem ipsum dolor sit amet " * (10 + j % 5)
                             for j in range(BATCH)]
                    r = http.post(f"{stack.staging.url}/v1/embeddings", json={"model": stack.model, "input": texts})
                    if r.status_code != 200:
                        failures.append(f"{r.status_code} {r.text[:200]}")
                        return
                    with lock:
                        sent[0] += len(r.json()["data"])
                    i += 1
        except Exception as exc:  # a request that died uncounted would spoil the exact count
            failures.append(repr(exc))

    t = Traffic(texts=0, at=0.0, window_s=0)
    t0 = time.monotonic()
    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(CLIENTS)]
    for th in threads:
        th.start()
    try:
        def loaded() -> bool:
            if failures:
                raise AssertionError(f"staging refused a request: {failures[0]}")
            t.prod_keda.append(watch(PROD))
            now = watch(STAGING)
            t.staging_keda.extend(now)
            return bool(now) and max(now) > 0

        wait_until(loaded, timeout=LOAD_TIMEOUT_S, interval=0.25,
                   what="Prometheus to see staging's load in its KEDA signal")
    finally:
        stop.set()
        for th in threads:
            th.join(timeout=120)
    assert not any(th.is_alive() for th in threads) and not failures, failures
    t.texts = sent[0]
    assert t.texts > 0
    FIGURES.update(load_s=round(time.monotonic() - t0, 1), texts=t.texts, max_staging_queue=max(t.staging_keda))

    texts = metrics.sglang_selector("requests_total", labels=metrics.scope(STAGING, NAME))

    def all_counted() -> bool:
        t.at = time.time()
        t.window_s = math.ceil(t.at - stack.prom.started_at) + 5
        got = stack.prom.samples(texts, t.window_s, t.at)
        assert len(got) == 1, got
        points = got[0][1]
        increase = points[-1][1] - points[0][1]
        assert increase <= t.texts, f"staging counted {increase} texts, {t.texts} were sent: another client?"
        return increase == t.texts

    wait_until(all_counted, timeout=30, interval=0.25, what=f"Prometheus to scrape all {sent[0]} texts of staging")
    FIGURES["traffic_s"] = round(time.monotonic() - t0, 1)
    # how close the 1 s scrapes came to their 1 s timeout on this loaded box (a failed scrape
    # would make the target's series stale: a query on them would be empty for a moment)
    w = f'{{job="{JOB}"}}[{t.window_s}s]'
    FIGURES["slowest_scrape_s"] = round(max(values(stack.prom.query(f"max_over_time(scrape_duration_seconds{w})", t.at))), 3)
    FIGURES["failed_scrapes"] = sum(values(stack.prom.query(f"count_over_time(up{w}) - sum_over_time(up{w})", t.at)))
    return t


def test_staging_load_reaches_staging_keda_query_and_not_prods(traffic: Traffic) -> None:
    assert max(traffic.staging_keda) > 0
    # every poll while staging was loaded: prod's signal was there and idle
    assert traffic.prod_keda and all(v == [0.0] for v in traffic.prod_keda), \
        f"staging's load reached prod's KEDA query: {[v for v in traffic.prod_keda if v != [0.0]][:5]}"


def test_texts_counter_and_the_dashboards_texts_per_second(stack: Stack, traffic: Traffic) -> None:
    """The texts counter rose by exactly the texts sent, in staging only; the dashboard's
    texts/s query shows that rate for staging, within the bounds of Prometheus's extrapolation
    (:func:`prometheus.rate_bounds`), and 0 for prod."""
    p, at, w = stack.prom, traffic.at, traffic.window_s
    texts = {ns: metrics.sglang_selector("requests_total", labels=metrics.scope(ns, NAME)) for ns in (PROD, STAGING)}
    (_, staging_points), = p.samples(texts[STAGING], w, at)
    assert staging_points[-1][1] - staging_points[0][1] == traffic.texts
    (_, prod_points), = p.samples(texts[PROD], w, at)
    assert prod_points[-1][1] - prod_points[0][1] == 0, "prod served texts: nothing was sent to it"
    lo, hi = rate_bounds(traffic.texts, staging_points, w)

    dash = grafana.dashboard(name=NAME)
    rate_targets = [(title, e) for title, e in dashboard_targets()
                    if promql_names(e) == {sglang("requests_total")} and "rate(" in e]
    assert rate_targets, f"no dashboard query is the rate of {sglang('requests_total')}: {dashboard_targets()}"
    for title, expr in rate_targets:
        staging = p.query(substitute(expr, dashboard_vars(dash, STAGING, stack.model, w)), at)
        assert len(staging) == 1 and lo <= staging[0][1] <= hi, \
            f"panel {title!r} for staging: {staging}, want {traffic.texts} texts / {w} s in [{lo:.4f}, {hi:.4f}]"
        prod = p.query(substitute(expr, dashboard_vars(dash, PROD, stack.model, w)), at)
        assert values(prod) == [0.0], f"panel {title!r} for prod shows staging's traffic: {prod}"


# -- 4. every dashboard query ---------------------------------------------------------------------


def test_every_dashboard_query_evaluates_and_is_scoped(stack: Stack, traffic: Traffic) -> None:
    p, at, w = stack.prom, traffic.at, traffic.window_s
    dash = grafana.dashboard(name=NAME)
    checked = 0
    for title, expr in dashboard_targets():
        names = promql_names(expr)
        got = {ns: p.query(substitute(expr, dashboard_vars(dash, ns, stack.model, w)), at)
               for ns in (PROD, STAGING, NOWHERE)}
        where = f"panel {title!r}: {expr}"
        assert got[NOWHERE] == [], f"{where}: a namespace with nothing in it shows {got[NOWHERE]}"
        if names & ABSENT_HERE:  # absent here (synthetic series in promtool test rules)
            assert got[PROD] == [] and got[STAGING] == [], f"{where}: {got}"
            continue
        if names & GATEWAY_NAMES:  # the gateway runs in prod only
            assert got[STAGING] == [], f"{where}: staging has no gateway, yet {got[STAGING]}"
        if sglang("prompt_tokens_total") in names:
            assert values(got[PROD]) == [0.0] and len(got[STAGING]) == 1 and got[STAGING][0][1] > 0, f"{where}: {got}"
        if sglang("queue_reqs") in names or sglang("running_reqs") in names:  # prod: idle all along
            assert got[PROD] and all(v == 0 for v in values(got[PROD])), f"{where}: prod is idle, yet {got[PROD]}"
        if sglang("startup_time") in names:  # set once when each worker became ready
            for ns in (PROD, STAGING):
                assert got[ns] and all(v > 0 for v in values(got[ns])), f"{where}: {ns} {got[ns]}"
        if names & {metrics.GATEWAY["worker_health"], metrics.GATEWAY["worker_pool_size"]}:
            assert values(got[PROD]) == [1.0], f"{where}: prod's gateway has one healthy worker, got {got[PROD]}"
        if sglang("e2e_latency") + "_bucket" in names:
            assert all(math.isnan(v) for v in values(got[PROD])), f"{where}: prod had no request: {got[PROD]}"
            assert got[STAGING] and all(0 < v < 60 for v in values(got[STAGING])), f"{where}: {got[STAGING]}"
        checked += 1
    assert checked >= 5, checked


def test_dashboard_variables_list_this_deployment(stack: Stack, traffic: Traffic) -> None:
    """`label_values(selector, label)` variables, through /api/v1/series as Grafana runs them."""
    dash = grafana.dashboard(name=NAME)
    found: dict[str, set[str]] = {}
    for var in dash["templating"]["list"]:
        if var["type"] != "query":
            continue
        q = var["query"] if isinstance(var["query"], str) else var["query"]["query"]
        m = re.fullmatch(r"label_values\((.*),\s*([a-zA-Z_]+)\)", q)
        assert m, f"unexpected variable query {q!r}"
        sel = substitute(m.group(1), dashboard_vars(dash, STAGING, stack.model, traffic.window_s))
        found[var["name"]] = {s[m.group(2)] for s in stack.prom.series(sel) if m.group(2) in s}
    assert found.get("model") == {stack.model}, found
    if "namespace" in found:  # the workers' namespaces; the gateway's pod is not a worker
        assert found["namespace"] == {PROD, STAGING}, found
    if "pod" in found:
        assert found["pod"] == {STAGING_POD}, found


# -- 5. every alert expression ----------------------------------------------------------------------


def test_every_alert_evaluates_and_none_fires_for_the_healthy_prod(stack: Stack, traffic: Traffic) -> None:
    p = stack.prom
    rules = alert_rules(PROD)
    absent = {a for a, e in rules.items() if promql_names(e) & ABSENT_HERE}
    for alert, expr in rules.items():
        got = p.query(expr)
        if alert in absent:
            assert got == [], f"{alert} reads series no target here exports (synthetic in promtool tests), yet {got}"
        else:
            assert got == [], f"{alert} fires for the healthy, idle prod: {expr} -> {got}"
    assert len(rules) > len(absent), rules
    # nothing deployed in `dev`: an alert must say so, none may read it as idle
    fired = {a for a, e in alert_rules(NOWHERE).items() if p.query(e)}
    assert fired, "no alert fires for a deployment with no series at all"


def test_staging_latency_fires_staging_alert_and_not_prods(stack: Stack, traffic: Traffic) -> None:
    """With an SLO no real request meets (1 ns), the p99 alert fires for the loaded staging and
    stays silent for prod, which served nothing: the rule is scoped."""
    p = stack.prom
    lat = sglang("e2e_latency") + "_bucket"

    def latency_alerts(ns: str) -> dict[str, str]:
        out = {a: e for a, e in alert_rules(ns, p99_slo_s=1e-9).items() if lat in promql_names(e)}
        assert out, f"no alert reads {lat}"
        return out

    for alert, expr in latency_alerts(STAGING).items():
        assert p.query(expr), f"{alert} with a 1 ns SLO does not fire for the loaded staging: {expr}"
    for alert, expr in latency_alerts(PROD).items():
        assert p.query(expr) == [], f"staging's latency fires prod's {alert}: {expr} -> {p.query(expr)}"

