"""``qembed deploy k8s``: Kubernetes manifests for one profile.

* ``worker.yaml``: a Deployment running the SGLang argv of :func:`qembed.fleet.deploy.container_spec`
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
argv, and SGLang would log it): the container runs :func:`qembed.serving.sglang_args.keyed_argv`, which
reads the variable in memory, refuses to start without it, and redacts SGLang's log. The
gateway's control plane has its own Secret (``--control-plane-api-keys``; issue 20).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qembed.client.flow import DEFAULT_BATCH_SIZE
from qembed.env import GATEWAY_ADMIN_KEY
from qembed.errors import ConfigError
from qembed.fleet.deploy import (
    PRESTOP_S,
    SHUTDOWN_MARGIN_S,
    ContainerSpec,
    container_spec,
    driver_note,
    sglang_image,
    stop_timeout,
)
from qembed.metrics import scope, sglang_selector
from qembed.models import GiB
from qembed.serving.sglang_args import keyed_argv

if TYPE_CHECKING:
    from qembed.serving.profiles.model import Profile

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

# -- scheduling (issue 20) --------------------------------------------------------------------
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

# -- autoscaling (issue 20) -------------------------------------------------------------------
#: KEDA's threshold: texts waiting in SGLang's queue per replica. SGLang counts each text of a
#: batch as one request (`num_queue_reqs`), and qembed's client sends batches of
#: `client.DEFAULT_BATCH_SIZE` (128) texts: two whole batches waiting per replica.
TARGET_QUEUE_BATCHES = 2
#: KEDA falls back after this many failed queries (x `pollingInterval` 15 s = 45 s)
DEFAULT_TARGET_QUEUE = TARGET_QUEUE_BATCHES * DEFAULT_BATCH_SIZE
FALLBACK_FAILURES = 3
POLLING_INTERVAL_S = 15
PROMETHEUS_HINT = ("pass the Prometheus KEDA can reach, e.g. kube-prometheus-stack: "
                   "`--prometheus-url http://prometheus-operated.<namespace>.svc:9090`; the prometheus-community "
                   "chart: `--prometheus-url http://prometheus-server.<namespace>.svc` (its Service listens on 80)")

# -- observability (issue 20) -----------------------------------------------------------------
#: `annotations`: `prometheus.io/*` on the pods (the community chart's `kubernetes-pods` job);
#: `podmonitor` / `servicemonitor`: Prometheus Operator objects (monitoring.coreos.com/v1).
MONITOR_KINDS = ("annotations", "podmonitor", "servicemonitor")
SCRAPE_INTERVAL = "15s"

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


def check_k8s_name(name: str, what: str = "name", *, max_len: int = 63) -> str:
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


def parse_node_selector(items: list[str], flag: str = "--node-selector") -> dict[str, str]:
    """``["KEY=VALUE", ...]`` (``--node-selector``/``--monitor-label``, repeatable) -> a mapping.

    Raises:
        ConfigError: an item without ``=``, or an empty key.
    """
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"`{flag} {item}` is not `KEY=VALUE`",
                              hint="e.g. `--node-selector nvidia.com/gpu.product=NVIDIA-L4`, "
                                   "`--monitor-label release=kube-prometheus-stack`")
        out[key.strip()] = value.strip()
    return out


_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def parse_toleration(text: str) -> dict[str, str]:
    """``KEY[=VALUE][:EFFECT]`` (``--toleration``, kubectl taint syntax) -> a toleration.

    Without a value the operator is ``Exists``; without an effect it tolerates every effect.

    Raises:
        ConfigError: an empty key or an unknown effect.
    """
    head, _, effect = text.partition(":")
    key, sep, value = head.partition("=")
    if not key.strip() or (effect and effect not in _EFFECTS):
        raise ConfigError(f"`--toleration {text}` is not `KEY[=VALUE][:EFFECT]`",
                          hint=f"e.g. `--toleration sku=gpu:NoSchedule`; EFFECT is one of {', '.join(_EFFECTS)}")
    tol = {"key": key.strip(), "operator": "Equal" if sep else "Exists"}
    if sep:
        tol["value"] = value
    if effect:
        tol["effect"] = effect
    return tol


def check_prometheus_url(url: str | None) -> str:
    """The Prometheus KEDA queries: required with ``--autoscale`` (no default is right for every
    stack; issue 20: the old default's port was wrong for the chart it named).

    Raises:
        ConfigError: missing, or not an ``http(s)://`` URL.
    """
    if not url:
        raise ConfigError("`--autoscale` needs `--prometheus-url`: KEDA reads the queue from Prometheus, and "
                          "its address depends on how Prometheus was installed", hint=PROMETHEUS_HINT)
    if not re.match(r"^https?://[^\s/]+", url):
        raise ConfigError(f"`--prometheus-url {url}` is not an http(s) URL", hint=PROMETHEUS_HINT)
    return url


@dataclass(frozen=True)
class Sizing:
    memory_request: str  # e.g. "14Gi"
    memory_limit: str  # request + /dev/shm (a memory-backed emptyDir counts against it)
    shm_size: str
    cpu_request: str
    gpus: int
    basis: str  # how the request was worked out, in words


def sizing(profile: Profile, spec: ContainerSpec | None = None) -> Sizing:
    """Pod resources from qembed's model shapes (:mod:`qembed.models`).

    Host memory = loaded weights x ``dp_size`` (each replica loads the checkpoint) + a fixed
    overhead per GPU process; ``/dev/shm`` is sized per GPU and added to the limit, because a
    memory-backed emptyDir is charged to the pod. All figures are estimates. ``device: cpu``
    (``spec.cpu``): the container memory :func:`qembed.serving.cpu.plan` sized the KV pool for.
    """
    from qembed import models

    if spec is not None and spec.cpu is not None:
        c = spec.cpu
        shm = SHM_PER_GPU_GIB
        return Sizing(memory_request=f"{c.memory_gib}Gi", memory_limit=f"{c.memory_gib + shm}Gi",
                      shm_size=f"{shm}Gi", cpu_request=str(c.cores), gpus=0,
                      basis=f"SGLang on CPU: {c.memory_gib} GiB, the memory qembed.serving.cpu sized the KV pool "
                            f"({c.max_total_tokens} tokens, {c.dtype}) for; {c.cores} cores (estimates)")
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

    from qembed.fleet.deploy import NoAliasDumper

    return yaml.dump_all(docs, Dumper=NoAliasDumper, sort_keys=False, width=1000)


def manifests(
    profile: Profile,
    *,
    name: str = "qembed",
    namespace: str = "default",
    replicas: int | None = None,
    gateway: bool = False,
    autoscale: tuple[int, int] | None = None,
    api_key_secret: str | None = "qembed-api-key",
    api_key_secret_key: str = "api-key",
    hf_token_secret: str | None = "hf-token",
    hf_cache_pvc: str | None = None,
    prometheus_url: str | None = None,
    target_queue: int = DEFAULT_TARGET_QUEUE,
    scale_down_window_s: int = 900,
    gateway_image: str | None = None,
    gateway_admin_secret: str = "qembed-gateway-admin-key",
    gateway_digest: str | None = None,
    image: str | None = None,
    image_pull_secret: str | None = None,
    node_selector: dict[str, str] | None = None,
    tolerations: list[dict[str, str]] | None = None,
    network_policy: bool = False,
    monitoring_namespace: str = "monitoring",
    monitor: str = "annotations",
    monitor_labels: dict[str, str] | None = None,
) -> K8sResult:
    """Build the manifests (as Python objects) for ``profile``.

    Args:
        profile: the resolved profile; its argv comes from :func:`qembed.serving.sglang_args.build_flags`.
        name: Deployment/Service name and the ``app.kubernetes.io/instance`` label.
        namespace: where everything goes (the gateway only watches this namespace).
        replicas: worker replicas (default 1). With ``autoscale`` the Deployment has no
            ``spec.replicas`` at all: KEDA owns the count, and ``kubectl apply`` must not reset it.
        gateway: add the smg gateway in front of the workers.
        autoscale: ``(min, max)`` for a KEDA ScaledObject.
        api_key_secret: Secret holding the API key (key ``api_key_secret_key``); ``None`` = no key.
        hf_token_secret: optional Secret with key ``token`` for ``HF_TOKEN`` (gated/private models).
        hf_cache_pvc: a PersistentVolumeClaim for the HF cache (default: an emptyDir per pod).
        prometheus_url: the Prometheus KEDA queries; required with ``autoscale``.
        target_queue: texts waiting in SGLang's queue per replica that KEDA aims for.
        scale_down_window_s: HPA scale-down stabilisation window (cold starts take minutes).
        gateway_image: the smg image (default ``lightseekorg/smg:<PINNED_SMG>``).
        gateway_digest: pin the gateway image to ``sha256:...`` (``image:tag@digest``).
        gateway_admin_secret: Secret (key ``admin-key``) with the gateway's control-plane key,
            required: without it every client key could manage the gateway's workers.
        image: the worker image (default ``lmsysorg/sglang:v<PINNED_SGLANG>``); required for
            ``device: cpu`` (a CPU build of SGLang).
        image_pull_secret: ``imagePullSecrets`` entry on worker and gateway pods.
        node_selector: replaces the default placement (GPU: a node affinity on the profile's
            ``gpu_products``; CPU: :data:`CPU_NODE_SELECTOR`).
        tolerations: added to the GPU toleration (or, on CPU, the only ones).
        network_policy: add NetworkPolicies (workers: their port from the gateway or the
            namespace, and from ``monitoring_namespace``; gateway: 8000 from anywhere, metrics from
            the namespace and ``monitoring_namespace``).
        monitor: how Prometheus finds the pods (:data:`MONITOR_KINDS`).
        monitor_labels: labels on the PodMonitor/ServiceMonitor objects (e.g. ``release: ...``,
            which kube-prometheus-stack's Prometheus selects by default).

    Raises:
        ConfigError: a bad name, replica count, autoscale range, Prometheus URL or monitor kind;
            ``device: cpu`` without ``image``.
    """
    check_k8s_name(name, "name", max_len=55)  # room for the "-gateway" suffix
    check_k8s_name(namespace, "namespace")
    check_k8s_name(monitoring_namespace, "namespace")
    if image_pull_secret is not None:
        check_k8s_name(image_pull_secret, "Secret name", max_len=253)
    if replicas is not None and replicas < 1:
        raise ConfigError(f"`--replicas` must be at least 1, got {replicas}")
    if target_queue < 1:
        raise ConfigError(f"`--target-queue` must be at least 1 text, got {target_queue}")
    if not 0 <= scale_down_window_s <= 3600:
        raise ConfigError("`--scale-down-window` must be within 0..3600 seconds (the HPA limit)")
    if monitor not in MONITOR_KINDS:
        raise ConfigError(f"`--monitor {monitor}` is not one of {', '.join(MONITOR_KINDS)}",
                          hint="`podmonitor` or `servicemonitor` with the Prometheus Operator, else `annotations`")
    if autoscale:
        prometheus_url = check_prometheus_url(prometheus_url)
    spec = container_spec(profile, image=image)
    choice = sglang_image(image)
    notes = list(spec.notes)
    dn = driver_note(choice) if spec.gpus else None
    if dn:
        notes.append(dn)
    size = sizing(profile, spec)
    notes.append(f"memory request: {size.basis}")
    if spec.gpu_ids:
        notes.append("`gpu_ids` does not apply in Kubernetes: the scheduler picks the GPUs "
                     f"(`nvidia.com/gpu: {spec.gpus}`)")
    placement = _placement(profile, spec, node_selector, tolerations or [], notes)
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
    if profile.metrics and monitor == "annotations":
        annotations = {"prometheus.io/scrape": "true", "prometheus.io/port": str(spec.port),
                       "prometheus.io/path": "/metrics"}
    elif not profile.metrics:
        notes.append("`metrics` is off in this profile: no /metrics, no scrape annotations "
                     "(`--set metrics=true` turns it on)")
    cache_volume: dict[str, Any] = (
        {"name": "hf-cache", "persistentVolumeClaim": {"claimName": hf_cache_pvc}} if hf_cache_pvc
        else {"name": "hf-cache", "emptyDir": {}})
    if not hf_cache_pvc:
        notes.append("the HF cache is an emptyDir: each new pod downloads the model again "
                     "(`--hf-cache-pvc NAME` mounts a PersistentVolumeClaim instead)")
    requests: dict[str, str] = {"cpu": size.cpu_request, "memory": size.memory_request}
    limits: dict[str, str] = {"memory": size.memory_limit}
    if size.gpus:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(size.gpus)
    container = {
        "name": "sglang",
        "image": choice.image,
        "command": args,
        "ports": [{"name": port_name, "containerPort": spec.port, "protocol": "TCP"}],
        "env": env,
        "resources": {"requests": requests, "limits": limits},
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
    pod_spec: dict[str, Any] = {
        # preStop sleep, then SIGTERM: SGLang drains for up to shutdown_timeout
        "terminationGracePeriodSeconds": PRESTOP_S + stop_timeout(profile),
        # workers never call the Kubernetes API
        "automountServiceAccountToken": False,
        "securityContext": pod_security(),
        **placement,
        "topologySpreadConstraints": [_spread(worker_labels)],
        "containers": [container],
        "volumes": [
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": size.shm_size}},
            cache_volume,
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    if image_pull_secret:
        pod_spec["imagePullSecrets"] = [{"name": image_pull_secret}]
    dep_spec: dict[str, Any] = {}
    if autoscale:
        # no `replicas`: KEDA's HPA owns the count, and every `kubectl apply` of a manifest that
        # holds one would scale the workers back to it (issue 20)
        notes.append(f"the worker Deployment has no `spec.replicas`: KEDA owns the count ({autoscale[0]}.."
                     f"{autoscale[1]}); a new Deployment starts with 1 until KEDA scales it")
        if replicas is not None:
            notes.append(f"`--replicas {replicas}` is ignored with `--autoscale`")
    else:
        dep_spec["replicas"] = 1 if replicas is None else replicas
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(name, namespace, worker_labels),
        "spec": {
            **dep_spec,
            # the default 600 s is shorter than the startup budget: a slow first load would be
            # reported as a failed rollout while the pod is still loading
            "progressDeadlineSeconds": startup_budget + ROLLOUT_MARGIN_S,
            "selector": {"matchLabels": worker_labels},
            # a new pod must be ready (minutes of loading) before an old one goes
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": pod_meta, "spec": pod_spec},
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
    worker_docs: list[dict[str, Any]] = [deployment, service, pdb]
    if network_policy:
        worker_docs.append(_worker_policy(name, namespace, worker_labels, port_name, gateway=gateway,
                                          monitoring_namespace=monitoring_namespace))
    if profile.metrics and monitor != "annotations":
        worker_docs.append(_monitor(monitor, name, namespace, worker_labels, port_name, monitor_labels or {}))
    files: dict[str, list[dict[str, Any]]] = {"worker.yaml": worker_docs}
    image_ref = choice.image

    if gateway:
        files["gateway.yaml"] = _gateway(name, namespace, worker_labels, spec.port, spec.api_key_env,
                                         api_key_secret, api_key_secret_key, gateway_image, notes,
                                         admin_secret=gateway_admin_secret, drain_s=math.ceil(profile.shutdown_timeout),
                                         gateway_digest=gateway_digest, image_pull_secret=image_pull_secret,
                                         network_policy=network_policy, monitoring_namespace=monitoring_namespace,
                                         monitor=monitor, monitor_labels=monitor_labels or {})
    if network_policy:
        notes.append("NetworkPolicies restrict ingress only (egress stays open: the model download); "
                     f"Prometheus must run in namespace `{monitoring_namespace}` (`--monitoring-namespace`) "
                     "or in this one; kubelet probes are not affected on common CNIs")
    if monitor != "annotations":
        notes.append(f"`--monitor {monitor}`: no `prometheus.io/*` annotations; kube-prometheus-stack's "
                     "Prometheus selects monitors labelled `release: <its Helm release>` unless told otherwise "
                     "(`--monitor-label release=NAME`)")
    if autoscale:
        assert prometheus_url is not None
        files["autoscale.yaml"] = [_scaled_object(profile, name, namespace, autoscale, prometheus_url,
                                                  target_queue, scale_down_window_s)]
        if not profile.metrics:
            notes.append("`--autoscale` reads SGLang's metrics, but `metrics` is off in this profile")
    return K8sResult(files=files, notes=notes, sizing=size, image=image_ref)


def _placement(profile: Profile, spec: ContainerSpec, node_selector: dict[str, str] | None,
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


def _spread(labels: dict[str, str]) -> dict[str, Any]:
    """Spread replicas over nodes when possible (never blocks scheduling)."""
    return {"maxSkew": 1, "topologyKey": SPREAD_KEY, "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": dict(labels)}}


def _from_namespace(namespace: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}


def _worker_policy(name: str, namespace: str, worker_labels: dict[str, str], port: str, *, gateway: bool,
                   monitoring_namespace: str) -> dict[str, Any]:
    """Workers take their port from the gateway pods (``gateway``) or this namespace's pods,
    and from Prometheus in ``monitoring_namespace`` (``/metrics`` is on the same port)."""
    clients: dict[str, Any] = ({"podSelector": {"matchLabels": _labels(name, "gateway")}} if gateway
                               else {"podSelector": {}})
    sources = [clients, _from_namespace(monitoring_namespace)]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": _meta(name, namespace, worker_labels),
            "spec": {"podSelector": {"matchLabels": dict(worker_labels)}, "policyTypes": ["Ingress"],
                     "ingress": [{"from": sources, "ports": [{"protocol": "TCP", "port": port}]}]}}


def _gateway_policy(gw: str, namespace: str, labels: dict[str, str], monitoring_namespace: str) -> dict[str, Any]:
    """The gateway takes 8000 from anywhere, its metrics port from this namespace and Prometheus's."""
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": _meta(gw, namespace, labels),
            "spec": {"podSelector": {"matchLabels": dict(labels)}, "policyTypes": ["Ingress"],
                     "ingress": [
                         {"ports": [{"protocol": "TCP", "port": "http"}]},
                         {"from": [{"podSelector": {}}, _from_namespace(monitoring_namespace)],
                          "ports": [{"protocol": "TCP", "port": "metrics"}]}]}}


def _monitor(kind: str, name: str, namespace: str, labels: dict[str, str], port: str,
             extra_labels: dict[str, str]) -> dict[str, Any]:
    """A Prometheus Operator PodMonitor or ServiceMonitor (monitoring.coreos.com/v1) for one
    component. Both give every series the ``namespace`` and ``pod`` labels that
    :func:`qembed.metrics.scope` matches."""
    endpoint = {"port": port, "path": "/metrics", "interval": SCRAPE_INTERVAL}
    meta = _meta(name, namespace, labels)
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
    labels = _labels(name, "worker")
    return [f"{k}={v}" for k, v in labels.items()]


def _gateway(name: str, namespace: str, worker_labels: dict[str, str], worker_port: int,
             api_key_env: str, api_key_secret: str | None, api_key_secret_key: str,
             gateway_image: str | None, notes: list[str], *, admin_secret: str,
             drain_s: int, gateway_digest: str | None = None, image_pull_secret: str | None = None,
             network_policy: bool = False, monitoring_namespace: str = "monitoring",
             monitor: str = "annotations", monitor_labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
    from qembed.serving.gateway import ADMIN_KEY_ID

    gw = f"{name}-gateway"
    labels = _labels(name, "gateway")
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
        "lifecycle": _prestop(),
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
        "securityContext": pod_security(), "topologySpreadConstraints": [_spread(labels)],
        "containers": [container], "volumes": [{"name": "tmp", "emptyDir": {}}]}
    if image_pull_secret:
        pod_spec["imagePullSecrets"] = [{"name": image_pull_secret}]
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(gw, namespace, labels)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": _meta(gw, namespace, labels),
         "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": _meta(gw, namespace, labels),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": gw},
         "subjects": [{"kind": "ServiceAccount", "name": gw, "namespace": namespace}]},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(gw, namespace, labels),
         "spec": {"replicas": GATEWAY_REPLICAS, "selector": {"matchLabels": labels},
                  "template": {"metadata": pod_meta, "spec": pod_spec}}},
        # the metrics port is on the Service too (a ServiceMonitor scrapes through it)
        {"apiVersion": "v1", "kind": "Service", "metadata": _meta(gw, namespace, labels),
         "spec": {"type": "ClusterIP", "selector": labels,
                  "ports": [{"name": "http", "port": GATEWAY_PORT, "targetPort": "http", "protocol": "TCP"},
                            {"name": "metrics", "port": GATEWAY_METRICS_PORT, "targetPort": "metrics",
                             "protocol": "TCP"}]}},
        # a node drain or upgrade never takes the last gateway pod
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": _meta(gw, namespace, labels),
         "spec": {"minAvailable": GATEWAY_REPLICAS - 1, "selector": {"matchLabels": labels}}},
    ]
    if network_policy:
        docs.append(_gateway_policy(gw, namespace, labels, monitoring_namespace))
    if monitor != "annotations":
        docs.append(_monitor(monitor, gw, namespace, labels, "metrics", monitor_labels or {}))
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


def _scaled_object(profile: Profile, name: str, namespace: str, autoscale: tuple[int, int],
                   prometheus_url: str, target_queue: int, window_s: int) -> dict[str, Any]:
    lo, hi = autoscale
    return {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": _meta(name, namespace, _labels(name, "worker")),
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
    "CPU_NODE_SELECTOR",
    "DEFAULT_TARGET_QUEUE",
    "GATEWAY_METRICS_PORT",
    "GATEWAY_PORT",
    "GATEWAY_REPLICAS",
    "GPU_PRODUCT_LABEL",
    "GPU_TOLERATION",
    "MONITOR_KINDS",
    "K8sResult",
    "Sizing",
    "check_digest",
    "check_k8s_name",
    "check_prometheus_url",
    "container_security",
    "gateway_selector",
    "load_query",
    "manifests",
    "parse_autoscale",
    "parse_node_selector",
    "parse_toleration",
    "pod_security",
    "render_yaml",
    "sizing",
]
