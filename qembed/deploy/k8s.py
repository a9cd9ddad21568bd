"""``qembed deploy k8s``: Kubernetes manifests for one profile.

* ``worker.yaml``: a Deployment running the SGLang argv of :func:`qembed.deploy.container_spec`
  (the ``qembed serve`` code path), a Service, and a PodDisruptionBudget.
* ``gateway.yaml`` (``gateway=True``): the smg gateway (``smg launch`` flags checked against
  ``smg launch --help`` of smg 1.13.0) discovering the worker pods by label
  (``--service-discovery --selector ...``), with the RBAC it needs (get/list/watch pods).
* ``autoscale.yaml`` (``autoscale=(min, max)``): a KEDA ``ScaledObject`` on a Prometheus query
  over SGLang's queue and running-request gauges, with a scale-down stabilisation window.

Probes follow reference section 2.2: ``/health`` answers 503 until warm-up ends and then runs a
real 1-token forward (1 s sleep, up to 20 s wait), so every probe has ``timeoutSeconds: 25``
and the startupProbe's budget covers download and load (the profile's ``ready_timeout``, at
least 10 minutes). The API key comes from a Secret (``secretKeyRef``), never inline, and
never as ``--api-key $(VAR)`` in the args (the kubelet would expand it into the process's
argv, and SGLang would log it): the container runs :func:`qembed.sglang_args.keyed_argv`, which
reads the variable in memory, refuses to start without it, and redacts SGLang's log. The
gateway's control plane has its own Secret (``--control-plane-api-keys``; issue 20).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qembed.env import GATEWAY_ADMIN_KEY
from qembed.errors import ConfigError
from qembed.models import GiB
from qembed.sglang_args import keyed_argv

from . import PRESTOP_S, SHUTDOWN_MARGIN_S, container_spec, driver_note, sglang_image, stop_timeout
from .metrics import sglang_selector

if TYPE_CHECKING:
    from qembed.profiles import Profile

#: /health: 1 s sleep + up to SGLANG_HEALTH_CHECK_TIMEOUT=20 s (reference 2.2), plus margin.
PROBE_TIMEOUT_S = 25
PROBE_PERIOD_S = 30
STARTUP_PERIOD_S = 10
#: The startupProbe never gives up before this, whatever the profile says.
MIN_STARTUP_BUDGET_S = 600
#: ``/ready`` (SGLang 0.5.23 ``http_server.py``): 200 once the server is up and not shutting down
#: or paused, 503 otherwise, no forward pass, no key (``utils/auth.py`` exempts it). It shares the
#: event loop with the requests, hence a few seconds, not the 1 s kubelet default.
READY_TIMEOUT_S = 10
#: ``progressDeadlineSeconds`` on top of the startup budget: scheduling and pulling the SGLang
#: image (tens of GB) happen before the startupProbe's clock starts. An allowance, not a measurement.
ROLLOUT_MARGIN_S = 600
#: At least this many gateway pods, with a disruption budget that keeps one up.
GATEWAY_REPLICAS = 2
#: Host memory per GPU process on top of the weights (Python, torch, CUDA context, tokenizer).
#: An estimate, not a measurement.
PROCESS_OVERHEAD_BYTES = 6 * GiB
#: Shared memory per GPU (NCCL and the scheduler's IPC). An estimate.
SHM_PER_GPU_GIB = 4
#: When the model's shape is unknown (a custom model), this is the memory request.
FALLBACK_MEMORY_GIB = 16

GATEWAY_PORT = 8000
GATEWAY_METRICS_PORT = 29000  # smg's --prometheus-port default
GATEWAY_IMAGE = "lightseekorg/smg"
PINNED_SMG = "1.13.0"
#: Pod security (issue 20): every pod meets the Pod Security Standard "restricted". The official
#: images run as root and have no non-root user, so a fixed unprivileged UID is set (the kubelet
#: refuses ``runAsNonRoot`` with an image that runs as root unless ``runAsUser`` is given).
RUN_AS_UID = 1000
#: The root filesystem is read-only; SGLang, torch, triton and flashinfer write their caches under
#: ``$HOME`` and ``/tmp`` (an emptyDir each way: ``HOME`` points into ``/tmp``), and the HF cache
#: moves out of ``/root`` (mode 700 in the image, so a non-root UID could not reach a mount there).
K8S_HF_CACHE = "/cache/huggingface"
TMP_DIR = "/tmp"


def pod_security() -> dict[str, Any]:
    """The pod-level ``securityContext`` (PSS restricted: non-root UID, seccomp RuntimeDefault)."""
    return {"runAsNonRoot": True, "runAsUser": RUN_AS_UID, "runAsGroup": RUN_AS_UID, "fsGroup": RUN_AS_UID,
            "seccompProfile": {"type": "RuntimeDefault"}}


def container_security() -> dict[str, Any]:
    """The container ``securityContext`` (PSS restricted, plus a read-only root filesystem)."""
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
            "runAsUser": RUN_AS_UID, "capabilities": {"drop": ["ALL"]}}


def _writable_env() -> list[dict[str, Any]]:
    # getpass.getuser() (torch's inductor cache dir) reads USER before the passwd file, which has
    # no entry for RUN_AS_UID in these images
    return [{"name": "HOME", "value": TMP_DIR}, {"name": "USER", "value": "qembed"}]


#: the gateway container's variable for its control-plane key (from the admin Secret)
ADMIN_KEY_ENV = GATEWAY_ADMIN_KEY.name
DEFAULT_PROMETHEUS = "http://prometheus-server.monitoring.svc:9090"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


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


def check_name(name: str, what: str = "name", *, max_len: int = 63) -> str:
    if len(name) > max_len or not _DNS_LABEL.match(name):
        raise ConfigError(f"`{name}` is not a valid Kubernetes {what}",
                          hint=f"use lowercase letters, digits and `-`, at most {max_len} characters, "
                          "starting and ending with a letter or digit")
    return name


def parse_autoscale(text: str) -> tuple[int, int]:
    """``"MIN:MAX"`` -> ``(min, max)``; 1 <= MIN <= MAX (scale to zero means a cold start of minutes).

    Raises:
        ConfigError: not two integers, MIN < 1, or MIN > MAX.
    """
    parts = text.split(":")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ConfigError(f"`--autoscale {text}` is not `MIN:MAX`", hint="e.g. `--autoscale 1:4`")
    lo, hi = int(parts[0]), int(parts[1])
    if lo < 1:
        raise ConfigError("`--autoscale` MIN must be at least 1",
                          hint="a cold start loads the model for minutes; keep one replica warm")
    if lo > hi:
        raise ConfigError(f"`--autoscale {text}`: MIN is larger than MAX", hint="e.g. `--autoscale 1:4`")
    return lo, hi


def installed_smg_version() -> str | None:
    import importlib.metadata as md

    try:
        return md.version("smg")
    except md.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class Sizing:
    memory_request: str  # e.g. "14Gi"
    memory_limit: str  # request + /dev/shm (a memory-backed emptyDir counts against it)
    shm_size: str
    cpu_request: str
    gpus: int
    basis: str  # how the request was worked out, in words


def sizing(profile: Profile) -> Sizing:
    """Pod resources from qembed's model shapes (:mod:`qembed.models`).

    Host memory = loaded weights x ``dp_size`` (each replica loads the checkpoint) + a fixed
    overhead per GPU process; ``/dev/shm`` is sized per GPU and added to the limit, because a
    memory-backed emptyDir is charged to the pod. All figures are estimates.
    """
    from qembed import models

    gpus = profile.tp_size * profile.dp_size
    shape = models.model_shape(profile.model)
    shm_gib = SHM_PER_GPU_GIB * gpus
    if shape is None:
        req_gib = FALLBACK_MEMORY_GIB * profile.dp_size
        basis = f"unknown model shape: {FALLBACK_MEMORY_GIB} GiB per replica (set it by hand)"
    else:
        weights = shape.loaded_params * models.dtype_bytes_for(profile.dtype)
        total = weights * profile.dp_size + PROCESS_OVERHEAD_BYTES * gpus
        req_gib = math.ceil(total / GiB)
        basis = (f"{shape.name.split('/')[-1]}: {weights / GiB:.1f} GiB of weights x {profile.dp_size} "
                 f"+ {PROCESS_OVERHEAD_BYTES // GiB} GiB per GPU process (estimate)")
    return Sizing(memory_request=f"{req_gib}Gi", memory_limit=f"{req_gib + shm_gib}Gi",
                  shm_size=f"{shm_gib}Gi", cpu_request=str(2 + 2 * gpus), gpus=gpus, basis=basis)


def _labels(name: str, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "qembed", "app.kubernetes.io/instance": name,
            "app.kubernetes.io/component": component}


def _meta(name: str, namespace: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": namespace,
            "labels": {**labels, "app.kubernetes.io/managed-by": "qembed"}}


def _probe(path: str, port: str, *, period: int, failures: int, timeout: int = PROBE_TIMEOUT_S) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port}, "periodSeconds": period,
            "timeoutSeconds": timeout, "failureThreshold": failures, "successThreshold": 1}


def _prestop() -> dict[str, Any]:
    # `sleep` from the image (both the SGLang and the smg image are Ubuntu-based), so it works on
    # clusters older than the `lifecycle.preStop.sleep` action
    return {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_S)]}}}


def _k8s_escape(arg: str) -> str:
    # the kubelet expands $(VAR) in command/args; `$$` keeps a literal `$`
    return arg.replace("$(", "$$(")


@dataclass(frozen=True)
class K8sResult:
    files: dict[str, list[dict[str, Any]]]  # file name -> documents
    notes: list[str] = field(default_factory=list)
    sizing: Sizing | None = None
    image: str = ""

    def documents(self) -> list[dict[str, Any]]:
        return [d for docs in self.files.values() for d in docs]

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "files": self.files, "notes": self.notes,
                "sizing": None if self.sizing is None else self.sizing.__dict__}


def render_yaml(docs: list[dict[str, Any]]) -> str:
    import yaml

    from . import NoAliasDumper

    return yaml.dump_all(docs, Dumper=NoAliasDumper, sort_keys=False, width=1000)


def manifests(
    profile: Profile,
    *,
    sglang_version: str | None,
    name: str = "qembed",
    namespace: str = "default",
    replicas: int = 1,
    gateway: bool = False,
    autoscale: tuple[int, int] | None = None,
    api_key_secret: str | None = "qembed-api-key",
    api_key_secret_key: str = "api-key",
    hf_token_secret: str | None = "hf-token",
    hf_cache_pvc: str | None = None,
    prometheus_url: str = DEFAULT_PROMETHEUS,
    target_load: int = 32,
    scale_down_window_s: int = 900,
    gateway_image: str | None = None,
    gateway_admin_secret: str = "qembed-gateway-admin-key",
    gateway_digest: str | None = None,
) -> K8sResult:
    """Build the manifests (as Python objects) for ``profile``.

    Args:
        profile: the resolved profile; its argv comes from :func:`qembed.sglang_args.build_flags`.
        sglang_version: the installed SGLang (image tag); ``None`` uses the pinned release.
        name: Deployment/Service name and the ``app.kubernetes.io/instance`` label.
        namespace: where everything goes (the gateway only watches this namespace).
        replicas: worker replicas (with ``autoscale``, KEDA owns the count; MIN is used).
        gateway: add the smg gateway in front of the workers.
        autoscale: ``(min, max)`` for a KEDA ScaledObject.
        api_key_secret: Secret holding the API key (key ``api_key_secret_key``); ``None`` = no key.
        hf_token_secret: optional Secret with key ``token`` for ``HF_TOKEN`` (gated/private models).
        hf_cache_pvc: a PersistentVolumeClaim for the HF cache (default: an emptyDir per pod).
        prometheus_url: the Prometheus KEDA queries.
        target_load: queued + running requests per replica KEDA aims for.
        scale_down_window_s: HPA scale-down stabilisation window (cold starts take minutes).
        gateway_image: the smg image (default ``lightseekorg/smg:<installed smg>``).
        gateway_digest: pin the gateway image to ``sha256:...`` (``image:tag@digest``).
        gateway_admin_secret: Secret (key ``admin-key``) with the gateway's control-plane key,
            required: without it every client key could manage the gateway's workers.

    Raises:
        ConfigError: a bad name, replica count or autoscale range.
    """
    check_name(name, "name", max_len=55)  # room for the "-gateway" suffix
    check_name(namespace, "namespace")
    if replicas < 1:
        raise ConfigError(f"`--replicas` must be at least 1, got {replicas}")
    if target_load < 1:
        raise ConfigError(f"`--target-load` must be at least 1, got {target_load}")
    if not 0 <= scale_down_window_s <= 3600:
        raise ConfigError("`--scale-down-window` must be within 0..3600 seconds (the HPA limit)")
    spec = container_spec(profile)
    choice = sglang_image(sglang_version)
    notes = list(spec.notes)
    for n in (choice.note, driver_note(choice.sglang_version)):
        if n:
            notes.append(n)
    size = sizing(profile)
    notes.append(f"memory request: {size.basis}")
    if spec.gpu_ids:
        notes.append("`gpu_ids` does not apply in Kubernetes: the scheduler picks the GPUs "
                     f"(`nvidia.com/gpu: {spec.gpus}`)")
    worker_labels = _labels(name, "worker")
    port_name = "http"

    argv = keyed_argv(spec.argv, spec.api_key_env) if api_key_secret else spec.argv
    args = [_k8s_escape(a) for a in argv]
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in spec.env.items()]
    env += [e for e in _writable_env() if e["name"] not in spec.env]
    if "HF_HOME" in spec.env:
        notes.append(f"profile env sets `HF_HOME`: the HF cache volume is mounted at {K8S_HF_CACHE}, "
                     "so point `HF_HOME` there or mount your own volume")
    else:
        env.append({"name": "HF_HOME", "value": K8S_HF_CACHE})
    if hf_token_secret:
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": hf_token_secret, "key": "token", "optional": True}}})
    if api_key_secret:
        # required (not optional): with a missing variable the kubelet would pass `$(VAR)` literally
        env.append({"name": spec.api_key_env, "valueFrom": {"secretKeyRef": {
            "name": api_key_secret, "key": api_key_secret_key}}})
    for secret in spec.secret_env:
        notes.append(f"profile env `{secret}` is left out: set it from a Secret in the Deployment")
    startup_budget = max(int(profile.ready_timeout), MIN_STARTUP_BUDGET_S)
    annotations: dict[str, str] = {}
    if profile.metrics:
        annotations = {"prometheus.io/scrape": "true", "prometheus.io/port": str(spec.port),
                       "prometheus.io/path": "/metrics"}
    else:
        notes.append("`metrics` is off in this profile: no /metrics, no scrape annotations "
                     "(`--set metrics=true` turns it on)")
    cache_volume: dict[str, Any] = (
        {"name": "hf-cache", "persistentVolumeClaim": {"claimName": hf_cache_pvc}} if hf_cache_pvc
        else {"name": "hf-cache", "emptyDir": {}})
    if not hf_cache_pvc:
        notes.append("the HF cache is an emptyDir: each new pod downloads the model again "
                     "(`--hf-cache-pvc NAME` mounts a PersistentVolumeClaim instead)")
    container = {
        "name": "sglang",
        "image": choice.image,
        "command": args,
        "ports": [{"name": port_name, "containerPort": spec.port, "protocol": "TCP"}],
        "env": env,
        "resources": {
            "requests": {"cpu": size.cpu_request, "memory": size.memory_request,
                         "nvidia.com/gpu": str(size.gpus)},
            "limits": {"memory": size.memory_limit, "nvidia.com/gpu": str(size.gpus)},
        },
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"},
                         {"name": "hf-cache", "mountPath": K8S_HF_CACHE},
                         {"name": "tmp", "mountPath": TMP_DIR}],
        "securityContext": container_security(),
        # cheap /ready gates traffic; /health (a real 1-token forward) decides liveness
        "startupProbe": _probe("/ready", port_name, period=STARTUP_PERIOD_S, timeout=READY_TIMEOUT_S,
                               failures=math.ceil(startup_budget / STARTUP_PERIOD_S)),
        "readinessProbe": _probe("/ready", port_name, period=STARTUP_PERIOD_S, failures=3,
                                 timeout=READY_TIMEOUT_S),
        "livenessProbe": _probe("/health", port_name, period=PROBE_PERIOD_S, failures=5),
        "lifecycle": _prestop(),
    }
    pod_meta: dict[str, Any] = {"labels": worker_labels}
    if annotations:
        pod_meta["annotations"] = annotations
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(name, namespace, worker_labels),
        "spec": {
            "replicas": autoscale[0] if autoscale else replicas,
            # the default 600 s is shorter than the startup budget: a slow first load would be
            # reported as a failed rollout while the pod is still loading
            "progressDeadlineSeconds": startup_budget + ROLLOUT_MARGIN_S,
            "selector": {"matchLabels": worker_labels},
            # a new pod must be ready (minutes of loading) before an old one goes
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": pod_meta,
                "spec": {
                    # preStop sleep, then SIGTERM: SGLang drains for up to shutdown_timeout
                    "terminationGracePeriodSeconds": PRESTOP_S + stop_timeout(profile),
                    # workers never call the Kubernetes API
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security(),
                    "containers": [container],
                    "volumes": [
                        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": size.shm_size}},
                        cache_volume,
                        {"name": "tmp", "emptyDir": {}},
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _meta(name, namespace, worker_labels),
        "spec": {"type": "ClusterIP", "selector": worker_labels,
                 "ports": [{"name": port_name, "port": spec.port, "targetPort": port_name, "protocol": "TCP"}]},
    }
    pdb = {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": _meta(name, namespace, worker_labels),
        # maxUnavailable (not minAvailable): with one replica a node drain can still proceed
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": worker_labels}},
    }
    files: dict[str, list[dict[str, Any]]] = {"worker.yaml": [deployment, service, pdb]}
    image = choice.image

    if gateway:
        files["gateway.yaml"] = _gateway(name, namespace, worker_labels, spec.port, spec.api_key_env,
                                         api_key_secret, api_key_secret_key, gateway_image, notes,
                                         admin_secret=gateway_admin_secret, drain_s=math.ceil(profile.shutdown_timeout),
                                         gateway_digest=gateway_digest)
    if autoscale:
        files["autoscale.yaml"] = [_scaled_object(profile, name, namespace, autoscale, prometheus_url,
                                                  target_load, scale_down_window_s)]
        if not profile.metrics:
            notes.append("`--autoscale` reads SGLang's metrics, but `metrics` is off in this profile")
    return K8sResult(files=files, notes=notes, sizing=size, image=image)


def gateway_selector(name: str) -> list[str]:
    """The ``--selector`` values smg uses to find the worker pods."""
    labels = _labels(name, "worker")
    return [f"{k}={v}" for k, v in labels.items()]


def _gateway(name: str, namespace: str, worker_labels: dict[str, str], worker_port: int,
             api_key_env: str, api_key_secret: str | None, api_key_secret_key: str,
             gateway_image: str | None, notes: list[str], *, admin_secret: str,
             drain_s: int, gateway_digest: str | None = None) -> list[dict[str, Any]]:
    from qembed.gateway import ADMIN_KEY_ID

    gw = f"{name}-gateway"
    labels = _labels(name, "gateway")
    if gateway_image is None:
        version = installed_smg_version()
        if version is None:
            version = PINNED_SMG
            notes.append(f"smg is not installed here; the gateway image uses smg {PINNED_SMG}")
        # smg's release workflow tags `lightseekorg/smg:<pyproject version>` (no `v`), and its
        # chart's tag defaults to Chart.appVersion (no `v`) (issue 20; docs/deploy.md cites both)
        gateway_image = f"{GATEWAY_IMAGE}:{version}"
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
        "lifecycle": _prestop(),
    }
    if env:
        container["env"] = env
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(gw, namespace, labels)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": _meta(gw, namespace, labels),
         "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": _meta(gw, namespace, labels),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": gw},
         "subjects": [{"kind": "ServiceAccount", "name": gw, "namespace": namespace}]},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(gw, namespace, labels),
         "spec": {"replicas": GATEWAY_REPLICAS, "selector": {"matchLabels": labels}, "template": {
             "metadata": {"labels": labels, "annotations": {
                 "prometheus.io/scrape": "true", "prometheus.io/port": str(GATEWAY_METRICS_PORT),
                 "prometheus.io/path": "/metrics"}},
             # the gateway keeps its token: service discovery watches pods through the API
             "spec": {"serviceAccountName": gw, "automountServiceAccountToken": True,
                      "terminationGracePeriodSeconds": PRESTOP_S + drain_s + SHUTDOWN_MARGIN_S,
                      "securityContext": pod_security(), "containers": [container],
                      "volumes": [{"name": "tmp", "emptyDir": {}}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": _meta(gw, namespace, labels),
         "spec": {"type": "ClusterIP", "selector": labels,
                  "ports": [{"name": "http", "port": GATEWAY_PORT, "targetPort": "http", "protocol": "TCP"}]}},
        # a node drain or upgrade never takes the last gateway pod
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": _meta(gw, namespace, labels),
         "spec": {"minAvailable": GATEWAY_REPLICAS - 1, "selector": {"matchLabels": labels}}},
    ]


def load_query(profile: Profile) -> str:
    """PromQL: queued + running requests of this model, summed over all its workers.

    SGLang labels its gauges with ``model_name`` (= the served model name), so the query does
    not depend on how Prometheus relabels pods.
    """
    model = (profile.served_model_name or profile.model).replace("\\", "\\\\").replace('"', '\\"')
    label = f'model_name="{model}"'
    queue = sglang_selector("queue_reqs", labels=label)
    running = sglang_selector("running_reqs", labels=label)
    return f"(sum({queue}) or vector(0)) + (sum({running}) or vector(0))"


def _scaled_object(profile: Profile, name: str, namespace: str, autoscale: tuple[int, int],
                   prometheus_url: str, target_load: int, window_s: int) -> dict[str, Any]:
    lo, hi = autoscale
    return {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": _meta(name, namespace, _labels(name, "worker")),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicaCount": lo, "maxReplicaCount": hi, "pollingInterval": 15,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {
                # a new replica needs minutes to load: never drop one on a short lull
                "scaleDown": {"stabilizationWindowSeconds": window_s,
                              "policies": [{"type": "Pods", "value": 1, "periodSeconds": 300}]},
                "scaleUp": {"stabilizationWindowSeconds": 0,
                            "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}]},
            }}},
            "triggers": [{
                "type": "prometheus", "metricType": "AverageValue",
                "metadata": {"serverAddress": prometheus_url, "query": load_query(profile),
                             "threshold": str(target_load)},
            }],
        },
    }


__all__ = [
    "GATEWAY_METRICS_PORT",
    "GATEWAY_PORT",
    "GATEWAY_REPLICAS",
    "K8sResult",
    "Sizing",
    "check_digest",
    "check_name",
    "container_security",
    "gateway_selector",
    "load_query",
    "manifests",
    "parse_autoscale",
    "pod_security",
    "render_yaml",
    "sizing",
]
