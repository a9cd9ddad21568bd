"""Deployment artefacts generated from a qembed profile: Docker, Kubernetes, Grafana, alerts.

Everything here is built from the same :mod:`qembed.sglang_args` code path that ``qembed
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

if TYPE_CHECKING:
    from qembed.profiles import Profile

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
    """The SGLang image and how its version was chosen."""

    image: str
    sglang_version: str
    note: str | None = None  # set when the version is the pinned fallback


def sglang_image(sglang_version: str | None) -> ImageChoice:
    """``lmsysorg/sglang:v<version>`` for the installed SGLang, else the pinned release."""
    if sglang_version:
        return ImageChoice(f"{SGLANG_IMAGE}:v{sglang_version}", sglang_version)
    return ImageChoice(
        f"{SGLANG_IMAGE}:v{PINNED_SGLANG}", PINNED_SGLANG,
        note=f"SGLang is not installed here; the image uses the pinned release {PINNED_SGLANG}",
    )


def driver_note(sglang_version: str) -> str | None:
    """The host driver the image needs, in words (CUDA 13 builds need R580+)."""
    from qembed.gpu import LAST_CUDA12_SGLANG, MIN_DRIVER_CUDA13, sglang_cuda_major

    if sglang_cuda_major(sglang_version) == 13:
        return (f"sglang {sglang_version} is a CUDA 13 build: the host needs an NVIDIA driver "
                f"R{MIN_DRIVER_CUDA13} or newer (the last CUDA 12 image is "
                f"{SGLANG_IMAGE}:v{LAST_CUDA12_SGLANG}-cu129)")
    return None


def _secret_name(name: str) -> bool:
    up = name.upper()
    return any(w in up for w in ("API_KEY", "APIKEY", "TOKEN", "SECRET", "PASSWORD"))


@dataclass(frozen=True)
class ContainerSpec:
    """What runs inside one container: the SGLang argv, plain env, env passed by name."""

    argv: list[str]  # python3 -c "from sglang.cli.main import main; main()" serve ... flags
    env: dict[str, str]  # non-secret values (NO_PROXY, the profile's plain env)
    secret_env: list[str]  # names whose values must come from the environment / a Secret
    api_key_env: str  # the variable the key is read from (the profile's `api_key_env`)
    port: int
    gpus: int  # tp_size x dp_size
    gpu_ids: list[int] | None
    notes: list[str] = field(default_factory=list)


def container_spec(profile: Profile) -> ContainerSpec:
    """The SGLang command line for a container, built by :func:`qembed.sglang_args.build_command`.

    Inside a container SGLang must listen on ``0.0.0.0`` (the host side of the port mapping
    decides who can reach it). ``gpu_ids`` become the runtime's device list, so
    ``CUDA_VISIBLE_DEVICES`` is not set (the container sees its GPUs as 0..n-1). The API key
    is never in the argv: each target adds ``--api-key`` from the environment.
    """
    from qembed.sglang_args import build_command

    if profile.engine != "sglang":
        # `cpu.yaml` runs qembed's reference engine, not SGLang: an SGLang GPU container built
        # from it would silently serve something else than `qembed serve` does.
        raise ConfigError(
            f"profile `{profile.name}` runs the {profile.engine} engine, not SGLang: "
            "`qembed deploy` builds SGLang containers for NVIDIA GPUs",
            hint="pick a GPU profile (`qembed profiles list`), e.g. `-p l4`; the reference engine is "
                 "for development and CI (`qembed serve --profile cpu`)")
    if profile.device == "cpu":
        # PyPI has no SGLang CPU build and the official image is CUDA-only: a container from this
        # profile would start SGLang without the CPU kernels it needs (qembed.cpu)
        raise ConfigError(
            f"profile `{profile.name}` runs SGLang on CPU (`device: cpu`): `qembed deploy` builds "
            f"containers from the official `{SGLANG_IMAGE}` image, which is CUDA-only, and PyPI has no "
            "SGLang CPU build",
            hint="build a CPU image from SGLang's own `docker/xeon.Dockerfile` (docs/serving.md, "
                 "\"SGLang on CPU\") and run `qembed serve --profile xeon --dry-run` to get the command "
                 "to run in it; or pick a GPU profile (`qembed profiles list`)")
    notes: list[str] = []
    inside = profile.model_copy(update={"host": "0.0.0.0", "gpu_ids": None, "python": CONTAINER_PYTHON})
    if profile.python:
        notes.append(f"`python: {profile.python}` is a host path; the container runs `{CONTAINER_PYTHON}`")
    cmd = build_command(inside, api_key=None, python=CONTAINER_PYTHON, environ={})
    env: dict[str, str] = {}
    secret: list[str] = []
    for k, v in cmd.env.items():
        if k == "no_proxy":  # NO_PROXY carries the same value; one is enough in a manifest
            continue
        if _secret_name(k):
            secret.append(k)
            notes.append(f"profile env `{k}` looks like a secret: it is passed from the environment, "
                         "not written out")
        else:
            env[k] = v
    return ContainerSpec(argv=cmd.argv, env=env, secret_env=secret, api_key_env=profile.api_key_env,
                         port=profile.port, gpus=profile.tp_size * profile.dp_size,
                         gpu_ids=list(profile.gpu_ids) if profile.gpu_ids else None, notes=notes)


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


__all__ = [
    "CONTAINER_HF_CACHE",
    "CONTAINER_PYTHON",
    "PINNED_SGLANG",
    "PRESTOP_S",
    "SGLANG_IMAGE",
    "SHUTDOWN_MARGIN_S",
    "ContainerSpec",
    "ImageChoice",
    "container_spec",
    "driver_note",
    "sglang_image",
    "stop_timeout",
    "write_files",
]
