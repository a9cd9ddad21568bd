"""Launch policy: what a machine and a profile mean for a launch, as findings.

:func:`launch_findings` is what ``serve`` refuses or warns by and what ``doctor`` renders;
:func:`require_launchable` raises on the first error. The facts it reads (NVML snapshot, the GPU
table, SGLang's CUDA builds) live in :mod:`qembed.serving.gpu`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from qembed.models import GiB, MiB
from qembed.serving.gpu import (
    BF16_MIN_SM,
    DRIVER_HINT,
    GPU_CLASSES,
    MIN_SM,
    QUANT_MIN_SM,
    GPUInfo,
    GPUSnapshot,
    driver_too_old,
    profile_for,
    sglang_cuda_major,
)

if TYPE_CHECKING:
    from qembed.serving.profiles.model import Profile


@dataclass(frozen=True)
class Finding:
    """One launch check result: ``fail`` stops the launch, ``warn`` is shown, ``info`` is a note."""

    level: Literal["fail", "warn", "info"]
    message: str
    hint: str | None = None
    check: str = "launch"  # what was checked, in words: "compute capability", "fit", ...
    gpu: int | None = None  # the GPU index it is about, if one


def profile_label(profile: Profile | None) -> str:
    """How findings name ``profile``: profile `NAME`, or "the profile" when it has no name."""
    name = profile.name if profile is not None else None
    return f"profile `{name}`" if name else "the profile"


def selected_gpus(snap: GPUSnapshot, profile: Profile) -> tuple[list[GPUInfo], list[int]]:
    """The GPUs a launch would use, and the ``gpu_ids`` that match no visible GPU."""
    ids = profile.gpu_ids
    want = max(1, profile.tp_size) * max(1, profile.dp_size)
    if ids:
        by_index = {g.index: g for g in snap.gpus}
        missing = [i for i in ids if i not in by_index]
        return [by_index[i] for i in ids if i in by_index], missing
    return list(snap.gpus[:want]), []


CPU_SERVE_COMMAND = "qembed serve --profile cpu"  # the no-GPU alternative for dev/CI (qembed.reference.server)
XEON_SERVE_COMMAND = "qembed serve --profile xeon"  # the no-GPU production option (qembed.serving.cpu)
#: What to run without an NVIDIA GPU: both CPU options, in the words every no-GPU hint uses.
NO_GPU_OPTIONS = (f"without a GPU, `{XEON_SERVE_COMMAND}` runs real SGLang on CPU (production; needs "
                  f"SGLang's CPU build, see `qembed doctor -p xeon`), and `{CPU_SERVE_COMMAND}` the reference "
                  "engine (development and CI)")


#: What listens, in the words of the exposure finding (:func:`exposure`).
Listener = Literal["server", "profile", "gateway", "container"]


def exposure(host: str, *, keyed: bool, level: Literal["fail", "warn", "info"], listener: Listener,
             port: int | None = None, key_env: str | None = None) -> Finding | None:
    """The one exposure rule: a listener on an address other than loopback
    (:func:`qembed.net.is_loopback`) without an API key. ``None`` when it is not exposed.

    The rule is the same everywhere; the caller picks the level: ``qembed serve`` warns
    (:func:`qembed.serving.supervisor.exposure_warning`), ``qembed gateway`` refuses (``fail``:
    :func:`qembed.serving.gateway.check_exposure`), ``doctor`` and ``profiles show`` list a profile
    setting (:func:`qembed.serving.sglang_args.profile_warnings`), ``deploy docker`` adds a note.

    Args:
        host: the address it listens on (or, for a container, the host address its port is
            published on).
        keyed: an API key is set (or, for a profile, configured: its ``api_key_env`` or
            ``api_key_file``).
        level: the finding's level.
        listener: what listens; the words name it (``server``: SGLang as ``qembed serve`` starts
            it, ``profile``: a profile's ``host``, ``gateway``: smg, ``container``: a published
            container port).
        port: the port it listens on (``server`` names it).
        key_env: the variable that holds the key, as the hint names it (default ``QEMBED_API_KEY``,
            the gateway's: the workers' key; a profile's is its ``api_key_env``).
    """
    from qembed import env as qenv
    from qembed.net import is_loopback

    if keyed or is_loopback(host):
        return None
    key_env = key_env or qenv.API_KEY.name
    hint: str | None = None
    if listener == "server":
        message = (f"SGLang will listen on `{host}`: anyone who can reach port {port} can use the "
                   "server, and no API key is set")
        hint = f"export `{key_env}` (or set `api_key_file`) to require a key, or use `--host 127.0.0.1`"
    elif listener == "profile":
        message = (f"`host: {host}` accepts connections from other machines and no API key is set "
                   f"(`{key_env}` or `api_key_file`)")
    elif listener == "gateway":
        message = (f"refusing to run the gateway on `{host}` without an API key: anyone who can reach "
                   "it could use it, and register or remove its workers")
        hint = (f"export `{key_env}` (the workers' key; smg checks it on every route), "
                "or keep the default `--host 127.0.0.1`")
    else:
        message = f"the port is published on {host} without an API key: anyone who reaches it can use the GPU"
    return Finding(level, message, hint, check="exposure")


def _caps(g: GPUInfo) -> str:
    return (f"{g.name}, sm{g.sm}: bf16 {'yes' if g.sm >= BF16_MIN_SM else 'no'}, "
            f"fp8 {'yes' if g.sm >= 89 else 'no'}")


def launch_findings(
    snap: GPUSnapshot, profile: Profile, *, sglang_version: str | None, include_info: bool = False
) -> list[Finding]:
    """Everything that stops (``fail``) or degrades (``warn``) a launch of ``profile`` on ``snap``.

    The one home of these rules: ``qembed serve`` refuses on the first ``fail`` and shows the
    warnings; ``qembed doctor`` renders every finding as a row (``include_info=True`` adds the
    passing ``info`` rows: capabilities, memory, the fit).

    Args:
        snap: :func:`snapshot`.
        profile: the resolved profile (reads ``model``, ``dtype``, ``quantization``,
            ``gpu_memory_fraction``, ``context_length``, ``chunked_prefill_size``, ``tp_size``,
            ``dp_size``, ``gpu_ids``, ``kv_cache_dtype``, ``name``).
        sglang_version: the installed SGLang version (``None`` = unknown / not installed).
        include_info: also return ``info`` findings for the checks that pass.

    Returns:
        Findings, fails first; each has a message, a hint naming the profile key to change, the
        ``check`` it belongs to and the ``gpu`` it is about.
    """
    from qembed import models

    label = profile_label(profile)
    fails: list[Finding] = []
    warns: list[Finding] = []
    infos: list[Finding] = []
    if snap.error or not snap.gpus:
        need = sglang_cuda_major(sglang_version)
        driver = "an R580+ NVIDIA driver (SGLang's CUDA 13 build)" if need == 13 else "the NVIDIA driver"
        fails.append(Finding("fail", f"no usable GPU: {snap.error or 'NVML lists none'}",
                             f"install {driver} and check `nvidia-smi`; run `qembed doctor`; "
                             + NO_GPU_OPTIONS, check="GPUs"))
        return fails
    if driver_too_old(snap, sglang_version):
        fails.append(Finding(
            "fail",
            f"the NVIDIA driver {snap.driver_version} (CUDA {snap.cuda_driver_str}) is too old for "
            f"sglang {sglang_version}, which is built for CUDA {sglang_cuda_major(sglang_version)}",
            DRIVER_HINT, check="driver",
        ))
    tp = max(1, profile.tp_size)
    dp = max(1, profile.dp_size)
    gpus, missing = selected_gpus(snap, profile)
    if missing:
        have = ", ".join(str(g.index) for g in snap.gpus)
        fails.append(Finding("fail", f"`gpu_ids` {missing} of {label} are not present (visible: {have})",
                             f"set `gpu_ids` in {label} to visible GPU indices, or remove it", check="GPUs"))
    if tp * dp > len(gpus):
        fails.append(Finding(
            "fail",
            f"{label} needs {tp * dp} GPUs (`tp_size` {tp} x `dp_size` {dp}) but {len(gpus)} "
            f"{'is' if len(gpus) == 1 else 'are'} available",
            f"lower `tp_size`/`dp_size` in {label}, or list more GPUs in `gpu_ids`", check="GPUs",
        ))
    dtype = profile.dtype
    quant = profile.quantization
    for g in gpus:
        cc = "compute capability"
        if g.sm < MIN_SM:
            fails.append(Finding("fail", f"GPU {g.index} ({g.name}) is sm{g.sm}; SGLang needs sm{MIN_SM} or newer",
                                 f"use another GPU (`gpu_ids` in {label})", check=cc, gpu=g.index))
            continue
        need = QUANT_MIN_SM.get(quant) if quant else None
        quant_fails = need is not None and g.sm < need
        no_bf16 = g.sm < BF16_MIN_SM and dtype in ("bfloat16", "auto")
        if quant_fails:
            fails.append(Finding(
                "fail",
                f"`quantization: {quant}` needs compute capability {need}; GPU {g.index} ({g.name}) is {g.sm}",
                f"remove `quantization` from {label} (or pick one this GPU supports)", check=cc, gpu=g.index,
            ))
        if no_bf16:
            asked = "`dtype: bfloat16`" if dtype == "bfloat16" else "`dtype: auto` (the checkpoint is bf16)"
            warns.append(Finding(
                "warn",
                f"GPU {g.index} ({g.name}, sm{g.sm}) has no bfloat16: {asked} runs as float16 "
                "(SGLang switches silently); vectors differ slightly from the bf16 reference",
                f"set `dtype: float16` in {label} to make it explicit", check=cc, gpu=g.index,
            ))
        if not (quant_fails or no_bf16):
            infos.append(Finding("info", _caps(g), check=cc, gpu=g.index))
        infos.append(Finding("info", f"{g.memory_total / GiB:.1f} GiB total, {g.memory_free / GiB:.1f} GiB free",
                             check="memory", gpu=g.index))
        others = [p for p in g.processes if p.pid != os.getpid()]
        if others:
            held = ", ".join(
                f"pid {p.pid} {p.name or '?'} {p.used_bytes // MiB if p.used_bytes is not None else '?'} MiB"
                for p in others)
            warns.append(Finding("warn", f"GPU {g.index} is already in use: {held}",
                                 "stop those processes, or pick a free GPU with `gpu_ids`",
                                 check="other processes", gpu=g.index))
        else:
            infos.append(Finding("info", "none", check="other processes", gpu=g.index))
    mismatch = gpu_class_mismatch(profile, gpus)
    if mismatch is not None:
        warns.append(mismatch)
    shape = models.model_shape(profile.model)
    if shape is not None and gpus:
        dbytes = models.dtype_bytes_for(dtype)
        # Every chosen GPU runs a full replica (or a tp shard): judge each, report the worst.
        fits = [(models.estimate_fit(
            shape, dtype_bytes=dbytes, gpu_total_bytes=x.memory_total,
            gpu_free_bytes=x.memory_free,
            mem_fraction=profile.gpu_memory_fraction,
            context_length=profile.context_length,
            chunked_prefill_size=profile.chunked_prefill_size, tp_size=tp,
            kv_dtype_bytes=models.kv_dtype_bytes_for(profile.kv_cache_dtype, dbytes),
        ), x) for x in sorted(gpus, key=lambda x: x.memory_free)]
        fit, g = next(((f, x) for f, x in fits if not f.starts), None) or \
            next(((f, x) for f, x in fits if not f.fits), fits[0])
        where = (f"GPU {g.index} ({g.name}, {g.memory_free / GiB:.1f} GiB free of "
                 f"{g.memory_total / GiB:.1f} GiB)")
        frac = f"fraction {fit.mem_fraction:.3f}{' (SGLang auto)' if fit.mem_fraction_is_auto else ''}"
        sizes = (f"weights {fit.weights_bytes / 1e9:.1f} GB, KV {fit.kv_bytes_per_token // 1024} KiB/token, "
                 f"{frac}")
        hint = f"in {label}: " + "; or ".join(fit.suggestions)
        if not fit.starts:
            fails.append(Finding(
                "fail", f"{shape.name.split('/')[-1]} will not fit on {where}: {fit.note} ({sizes})",
                hint, check="fit", gpu=g.index,
            ))
        elif not fit.fits:
            # SGLang starts with a pool shorter than the context; inputs that long are refused
            warns.append(Finding(
                "warn", f"a full-context request will not fit on {where}: {fit.note} ({sizes})",
                hint, check="fit", gpu=g.index,
            ))
        else:
            infos.append(Finding("info", f"{shape.name.split('/')[-1]} fits on {where}: {fit.note} ({sizes})",
                                 check="fit", gpu=g.index))
    return fails + warns + (infos if include_info else [])


def gpu_class_mismatch(profile: Profile, gpus: Sequence[GPUInfo]) -> Finding | None:
    """A warning when ``profile`` is a shipped profile made for another GPU class than the first
    of ``gpus`` (``-p a100`` on a T4, ``-p t4`` on an A100), naming the profile made for it.

    Profiles sized for the same memory on the same side of bfloat16 (``l4``, ``a10``,
    ``rtx4090``) count as the same class.
    """
    name = profile.name
    made_for = [c for c in GPU_CLASSES if c.profile == name]
    if not name or not made_for or not gpus:
        return None
    g = gpus[0]
    want, _why = profile_for(g)
    if want == name:
        return None
    wanted = [c for c in GPU_CLASSES if c.profile == want]
    if want is not None and wanted and any(
        a.memory_gib == b.memory_gib and (a.sm >= BF16_MIN_SM) == (b.sm >= BF16_MIN_SM)
        for a in made_for for b in wanted
    ):
        return None
    labels = " / ".join(dict.fromkeys(f"{c.label} (sm{c.sm})" for c in made_for))
    gpu_desc = f"GPU {g.index} is {g.name} ({g.memory_total_gib:.0f} GiB, sm{g.sm})"
    if want is None:
        hint = "use `-p generic` (SGLang sizes memory itself) or `-p auto`"
    else:
        hint = f"use `-p {want}`, the profile made for this GPU (or `-p auto`, which picks it)"
    return Finding("warn", f"profile `{name}` is made for the {labels}; {gpu_desc}", hint,
                   check="profile", gpu=g.index)


def require_launchable(snap: GPUSnapshot, profile: Profile, *, sglang_version: str | None) -> list[Finding]:
    """Raise :class:`~qembed.errors.GPUError` on the first failing check; return the rest.

    Raises:
        GPUError: no driver/GPU, driver too old, GPU too old, not enough GPUs, model does not fit.
    """
    findings = launch_findings(snap, profile, sglang_version=sglang_version)
    refuse_failed(findings)
    return [f for f in findings if f.level != "info"]


def refuse_failed(findings: Sequence[Finding]) -> None:
    """Raise :class:`~qembed.errors.GPUError` for the first ``fail`` of :func:`launch_findings`
    (the other fails in its details); nothing when none failed.

    Raises:
        GPUError: a finding is ``fail``.
    """
    from qembed.errors import GPUError

    fails = [f for f in findings if f.level == "fail"]
    if fails:
        first = fails[0]
        raise GPUError(first.message, hint=first.hint,
                       details=[f.message for f in fails[1:]])


__all__ = [
    "CPU_SERVE_COMMAND",
    "NO_GPU_OPTIONS",
    "XEON_SERVE_COMMAND",
    "Finding",
    "Listener",
    "exposure",
    "gpu_class_mismatch",
    "launch_findings",
    "profile_label",
    "refuse_failed",
    "require_launchable",
    "selected_gpus",
]
