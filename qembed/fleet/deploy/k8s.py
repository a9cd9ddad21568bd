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
from qembed.errors import ConfigError
from qembed.fleet.deploy import (
    PRESTOP_S,
    ContainerSpec,
    planned_container,
    stop_timeout,
)
from qembed.fleet.deploy.k8s_objects import (
    TMP_DIR,
    container_security,
    gateway_objects,
    http_probe,
    k8s_escape,
    monitor_object,
    object_labels,
    object_meta,
    pod_placement,
    pod_security,
    pod_spread,
    prestop_hook,
    scaled_object,
    worker_policy,
    writable_env,
)
from qembed.models import GiB
from qembed.serving.sglang_args import keyed_argv

if TYPE_CHECKING:
    from qembed.serving.profiles.model import Profile

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
#: Host memory per GPU process on top of the weights (Python, torch, CUDA context, tokenizer).
#: An estimate, not a measurement.
PROCESS_OVERHEAD_BYTES = 6 * GiB
#: Shared memory per GPU (NCCL and the scheduler's IPC). An estimate.
SHM_PER_GPU_GIB = 4
#: When the model's shape is unknown (a custom model), this is the memory request.
FALLBACK_MEMORY_GIB = 16

#: The root filesystem is read-only; SGLang, torch, triton and flashinfer write their caches under
#: ``$HOME`` and ``/tmp`` (an emptyDir each way: ``HOME`` points into ``/tmp``), and the HF cache
#: moves out of ``/root`` (mode 700 in the image, so a non-root UID could not reach a mount there).
K8S_HF_CACHE = "/cache/huggingface"


# -- autoscaling (issue 20) -------------------------------------------------------------------
#: KEDA's threshold: texts waiting in SGLang's queue per replica. SGLang counts each text of a
#: batch as one request (`num_queue_reqs`), and qembed's client sends batches of
#: `client.DEFAULT_BATCH_SIZE` (128) texts: two whole batches waiting per replica.
TARGET_QUEUE_BATCHES = 2
#: KEDA falls back after this many failed queries (x `pollingInterval` 15 s = 45 s)
DEFAULT_TARGET_QUEUE = TARGET_QUEUE_BATCHES * DEFAULT_BATCH_SIZE
PROMETHEUS_HINT = ("pass the Prometheus KEDA can reach, e.g. kube-prometheus-stack: "
                   "`--prometheus-url http://prometheus-operated.<namespace>.svc:9090`; the prometheus-community "
                   "chart: `--prometheus-url http://prometheus-server.<namespace>.svc` (its Service listens on 80)")

# -- observability (issue 20) -----------------------------------------------------------------
#: `annotations`: `prometheus.io/*` on the pods (the community chart's `kubernetes-pods` job);
#: `podmonitor` / `servicemonitor`: Prometheus Operator objects (monitoring.coreos.com/v1).
MONITOR_KINDS = ("annotations", "podmonitor", "servicemonitor")

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


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
    _check_options(name, namespace, monitoring_namespace, image_pull_secret, replicas=replicas,
                   target_queue=target_queue, scale_down_window_s=scale_down_window_s, monitor=monitor)
    if autoscale:
        prometheus_url = check_prometheus_url(prometheus_url)
    spec, choice, notes = planned_container(profile, image=image)
    size = sizing(profile, spec)
    notes.append(f"memory request: {size.basis}")
    if spec.gpu_ids:
        notes.append("`gpu_ids` does not apply in Kubernetes: the scheduler picks the GPUs "
                     f"(`nvidia.com/gpu: {spec.gpus}`)")
    placement = pod_placement(profile, spec, node_selector, tolerations or [], notes)
    worker_labels = object_labels(name, "worker")
    port_name = "http"

    env = _worker_env(spec, api_key_secret, api_key_secret_key, hf_token_secret, notes)
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
    container = _worker_container(spec, choice.image, bool(api_key_secret), env,
                                  size, port_name, startup_budget)
    pod_meta: dict[str, Any] = {"labels": worker_labels}
    if annotations:
        pod_meta["annotations"] = annotations
    pod_spec = _worker_pod_spec(profile, container, placement, worker_labels, size, cache_volume, image_pull_secret)
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
        "metadata": object_meta(name, namespace, worker_labels),
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
    worker_docs: list[dict[str, Any]] = [deployment, *_worker_service_and_pdb(name, namespace, worker_labels,
                                                                               port_name, spec.port)]
    if network_policy:
        worker_docs.append(worker_policy(name, namespace, worker_labels, port_name, gateway=gateway,
                                         monitoring_namespace=monitoring_namespace))
    if profile.metrics and monitor != "annotations":
        worker_docs.append(monitor_object(monitor, name, namespace, worker_labels, port_name, monitor_labels or {}))
    files: dict[str, list[dict[str, Any]]] = {"worker.yaml": worker_docs}
    image_ref = choice.image

    if gateway:
        files["gateway.yaml"] = gateway_objects(name, namespace, worker_labels, spec.port, spec.api_key_env,
                                                api_key_secret, api_key_secret_key, gateway_image, notes,
                                                admin_secret=gateway_admin_secret,
                                                drain_s=math.ceil(profile.shutdown_timeout),
                                                gateway_digest=gateway_digest, image_pull_secret=image_pull_secret,
                                                network_policy=network_policy,
                                                monitoring_namespace=monitoring_namespace,
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
        files["autoscale.yaml"] = [scaled_object(profile, name, namespace, autoscale, prometheus_url,
                                                 target_queue, scale_down_window_s)]
        if not profile.metrics:
            notes.append("`--autoscale` reads SGLang's metrics, but `metrics` is off in this profile")
    return K8sResult(files=files, notes=notes, sizing=size, image=image_ref)


def _check_options(name: str, namespace: str, monitoring_namespace: str, image_pull_secret: str | None, *,
                   replicas: int | None, target_queue: int, scale_down_window_s: int, monitor: str) -> None:
    """Refuse a bad name, replica count, queue target, scale-down window or monitor kind."""
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


def _worker_env(spec: ContainerSpec, api_key_secret: str | None, api_key_secret_key: str,
                hf_token_secret: str | None, notes: list[str]) -> list[dict[str, Any]]:
    """The worker container's environment: the profile's, the writable dirs, the HF cache and
    token, and the API key from its Secret."""
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in spec.env.items()]
    env += [e for e in writable_env() if e["name"] not in spec.env]
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
    return env


def _worker_container(spec: ContainerSpec, image: str, keyed: bool, env: list[dict[str, Any]], size: Sizing,
                      port_name: str, startup_budget: int) -> dict[str, Any]:
    """The SGLang container: its command (the key read from the environment when ``keyed``),
    resources, mounts and probes."""
    argv = keyed_argv(spec.argv, spec.api_key_env) if keyed else spec.argv
    requests: dict[str, str] = {"cpu": size.cpu_request, "memory": size.memory_request}
    limits: dict[str, str] = {"memory": size.memory_limit}
    if size.gpus:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(size.gpus)
    return {
        "name": "sglang",
        "image": image,
        "command": [k8s_escape(a) for a in argv],
        "ports": [{"name": port_name, "containerPort": spec.port, "protocol": "TCP"}],
        "env": env,
        "resources": {"requests": requests, "limits": limits},
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"},
                         {"name": "hf-cache", "mountPath": K8S_HF_CACHE},
                         {"name": "tmp", "mountPath": TMP_DIR}],
        "securityContext": container_security(),
        # cheap /ready gates traffic; /health (a real 1-token forward) decides liveness
        "startupProbe": http_probe("/ready", port_name, period=STARTUP_PERIOD_S, timeout=READY_TIMEOUT_S,
                                   failures=math.ceil(startup_budget / STARTUP_PERIOD_S)),
        "readinessProbe": http_probe("/ready", port_name, period=STARTUP_PERIOD_S, failures=3,
                                     timeout=READY_TIMEOUT_S),
        "livenessProbe": http_probe("/health", port_name, period=PROBE_PERIOD_S, failures=5),
        "lifecycle": prestop_hook(),
    }


def _worker_pod_spec(profile: Profile, container: dict[str, Any], placement: dict[str, Any],
                     worker_labels: dict[str, str], size: Sizing, cache_volume: dict[str, Any],
                     image_pull_secret: str | None) -> dict[str, Any]:
    """The worker pod: grace period, security, placement and spread, the container, its volumes."""
    pod_spec: dict[str, Any] = {
        # preStop sleep, then SIGTERM: SGLang drains for up to shutdown_timeout
        "terminationGracePeriodSeconds": PRESTOP_S + stop_timeout(profile),
        # workers never call the Kubernetes API
        "automountServiceAccountToken": False,
        "securityContext": pod_security(),
        **placement,
        "topologySpreadConstraints": [pod_spread(worker_labels)],
        "containers": [container],
        "volumes": [
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": size.shm_size}},
            cache_volume,
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    if image_pull_secret:
        pod_spec["imagePullSecrets"] = [{"name": image_pull_secret}]
    return pod_spec


def _worker_service_and_pdb(name: str, namespace: str, worker_labels: dict[str, str], port_name: str,
                            port: int) -> list[dict[str, Any]]:
    """The workers' ClusterIP Service and their PodDisruptionBudget."""
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": object_meta(name, namespace, worker_labels),
        "spec": {"type": "ClusterIP", "selector": worker_labels,
                 "ports": [{"name": port_name, "port": port, "targetPort": port_name, "protocol": "TCP"}]},
    }
    pdb = {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": object_meta(name, namespace, worker_labels),
        # maxUnavailable (not minAvailable): with one replica a node drain can still proceed
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": worker_labels}},
    }
    return [service, pdb]


__all__ = [
    "DEFAULT_TARGET_QUEUE",
    "MONITOR_KINDS",
    "K8sResult",
    "Sizing",
    "check_k8s_name",
    "check_prometheus_url",
    "manifests",
    "parse_autoscale",
    "parse_node_selector",
    "parse_toleration",
    "render_yaml",
    "sizing",
]
