"""`qembed deploy k8s`: every generated manifest is validated offline and checked field by field.

* Kubernetes objects: `kubernetes-validate` 1.37 (offline schemas, strict: unknown fields fail).
* KEDA ScaledObject: the CRD schema vendored in tests/deploy_schemas (source in its README),
  with `jsonschema`, closed against unknown fields as the API server's strict validation is.
* The gateway's flags: checked against the real `smg launch --help`.
* The KEDA PromQL: checked by `promtool check rules` (a rule file holding the query).
* The worker's SGLang flags: the real SGLang parser (conformance).
"""

from __future__ import annotations

import copy
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from qembed.deploy import k8s
from qembed.errors import ConfigError
from qembed.profiles import load_profile
from qembed.sglang_args import check_many, keyed_entry_args

REPO = Path(__file__).resolve().parent.parent
KEDA_CRD = REPO / "tests" / "deploy_schemas" / "keda.sh_scaledobjects.yaml"
K8S_VERSION = "1.37.0"
SMG = Path(sys.executable).parent / "smg"


def promtool() -> str:
    path = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if path is None:  # never a skip: scripts/test.sh installs it and fails loudly if it can't
        pytest.fail("promtool is not installed (Debian package `prometheus`); scripts/test.sh installs it")
    return path


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


def keda_validator() -> jsonschema.protocols.Validator:
    crd = yaml.safe_load(KEDA_CRD.read_text(encoding="utf-8"))
    assert crd["spec"]["names"]["kind"] == "ScaledObject"
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema = _closed(version["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta is checked by Kubernetes, not the CRD
    return jsonschema.Draft7Validator(schema)


def validate_all(docs: list[dict[str, Any]]) -> None:
    kv = keda_validator()
    for doc in docs:
        if doc["apiVersion"].startswith("keda.sh/"):
            kv.validate(doc)
        else:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def build(profile: str = "h100", **kw: Any) -> k8s.K8sResult:
    return k8s.manifests(load_profile(profile), sglang_version="0.5.23", **kw)


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
                                   {"api_key_secret": None, "hf_cache_pvc": "hf-cache", "namespace": "ml"}])
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
    r8 = k8s.manifests(p8, sglang_version="0.5.23")
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
    short = k8s.manifests(load_profile("h100", overrides={"ready_timeout": 120}), sglang_version="0.5.23")
    _, cs = worker(short)
    assert cs["startupProbe"]["periodSeconds"] * cs["startupProbe"]["failureThreshold"] >= 600


@pytest.mark.parametrize("shutdown", [30.0, 120.0, 7.5])
def test_shutdown_and_rollout_budgets(shutdown: float) -> None:
    """Issue 20: no preStop; grace = the drain alone; progressDeadlineSeconds left at 600 s."""
    from qembed.deploy import PRESTOP_S

    prof = load_profile("h100", overrides={"shutdown_timeout": shutdown})
    result = k8s.manifests(prof, sglang_version="0.5.23", gateway=True)
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
    off = k8s.manifests(load_profile("h100", overrides={"metrics": False}), sglang_version="0.5.23")
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

    from qembed.gateway import ADMIN_KEY_ID

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


def test_keda_scaled_object_queries_queue_and_running_with_both_prefixes(tmp_path: Path) -> None:
    result = build("h100", name="emb", autoscale=(2, 6), scale_down_window_s=900, target_load=16)
    (so,) = result.files["autoscale.yaml"]
    spec = so["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "emb"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 6)
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 900
    (trig,) = spec["triggers"]
    assert trig["type"] == "prometheus" and trig["metadata"]["threshold"] == "16"
    query = trig["metadata"]["query"]
    assert 'sglang[:_]num_queue_reqs' in query and 'sglang[:_]num_running_reqs' in query
    assert 'model_name="Qwen/Qwen3-Embedding-4B"' in query
    dep, _ = worker(result)
    assert dep["spec"]["replicas"] == 2
    # the query is valid PromQL
    rules = tmp_path / "q.yaml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "q", "rules": [{"record": "qembed:load", "expr": query}]}]}))
    proc = subprocess.run([promtool(), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


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
    from tests.test_conformance import parser_python

    flag_lists = []
    for profile in ("generic", "t4", "l4", "h100"):
        _, c = worker(build(profile))
        # the keyed entry appends `--api-key KEY` in memory
        flag_lists.append([*c["command"][6:], "--api-key", "dummy-key"])
    results = check_many(flag_lists, python=parser_python())
    assert [r.message for r in results if not r.ok] == []


def test_cli_stdout_is_one_multi_document_stream_and_output_refuses_overwrite(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "qembed", "deploy", "k8s", "-p", "l4", "--gateway", "--autoscale", "1:2", "--namespace", "ml"]
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
