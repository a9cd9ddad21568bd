"""`qembed deploy docker|k8s|grafana|alerts`: deployment artefacts from a profile.

Thin layer: options -> one :mod:`qembed.fleet.deploy` call -> :mod:`qembed.output`. Notes (driver,
sizing, what was left out) go to stderr as warnings; the artefact goes to stdout, or into
files with `--output DIR` (existing files are refused unless `--force`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from qembed import env as qenv

if TYPE_CHECKING:
    from qembed.serving.profiles.model import Profile

deploy_app = typer.Typer(
    name="deploy",
    help="Generate Docker, Kubernetes, Grafana and alerting files from a profile.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

ProfileOpt = Annotated[
    str | None,
    typer.Option("--profile", "-p", envvar=qenv.PROFILE.name,
                 help="Profile of the nodes that will run it (required): a shipped name (l4, h100, xeon, ...) "
                      "or a YAML path; never `auto`, which reads this machine's GPU."),
]
ImageOpt = Annotated[str | None, typer.Option(
    "--image", help="SGLang image (default lmsysorg/sglang:v<pinned release>); required for a CPU profile (your CPU build).")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a profile key, e.g. `--set port=31000` (repeatable).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
OutputOpt = Annotated[str | None, typer.Option("--output", "-o", help="Write the file(s) into this folder instead of stdout.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite existing files in `--output`.")]

DOCKER_EXAMPLES = """\
Examples:

\b
  qembed deploy docker -p h100                       # a `docker run` line
  qembed deploy docker -p xeon --image REG/sglang-cpu:TAG  # on CPU
  qembed deploy docker -p l4 --compose -o ./deploy   # ./deploy/compose.yaml
  QEMBED_API_KEY=secret HF_TOKEN=hf_... \\
      sh -c "$(qembed deploy docker -p h100)"   # run it, keys from the env
"""

K8S_EXAMPLES = """\
Examples:

\b
  qembed deploy k8s -p h100 | kubectl apply -f -
  qembed deploy k8s -p h100 --replicas 2 --gateway -o ./k8s
  qembed deploy k8s -p h100 --gateway --autoscale 1:4 --namespace ml \\
      --prometheus-url http://prometheus-operated.monitoring.svc:9090 -o ./k8s
  kubectl create secret generic qembed-api-key \\
      --from-literal=api-key="$QEMBED_API_KEY"
"""


def _profile(name: str | None, set_: list[str] | None) -> Profile:
    from qembed.fleet.deploy import deploy_profile

    return deploy_profile(name, set_)


def _notes(notes: list[str]) -> None:
    from qembed import output

    for n in notes:
        output.status(f"note: {n}")


def _emit(files: dict[str, str], output_dir: str | None, force: bool) -> None:
    from qembed import output
    from qembed.fleet.deploy import write_files

    if output_dir is None:
        output.data("".join(files.values()) if len(files) == 1 else "---\n".join(files.values()))
        return
    for path in write_files(files, output_dir, force=force):
        output.status(f"wrote {path}")


@deploy_app.command("docker", epilog=DOCKER_EXAMPLES)
def docker_cmd(
    profile: ProfileOpt = None,
    set_: SetOpt = None,
    compose: Annotated[bool, typer.Option("--compose", help="Write a compose file instead of a `docker run` line.")] = False,
    bind: Annotated[str, typer.Option("--bind", help="Host address the port is published on.")] = "127.0.0.1",
    host_port: Annotated[int | None, typer.Option("--host-port", help="Host port (default: the profile's port).")] = None,
    hf_cache: Annotated[str, typer.Option("--hf-cache", help="Host folder mounted as the Hugging Face cache.")] = "$HOME/.cache/huggingface",
    shm_size: Annotated[str | None, typer.Option("--shm-size", help="Use `--shm-size SIZE` (e.g. 16g) instead of `--ipc=host`.")] = None,
    name: Annotated[str, typer.Option("--name", help="Container (and compose service) name.")] = "qembed",
    no_api_key: Annotated[bool, typer.Option("--no-api-key", help="Do not pass the API key variable into the container.")] = False,
    image: ImageOpt = None,
    output_dir: OutputOpt = None,
    force: ForceOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Print a `docker run` line (or a compose file) running the same SGLang argv as `qembed serve`."""
    from qembed import output
    from qembed.fleet.deploy import docker

    prof = _profile(profile, set_)
    plan = docker.plan_container(prof, image=image, bind=bind, host_port=host_port,
                       hf_cache=hf_cache, shm_size=shm_size, name=name, api_key=not no_api_key)
    if json_:
        output.print_json(plan.to_json())
        return
    # the notes are `#` comments at the top of the run line / compose file
    if compose:
        _emit({"compose.yaml": docker.compose(plan)}, output_dir, force)
    else:
        _emit({"docker-run.sh": docker.run_line(plan)}, output_dir, force)


@deploy_app.command("k8s", epilog=K8S_EXAMPLES)
def k8s_cmd(
    profile: ProfileOpt = None,
    set_: SetOpt = None,
    replicas: Annotated[int | None, typer.Option("--replicas", help="Worker replicas (default 1; KEDA owns the count with --autoscale).")] = None,
    gateway: Annotated[bool, typer.Option("--gateway", help="Add the smg gateway, discovering workers by label.")] = False,
    autoscale: Annotated[str | None, typer.Option("--autoscale", metavar="MIN:MAX", help="Add a KEDA ScaledObject scaling the workers between MIN and MAX.")] = None,
    name: Annotated[str, typer.Option("--name", help="Name of the Deployment/Service and the instance label.")] = "qembed",
    namespace: Annotated[str, typer.Option("--namespace", help="Namespace of every object.")] = "default",
    api_key_secret: Annotated[str, typer.Option("--api-key-secret", help="Secret holding the API key (key `api-key`).")] = "qembed-api-key",
    no_api_key: Annotated[bool, typer.Option("--no-api-key", help="Run without an API key (no Secret reference).")] = False,
    hf_token_secret: Annotated[str, typer.Option("--hf-token-secret", help="Optional Secret with key `token` for HF_TOKEN.")] = "hf-token",
    hf_cache_pvc: Annotated[str | None, typer.Option("--hf-cache-pvc", help="PersistentVolumeClaim for the Hugging Face cache.")] = None,
    prometheus_url: Annotated[str | None, typer.Option("--prometheus-url", help="Prometheus that KEDA queries (required with --autoscale), e.g. http://prometheus-operated.monitoring.svc:9090.")] = None,
    target_queue: Annotated[int, typer.Option("--target-queue", metavar="TEXTS", help="Texts waiting in SGLang's queue per replica that KEDA aims for (default: two client batches of 128).")] = 256,
    target_load: Annotated[int | None, typer.Option("--target-load", hidden=True, help="Deprecated: the old name of --target-queue.")] = None,
    scale_down_window: Annotated[int, typer.Option("--scale-down-window", help="Seconds of low load before a replica is removed.")] = 900,
    gateway_image: Annotated[str | None, typer.Option("--gateway-image", help="smg image (default lightseekorg/smg:<pinned smg release>).")] = None,
    gateway_digest: Annotated[str | None, typer.Option("--gateway-digest", metavar="sha256:HEX", help="Pin the smg image by digest (image:tag@sha256:...).")] = None,
    gateway_admin_secret: Annotated[str, typer.Option("--gateway-admin-secret", help="Secret (key `admin-key`) with the gateway's control-plane key; never the client key.")] = "qembed-gateway-admin-key",
    image: ImageOpt = None,
    image_pull_secret: Annotated[str | None, typer.Option("--image-pull-secret", metavar="NAME", help="imagePullSecrets entry on worker and gateway pods (a private registry).")] = None,
    node_selector: Annotated[list[str] | None, typer.Option("--node-selector", metavar="KEY=VALUE", help="Node label the workers need (repeatable); replaces the profile's GPU product affinity (or the CPU selector).")] = None,
    toleration: Annotated[list[str] | None, typer.Option("--toleration", metavar="KEY[=VALUE][:EFFECT]", help="Extra toleration for the workers (repeatable), e.g. sku=gpu:NoSchedule.")] = None,
    network_policy: Annotated[bool, typer.Option("--network-policy", help="Add NetworkPolicies: workers only from the gateway (or the namespace) and Prometheus.")] = False,
    monitoring_namespace: Annotated[str, typer.Option("--monitoring-namespace", help="Namespace Prometheus runs in (NetworkPolicy scrape rule).")] = "monitoring",
    monitor: Annotated[str, typer.Option("--monitor", metavar="annotations|podmonitor|servicemonitor", help="How Prometheus finds the pods: prometheus.io annotations, or Prometheus Operator objects.")] = "annotations",
    monitor_label: Annotated[list[str] | None, typer.Option("--monitor-label", metavar="KEY=VALUE", help="Label on the PodMonitor/ServiceMonitor objects (repeatable), e.g. release=kube-prometheus-stack.")] = None,
    output_dir: OutputOpt = None,
    force: ForceOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Kubernetes manifests: worker Deployment/Service/PDB, optional gateway and KEDA autoscaling."""
    from qembed import output
    from qembed.fleet.deploy import k8s

    prof = _profile(profile, set_)
    scale = k8s.parse_autoscale(autoscale) if autoscale else None
    result = k8s.manifests(
        prof, name=name, namespace=namespace, replicas=replicas,
        gateway=gateway, autoscale=scale, api_key_secret=None if no_api_key else api_key_secret,
        hf_token_secret=hf_token_secret or None, hf_cache_pvc=hf_cache_pvc, prometheus_url=prometheus_url,
        target_queue=target_queue if target_load is None else target_load,
        scale_down_window_s=scale_down_window, gateway_image=gateway_image,
        gateway_admin_secret=gateway_admin_secret, gateway_digest=gateway_digest, image=image,
        image_pull_secret=image_pull_secret, node_selector=k8s.parse_node_selector(node_selector or []) or None,
        tolerations=[k8s.parse_toleration(t) for t in toleration or []], network_policy=network_policy,
        monitoring_namespace=monitoring_namespace, monitor=monitor,
        monitor_labels=k8s.parse_node_selector(monitor_label or [], "--monitor-label"),
    )
    if target_load is not None:
        # the old flag counted queued + running requests; its value now sets the queue target
        result.notes.insert(0, "`--target-load` is deprecated: it is now `--target-queue` (texts waiting per replica)")
    if json_:
        output.print_json(result.to_json())
        return
    _notes(result.notes)
    if not no_api_key:
        output.status(f"the pods need the Secret `{api_key_secret}`: kubectl -n {namespace} create secret "
                      f'generic {api_key_secret} --from-literal=api-key="${prof.api_key_env}"')
    if gateway:
        output.status(f"the gateway needs its own control-plane key, `{gateway_admin_secret}`: kubectl -n "
                      f"{namespace} create secret generic {gateway_admin_secret} "
                      '--from-literal=admin-key="$(openssl rand -hex 32)"')
    _emit({fname: k8s.render_yaml(docs) for fname, docs in result.files.items()}, output_dir, force)


GRAFANA_EXAMPLES = """\
Examples:

\b
  qembed deploy grafana -o ./mon                # with GPU (DCGM) panels
  qembed deploy grafana --name emb -p xeon -o ./mon   # CPU: no DCGM panels
"""

ALERTS_EXAMPLES = """\
Examples:

\b
  qembed deploy alerts --namespace ml --p99-slo 0.5 -o ./mon
  # then check them with Prometheus's own tool:
  promtool check rules ./mon/qembed-alerts.yaml
"""

NameOpt = Annotated[str, typer.Option("--name", help="The worker Deployment (`qembed deploy k8s --name`); its gateway is NAME-gateway.")]


@deploy_app.command("grafana", epilog=GRAFANA_EXAMPLES)
def grafana_cmd(
    title: Annotated[str | None, typer.Option("--title", help="Dashboard title.")] = None,
    name: NameOpt = "qembed",
    profile: Annotated[str | None, typer.Option("--profile", "-p", help="A profile with `device: cpu` leaves out the GPU (DCGM) panels.")] = None,
    no_gpu: Annotated[bool, typer.Option("--no-gpu", help="Leave out the GPU (DCGM) panels.")] = False,
    output_dir: OutputOpt = None,
    force: ForceOpt = False,
) -> None:
    """Write a Grafana dashboard (JSON) for one Deployment: texts/s, latency, queue, gateway, replicas, GPUs."""
    from qembed.fleet.deploy import grafana

    gpu = not no_gpu and (profile is None or _profile(profile, None).device != "cpu")
    _emit({"qembed-dashboard.json": grafana.render_dashboard(title, name=name, gpu=gpu)}, output_dir, force)


@deploy_app.command("alerts", epilog=ALERTS_EXAMPLES)
def alerts_cmd(
    namespace: Annotated[str, typer.Option("--namespace", help="Namespace of the Deployment (`qembed deploy k8s --namespace`).")] = "default",
    name: NameOpt = "qembed",
    p99_slo: Annotated[float, typer.Option("--p99-slo", help="p99 latency SLO in seconds.")] = 1.0,
    error_rate: Annotated[float, typer.Option("--error-rate", help="Alert above this share of 5xx responses on /v1/embeddings (workers, gateway).")] = 0.05,
    queue_threshold: Annotated[float | None, typer.Option("--queue-threshold", help="Queued texts per replica that count as a full queue (default: the KEDA target of `deploy k8s --autoscale`).")] = None,
    queue_minutes: Annotated[int, typer.Option("--queue-minutes", help="Minutes the queue must stay full before it alerts.")] = 10,
    gpu_memory: Annotated[float, typer.Option("--gpu-memory", help="Alert above this fraction of GPU memory used (DCGM).")] = 0.97,
    runbook_base: Annotated[str | None, typer.Option("--runbook-base", help="URL of docs/deploy.md (default: qembed's on GitHub); each alert links to its #section there.")] = None,
    output_dir: OutputOpt = None,
    force: ForceOpt = False,
) -> None:
    """Write Prometheus alerting rules scoped to one Deployment, each with a runbook link."""
    from qembed.fleet.deploy import alerts

    defaults = alerts.AlertSettings()
    settings = alerts.AlertSettings(
        namespace=namespace, name=name, p99_slo_s=p99_slo, error_rate=error_rate,
        queue_threshold=defaults.queue_threshold if queue_threshold is None else queue_threshold,
        queue_minutes=queue_minutes, gpu_memory_fraction=gpu_memory, runbook_base=runbook_base or defaults.runbook_base)
    _emit({"qembed-alerts.yaml": alerts.render_rules(settings)}, output_dir, force)
