"""The Kubernetes objects around the worker Deployment (:func:`qembed.fleet.deploy.k8s.manifests`
puts them together): the pod and container security settings, labels and probes, placement
(node selector, tolerations, spread), the NetworkPolicies, the Prometheus monitors, the
gateway (smg) Deployment and Service, and the KEDA ScaledObject with its load query.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from qembed.env import GATEWAY_ADMIN_KEY
from qembed.errors import ConfigError
from qembed.fleet.deploy import (
    PRESTOP_S,
    SHUTDOWN_MARGIN_S,
    ContainerSpec,
)
from qembed.metrics import scope, sglang_selector

if TYPE_CHECKING:
    from qembed.serving.profiles.model import Profile


#: /health: 1 s sleep + up to SGLANG_HEALTH_CHECK_TIMEOUT=20 s (reference 2.2), plus margin.
PROBE_TIMEOUT_S = 25


#: At least this many gateway pods, with a disruption budget that keeps one up.
GATEWAY_REPLICAS = 2


GATEWAY_PORT = 8000


GATEWAY_METRICS_PORT = 29000  # smg's --prometheus-port default


GATEWAY_IMAGE = "lightseekorg/smg"


PINNED_SMG = "1.13.0"


#: Pod security (issue 20): every pod meets the Pod Security Standard "restricted". The official
#: images run as root and have no non-root user, so a fixed unprivileged UID is set (the kubelet
#: refuses ``runAsNonRoot`` with an image that runs as root unless ``runAsUser`` is given).
RUN_AS_UID = 1000


TMP_DIR = "/tmp"


#: the gateway container's variable for its control-plane key (from the admin Secret)
ADMIN_KEY_ENV = GATEWAY_ADMIN_KEY.name


#: GPU nodes are usually tainted `nvidia.com/gpu` (GKE adds `nvidia.com/gpu=present:NoSchedule`
#: itself; the GPU Operator docs and most clusters do the same): tolerate it with any value.
GPU_TOLERATION: dict[str, str] = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


#: NVIDIA GPU Feature Discovery's label: the NVML name with spaces as `-` (k8s-device-plugin,
#: internal/lm/resource.go `productLabel`); a profile's `gpu_products` lists its values.
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"


#: `device: cpu` pods: SGLang's CPU build (docker/xeon.Dockerfile) is x86-64 only.
CPU_NODE_SELECTOR: dict[str, str] = {"kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux"}


#: Replicas go to different nodes when they can (`ScheduleAnyway`: one node still runs them all).
SPREAD_KEY = "kubernetes.io/hostname"


FALLBACK_FAILURES = 3


POLLING_INTERVAL_S = 15


SCRAPE_INTERVAL = "15s"


_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def check_digest(digest: str) -> str:
    """An image digest ``sha256:<64 hex>`` (what ``docker buildx imagetools inspect`` prints).

    Raises:
        ConfigError: anything else.
    """
    if not _DIGEST.match(digest):
        raise ConfigError(f"`{digest}` is not an image digest",
                          hint="pass `sha256:` and 64 lowercase hex digits, e.g. from "
                          "`docker buildx imagetools inspect lightseekorg/smg:1.13.0`")
    return digest


def pod_security() -> dict[str, Any]:
    """The pod-level ``securityContext`` (PSS restricted: non-root UID, seccomp RuntimeDefault)."""
    return {"runAsNonRoot": True, "runAsUser": RUN_AS_UID, "runAsGroup": RUN_AS_UID, "fsGroup": RUN_AS_UID,
            "seccompProfile": {"type": "RuntimeDefault"}}


def container_security() -> dict[str, Any]:
    """The container ``securityContext`` (PSS restricted, plus a read-only root filesystem)."""
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
            "runAsUser": RUN_AS_UID, "capabilities": {"drop": ["ALL"]}}


def writable_env() -> list[dict[str, Any]]:
    # getpass.getuser() (torch's inductor cache dir) reads USER before the passwd file, which has
    # no entry for RUN_AS_UID in these images
    return [{"name": "HOME", "value": TMP_DIR}, {"name": "USER", "value": "qembed"}]


def object_labels(name: str, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "qembed", "app.kubernetes.io/instance": name,
            "app.kubernetes.io/component": component}


def object_meta(name: str, namespace: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": namespace,
            "labels": {**labels, "app.kubernetes.io/managed-by": "qembed"}}


def http_probe(path: str, port: str, *, period: int, failures: int, timeout: int = PROBE_TIMEOUT_S) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port}, "periodSeconds": period,
            "timeoutSeconds": timeout, "failureThreshold": failures, "successThreshold": 1}


def prestop_hook() -> dict[str, Any]:
    # `sleep` from the image (both the SGLang and the smg image are Ubuntu-based), so it works on
    # clusters older than the `lifecycle.preStop.sleep` action
    return {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_S)]}}}


def k8s_escape(arg: str) -> str:
    # the kubelet expands $(VAR) in command/args; `$$` keeps a literal `$`
    return arg.replace("$(", "$$(")


def pod_placement(profile: Profile, spec: ContainerSpec, node_selector: dict[str, str] | None,
               tolerations: list[dict[str, str]], notes: list[str]) -> dict[str, Any]:
    """Where the worker pods may run: ``nodeSelector``/``affinity`` and ``tolerations``.

    GPU profiles tolerate the ``nvidia.com/gpu`` taint and require a node whose GPU Feature
    Discovery label ``nvidia.com/gpu.product`` is one of the profile's ``gpu_products``;
    ``node_selector`` replaces that affinity. CPU profiles get :data:`CPU_NODE_SELECTOR` (or
    ``node_selector``) and no GPU toleration.
    """
    out: dict[str, Any] = {}
    if spec.gpus:
        tols = [GPU_TOLERATION, *[t for t in tolerations if t != GPU_TOLERATION]]
        if node_selector:
            out["nodeSelector"] = dict(node_selector)
        elif profile.gpu_products:
            out["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": GPU_PRODUCT_LABEL, "operator": "In", "values": list(profile.gpu_products)}]}]}}}
            notes.append(f"workers run only on nodes labelled `{GPU_PRODUCT_LABEL}` in "
                         f"{', '.join(profile.gpu_products)} (NVIDIA GPU Feature Discovery, part of the GPU "
                         "Operator); `--node-selector KEY=VALUE` replaces this")
        else:
            notes.append(f"profile `{profile.name}` names no GPU product (`gpu_products`): workers may land on "
                         f"any GPU node; pin them with `--node-selector {GPU_PRODUCT_LABEL}=...` "
                         f"(`kubectl get nodes -L {GPU_PRODUCT_LABEL}`)")
    else:
        tols = list(tolerations)
        out["nodeSelector"] = dict(node_selector or CPU_NODE_SELECTOR)
        notes.append("SGLang on CPU: no GPU request, toleration or GPU node affinity; nodeSelector "
                     + ", ".join(f"`{k}={v}`" for k, v in out["nodeSelector"].items())
                     + " (`--node-selector KEY=VALUE` replaces it)")
    if tols:
        out["tolerations"] = tols
    return out


def pod_spread(labels: dict[str, str]) -> dict[str, Any]:
    """Spread replicas over nodes when possible (never blocks scheduling)."""
    return {"maxSkew": 1, "topologyKey": SPREAD_KEY, "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": dict(labels)}}


def from_namespace(namespace: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}


def worker_policy(name: str, namespace: str, worker_labels: dict[str, str], port: str, *, gateway: bool,
                   monitoring_namespace: str) -> dict[str, Any]:
    """Workers take their port from the gateway pods (``gateway``) or this namespace's pods,
    and from Prometheus in ``monitoring_namespace`` (``/metrics`` is on the same port)."""
    clients: dict[str, Any] = ({"podSelector": {"matchLabels": object_labels(name, "gateway")}} if gateway
                               else {"podSelector": {}})
    sources = [clients, from_namespace(monitoring_namespace)]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": object_meta(name, namespace, worker_labels),
            "spec": {"podSelector": {"matchLabels": dict(worker_labels)}, "policyTypes": ["Ingress"],
                     "ingress": [{"from": sources, "ports": [{"protocol": "TCP", "port": port}]}]}}


def gateway_policy(gw: str, namespace: str, labels: dict[str, str], monitoring_namespace: str) -> dict[str, Any]:
    """The gateway takes 8000 from anywhere, its metrics port from this namespace and Prometheus's."""
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": object_meta(gw, namespace, labels),
            "spec": {"podSelector": {"matchLabels": dict(labels)}, "policyTypes": ["Ingress"],
                     "ingress": [
                         {"ports": [{"protocol": "TCP", "port": "http"}]},
                         {"from": [{"podSelector": {}}, from_namespace(monitoring_namespace)],
                          "ports": [{"protocol": "TCP", "port": "metrics"}]}]}}


def monitor_object(kind: str, name: str, namespace: str, labels: dict[str, str], port: str,
             extra_labels: dict[str, str]) -> dict[str, Any]:
    """A Prometheus Operator PodMonitor or ServiceMonitor (monitoring.coreos.com/v1) for one
    component. Both give every series the ``namespace`` and ``pod`` labels that
    :func:`qembed.metrics.scope` matches."""
    endpoint = {"port": port, "path": "/metrics", "interval": SCRAPE_INTERVAL}
    meta = object_meta(name, namespace, labels)
    meta["labels"].update(extra_labels)
    spec: dict[str, Any] = {"selector": {"matchLabels": dict(labels)},
                            "namespaceSelector": {"matchNames": [namespace]}}
    if kind == "podmonitor":
        spec["podMetricsEndpoints"] = [endpoint]
        return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor", "metadata": meta, "spec": spec}
    spec["endpoints"] = [endpoint]
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": meta, "spec": spec}


def gateway_selector(name: str) -> list[str]:
    """The ``--selector`` values smg uses to find the worker pods."""
    labels = object_labels(name, "worker")
    return [f"{k}={v}" for k, v in labels.items()]


def gateway_objects(name: str, namespace: str, worker_labels: dict[str, str], worker_port: int,
             api_key_env: str, api_key_secret: str | None, api_key_secret_key: str,
             gateway_image: str | None, notes: list[str], *, admin_secret: str,
             drain_s: int, gateway_digest: str | None = None, image_pull_secret: str | None = None,
             network_policy: bool = False, monitoring_namespace: str = "monitoring",
             monitor: str = "annotations", monitor_labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
    from qembed.serving.gateway import ADMIN_KEY_ID

    gw = f"{name}-gateway"
    labels = object_labels(name, "gateway")
    if gateway_image is None:
        # the pinned release, never the smg installed where `deploy` runs (issue 20: the files must
        # not depend on that machine). smg's release workflow tags `lightseekorg/smg:<pyproject
        # version>` (no `v`), and its chart's tag defaults to Chart.appVersion (no `v`)
        gateway_image = f"{GATEWAY_IMAGE}:{PINNED_SMG}"
    if gateway_digest:
        gateway_image = f"{gateway_image.split('@', 1)[0]}@{check_digest(gateway_digest)}"
    # The smg image's entrypoint is the router (`docker run lightseekorg/smg --worker-urls ...`
    # in smg's docs), so only args are given. Flags: `smg launch --help` of smg 1.13.0.
    args = [
        "--host", "0.0.0.0", "--port", str(GATEWAY_PORT),
        "--policy", "round_robin",  # embeddings reuse no prefixes: cache_aware buys nothing
        "--service-discovery",
        "--selector", *gateway_selector(name),
        "--service-discovery-port", str(worker_port),
        "--service-discovery-namespace", namespace,
        "--health-check-endpoint", "/health",
        "--health-check-timeout-secs", str(PROBE_TIMEOUT_S),
        "--prometheus-port", str(GATEWAY_METRICS_PORT), "--prometheus-host", "0.0.0.0",
        # smg's default grace is 180 s; requests it relays drain as long as the workers allow
        "--shutdown-grace-period-secs", str(drain_s),
    ]
    env: list[dict[str, Any]] = []
    if api_key_secret:
        env.append({"name": api_key_env, "valueFrom": {"secretKeyRef": {
            "name": api_key_secret, "key": api_key_secret_key}}})
        args += ["--api-key", f"$({api_key_env})"]  # smg: "used for the authorization with the worker"
    # The control plane (/workers) takes only this key: with --api-key alone every client key
    # could register a worker (issue 20). smg logs neither key (checked with smg 1.13 at info).
    env.append({"name": ADMIN_KEY_ENV, "valueFrom": {"secretKeyRef": {"name": admin_secret, "key": "admin-key"}}})
    args += ["--control-plane-api-keys", f"{ADMIN_KEY_ID}:qembed admin:admin:$({ADMIN_KEY_ENV})"]
    container: dict[str, Any] = {
        "name": "smg", "image": gateway_image, "args": args,
        "ports": [{"name": "http", "containerPort": GATEWAY_PORT, "protocol": "TCP"},
                  {"name": "metrics", "containerPort": GATEWAY_METRICS_PORT, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "1", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
        "readinessProbe": {"httpGet": {"path": "/readiness", "port": "http"}, "periodSeconds": 10,
                           "timeoutSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {"httpGet": {"path": "/liveness", "port": "http"}, "periodSeconds": 20,
                          "timeoutSeconds": 5, "failureThreshold": 3},
        "securityContext": container_security(),
        "volumeMounts": [{"name": "tmp", "mountPath": TMP_DIR}],
        "lifecycle": prestop_hook(),
    }
    if env:
        container["env"] = env
    pod_meta: dict[str, Any] = {"labels": labels}
    if monitor == "annotations":
        pod_meta["annotations"] = {"prometheus.io/scrape": "true", "prometheus.io/port": str(GATEWAY_METRICS_PORT),
                                   "prometheus.io/path": "/metrics"}
    # the gateway keeps its token: service discovery watches pods through the API
    pod_spec: dict[str, Any] = {
        "serviceAccountName": gw, "automountServiceAccountToken": True,
        "terminationGracePeriodSeconds": PRESTOP_S + drain_s + SHUTDOWN_MARGIN_S,
        "securityContext": pod_security(), "topologySpreadConstraints": [pod_spread(labels)],
        "containers": [container], "volumes": [{"name": "tmp", "emptyDir": {}}]}
    if image_pull_secret:
        pod_spec["imagePullSecrets"] = [{"name": image_pull_secret}]
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": object_meta(gw, namespace, labels)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": object_meta(gw, namespace, labels),
         "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": object_meta(gw, namespace, labels),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": gw},
         "subjects": [{"kind": "ServiceAccount", "name": gw, "namespace": namespace}]},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": object_meta(gw, namespace, labels),
         "spec": {"replicas": GATEWAY_REPLICAS, "selector": {"matchLabels": labels},
                  "template": {"metadata": pod_meta, "spec": pod_spec}}},
        # the metrics port is on the Service too (a ServiceMonitor scrapes through it)
        {"apiVersion": "v1", "kind": "Service", "metadata": object_meta(gw, namespace, labels),
         "spec": {"type": "ClusterIP", "selector": labels,
                  "ports": [{"name": "http", "port": GATEWAY_PORT, "targetPort": "http", "protocol": "TCP"},
                            {"name": "metrics", "port": GATEWAY_METRICS_PORT, "targetPort": "metrics",
                             "protocol": "TCP"}]}},
        # a node drain or upgrade never takes the last gateway pod
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": object_meta(gw, namespace, labels),
         "spec": {"minAvailable": GATEWAY_REPLICAS - 1, "selector": {"matchLabels": labels}}},
    ]
    if network_policy:
        docs.append(gateway_policy(gw, namespace, labels, monitoring_namespace))
    if monitor != "annotations":
        docs.append(monitor_object(monitor, gw, namespace, labels, "metrics", monitor_labels or {}))
    return docs


def load_query(profile: Profile, *, namespace: str, name: str) -> str:
    """PromQL: texts waiting in SGLang's queue, summed over this deployment's worker pods.

    Scoped by :func:`qembed.metrics.scope` (``namespace`` and the pods of the Deployment
    ``name``; issue 20: load in `staging` scaled `prod`) and by ``model_name`` (SGLang's own
    label). A sum, not an average: KEDA's ``AverageValue`` target divides it by the current
    replicas, so the threshold reads "texts waiting per replica". No ``or vector(0)``: with no
    series the result is empty, the trigger fails (``ignoreNullValues: false``) and KEDA's
    ``fallback`` takes over instead of scaling to MIN as if idle.
    """
    model = (profile.served_model_name or profile.model).replace("\\", "\\\\").replace('"', '\\"')
    labels = f'model_name="{model}", {scope(namespace, name)}'
    return f"sum({sglang_selector('queue_reqs', labels=labels)})"


def scaled_object(profile: Profile, name: str, namespace: str, autoscale: tuple[int, int],
                   prometheus_url: str, target_queue: int, window_s: int) -> dict[str, Any]:
    lo, hi = autoscale
    return {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": object_meta(name, namespace, object_labels(name, "worker")),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicaCount": lo, "maxReplicaCount": hi, "pollingInterval": POLLING_INTERVAL_S,
            # Prometheus unreachable, or no series (scrape broken, pods gone): the load is unknown,
            # so serve at MAX rather than shrink to MIN (KEDA allows fallback with AverageValue only)
            "fallback": {"failureThreshold": FALLBACK_FAILURES, "replicas": hi},
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {
                # a new replica needs minutes to load: never drop one on a short lull
                "scaleDown": {"stabilizationWindowSeconds": window_s,
                              "policies": [{"type": "Pods", "value": 1, "periodSeconds": 300}]},
                "scaleUp": {"stabilizationWindowSeconds": 0,
                            "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}]},
            }}},
            "triggers": [{
                "type": "prometheus", "metricType": "AverageValue",
                "metadata": {"serverAddress": prometheus_url,
                             "query": load_query(profile, namespace=namespace, name=name),
                             "threshold": str(target_queue),
                             # an empty result is an error (KEDA's default turns it into 0)
                             "ignoreNullValues": "false"},
            }],
        },
    }


__all__ = [
    "ADMIN_KEY_ENV",
    "CPU_NODE_SELECTOR",
    "FALLBACK_FAILURES",
    "GATEWAY_IMAGE",
    "GATEWAY_METRICS_PORT",
    "GATEWAY_PORT",
    "GATEWAY_REPLICAS",
    "GPU_PRODUCT_LABEL",
    "GPU_TOLERATION",
    "PINNED_SMG",
    "POLLING_INTERVAL_S",
    "PROBE_TIMEOUT_S",
    "RUN_AS_UID",
    "SCRAPE_INTERVAL",
    "SPREAD_KEY",
    "TMP_DIR",
    "check_digest",
    "container_security",
    "from_namespace",
    "gateway_objects",
    "gateway_policy",
    "gateway_selector",
    "http_probe",
    "k8s_escape",
    "load_query",
    "monitor_object",
    "object_labels",
    "object_meta",
    "pod_placement",
    "pod_security",
    "pod_spread",
    "prestop_hook",
    "scaled_object",
    "worker_policy",
    "writable_env",
]
