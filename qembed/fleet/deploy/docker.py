"""``qembed deploy docker``: a ``docker run`` line or a compose file for one profile.

The container runs the argv :func:`qembed.fleet.deploy.container_spec` builds (the same code path as
``qembed serve``) in the official ``lmsysorg/sglang:v<PINNED_SGLANG>`` image (never the SGLang
installed where this runs), which has no ENTRYPOINT, or in ``--image``. The API key and
``HF_TOKEN`` are passed by name from the caller's environment (``-e NAME``), so no secret is
ever written into the output; the key reaches SGLang through the keyed entry
(:func:`qembed.serving.sglang_args.keyed_argv`), which fails closed. The port is published on
``127.0.0.1`` unless told otherwise. ``device: cpu`` profiles need ``--image`` (a CPU build) and
get no GPU request.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qembed.fleet.deploy import (
    CONTAINER_HF_CACHE,
    ContainerSpec,
    NoAliasDumper,
    planned_container,
    stop_timeout,
)
from qembed.serving.policy import exposure
from qembed.serving.sglang_args import keyed_argv

if TYPE_CHECKING:
    from qembed.serving.profiles.model import Profile

#: Health probe: SGLang's /health runs a 1-token forward after a 1 s sleep and waits up to
#: 20 s for the scheduler (reference section 2.2), so the probe timeout is 25 s. python3 is
#: in the image (curl may not be), so the probe uses it.
HEALTH_TIMEOUT_S = 25
HEALTH_INTERVAL_S = 30
HEALTH_RETRIES = 3


def health_probe(port: int) -> list[str]:
    """Exec-form probe: ``urlopen`` raises (exit 1) on a refused connection or a non-2xx status."""
    code = f'import urllib.request as u; u.urlopen("http://127.0.0.1:{port}/health", timeout={HEALTH_TIMEOUT_S - 1})'
    return ["python3", "-c", code]


def health_shell(port: int) -> str:
    """The same probe as one shell string (``docker run --health-cmd`` runs it with ``sh -c``)."""
    _, flag, code = health_probe(port)
    return f'python3 {flag} "' + code.replace('"', '\\"') + '"'


@dataclass(frozen=True)
class DockerPlan:
    """Everything one ``docker run`` needs, from which the run line and compose file are drawn."""

    image: str
    sglang_version: str
    command: list[str]
    env: dict[str, str]  # written out
    pass_env: list[str]  # passed by name from the caller's environment (secrets)
    publish: str  # host_ip:host_port:container_port
    gpus: str | None  # `N`, or `"device=0,1"`; None for `device: cpu`
    gpu_count: int
    gpu_ids: list[int] | None
    shm_size: str | None  # None -> --ipc=host
    volumes: list[str]
    start_period_s: int
    port: int
    stop_timeout_s: int
    name: str
    notes: list[str] = field(default_factory=list)
    spec: ContainerSpec | None = None

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "sglang_version": self.sglang_version, "command": self.command,
                "env": self.env, "pass_env": self.pass_env, "publish": self.publish, "gpus": self.gpus,
                "shm_size": self.shm_size, "ipc": None if self.shm_size else "host",
                "volumes": self.volumes, "healthcheck": {
                    "test": health_probe(self.port), "interval_s": HEALTH_INTERVAL_S,
                    "timeout_s": HEALTH_TIMEOUT_S, "retries": HEALTH_RETRIES,
                    "start_period_s": self.start_period_s},
                "stop_timeout_s": self.stop_timeout_s, "name": self.name, "notes": self.notes}


def plan_container(
    profile: Profile,
    *,
    image: str | None = None,
    bind: str = "127.0.0.1",
    host_port: int | None = None,
    hf_cache: str = "$HOME/.cache/huggingface",
    shm_size: str | None = None,
    name: str = "qembed",
    api_key: bool = True,
) -> DockerPlan:
    """Plan the container for ``profile``.

    Args:
        profile: the resolved profile (its argv comes from :func:`qembed.serving.sglang_args.build_flags`).
        image: the image (``--image``: a private registry, or a CPU build for ``device: cpu``);
            default ``lmsysorg/sglang:v<PINNED_SGLANG>``.
        bind: host address the port is published on (``127.0.0.1`` keeps it local).
        host_port: host port (default: the profile's port).
        hf_cache: host folder mounted as the Hugging Face cache.
        shm_size: e.g. ``16g`` for ``--shm-size``; ``None`` uses ``--ipc=host``.
        name: container name.
        api_key: pass the profile's ``api_key_env`` into the container and add ``--api-key``.
    """
    spec, choice, notes = planned_container(profile, image=image)
    # the key: from the environment, fail closed, redacted from SGLang's log (sglang_args.keyed_argv)
    command = keyed_argv(spec.argv, spec.api_key_env) if api_key else list(spec.argv)
    pass_env = ["HF_TOKEN", *spec.secret_env] + ([spec.api_key_env] if api_key else [])
    gpus: str | None
    if not spec.gpus:
        gpus = None  # SGLang on CPU: no GPU request
    elif spec.gpu_ids:
        gpus = '"device=' + ",".join(str(i) for i in spec.gpu_ids) + '"'
    else:
        gpus = str(spec.gpus)  # `--gpus N` asks for N GPUs
    volumes = [f"{hf_cache}:{CONTAINER_HF_CACHE}"]
    if profile.model.startswith("/"):
        volumes.append(f"{profile.model}:{profile.model}:ro")
    elif profile.model.startswith((".", "~")):
        notes.append(f"`model: {profile.model}` is a relative path: use an absolute path so it can be "
                     "mounted into the container at the same place")
    if spec.cpu is not None:
        notes.append(f"SGLang on CPU in `{choice.image}`: the KV pool is sized for a {spec.cpu.memory_gib} GiB "
                     "container; run it where it gets that much memory")
    exposed = exposure(bind, keyed=api_key, level="warn", listener="container")
    if exposed is not None:
        notes.append(exposed.message)
    return DockerPlan(
        image=choice.image, sglang_version=choice.sglang_version, command=command, env=dict(spec.env),
        pass_env=list(dict.fromkeys(pass_env)), publish=f"{bind}:{host_port or spec.port}:{spec.port}",
        gpus=gpus, gpu_count=spec.gpus, gpu_ids=spec.gpu_ids, shm_size=shm_size, volumes=volumes,
        start_period_s=int(profile.ready_timeout), port=spec.port, stop_timeout_s=stop_timeout(profile), name=name, notes=notes, spec=spec,
    )


def _q(arg: str) -> str:
    # $HOME in the cache path must expand in the user's shell; everything else is quoted.
    if arg.startswith("$HOME/") and ":" in arg:
        head, _, tail = arg.partition(":")
        return f'"{head}":{shlex.quote(tail)}'
    return shlex.quote(arg)


def run_line(p: DockerPlan) -> str:
    """The ``docker run`` command, one option per line, with the notes as ``#`` comments."""
    opts: list[list[str]] = [["--name", p.name]]
    if p.gpus is not None:
        opts.append(["--gpus", p.gpus])
    opts.append(["--shm-size", p.shm_size] if p.shm_size else ["--ipc=host"])
    opts.append(["-p", p.publish])
    # Docker's default is 10 s, then SIGKILL: shorter than SGLang's drain (issue 20)
    opts.append([f"--stop-timeout={p.stop_timeout_s}"])
    for v in p.volumes:
        opts.append(["-v", v])
    for k, v in p.env.items():
        opts.append(["-e", f"{k}={v}"])
    for k in p.pass_env:
        opts.append(["-e", k])
    opts += [
        ["--health-cmd", health_shell(p.port)],
        [f"--health-interval={HEALTH_INTERVAL_S}s"], [f"--health-timeout={HEALTH_TIMEOUT_S}s"],
        [f"--health-retries={HEALTH_RETRIES}"], [f"--health-start-period={p.start_period_s}s"],
    ]
    lines = [f"# {n}" for n in p.notes]
    body = ["docker run -d"] + ["  " + " ".join(_q(a) for a in o) for o in opts]
    body.append("  " + _q(p.image))
    body.append("  " + " ".join(_q(a) for a in p.command))
    lines.append(" \\\n".join(body))
    return "\n".join(lines) + "\n"


def _compose_escape(arg: str) -> str:
    # compose interpolates `$VAR` from the caller's environment when it reads the file; a `$`
    # in the command must reach the container untouched
    return arg.replace("$", "$$")


def compose(p: DockerPlan) -> str:
    """A ``compose.yaml`` with one service (notes as ``#`` comments at the top)."""
    import yaml

    device: dict[str, Any] = {"driver": "nvidia", "capabilities": ["gpu"]}
    if p.gpu_ids:
        device["device_ids"] = [str(i) for i in p.gpu_ids]
    else:
        device["count"] = p.gpu_count
    host_ip, host_port, cport = p.publish.rsplit(":", 2)
    service: dict[str, Any] = {
        "image": p.image,
        "container_name": p.name,
        "command": [_compose_escape(a) for a in p.command],
        "ports": [f"{host_ip}:{host_port}:{cport}"],
        "volumes": [v.replace("$HOME", "${HOME}") for v in p.volumes],
        # a bare name in `environment` takes the value from the caller's environment
        "environment": [f"{k}={v}" for k, v in p.env.items()] + list(p.pass_env),
        "healthcheck": {
            "test": ["CMD", *health_probe(p.port)], "interval": f"{HEALTH_INTERVAL_S}s",
            "timeout": f"{HEALTH_TIMEOUT_S}s", "retries": HEALTH_RETRIES,
            "start_period": f"{p.start_period_s}s",
        },
        "restart": "unless-stopped",
        "stop_grace_period": f"{p.stop_timeout_s}s",
    }
    if p.gpus is not None:
        service["deploy"] = {"resources": {"reservations": {"devices": [device]}}}
    if p.shm_size:
        service["shm_size"] = p.shm_size
    else:
        service["ipc"] = "host"
    head = "".join(f"# {n}\n" for n in p.notes)
    return head + yaml.dump({"services": {p.name: service}}, Dumper=NoAliasDumper, sort_keys=False, width=1000)


__all__ = ["DockerPlan", "compose", "health_probe", "health_shell", "plan_container", "run_line"]
