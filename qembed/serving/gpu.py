"""NVML snapshot of the driver and the visible GPUs, as plain dataclasses.

``pynvml`` (from the ``nvidia-ml-py`` package) is imported inside :func:`snapshot` only. Tests
fake NVML at that boundary by putting a fake ``pynvml`` module in ``sys.modules``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from qembed.models import GiB


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


# -- GPU classes: the one table that names GPUs ---------------------------------------------------


@dataclass(frozen=True)
class GPUClass:
    """A GPU model qembed knows: how NVML names it, its size, its shipped profile, its peak.

    ``profiles`` (the ``auto`` pick, the "made for another GPU" warning) and ``bench`` (MFU) both
    read this table, through :func:`match_gpu_name` and :func:`profile_for`.
    """

    label: str  # "A100 80GB"
    words: frozenset[str]  # whole words of the NVML name that must all appear (upper case)
    memory_gib: float  # nominal memory
    sm: int  # compute capability as one number
    profile: str | None  # the shipped profile sized for it; None = matched by memory and sm
    peak_label: str | None = None  # the bench label of its dense bf16 peak
    peak_tflops: float | None = None  # dense (no sparsity) bf16 TFLOPS; T4: fp16
    avoid: frozenset[str] = frozenset()  # words that must not appear
    min_gib: float = 0.0  # the class only holds at or above this measured memory


def _c(label: str, words: str, gib: float, sm: int, profile: str | None, peak_label: str | None = None,
       peak: float | None = None, avoid: str = "", min_gib: float = 0.0) -> GPUClass:
    return GPUClass(label, frozenset(words.split()), gib, sm, profile, peak_label, peak,
                    frozenset(avoid.split()), min_gib)


# First match wins. Peaks: performance.md section 2.2 (NVIDIA datasheets). H200: the H100 SXM
# compute (same GH100 SMs and clocks; NVIDIA's H200 sheet quotes 1,979 with sparsity). L40S:
# NVIDIA L40S datasheet, 362 dense (733 with sparsity). Matching is on whole words of the NVML
# name, so "A10G", "L40" and "H100 NVL" (other peaks) never borrow a neighbour's figure, and
# "L40S" is never an "L4".
GPU_CLASSES: tuple[GPUClass, ...] = (
    _c("H100 PCIe", "H100 PCIE", 80, 90, "h100", "H100 PCIe", 756.0, min_gib=60),
    _c("H100 NVL", "H100 NVL", 94, 90, "h100", min_gib=60),
    _c("H100 SXM", "H100", 80, 90, "h100", "H100 SXM", 989.0, avoid="PCIE NVL", min_gib=60),
    _c("H800", "H800", 80, 90, "h100", min_gib=60),
    _c("H200", "H200", 141, 90, None, "H200", 989.0, avoid="NVL"),
    _c("A100 80GB", "A100", 80, 80, "a100-80g", "A100", 312.0, min_gib=60),
    _c("A100 40GB", "A100", 40, 80, "a100-40g", "A100", 312.0),
    _c("A800 80GB", "A800", 80, 80, "a100-80g", min_gib=60),
    _c("A800 40GB", "A800", 40, 80, "a100-40g"),
    _c("L40S", "L40S", 48, 89, None, "L40S", 362.0),
    _c("RTX 4090", "4090", 24, 89, "rtx4090", "RTX 4090", 165.0),
    _c("A10", "A10", 24, 86, "a10", "A10", 125.0),
    _c("A10G", "A10G", 24, 86, "a10"),
    _c("L4", "L4", 24, 89, "l4", "L4", 121.0),
    _c("T4", "T4", 16, 75, "t4", "T4 (fp16)", 65.0),
)


def _name_words(name: str) -> set[str]:
    return set(name.upper().replace("-", " ").replace("_", " ").split())


def match_gpu_name(name: str, memory_gib: float | None = None) -> GPUClass | None:
    """The :data:`GPU_CLASSES` entry an NVML name (or a label such as ``l40s``) belongs to.

    Whole words only. ``memory_gib`` (measured) picks between sizes of one name (A100 40/80GB);
    without it the first entry for the name is returned.

    Example:
        >>> match_gpu_name("NVIDIA A100-PCIE-40GB", 39.4).profile
        'a100-40g'
        >>> match_gpu_name("NVIDIA L40S").label
        'L40S'
        >>> match_gpu_name("NVIDIA L40") is None
        True
    """
    words = _name_words(name)
    for cls in GPU_CLASSES:
        if cls.words <= words and not (cls.avoid & words):
            if memory_gib is not None and memory_gib < cls.min_gib:
                continue
            return cls
    return None


def gpu_peak(name: str) -> tuple[str, float] | None:
    """``(label, dense bf16 TFLOPS)`` for an NVML GPU name (or a label), ``None`` when unknown.

    T4 has no bf16, so its fp16 figure (SGLang runs fp16 below sm80). Names without a known
    peak ("A10G", "L40", "H100 NVL") stay unknown rather than borrowing a neighbour's figure.

    Example:
        >>> gpu_peak("NVIDIA H100 80GB HBM3")
        ('H100 SXM', 989.0)
        >>> gpu_peak("NVIDIA A10G") is None
        True
    """
    cls = match_gpu_name(name)
    if cls is None or cls.peak_label is None or cls.peak_tflops is None:
        return None
    return cls.peak_label, cls.peak_tflops


def profile_for_memory(memory_gib: float, sm: int) -> tuple[str | None, GPUClass | None]:
    """The shipped profile for a GPU known only by memory and compute capability.

    sm75-sm79 cards of 12-20 GiB get ``t4`` (no bfloat16, the same limits). Newer cards get the
    profile of the largest class that fits in their memory (nominal size x 0.9, so a 24 GB class
    takes a 22.5 GiB card) with a compute capability no higher than theirs; ``None`` when none
    does (the caller falls back to ``generic``).

    Returns:
        ``(profile name, the class it is sized for)``.
    """
    if sm < MIN_SM:
        return None, None
    if sm < BF16_MIN_SM:
        if 12 <= memory_gib < 20:
            t4 = next(c for c in GPU_CLASSES if c.profile == "t4")
            return "t4", t4
        return None, None
    fits = [c for c in GPU_CLASSES
            if c.profile is not None and c.profile != "t4" and c.memory_gib * 0.9 <= memory_gib and c.sm <= sm]
    if not fits:
        return None, None
    best = max(fits, key=lambda c: (c.memory_gib, c.sm))
    return best.profile, best


def profile_for(g: GPUInfo) -> tuple[str | None, str]:
    """The shipped profile made for ``g`` (by name, else by memory and compute capability).

    Returns:
        ``(profile name or None, one-line reason)``; ``None`` means no shipped profile fits.
    """
    gib = g.memory_total_gib
    desc = f"{g.name} ({gib:.0f} GiB, sm{g.sm})"
    if g.sm < MIN_SM:
        return None, f"{desc} is below sm{MIN_SM}, the oldest GPU SGLang supports"
    cls = match_gpu_name(g.name, gib)
    if cls is not None and cls.profile is not None:
        return cls.profile, f"detected {desc}"
    name, like = profile_for_memory(gib, g.sm)
    known = f"{cls.label}: " if cls is not None else ""
    if name is None or like is None:
        return None, f"no shipped profile for {known}{desc}"
    if name == "t4":
        return name, f"detected {desc}: sm{g.sm} has no bfloat16 and {gib:.0f} GiB is T4-class"
    return name, (f"detected {desc}: no profile of its own; by memory and compute capability "
                  f"it takes the {like.label} (sm{like.sm}) sizing")


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


__all__ = [
    "BF16_MIN_SM",
    "DRIVER_HINT",
    "FIRST_CUDA13_SGLANG",
    "GPU_CLASSES",
    "LAST_CUDA12_SGLANG",
    "MIN_DRIVER_CUDA13",
    "MIN_SM",
    "QUANT_MIN_SM",
    "GPUClass",
    "GPUInfo",
    "GPUProcess",
    "GPUSnapshot",
    "driver_cuda_major",
    "driver_too_old",
    "gpu_peak",
    "match_gpu_name",
    "parse_visible_devices",
    "profile_for",
    "profile_for_memory",
    "sglang_cuda_major",
    "sglang_for_driver",
    "snapshot",
]
