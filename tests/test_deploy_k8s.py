"""`qembed deploy k8s`: every generated manifest is validated offline and checked field by field.

* Kubernetes objects: `kubernetes-validate` 1.37 (offline schemas, strict: unknown fields fail).
* KEDA ScaledObject, Prometheus Operator PodMonitor/ServiceMonitor: the CRD schemas vendored in
  tests/deploy_schemas (sources in its README), with `jsonschema`, closed against unknown fields
  as the API server's strict validation is.
* The gateway's flags: checked against the real `smg launch --help`.
* The KEDA PromQL: checked by `promtool check rules` (a rule file holding the query).
* The worker's SGLang flags: the real SGLang parser (conformance).
"""

from __future__ import annotations

import copy
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from qembed.errors import ConfigError
from qembed.fleet.deploy import k8s, k8s_objects
from qembed.serving.profiles.resolve import load_profile
from qembed.serving.sglang_args import check_many, keyed_entry_args
from tests.helpers.promtool import promtool

REPO = Path(__file__).resolve().parent.parent
SCHEMAS = REPO / "tests" / "deploy_schemas"
KEDA_CRD = SCHEMAS / "keda.sh_scaledobjects.yaml"
#: prometheus-operator v0.93.0, example/prometheus-operator-crd/ (tests/deploy_schemas/README.md)
OPERATOR_CRDS = {"PodMonitor": SCHEMAS / "monitoring.coreos.com_podmonitors.yaml",
                 "ServiceMonitor": SCHEMAS / "monitoring.coreos.com_servicemonitors.yaml"}
PROM = "http://prometheus-operated.monitoring.svc:9090"
K8S_VERSION = "1.37.0"
SMG = Path(sys.executable).parent / "smg"


def _closed(schema: Any) -> Any:
    """Mark every object schema with `properties` as closed (no unknown fields)."""
    if isinstance(schema, dict):
        out = {k: _closed(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


def crd_validator(path: Path, kind: str, version_name: str) -> jsonschema.protocols.Validator:
    crd = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert crd["spec"]["names"]["kind"] == kind
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == version_name]
    schema = _closed(version["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta is checked by Kubernetes, not the CRD
    return jsonschema.Draft7Validator(schema)


def keda_validator() -> jsonschema.protocols.Validator:
    return crd_validator(KEDA_CRD, "ScaledObject", "v1alpha1")


def validate_all(docs: list[dict[str, Any]]) -> None:
    kv = keda_validator()
    for doc in docs:
        if doc["apiVersion"].startswith("keda.sh/"):
            kv.validate(doc)
        elif doc["apiVersion"] == "monitoring.coreos.com/v1":
            crd_validator(OPERATOR_CRDS[doc["kind"]], doc["kind"], "v1").validate(doc)
        else:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def build(profile: str = "h100", **kw: Any) -> k8s.K8sResult:
    if "autoscale" in kw:
        kw.setdefault("prometheus_url", PROM)
    return k8s.manifests(load_profile(profile), **kw)


# -- the validators can fail --------------------------------------------------------------


def test_strict_kubernetes_validation_rejects_an_unknown_field() -> None:
    (dep, *_rest) = build().files["worker.yaml"]
    bad = copy.deepcopy(dep)
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["timeoutSecond"] = 20
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_keda_schema_rejects_unknown_and_missing_fields() -> None:
    (so,) = build(autoscale=(1, 3)).files["autoscale.yaml"]
    v = keda_validator()
    v.validate(so)
    bad = copy.deepcopy(so)
    bad["spec"]["triggers"][0]["threshhold"] = "3"
    with pytest.raises(jsonschema.ValidationError):
        v.validate(bad)
    missing = copy.deepcopy(so)
    del missing["spec"]["scaleTargetRef"]
    with pytest.raises(jsonschema.ValidationError):
        v.validate(missing)


# -- every combination validates ------------------------------------------------------------


@pytest.mark.parametrize("profile", ["generic", "t4", "l4", "a10", "a100-40g", "a100-80g", "h100", "rtx4090"])
@pytest.mark.parametrize("extra", [{}, {"gateway": True, "autoscale": (1, 4), "replicas": 2},
                                   {"api_key_secret": None, "hf_cache_pvc": "hf-cache", "namespace": "ml"},
                                   {"gateway": True, "network_policy": True, "monitor": "podmonitor",
                                    "image_pull_secret": "regcred", "node_selector": {"pool": "gpu"},
                                    "tolerations": [{"key": "sku", "operator": "Equal", "value": "gpu",
                                                     "effect": "NoSchedule"}]},
                                   {"network_policy": True, "monitor": "servicemonitor", "gateway": True,
                                    "monitor_labels": {"release": "kps"}}])
def test_every_manifest_validates(profile: str, extra: dict[str, Any]) -> None:
    result = build(profile, **extra)
    validate_all(result.documents())
    # and survives a YAML round trip unchanged (what kubectl reads is what was built)
    for name, docs in result.files.items():
        assert list(yaml.safe_load_all(k8s.render_yaml(docs))) == docs, name
        assert "&id" not in k8s.render_yaml(docs)  # no YAML anchors in a manifest


# -- the worker, field by field ---------------------------------------------------------------


def worker(result: k8s.K8sResult) -> tuple[dict[str, Any], dict[str, Any]]:
    (dep,) = by_kind(result.files["worker.yaml"], "Deployment")
    return dep, dep["spec"]["template"]["spec"]["containers"][0]


def test_worker_runs_the_serve_argv_in_the_official_image() -> None:
    _, c = worker(build("h100"))
    assert c["image"] == "lmsysorg/sglang:v0.5.23"
    cmd = c["command"]
    # the keyed entry (issue 20): the key is read in memory from QEMBED_API_KEY, never `$(VAR)` in
    # the args (the kubelet would expand it into the argv, and SGLang would log it)
    assert cmd[:2] == ["python3", "-c"] and cmd[2] == keyed_entry_args("QEMBED_API_KEY")[1]
    assert cmd[3:6] == ["serve", "--model-type", "llm"]
    flags = cmd[6:]
    assert "--api-key" not in flags and not any("QEMBED_API_KEY" in f for f in flags)
    for pair in (["--model-path", "Qwen/Qwen3-Embedding-4B"], ["--host", "0.0.0.0"], ["--port", "30000"],
                 ["--mem-fraction-static", "0.82"], ["--chunked-prefill-size", "8192"]):
        i = flags.index(pair[0])
        assert flags[i:i + 2] == pair
    assert "--is-embedding" in flags and "--enable-metrics" in flags
    assert c["ports"] == [{"name": "http", "containerPort": 30000, "protocol": "TCP"}]


def test_api_key_is_a_secret_reference_never_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QEMBED_API_KEY", "sk-live-very-secret")
    monkeypatch.setenv("HF_TOKEN", "hf_very_secret")
    result = build("h100", gateway=True)
    text = "".join(k8s.render_yaml(d) for d in result.files.values())
    assert "sk-live-very-secret" not in text and "hf_very_secret" not in text
    _, c = worker(result)
    env = {e["name"]: e for e in c["env"]}
    assert env["QEMBED_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "qembed-api-key", "key": "api-key"}
    assert "value" not in env["QEMBED_API_KEY"]
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    # no key: no flag, no reference
    _, c2 = worker(build("h100", api_key_secret=None))
    assert "--api-key" not in c2["command"] and "QEMBED_API_KEY" not in {e["name"] for e in c2["env"]}
    assert c2["command"][2] == "from sglang.cli.main import main; main()"


def test_gpu_limits_shm_and_memory_sizing() -> None:
    dep, c = worker(build("h100"))
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    # 4B bf16: ~7.5 GiB of weights + 6 GiB process overhead -> 14 GiB; + 4 GiB /dev/shm in the limit
    assert c["resources"]["requests"]["memory"] == "14Gi"
    assert c["resources"]["limits"]["memory"] == "18Gi"
    vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert vols["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "4Gi"}
    assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]
    # the 8B model, two data-parallel replicas: more GPUs and memory
    p8 = load_profile("h100", overrides={"model": "Qwen/Qwen3-Embedding-8B", "dp_size": 2})
    r8 = k8s.manifests(p8)
    _, c8 = worker(r8)
    assert c8["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert int(c8["resources"]["requests"]["memory"].removesuffix("Gi")) > 2 * 14


def test_probes_cover_the_load_and_tolerate_a_slow_health() -> None:
    _, c = worker(build("h100"))
    # issue 20: traffic is gated on SGLang's cheap, key-exempt /ready; /health (a real 1-token
    # forward that takes >= 1 s and may wait 20 s) only decides liveness
    for probe in ("startupProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/ready", "port": "http"}
        assert c[probe]["timeoutSeconds"] >= 5
    assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert c["livenessProbe"]["timeoutSeconds"] >= 20
    s = c["startupProbe"]
    assert s["periodSeconds"] * s["failureThreshold"] == 1800  # the profile's ready_timeout
    short = k8s.manifests(load_profile("h100", overrides={"ready_timeout": 120}))
    _, cs = worker(short)
    assert cs["startupProbe"]["periodSeconds"] * cs["startupProbe"]["failureThreshold"] >= 600


@pytest.mark.parametrize("shutdown", [30.0, 120.0, 7.5])
def test_shutdown_and_rollout_budgets(shutdown: float) -> None:
    """Issue 20: no preStop; grace = the drain alone; progressDeadlineSeconds left at 600 s."""
    from qembed.fleet.deploy import PRESTOP_S

    prof = load_profile("h100", overrides={"shutdown_timeout": shutdown})
    result = k8s.manifests(prof, gateway=True)
    dep, c = worker(result)
    pod = dep["spec"]["template"]["spec"]
    assert c["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(PRESTOP_S)]
    assert pod["terminationGracePeriodSeconds"] >= PRESTOP_S + math.ceil(shutdown) + 5  # + a margin
    startup = c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"]
    assert dep["spec"]["progressDeadlineSeconds"] >= startup >= 1800
    docs = result.files["gateway.yaml"]
    (gw,) = by_kind(docs, "Deployment")
    gpod = gw["spec"]["template"]["spec"]
    assert gw["spec"]["replicas"] >= 2
    (pdb,) = by_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] >= 1 and pdb["spec"]["selector"] == gw["spec"]["selector"]
    assert pdb["spec"]["minAvailable"] < gw["spec"]["replicas"]  # a drain can still move one
    args = gpod["containers"][0]["args"]
    drain = int(args[args.index("--shutdown-grace-period-secs") + 1])
    assert drain == math.ceil(shutdown)
    assert gpod["terminationGracePeriodSeconds"] >= PRESTOP_S + drain + 5
    assert gpod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(PRESTOP_S)]
    validate_all(result.documents())


def test_smg_image_tag_has_no_v_and_takes_a_digest() -> None:
    """Issue 20: `lightseekorg/smg:v1.13.0` does not exist: smg's release workflow
    (.github/workflows/release-docker.yml) tags the pyproject version and its chart defaults the
    tag to Chart.appVersion, both without `v`."""
    (gw,) = by_kind(build("h100", gateway=True).files["gateway.yaml"], "Deployment")
    image = gw["spec"]["template"]["spec"]["containers"][0]["image"]
    assert re.fullmatch(r"lightseekorg/smg:\d+\.\d+\.\d+", image), image
    assert image == f"lightseekorg/smg:{k8s_objects.PINNED_SMG}"  # pinned, never the smg installed here
    digest = "sha256:" + "ab" * 32
    (gw,) = by_kind(build("h100", gateway=True, gateway_digest=digest).files["gateway.yaml"], "Deployment")
    assert gw["spec"]["template"]["spec"]["containers"][0]["image"] == f"{image}@{digest}"
    for bad in ("ab" * 32, "sha256:XYZ", "sha256:" + "ab" * 31):
        with pytest.raises(ConfigError, match="digest"):
            build("h100", gateway=True, gateway_digest=bad)


def test_ready_is_served_and_key_exempt_in_the_installed_sglang(sglang_python: Path) -> None:
    """The probe path is a fact of SGLang 0.5.23, read from the installed package: the route
    exists, and SGLang's own auth decision lets it through without a key when one is set."""
    code = (
        "from sglang.srt.utils.auth import AuthLevel, decide_request_auth as d\n"
        "import sglang.srt.entrypoints.http_server as h\n"
        "paths = {getattr(r, 'path', None) for r in h.app.routes}\n"
        "print('/ready' in paths, '/health' in paths)\n"
        "for p in ('/ready', '/health', '/v1/embeddings'):\n"
        "    print(p, d(method='GET', path=p, authorization_header=None, api_key='k', admin_api_key=None,"
        " auth_level=AuthLevel.NORMAL).allowed)\n")
    r = subprocess.run([str(sglang_python), "-c", code], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.strip().splitlines()[-4:]
    assert lines == ["True True", "/ready True", "/health True", "/v1/embeddings False"]


def test_labels_pdb_service_and_metrics_annotations() -> None:
    result = build("h100", name="emb", namespace="ml")
    dep, _ = worker(result)
    (svc,) = by_kind(result.files["worker.yaml"], "Service")
    (pdb,) = by_kind(result.files["worker.yaml"], "PodDisruptionBudget")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert pod_labels == dep["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]
    assert pdb["spec"]["selector"]["matchLabels"] == pod_labels and pdb["spec"]["maxUnavailable"] == 1
    assert pod_labels["app.kubernetes.io/instance"] == "emb"
    assert all(d["metadata"]["namespace"] == "ml" for d in result.documents())
    ann = dep["spec"]["template"]["metadata"]["annotations"]
    assert ann == {"prometheus.io/scrape": "true", "prometheus.io/port": "30000", "prometheus.io/path": "/metrics"}
    off = k8s.manifests(load_profile("h100", overrides={"metrics": False}))
    dep_off, c_off = worker(off)
    assert "annotations" not in dep_off["spec"]["template"]["metadata"]
    assert "--enable-metrics" not in c_off["command"]
    assert any("metrics" in n for n in off.notes)


def test_gateway_discovers_workers_by_their_labels_with_real_smg_flags() -> None:
    result = build("h100", name="emb", namespace="ml", gateway=True)
    docs = result.files["gateway.yaml"]
    (gw,) = by_kind(docs, "Deployment")
    c = gw["spec"]["template"]["spec"]["containers"][0]
    args = c["args"]
    dep, _ = worker(result)
    worker_labels = dep["spec"]["template"]["metadata"]["labels"]
    sel_at = args.index("--selector")
    selectors = []
    for a in args[sel_at + 1:]:
        if a.startswith("--"):
            break
        selectors.append(a)
    assert dict(s.split("=", 1) for s in selectors) == worker_labels
    assert args[args.index("--service-discovery-port") + 1] == "30000"
    assert args[args.index("--service-discovery-namespace") + 1] == "ml"
    assert "--service-discovery" in args
    (role,) = by_kind(docs, "Role")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    (rb,) = by_kind(docs, "RoleBinding")
    assert rb["subjects"][0]["name"] == gw["spec"]["template"]["spec"]["serviceAccountName"]
    # every flag exists in the real smg CLI
    assert SMG.exists(), f"smg is not installed at {SMG}"
    help_text = subprocess.run([str(SMG), "launch", "--help"], capture_output=True, text=True, timeout=60).stdout
    for flag in [a for a in args if a.startswith("--")]:
        assert f"{flag} " in help_text or f"{flag}\n" in help_text or f"[{flag}]" in help_text, flag


def test_k8s_gateway_control_plane_has_its_own_secret() -> None:
    """Issue 20: the k8s gateway passed only `--api-key`, so every client key could `POST /workers`
    (proven against the real smg in tests/test_gateway.py::test_a_client_key_cannot_register_a_worker,
    which uses the same `--control-plane-api-keys` entry)."""
    from smg.launch_router import parse_router_args

    from qembed.serving.gateway import ADMIN_KEY_ID

    (gw,) = by_kind(build("h100", gateway=True).files["gateway.yaml"], "Deployment")
    c = gw["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"]}
    assert env["QEMBED_GATEWAY_ADMIN_KEY"] == {"name": "qembed-gateway-admin-key", "key": "admin-key"}
    assert env["QEMBED_API_KEY"]["name"] != env["QEMBED_GATEWAY_ADMIN_KEY"]["name"]
    # what the kubelet hands smg, checked by smg 1.13's own parser
    args = [a.replace("$(QEMBED_GATEWAY_ADMIN_KEY)", "ADMIN").replace("$(QEMBED_API_KEY)", "CLIENT") for a in c["args"]]
    parsed = parse_router_args(args)
    assert parsed.control_plane_api_keys == [(ADMIN_KEY_ID, "qembed admin", "ADMIN", "admin")]  # id, name, key, role
    assert parsed.api_key == "CLIENT"
    # without a client key the control plane is still closed
    (gw2,) = by_kind(build("h100", gateway=True, api_key_secret=None).files["gateway.yaml"], "Deployment")
    assert "--control-plane-api-keys" in gw2["spec"]["template"]["spec"]["containers"][0]["args"]


def test_keda_scales_on_this_deployments_queue_per_replica(tmp_path: Path) -> None:
    """Issue 20: the query was unscoped (staging's load scaled prod), mixed queued and running
    requests, and `or vector(0)` made "no data" read as idle so KEDA never fell back."""
    from qembed.client.flow import DEFAULT_BATCH_SIZE
    from qembed.metrics import scope

    result = build("h100", name="emb", namespace="prod", autoscale=(2, 6), scale_down_window_s=900)
    (so,) = result.files["autoscale.yaml"]
    spec = so["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "emb"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 6)
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 900
    (trig,) = spec["triggers"]
    # AverageValue: the HPA divides the query's value by the current replicas, so the query is a
    # sum over the deployment and the threshold is "texts waiting per replica" (2 client batches)
    assert trig["type"] == "prometheus" and trig["metricType"] == "AverageValue"
    assert trig["metadata"]["threshold"] == str(2 * DEFAULT_BATCH_SIZE) == "256"
    query = trig["metadata"]["query"]
    assert query == k8s_objects.load_query(load_profile("h100"), namespace="prod", name="emb")
    assert query.startswith("sum(") and "avg(" not in query
    assert 'sglang[:_]num_queue_reqs' in query and "running_reqs" not in query
    assert 'model_name="Qwen/Qwen3-Embedding-4B"' in query and scope("prod", "emb") in query
    assert 'namespace="prod"' in query and 'pod=~"emb-[a-z0-9]+-[a-z0-9]+"' in query
    assert "vector(0)" not in query and " or " not in query
    # no data is an error (KEDA's prometheus scaler returns 0 for an empty result unless told),
    # and after 3 failed polls KEDA falls back to MAX replicas
    assert trig["metadata"]["ignoreNullValues"] == "false"
    assert spec["fallback"] == {"failureThreshold": 3, "replicas": 6}
    keda_validator().validate(so)
    # the Deployment has no replicas: KEDA owns the count, and `kubectl apply` must not reset it
    dep, _ = worker(result)
    assert "replicas" not in dep["spec"]
    assert any("KEDA owns the count" in n for n in result.notes)
    assert worker(build("h100", replicas=3))[0]["spec"]["replicas"] == 3
    assert worker(build("h100"))[0]["spec"]["replicas"] == 1
    # the query is valid PromQL
    rules = tmp_path / "q.yaml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "q", "rules": [{"record": "qembed:load", "expr": query}]}]}))
    proc = subprocess.run([promtool(), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_keda_fallback_field_names_are_the_crds() -> None:
    """The fallback block is checked against KEDA's own schema: a misspelt field fails."""
    (so,) = build(autoscale=(1, 3)).files["autoscale.yaml"]
    bad = copy.deepcopy(so)
    bad["spec"]["fallback"]["failureTreshold"] = bad["spec"]["fallback"].pop("failureThreshold")
    with pytest.raises(jsonschema.ValidationError):
        keda_validator().validate(bad)


def test_prometheus_url_is_required_with_autoscale() -> None:
    """Issue 20: the default `prometheus-server.monitoring.svc:9090` was wrong (that chart's Service
    listens on 80); no default is right for every stack, so the address is required."""
    prof = load_profile("h100")
    for url in (None, "", "prometheus:9090"):
        with pytest.raises(ConfigError) as err:
            k8s.manifests(prof, autoscale=(1, 2), prometheus_url=url)
        hint = err.value.hint or ""
        assert "http://prometheus-operated.<namespace>.svc:9090" in hint
        assert "http://prometheus-server.<namespace>.svc" in hint and "80" in hint
    assert not hasattr(k8s, "DEFAULT_PROMETHEUS")
    k8s.manifests(prof, prometheus_url=None)  # not needed without --autoscale


@pytest.mark.parametrize(("text", "ok"), [("1:4", (1, 4)), ("2:2", (2, 2)), ("0:3", None), ("3:1", None),
                                          ("4", None), ("a:b", None), ("1:2:3", None)])
def test_parse_autoscale(text: str, ok: tuple[int, int] | None) -> None:
    if ok is None:
        with pytest.raises(ConfigError):
            k8s.parse_autoscale(text)
    else:
        assert k8s.parse_autoscale(text) == ok


@pytest.mark.parametrize("name", ["Qembed", "a_b", "-x", "x" * 56])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError):
        build(name=name)


@pytest.mark.conformance
def test_worker_flags_pass_the_real_sglang_parser() -> None:
    from tests.helpers.sglang import parser_python

    flag_lists = []
    for profile, kw in (("generic", {}), ("t4", {}), ("l4", {}), ("h100", {}),
                        ("xeon", {"image": "reg.example/sglang-cpu:0.5.23"})):
        _, c = worker(build(profile, **kw))
        # the keyed entry appends `--api-key KEY` in memory
        flag_lists.append([*c["command"][6:], "--api-key", "dummy-key"])
    results = check_many(flag_lists, python=parser_python())
    assert [r.message for r in results if not r.ok] == []


def test_cli_stdout_is_one_multi_document_stream_and_output_refuses_overwrite(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "qembed", "deploy", "k8s", "-p", "l4", "--gateway", "--prometheus-url", PROM,
            "--autoscale", "1:2", "--namespace", "ml"]
    proc = subprocess.run(base, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    docs = list(yaml.safe_load_all(proc.stdout))
    assert [d["kind"] for d in docs] == ["Deployment", "Service", "PodDisruptionBudget", "ServiceAccount", "Role",
                                         "RoleBinding", "Deployment", "Service", "PodDisruptionBudget",
                                         "ScaledObject"]
    validate_all(docs)
    assert "kubectl -n ml create secret generic qembed-api-key" in proc.stderr
    assert "kubectl -n ml create secret generic qembed-gateway-admin-key" in proc.stderr
    out = subprocess.run([*base, "-o", str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["autoscale.yaml", "gateway.yaml", "worker.yaml"]
    again = subprocess.run([*base, "-o", str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert again.returncode == 2 and "already exists" in again.stderr
    bad = subprocess.run([*base[:-4], "--autoscale", "0:2"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert bad.returncode == 2 and "error: `--autoscale` MIN must be at least 1" in bad.stderr


# -- scheduling on real GPU clusters (issue 20) -----------------------------------------------


def _pod(result: k8s.K8sResult) -> dict[str, Any]:
    dep, _ = worker(result)
    pod: dict[str, Any] = dep["spec"]["template"]["spec"]
    return pod


def _products(pod: dict[str, Any]) -> list[str]:
    (term,) = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    (expr,) = term["matchExpressions"]
    assert expr["key"] == "nvidia.com/gpu.product" and expr["operator"] == "In"
    values: list[str] = expr["values"]
    return values


@pytest.mark.parametrize(("profile", "products"), [
    ("l4", ["NVIDIA-L4"]), ("a10", ["NVIDIA-A10", "NVIDIA-A10G"]), ("t4", ["Tesla-T4"]),
    ("a100-40g", ["NVIDIA-A100-SXM4-40GB", "NVIDIA-A100-PCIE-40GB"]),
    ("a100-80g", ["NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-80GB-PCIe"]),
    ("h100", ["NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-PCIe", "NVIDIA-H100-NVL"]),
    ("rtx4090", ["NVIDIA-GeForce-RTX-4090"])])
def test_gpu_profiles_tolerate_the_gpu_taint_and_require_their_gpu_product(profile: str, products: list[str]) -> None:
    """GFD's label is the NVML name with `-` for spaces (k8s-device-plugin internal/lm/resource.go);
    the values are the names NVML reports for each card, e.g. `NVIDIA A100 80GB PCIe`."""
    pod = _pod(build(profile))
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert _products(pod) == products
    assert "nodeSelector" not in pod


@pytest.mark.parametrize("profile", ["generic"])
def test_a_profile_without_a_gpu_class_gets_no_product_affinity(profile: str) -> None:
    result = build(profile)
    pod = _pod(result)
    assert "affinity" not in pod and "nodeSelector" not in pod
    assert pod["tolerations"] == [k8s_objects.GPU_TOLERATION]
    assert any("names no GPU product" in n and "--node-selector" in n for n in result.notes)


def test_node_selector_replaces_the_product_affinity_and_tolerations_add_up() -> None:
    tol = k8s.parse_toleration("sku=gpu:NoSchedule")
    assert tol == {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}
    assert k8s.parse_toleration("dedicated") == {"key": "dedicated", "operator": "Exists"}
    sel = k8s.parse_node_selector(["nvidia.com/gpu.product=NVIDIA-L4-SHARED", "pool=embed"])
    pod = _pod(build("l4", node_selector=sel, tolerations=[tol]))
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4-SHARED", "pool": "embed"}
    assert "affinity" not in pod
    assert pod["tolerations"] == [k8s_objects.GPU_TOLERATION, tol]
    for bad in ("novalue", "=x"):
        with pytest.raises(ConfigError, match="KEY=VALUE"):
            k8s.parse_node_selector([bad])
    for bad in ("k:Sometimes", ":NoSchedule"):
        with pytest.raises(ConfigError, match="KEY"):
            k8s.parse_toleration(bad)


def test_cpu_profile_needs_an_image_and_gets_no_gpu_scheduling() -> None:
    """`device: cpu` (xeon): refused without `--image` (the official image is CUDA-only); with
    one: no GPU resource, toleration or GPU affinity, a CPU node selector, and the CPU plan's
    memory and cores as resources and its dtype/KV pool in the argv."""
    from qembed.fleet.deploy import CPU_CONTAINER_CORES, CPU_CONTAINER_MEMORY_GIB

    with pytest.raises(ConfigError, match="CUDA-only") as err:
        build("xeon")
    assert "--image" in (err.value.hint or "") and "xeon.Dockerfile" in (err.value.hint or "")
    result = build("xeon", image="reg.example/sglang-cpu:0.5.23", gateway=True, autoscale=(1, 2))
    validate_all(result.documents())
    pod = _pod(result)
    c = pod["containers"][0]
    assert c["image"] == "reg.example/sglang-cpu:0.5.23"
    assert "nvidia.com/gpu" not in c["resources"]["requests"] and "nvidia.com/gpu" not in c["resources"]["limits"]
    assert c["resources"]["requests"] == {"cpu": str(CPU_CONTAINER_CORES), "memory": f"{CPU_CONTAINER_MEMORY_GIB}Gi"}
    assert "tolerations" not in pod and "affinity" not in pod
    assert pod["nodeSelector"] == {"kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux"}
    flags = c["command"][6:]
    assert flags[flags.index("--device") + 1] == "cpu" and flags[flags.index("--dtype") + 1] == "float32"
    assert {"name": "SGLANG_USE_CPU_ENGINE", "value": "1"} in c["env"]
    # the KV pool is qembed.serving.cpu's rule applied to the container's memory, not this machine's RAM
    from qembed import models
    from qembed.serving import cpu

    shape = models.model_shape("Qwen/Qwen3-Embedding-0.6B")
    assert shape is not None
    want = cpu.kv_budget(available=CPU_CONTAINER_MEMORY_GIB * 1024**3, weights_bytes=shape.loaded_params * 4,
                         kv_bytes_per_token=shape.kv_bytes_per_token(4)).tokens
    assert int(flags[flags.index("--max-total-tokens") + 1]) == want
    # --node-selector replaces the CPU selector too
    pod2 = _pod(build("xeon", image="x/y:z", node_selector={"node.kubernetes.io/instance-type": "c7i.4xlarge"}))
    assert pod2["nodeSelector"] == {"node.kubernetes.io/instance-type": "c7i.4xlarge"}


def test_image_is_pinned_and_overridable_with_a_pull_secret() -> None:
    """Issue 20: the tag came from the SGLang installed where `deploy` ran; it is the pinned release
    (`manifests` takes no installed version at all), `--image` overrides it."""
    import inspect

    from qembed.fleet.deploy import PINNED_SGLANG

    assert "sglang_version" not in inspect.signature(k8s.manifests).parameters
    _, c = worker(build("h100"))
    assert c["image"] == f"lmsysorg/sglang:v{PINNED_SGLANG}"
    result = build("h100", image="registry.example.com/ml/sglang:v0.5.23", image_pull_secret="regcred", gateway=True)
    _, c2 = worker(result)
    assert c2["image"] == "registry.example.com/ml/sglang:v0.5.23"
    for dep in by_kind(result.documents(), "Deployment"):
        assert dep["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert "imagePullSecrets" not in _pod(build("h100"))


def test_cli_refuses_auto_and_names_profiles_list() -> None:
    env = {k: v for k, v in __import__("os").environ.items() if k != "QEMBED_PROFILE"}
    for extra in (["-p", "auto"], []):
        proc = subprocess.run([sys.executable, "-m", "qembed", "deploy", "k8s", *extra], capture_output=True,
                              text=True, timeout=120, cwd=REPO, env=env)
        assert proc.returncode == 2 and proc.stdout == "", proc.stderr
        assert "error: `qembed deploy` needs the profile of the nodes" in proc.stderr
        assert "hint: " in proc.stderr and "qembed profiles list" in proc.stderr
    nourl = subprocess.run([sys.executable, "-m", "qembed", "deploy", "k8s", "-p", "l4", "--autoscale", "1:2"],
                           capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert nourl.returncode == 2 and "error: `--autoscale` needs `--prometheus-url`" in nourl.stderr
    assert "prometheus-operated" in nourl.stderr
    old = subprocess.run([sys.executable, "-m", "qembed", "deploy", "k8s", "-p", "l4", "--autoscale", "1:2",
                          "--prometheus-url", PROM, "--target-load", "64"], capture_output=True, text=True,
                         timeout=120, cwd=REPO, env=env)
    assert old.returncode == 0, old.stderr
    assert "`--target-load` is deprecated" in old.stderr
    (so,) = [d for d in yaml.safe_load_all(old.stdout) if d["kind"] == "ScaledObject"]
    assert so["spec"]["triggers"][0]["metadata"]["threshold"] == "64"


def test_cli_target_queue_default_is_the_librarys() -> None:
    from typer.main import get_command

    from qembed.cli.deploy import deploy_app

    cmd = get_command(deploy_app).commands["k8s"]  # type: ignore[attr-defined]
    (opt,) = [p for p in cmd.params if p.name == "target_queue"]
    assert opt.default == k8s.DEFAULT_TARGET_QUEUE


def test_replicas_spread_over_nodes() -> None:
    result = build("h100", gateway=True)
    for dep in by_kind(result.documents(), "Deployment"):
        pod = dep["spec"]["template"]["spec"]
        (spread,) = pod["topologySpreadConstraints"]
        assert spread == {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                          "whenUnsatisfiable": "ScheduleAnyway",
                          "labelSelector": {"matchLabels": dep["spec"]["selector"]["matchLabels"]}}


# -- NetworkPolicy and Prometheus Operator objects (issue 20) ---------------------------------


def _ingress(result: k8s.K8sResult, component: str) -> list[dict[str, Any]]:
    (pol,) = [d for d in by_kind(result.documents(), "NetworkPolicy")
              if d["metadata"]["labels"]["app.kubernetes.io/component"] == component]
    assert pol["spec"]["policyTypes"] == ["Ingress"]
    rules: list[dict[str, Any]] = pol["spec"]["ingress"]
    return rules


def test_network_policy_admits_only_the_gateway_and_prometheus_to_the_workers() -> None:
    result = build("h100", name="emb", namespace="ml", gateway=True, network_policy=True,
                   monitoring_namespace="observability")
    validate_all(result.documents())
    (rule,) = _ingress(result, "worker")
    assert rule["ports"] == [{"protocol": "TCP", "port": "http"}]
    assert rule["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "qembed", "app.kubernetes.io/instance": "emb",
                                         "app.kubernetes.io/component": "gateway"}}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}}}]
    api, metrics = _ingress(result, "gateway")
    assert api == {"ports": [{"protocol": "TCP", "port": "http"}]}  # from anywhere
    assert metrics["ports"] == [{"protocol": "TCP", "port": "metrics"}]
    assert metrics["from"] == [{"podSelector": {}},
                               {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}}}]
    # without the gateway, the namespace's pods are the clients
    (rule2,) = _ingress(build("h100", network_policy=True), "worker")
    assert rule2["from"][0] == {"podSelector": {}}
    assert not by_kind(build("h100", gateway=True).documents(), "NetworkPolicy")  # optional


def test_network_policy_validator_can_fail() -> None:
    (pol,) = [d for d in build("h100", network_policy=True).documents() if d["kind"] == "NetworkPolicy"]
    bad = copy.deepcopy(pol)
    bad["spec"]["ingress"][0]["form"] = bad["spec"]["ingress"][0].pop("from")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


@pytest.mark.parametrize("kind", ["podmonitor", "servicemonitor"])
def test_operator_monitors_validate_and_replace_the_annotations(kind: str) -> None:
    result = build("h100", name="emb", namespace="ml", gateway=True, monitor=kind, monitor_labels={"release": "kps"})
    docs = result.documents()
    validate_all(docs)
    want = {"podmonitor": "PodMonitor", "servicemonitor": "ServiceMonitor"}[kind]
    mons = by_kind(docs, want)
    assert len(mons) == 2
    ports = {m["metadata"]["labels"]["app.kubernetes.io/component"]: m for m in mons}
    endpoints = "podMetricsEndpoints" if kind == "podmonitor" else "endpoints"
    assert ports["worker"]["spec"][endpoints] == [{"port": "http", "path": "/metrics", "interval": "15s"}]
    assert ports["gateway"]["spec"][endpoints] == [{"port": "metrics", "path": "/metrics", "interval": "15s"}]
    for m in mons:
        assert m["spec"]["namespaceSelector"] == {"matchNames": ["ml"]}
        assert m["metadata"]["labels"]["release"] == "kps"
    # each selects exactly the objects of its component
    for comp, m in ports.items():
        target_kind = "Deployment" if kind == "podmonitor" else "Service"
        (obj,) = [d for d in by_kind(docs, target_kind) if d["metadata"]["labels"]["app.kubernetes.io/component"] == comp]
        labels = obj["spec"]["template"]["metadata"]["labels"] if kind == "podmonitor" else obj["metadata"]["labels"]
        assert m["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for dep in by_kind(docs, "Deployment"):  # no double scrape through the annotations
        assert "annotations" not in dep["spec"]["template"]["metadata"]
    with pytest.raises(ConfigError, match="--monitor"):
        build("h100", monitor="prometheusrule")


def test_operator_crd_validators_can_fail() -> None:
    result = build("h100", gateway=True, monitor="podmonitor")
    (pm, *_rest) = by_kind(result.documents(), "PodMonitor")
    bad = copy.deepcopy(pm)
    bad["spec"]["podMetricsEndpoints"][0]["scrapeInterval"] = "15s"
    with pytest.raises(jsonschema.ValidationError):
        validate_all([bad])
    (sm, *_rest) = by_kind(build("h100", monitor="servicemonitor").documents(), "ServiceMonitor")
    bad2 = copy.deepcopy(sm)
    bad2["spec"]["podMetricsEndpoints"] = bad2["spec"].pop("endpoints")
    with pytest.raises(jsonschema.ValidationError):
        validate_all([bad2])


def test_gateway_service_exposes_the_metrics_port() -> None:
    (svc,) = by_kind(build("h100", gateway=True).files["gateway.yaml"], "Service")
    assert {"name": "metrics", "port": 29000, "targetPort": "metrics", "protocol": "TCP"} in svc["spec"]["ports"]
