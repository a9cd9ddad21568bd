"""NVML snapshot of the driver and the visible GPUs, as plain dataclasses.

``pynvml`` (from the ``nvidia-ml-py`` package) is imported inside :func:`snapshot` only. Tests
fake NVML at that boundary by putting a fake ``pynvml`` module in ``sys.modules``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from .profiles import Profile

MiB = 1024**2
GiB = 1024**3


@dataclass(frozen=True)
class GPUProcess:
    pid: int
    name: str  # process name, "" when it cannot be read (other container, no permission)
    used_bytes: int | None  # None when NVML does not say


@dataclass(frozen=True)
class GPUInfo:
    index: int  # NVML index (physical)
    name: str  # e.g. "NVIDIA A100-SXM4-80GB"
    uuid: str
    memory_total: int  # bytes
    memory_free: int  # bytes
    memory_used: int  # bytes
    compute_capability: tuple[int, int]  # e.g. (8, 0)
    processes: tuple[GPUProcess, ...] = ()

    @property
    def sm(self) -> int:
        """Compute capability as one number: (8, 0) -> 80."""
        return self.compute_capability[0] * 10 + self.compute_capability[1]

    @property
    def memory_total_gib(self) -> float:
        return self.memory_total / GiB


@dataclass(frozen=True)
class GPUSnapshot:
    """What NVML said. ``error`` is set (and ``gpus`` empty) when NVML could not be used."""

    driver_version: str | None = None  # e.g. "580.65.06"
    cuda_driver_version: int | None = None  # e.g. 13000 for CUDA 13.0
    gpus: tuple[GPUInfo, ...] = ()
    error: str | None = None  # why NVML is unusable (no library, no driver, no device)
    visible_devices: str | None = None  # CUDA_VISIBLE_DEVICES as it was read
    notes: tuple[str, ...] = field(default=())

    @property
    def driver_major(self) -> int | None:
        if not self.driver_version:
            return None
        try:
            return int(self.driver_version.split(".")[0])
        except ValueError:
            return None

    @property
    def cuda_driver_str(self) -> str | None:
        v = self.cuda_driver_version
        return None if v is None else f"{v // 1000}.{(v % 1000) // 10}"


# -- snapshot ---------------------------------------------------------------------------------


def _text(value: Any) -> str:
    # nvidia-ml-py < 11.515 returned bytes; newer versions return str
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _proc_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _nvml_reason(pynvml: Any, exc: BaseException) -> str:
    """A readable reason for an NVML failure at init time."""
    lib_missing = getattr(pynvml, "NVMLError_LibraryNotFound", None)
    driver_missing = getattr(pynvml, "NVMLError_DriverNotLoaded", None)
    if lib_missing is not None and isinstance(exc, lib_missing):
        return "NVIDIA driver library (libnvidia-ml.so.1) not found: no NVIDIA driver installed"
    if driver_missing is not None and isinstance(exc, driver_missing):
        return "NVIDIA driver not loaded (kernel module missing or no GPU attached)"
    return f"NVML failed: {exc}"


def parse_visible_devices(value: str | None, gpus: Sequence[GPUInfo]) -> tuple[list[GPUInfo], str | None]:
    """Apply ``CUDA_VISIBLE_DEVICES`` to the NVML device list, as the CUDA runtime does.

    Entries are integer indices or GPU-UUID prefixes (``GPU-8f3a``); the runtime stops at the
    first entry it cannot resolve, so this does too. ``None`` = all visible, ``""`` = none.
    Indices are read as NVML (PCI bus) indices, which is what CUDA uses with
    ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (set by qembed's launcher when ``gpu_ids`` is given); with
    CUDA's default FASTEST_FIRST order, mixed-model machines may number GPUs differently.

    Returns:
        The visible GPUs in CUDA order, and a note when part of the value was ignored.
    """
    if value is None:
        return list(gpus), None
    value = value.strip()
    if value == "":
        return [], "CUDA_VISIBLE_DEVICES is empty: no GPU is visible"
    out: list[GPUInfo] = []
    for raw in value.split(","):
        tok = raw.strip()
        found: GPUInfo | None = None
        if tok.lstrip("-").isdigit():
            idx = int(tok)
            found = next((g for g in gpus if g.index == idx), None) if idx >= 0 else None
        elif tok.startswith("GPU-"):
            matches = [g for g in gpus if g.uuid.startswith(tok)]
            found = matches[0] if len(matches) == 1 else None
        if found is None:
            return out, f"CUDA_VISIBLE_DEVICES={value!r}: entry {tok!r} matches no GPU; later entries are ignored"
        if found not in out:
            out.append(found)
    return out, None


def snapshot() -> GPUSnapshot:
    """Read the driver and the visible GPUs through NVML. Never raises.

    Returns:
        A :class:`GPUSnapshot`; ``error`` says why NVML is unusable (no ``pynvml``, no driver,
        no device), ``gpus`` lists the GPUs ``CUDA_VISIBLE_DEVICES`` leaves visible.

    Example:
        >>> snap = snapshot()
        >>> snap.error is not None or len(snap.gpus) >= 0
        True
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        import pynvml
    except ImportError as exc:
        return GPUSnapshot(error=f"the `pynvml` module (package nvidia-ml-py) is not installed: {exc}",
                           visible_devices=visible)
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError subclasses, OSError from ctypes
        return GPUSnapshot(error=_nvml_reason(pynvml, exc), visible_devices=visible)
    notes: list[str] = []
    try:
        driver: str | None = None
        cuda: int | None = None
        try:
            driver = _text(pynvml.nvmlSystemGetDriverVersion())
        except Exception as exc:
            notes.append(f"driver version unreadable: {exc}")
        try:
            cuda = int(pynvml.nvmlSystemGetCudaDriverVersion())
        except Exception as exc:
            notes.append(f"CUDA driver version unreadable: {exc}")
        try:
            count = int(pynvml.nvmlDeviceGetCount())
        except Exception as exc:
            return GPUSnapshot(driver, cuda, error=f"cannot count GPUs: {exc}",
                               visible_devices=visible, notes=tuple(notes))
        all_gpus: list[GPUInfo] = []
        for i in range(count):
            try:
                all_gpus.append(_read_gpu(pynvml, i))
            except Exception as exc:
                notes.append(f"GPU {i} unreadable: {exc}")
        gpus, note = parse_visible_devices(visible, all_gpus)
        if note:
            notes.append(note)
        error = None
        if count == 0:
            error = "the NVIDIA driver is loaded but reports no GPU"
        elif not gpus:
            error = f"no GPU is visible (CUDA_VISIBLE_DEVICES={visible!r}; {count} present)"
        return GPUSnapshot(driver, cuda, tuple(gpus), error, visible, tuple(notes))
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def _read_gpu(pynvml: Any, i: int) -> GPUInfo:
    h = pynvml.nvmlDeviceGetHandleByIndex(i)
    mem = pynvml.nvmlDeviceGetMemoryInfo(h)
    try:
        cc = tuple(int(x) for x in pynvml.nvmlDeviceGetCudaComputeCapability(h))
    except Exception:
        cc = (0, 0)
    procs: dict[int, GPUProcess] = {}
    for fn_name in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        fn = getattr(pynvml, fn_name, None)
        if fn is None:
            continue
        try:
            items = fn(h)
        except Exception:  # NotSupported / NoPermission: the list is just unknown
            continue
        for p in items or ():
            pid = int(getattr(p, "pid", 0))
            used = getattr(p, "usedGpuMemory", None)
            used_i = int(used) if isinstance(used, int) and used >= 0 else None
            prev = procs.get(pid)
            if prev is None or (used_i or 0) > (prev.used_bytes or 0):
                procs[pid] = GPUProcess(pid=pid, name=_proc_name(pid), used_bytes=used_i)
    try:
        uuid = _text(pynvml.nvmlDeviceGetUUID(h))
    except Exception:
        uuid = ""
    return GPUInfo(
        index=i,
        name=_text(pynvml.nvmlDeviceGetName(h)),
        uuid=uuid,
        memory_total=int(mem.total),
        memory_free=int(mem.free),
        memory_used=int(mem.used),
        compute_capability=(cc[0], cc[1]) if len(cc) >= 2 else (0, 0),
        processes=tuple(procs.values()),
    )


# -- SGLang's CUDA build vs the driver --------------------------------------------------------

#: SGLang 0.5.20 and later are built for CUDA 13 (reference §1.1b); 0.5.19 is the last CUDA 12 one.
FIRST_CUDA13_SGLANG = (0, 5, 20)
LAST_CUDA12_SGLANG = "0.5.19"
#: CUDA 13 needs an R580-branch driver or newer.
MIN_DRIVER_CUDA13 = 580
MIN_SM = 75
BF16_MIN_SM = 80

#: Minimum compute capability per quantization method (reference §1.4; SGLang raises
#: ``ValueError: The quantization method X is not supported for the current GPU`` below it).
QUANT_MIN_SM: dict[str, int] = {"fp8": 80, "w8a8_fp8": 89, "w8a8_int8": 75, "modelopt_fp8": 89,
                                "modelopt_fp4": 100, "nvfp4_online": 100}


def _version_tuple(version: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in version.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
        if not piece.isdigit():
            break
    return tuple(parts)


def sglang_cuda_major(sglang_version: str | None) -> int | None:
    """CUDA major version an SGLang release is built for (13 from 0.5.20 on, else 12)."""
    if not sglang_version:
        return None
    v = _version_tuple(sglang_version)
    if not v:
        return None
    return 13 if v >= FIRST_CUDA13_SGLANG else 12


def driver_cuda_major(snap: GPUSnapshot) -> int | None:
    """Highest CUDA major version the driver supports (from NVML, else from the driver branch)."""
    if snap.cuda_driver_version:
        return snap.cuda_driver_version // 1000
    major = snap.driver_major
    if major is None:
        return None
    return 13 if major >= MIN_DRIVER_CUDA13 else 12


def sglang_for_driver(snap: GPUSnapshot) -> str:
    """Which SGLang line runs on this driver, in words."""
    cuda = driver_cuda_major(snap)
    if cuda is None:
        return "unknown (no driver)"
    if cuda >= 13:
        return "sglang 0.5.20 or later (CUDA 13), e.g. 0.5.23"
    return f"sglang<={LAST_CUDA12_SGLANG} only (CUDA 12); sglang>=0.5.20 needs an R{MIN_DRIVER_CUDA13}+ driver"


def driver_too_old(snap: GPUSnapshot, sglang_version: str | None) -> bool:
    need = sglang_cuda_major(sglang_version)
    have = driver_cuda_major(snap)
    return need is not None and have is not None and have < need


DRIVER_HINT = (
    f"upgrade the NVIDIA driver to R{MIN_DRIVER_CUDA13} or newer (CUDA 13), or install the last "
    f"CUDA 12 SGLang: `pip install 'sglang=={LAST_CUDA12_SGLANG}'`"
)


# -- launch checks ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One launch check result: ``fail`` stops the launch, ``warn`` is shown, ``info`` is a note."""

    level: Literal["fail", "warn", "info"]
    message: str
    hint: str | None = None


def _p(profile: Any, key: str, default: Any = None) -> Any:
    return getattr(profile, key, default) if profile is not None else default


def profile_label(profile: Any) -> str:
    name = _p(profile, "name")
    return f"profile `{name}`" if name else "the profile"


def selected_gpus(snap: GPUSnapshot, profile: Any) -> tuple[list[GPUInfo], list[int]]:
    """The GPUs a launch would use, and the ``gpu_ids`` that match no visible GPU."""
    ids = _p(profile, "gpu_ids")
    want = max(1, int(_p(profile, "tp_size", 1) or 1)) * max(1, int(_p(profile, "dp_size", 1) or 1))
    if ids:
        by_index = {g.index: g for g in snap.gpus}
        missing = [i for i in ids if i not in by_index]
        return [by_index[i] for i in ids if i in by_index], missing
    return list(snap.gpus[:want]), []


CPU_SERVE_COMMAND = "qembed serve --profile cpu"  # the no-GPU alternative (qembed.refserver)


def launch_findings(snap: GPUSnapshot, profile: Profile | Any, *, sglang_version: str | None) -> list[Finding]:
    """Everything that stops (``fail``) or degrades (``warn``) a launch of ``profile`` on ``snap``.

    Args:
        snap: :func:`snapshot`.
        profile: the resolved profile (reads ``model``, ``dtype``, ``quantization``,
            ``gpu_memory_fraction``, ``context_length``, ``chunked_prefill_size``, ``tp_size``,
            ``dp_size``, ``gpu_ids``, ``kv_cache_dtype``).
        sglang_version: the installed SGLang version (``None`` = unknown / not installed).

    Returns:
        Findings, fails first; each has a message and a hint naming the profile key to change.
    """
    from . import models

    label = profile_label(profile)
    fails: list[Finding] = []
    warns: list[Finding] = []
    if snap.error or not snap.gpus:
        need = sglang_cuda_major(sglang_version)
        driver = "an R580+ NVIDIA driver (SGLang's CUDA 13 build)" if need == 13 else "the NVIDIA driver"
        fails.append(Finding("fail", f"no usable GPU: {snap.error or 'NVML lists none'}",
                             f"install {driver} and check `nvidia-smi`; run `qembed doctor`; "
                             f"without a GPU, `{CPU_SERVE_COMMAND}` serves the reference engine on CPU"))
        return fails
    if driver_too_old(snap, sglang_version):
        fails.append(Finding(
            "fail",
            f"the NVIDIA driver {snap.driver_version} (CUDA {snap.cuda_driver_str}) is too old for "
            f"sglang {sglang_version}, which is built for CUDA {sglang_cuda_major(sglang_version)}",
            DRIVER_HINT,
        ))
    tp = max(1, int(_p(profile, "tp_size", 1) or 1))
    dp = max(1, int(_p(profile, "dp_size", 1) or 1))
    gpus, missing = selected_gpus(snap, profile)
    if missing:
        have = ", ".join(str(g.index) for g in snap.gpus)
        fails.append(Finding("fail", f"`gpu_ids` {missing} of {label} are not present (visible: {have})",
                             f"set `gpu_ids` in {label} to visible GPU indices, or remove it"))
    if tp * dp > len(gpus):
        fails.append(Finding(
            "fail",
            f"{label} needs {tp * dp} GPUs (`tp_size` {tp} x `dp_size` {dp}) but {len(gpus)} "
            f"{'is' if len(gpus) == 1 else 'are'} available",
            f"lower `tp_size`/`dp_size` in {label}, or list more GPUs in `gpu_ids`",
        ))
    dtype = _p(profile, "dtype", "auto") or "auto"
    quant = _p(profile, "quantization")
    for g in gpus:
        if g.sm < MIN_SM:
            fails.append(Finding("fail", f"GPU {g.index} ({g.name}) is sm{g.sm}; SGLang needs sm{MIN_SM} or newer",
                                 f"use another GPU (`gpu_ids` in {label})"))
            continue
        if g.sm < BF16_MIN_SM and dtype in ("bfloat16", "auto"):
            asked = "`dtype: bfloat16`" if dtype == "bfloat16" else "`dtype: auto` (the checkpoint is bf16)"
            warns.append(Finding(
                "warn",
                f"GPU {g.index} ({g.name}, sm{g.sm}) has no bfloat16: {asked} runs as float16 "
                "(SGLang switches silently); vectors differ slightly from the bf16 reference",
                f"set `dtype: float16` in {label} to make it explicit",
            ))
        need = QUANT_MIN_SM.get(str(quant)) if quant else None
        if need is not None and g.sm < need:
            fails.append(Finding(
                "fail",
                f"`quantization: {quant}` needs compute capability {need}; GPU {g.index} ({g.name}) is {g.sm}",
                f"remove `quantization` from {label} (or pick one this GPU supports)",
            ))
        others = [p for p in g.processes if p.pid != os.getpid()]
        if others:
            held = ", ".join(
                f"pid {p.pid} {p.name or '?'} {p.used_bytes // MiB if p.used_bytes is not None else '?'} MiB"
                for p in others)
            warns.append(Finding("warn", f"GPU {g.index} is already in use: {held}",
                                 "stop those processes, or pick a free GPU with `gpu_ids`"))
    shape = models.model_shape(str(_p(profile, "model", "Qwen/Qwen3-Embedding-4B")))
    if shape is not None and gpus:
        g = min(gpus, key=lambda x: x.memory_free)
        dbytes = models.dtype_bytes_for(dtype)
        fit = models.estimate_fit(
            shape, dtype_bytes=dbytes, gpu_total_bytes=g.memory_total,
            gpu_free_bytes=g.memory_free,
            mem_fraction=_p(profile, "gpu_memory_fraction"),
            context_length=_p(profile, "context_length"),
            chunked_prefill_size=_p(profile, "chunked_prefill_size"), tp_size=tp,
            kv_dtype_bytes=models.kv_dtype_bytes_for(_p(profile, "kv_cache_dtype"), dbytes),
        )
        where = (f"GPU {g.index} ({g.name}, {g.memory_free / GiB:.1f} GiB free of "
                 f"{g.memory_total / GiB:.1f} GiB)")
        if not fit.starts:
            fails.append(Finding(
                "fail", f"{shape.name.split('/')[-1]} will not fit on {where}: {fit.note}",
                f"in {label}: " + "; or ".join(fit.suggestions),
            ))
        elif not fit.fits:
            # SGLang starts with a pool shorter than the context; inputs that long are refused
            warns.append(Finding(
                "warn", f"one full-context request will not fit on {where}: {fit.note}",
                f"in {label}: " + "; or ".join(fit.suggestions),
            ))
    return fails + warns


def require_launchable(snap: GPUSnapshot, profile: Profile | Any, *, sglang_version: str | None) -> list[Finding]:
    """Raise :class:`~qembed.errors.GPUError` on the first failing check; return the rest.

    Raises:
        GPUError: no driver/GPU, driver too old, GPU too old, not enough GPUs, model does not fit.
    """
    from .errors import GPUError

    findings = launch_findings(snap, profile, sglang_version=sglang_version)
    fails = [f for f in findings if f.level == "fail"]
    if fails:
        first = fails[0]
        raise GPUError(first.message, hint=first.hint,
                       details=[f.message for f in fails[1:]])
    return findings


__all__ = [
    "BF16_MIN_SM",
    "DRIVER_HINT",
    "FIRST_CUDA13_SGLANG",
    "LAST_CUDA12_SGLANG",
    "MIN_DRIVER_CUDA13",
    "MIN_SM",
    "QUANT_MIN_SM",
    "Finding",
    "GPUInfo",
    "GPUProcess",
    "GPUSnapshot",
    "driver_cuda_major",
    "driver_too_old",
    "launch_findings",
    "parse_visible_devices",
    "require_launchable",
    "selected_gpus",
    "sglang_cuda_major",
    "sglang_for_driver",
    "snapshot",
]
