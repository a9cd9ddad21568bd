"""Deployment artefacts generated from a qembed profile: Docker, Kubernetes, Grafana, alerts.

Everything here is built from the same :mod:`qembed.serving.sglang_args` code path that ``qembed
serve`` uses, so a container runs exactly the SGLang argv a workstation runs. One module per
target (:mod:`.docker`, :mod:`.k8s`, :mod:`.grafana`, :mod:`.alerts`); metric names live in
:mod:`.metrics` only. This package never prints; the CLI (``qembed deploy``) renders.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from qembed.errors import ConfigError
from qembed.redact import is_secret_name

if TYPE_CHECKING:
    from qembed.serving.profiles.model import Profile

#: The SGLang release qembed is built and tested against (reference ``sglang-0.5.23.md``).
PINNED_SGLANG = "0.5.23"
#: Official image, no ENTRYPOINT (reference section 1.1b): the command is always explicit.
SGLANG_IMAGE = "lmsysorg/sglang"
#: Interpreter inside the official image.
CONTAINER_PYTHON = "python3"
#: Where the official image's root user keeps the Hugging Face cache.
CONTAINER_HF_CACHE = "/root/.cache/huggingface"
#: Shutdown (issue 20). After SIGTERM SGLang drains in-flight requests with no limit of its own;
#: the profile's ``shutdown_timeout`` is the drain qembed allows (``qembed stop`` waits as long).
#: The runtime's kill must come later than that, by this margin (process exit, log flush).
SHUTDOWN_MARGIN_S = 10
#: Kubernetes only: a preStop sleep, so that endpoints and the gateway drop the pod before
#: SIGTERM (endpoint removal propagates asynchronously to kube-proxy and smg's pod watch).
PRESTOP_S = 10


def stop_timeout(profile: Profile) -> int:
    """Seconds a runtime must wait after SIGTERM before SIGKILL: the drain plus a margin."""
    import math

    return math.ceil(profile.shutdown_timeout) + SHUTDOWN_MARGIN_S


@dataclass(frozen=True)
class ImageChoice:
    """The SGLang image a container runs, and the SGLang release it is taken to hold."""

    image: str
    sglang_version: str
    official: bool = True  # the official `lmsysorg/sglang` image (not `--image`)


def sglang_image(image: str | None = None) -> ImageChoice:
    """``lmsysorg/sglang:v<PINNED_SGLANG>``, or ``image`` (``--image``: a private registry, a CPU build).

    The tag never comes from the SGLang installed where the artefact is generated (issue 20: what
    ``deploy`` writes must not depend on that machine); the argv is built and tested for the
    pinned release.

    Raises:
        ConfigError: ``image`` is empty or holds whitespace.
    """
    if image is None:
        return ImageChoice(f"{SGLANG_IMAGE}:v{PINNED_SGLANG}", PINNED_SGLANG)
    if not image.strip() or any(c.isspace() for c in image):
        raise ConfigError(f"`--image {image!r}` is not an image reference",
                          hint="e.g. `--image registry.example.com/ml/sglang:v0.5.23-cpu`")
    return ImageChoice(image, PINNED_SGLANG, official=False)


def driver_note(choice: ImageChoice) -> str | None:
    """The host driver the official image needs, in words (CUDA 13 builds need R580+)."""
    from qembed.serving.gpu import LAST_CUDA12_SGLANG, MIN_DRIVER_CUDA13, sglang_cuda_major

    sglang_version = choice.sglang_version
    if choice.official and sglang_cuda_major(sglang_version) == 13:
        return (f"sglang {sglang_version} is a CUDA 13 build: the host needs an NVIDIA driver "
                f"R{MIN_DRIVER_CUDA13} or newer (the last CUDA 12 image is "
                f"{SGLANG_IMAGE}:v{LAST_CUDA12_SGLANG}-cu129)")
    return None


@dataclass(frozen=True)
class ContainerSpec:
    """What runs inside one container: the SGLang argv, plain env, env passed by name."""

    argv: list[str]  # python3 -c "from sglang.cli.main import main; main()" serve ... flags
    env: dict[str, str]  # non-secret values (NO_PROXY, the profile's plain env)
    secret_env: list[str]  # names whose values must come from the environment / a Secret
    api_key_env: str  # the variable the key is read from (the profile's `api_key_env`)
    port: int
    gpus: int  # tp_size x dp_size; 0 for `device: cpu`
    gpu_ids: list[int] | None
    notes: list[str] = field(default_factory=list)
    cpu: CPUSizing | None = None  # `device: cpu` only


#: ``device: cpu`` in a container: the memory the pod (or container) is given. The CPU plan
#: (:func:`qembed.serving.cpu.plan`) sizes the KV pool from it as ``qembed serve`` does from a host's
#: free RAM, since the node is not the machine that generates the files. An allowance, not a
#: measurement; raise ``max_total_tokens`` and this together.
CPU_CONTAINER_MEMORY_GIB = 16
#: CPU cores requested for a CPU pod (no CPU limit: CFS throttling stalls SGLang's OpenMP
#: threads). An estimate.
CPU_CONTAINER_CORES = 8


@dataclass(frozen=True)
class CPUSizing:
    """A ``device: cpu`` container's resources and the planned values its argv uses."""

    memory_gib: int
    cores: int
    dtype: str
    max_total_tokens: int
    context_length: int | None


def _cpu_plan(profile: Profile, notes: list[str]) -> tuple[Profile, CPUSizing]:
    """:func:`qembed.serving.cpu.plan` for a node that is not this machine: the container's memory, and
    SGLang's CPU build as a CPU image holds it (built from SGLang's ``docker/xeon.Dockerfile``).

    Nothing is read from the generating machine. Without an explicit ``dtype`` the plan takes
    ``float32`` (the reference vectors exactly, on every x86-64 CPU); ``--set dtype=bfloat16``
    is faster on AMX Xeons (4th generation and newer), which cannot be told from here.
    """
    from qembed.serving import cpu
    from qembed.serving.cpu_host import HostInfo
    from qembed.serving.sglang_args import build_env

    if "dtype" not in profile.model_fields_set:
        profile = profile.model_copy(update={"dtype": "float32"})
        notes.append("`dtype: float32` (the reference vectors on every x86-64 CPU): the node's CPU is "
                     "not known here; `--set dtype=bfloat16` is faster on AMX Xeons (4th generation+)")
    memory = CPU_CONTAINER_MEMORY_GIB * 1024**3
    host = HostInfo(model_name="the node's CPU", flags=frozenset({"avx512f"}), mem_total=memory,
                        mem_available=memory)
    kernels = cpu.KernelCheck(python=CONTAINER_PYTHON, sglang=PINNED_SGLANG, sgl_kernel=True, cpu_op=True,
                              amx_kernels=True)
    plan = cpu.plan(profile, python=CONTAINER_PYTHON, env=build_env(profile, environ={}), host=host,
                    kernels=kernels)
    plan.require()
    for f in plan.findings:
        if f.level == "warn" and f.check in ("kv", "context", "ram"):
            notes.append(f"{f.message} ({CPU_CONTAINER_MEMORY_GIB} GiB per container)")
    planned = plan.profile
    assert planned.max_total_tokens is not None
    notes.append(f"KV pool `max_total_tokens: {planned.max_total_tokens}` for a {CPU_CONTAINER_MEMORY_GIB} GiB "
                 f"container (qembed.serving.cpu's rule: {cpu.KV_RAM_FRACTION:.0%} of its memory less weights and "
                 "SGLang's processes); `--set max_total_tokens=N` to choose it")
    return planned, CPUSizing(memory_gib=CPU_CONTAINER_MEMORY_GIB, cores=CPU_CONTAINER_CORES,
                              dtype=planned.dtype, max_total_tokens=planned.max_total_tokens,
                              context_length=planned.context_length)


def container_spec(profile: Profile, *, image: str | None = None) -> ContainerSpec:
    """The SGLang command line for a container, built by :func:`qembed.serving.sglang_args.build_command`.

    Inside a container SGLang must listen on ``0.0.0.0`` (the host side of the port mapping
    decides who can reach it). ``gpu_ids`` become the runtime's device list, so
    ``CUDA_VISIBLE_DEVICES`` is not set (the container sees its GPUs as 0..n-1). The API key
    is never in the argv: each target adds ``--api-key`` from the environment.

    ``device: cpu`` needs ``image``: a CPU image the user built from SGLang's own
    ``docker/xeon.Dockerfile`` (the official image is CUDA-only). Its dtype and KV pool come from
    :func:`qembed.serving.cpu.plan` for a :data:`CPU_CONTAINER_MEMORY_GIB` container.

    Raises:
        ConfigError: a reference-engine profile, or ``device: cpu`` without ``image``.
    """
    from qembed.serving.sglang_args import build_command

    if profile.engine != "sglang":
        # `cpu.yaml` runs qembed's reference engine, not SGLang: an SGLang GPU container built
        # from it would silently serve something else than `qembed serve` does.
        raise ConfigError(
            f"profile `{profile.name}` runs the {profile.engine} engine, not SGLang: "
            "`qembed deploy` builds SGLang containers",
            hint="pick a GPU profile (`qembed profiles list`), e.g. `-p l4`, or `-p xeon --image ...` for "
                 "SGLang on CPU; the reference engine is for development and CI (`qembed serve --profile cpu`)")
    notes: list[str] = []
    cpu_sizing: CPUSizing | None = None
    if profile.device == "cpu":
        if image is None:
            # PyPI has no SGLang CPU build and the official image is CUDA-only: a container from
            # it would start SGLang without the CPU kernels it needs (qembed.serving.cpu)
            raise ConfigError(
                f"profile `{profile.name}` runs SGLang on CPU (`device: cpu`), and the official "
                f"`{SGLANG_IMAGE}` image is CUDA-only (PyPI has no SGLang CPU build either)",
                hint="build a CPU image from SGLang's own `docker/xeon.Dockerfile` (docs/serving.md, "
                     "\"SGLang on CPU\"), push it, and pass it with `--image REGISTRY/NAME:TAG`; or pick a "
                     "GPU profile (`qembed profiles list`)")
        profile, cpu_sizing = _cpu_plan(profile, notes)
    inside = profile.model_copy(update={"host": "0.0.0.0", "gpu_ids": None, "python": CONTAINER_PYTHON})
    if profile.python:
        notes.append(f"`python: {profile.python}` is a host path; the container runs `{CONTAINER_PYTHON}`")
    cmd = build_command(inside, api_key=None, python=CONTAINER_PYTHON, environ={})
    env: dict[str, str] = {}
    secret: list[str] = []
    for k, v in cmd.env.items():
        if k == "no_proxy":  # NO_PROXY carries the same value; one is enough in a manifest
            continue
        if is_secret_name(k):
            secret.append(k)
            notes.append(f"profile env `{k}` looks like a secret: it is passed from the environment, "
                         "not written out")
        else:
            env[k] = v
    gpus = 0 if profile.device == "cpu" else profile.tp_size * profile.dp_size
    return ContainerSpec(argv=cmd.argv, env=env, secret_env=secret, api_key_env=profile.api_key_env,
                         port=profile.port, gpus=gpus,
                         gpu_ids=list(profile.gpu_ids) if profile.gpu_ids and gpus else None, notes=notes,
                         cpu=cpu_sizing)


def deploy_profile(ref: str | None, overrides: list[str] | None = None) -> Profile:
    """The profile ``qembed deploy docker|k8s`` builds from: named explicitly, never ``auto``.

    ``auto`` reads the GPU of the machine that runs qembed, so what ``deploy`` wrote would depend
    on where it ran (issue 20: without a GPU it silently became ``generic``). The cluster's GPU
    class is the user's to name.

    Raises:
        ConfigError: no profile, or ``auto``.
        ProfileError: an unknown profile or a bad override.
    """
    from qembed.serving.profiles.resolve import load_profile

    if ref is None or not ref.strip() or ref.strip() == "auto":
        what = "`-p auto` picks" if ref and ref.strip() == "auto" else "without `--profile`, qembed would pick"
        raise ConfigError(
            f"`qembed deploy` needs the profile of the nodes that will run it: {what} from the GPU "
            "of this machine, not of the cluster",
            hint="name the GPU class explicitly, e.g. `-p l4` or `-p h100` (`qembed profiles list` shows "
                 "them; `-p generic` leaves sizing to SGLang; `-p xeon --image ...` for CPU nodes)")
    return load_profile(ref, overrides=list(overrides or []))


def __getattr__(name: str) -> object:
    # A YAML dumper that writes repeated objects out in full (no `&id001` anchors, which
    # confuse readers of a manifest); built lazily so importing this package stays light.
    if name == "NoAliasDumper":
        import yaml

        class NoAliasDumper(yaml.SafeDumper):
            def ignore_aliases(self, data: object) -> bool:
                return True

        globals()["NoAliasDumper"] = NoAliasDumper
        return NoAliasDumper
    raise AttributeError(name)


def write_files(files: Mapping[str, str], out_dir: str | os.PathLike[str], *, force: bool = False) -> list[Path]:
    """Write ``{file name: text}`` into ``out_dir``; refuse to overwrite unless ``force``.

    All names are checked before anything is written, so a refusal leaves the folder as it was.
    Each file is written to a temporary name and renamed into place.

    Raises:
        ConfigError: a file exists (without ``force``), or the folder cannot be written.
    """
    base = Path(out_dir).expanduser()
    targets = [base / name for name in files]
    if not force:
        existing = [str(t) for t in targets if t.exists()]
        if existing:
            raise ConfigError(f"`{existing[0]}` already exists",
                              details=[f"also exists: `{e}`" for e in existing[1:]],
                              hint="pass `--force` to overwrite, or choose another `--output` folder")
    try:
        base.mkdir(parents=True, exist_ok=True)
        for target, text in zip(targets, files.values(), strict=True):
            if target.is_dir():
                raise ConfigError(f"`{target}` is a directory", hint="choose another `--output` folder")
            tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, target)
    except OSError as exc:
        raise ConfigError(f"cannot write into `{base}`: {exc.strerror or exc}",
                          hint="check the folder's permissions, or choose another `--output`") from exc
    return targets


def planned_container(profile: Profile, *, image: str | None = None) -> tuple[ContainerSpec, ImageChoice, list[str]]:
    """What a docker and a k8s artefact both start from: the container spec, the image, and the
    notes to print (the spec's, then the driver note of a GPU image)."""
    spec = container_spec(profile, image=image)
    choice = sglang_image(image)
    notes = list(spec.notes)
    dn = driver_note(choice) if spec.gpus else None
    if dn:
        notes.append(dn)
    return spec, choice, notes


__all__ = [
    "CONTAINER_HF_CACHE",
    "CONTAINER_PYTHON",
    "CPU_CONTAINER_CORES",
    "CPU_CONTAINER_MEMORY_GIB",
    "PINNED_SGLANG",
    "PRESTOP_S",
    "SGLANG_IMAGE",
    "SHUTDOWN_MARGIN_S",
    "CPUSizing",
    "ContainerSpec",
    "ImageChoice",
    "container_spec",
    "deploy_profile",
    "driver_note",
    "planned_container",
    "sglang_image",
    "stop_timeout",
    "write_files",
]
