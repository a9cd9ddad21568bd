"""A fake ``pynvml`` module for tests: NVML without a GPU.

qembed imports ``pynvml`` inside :func:`qembed.serving.gpu.snapshot`, so a test swaps the module in
``sys.modules`` and every NVML call lands here.

Usage::

    from tests import fake_nvml

    def test_something(monkeypatch):
        fake = fake_nvml.install(monkeypatch, "a100")     # put it in sys.modules["pynvml"]
        snap = qembed.serving.gpu.snapshot()                      # reads the fake A100

    fake = fake_nvml.make("t4")                           # just build the module
    fake = fake_nvml.make("a100", gpus=2)                 # two identical GPUs
    fake = fake_nvml.make("busy")                         # A100, another process holds 30 GB

Scenarios (``SCENARIOS``): ``a100`` (A100-SXM4-80GB, sm80, driver 580.65.06, CUDA 13000),
``2xa100`` (two of them, for a spawned ``qembed serve --gpus 0,1``), ``a100-40g``, ``h100`` (sm90), ``t4`` (16 GB, sm75), ``l4`` (24 GB, sm89), ``no-driver``
(``nvmlInit`` raises ``NVMLError_LibraryNotFound``), ``driver-not-loaded``
(``NVMLError_DriverNotLoaded``), ``old-driver`` (A100 on 550.54.15, CUDA 12040) and ``busy``
(A100 where pid 4242 ``python3`` holds 30 GB). ``make(..., processes=[(pid, name, bytes)])`` adds
processes; ``make(..., gpus=[spec, spec])`` builds mixed machines from :class:`GPUSpec`.

The fake keeps the real module's error model: ``NVMLError(value)`` maps to the subclass for
that code, so ``except pynvml.NVMLError_DriverNotLoaded`` works as with nvidia-ml-py.
The process names live in ``fake.proc_names`` (pid -> name); :func:`install` also patches
``qembed.serving.gpu._proc_name`` to read them, since the pids do not exist on this machine.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

MiB = 1024**2
GiB = 1024**3

NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_INVALID_ARGUMENT = 2


@dataclass(frozen=True)
class GPUSpec:
    name: str
    total_mib: int
    cc: tuple[int, int]
    used_mib: int = 0  # memory used by processes (plus the driver's own few hundred MiB)
    uuid: str = ""


@dataclass(frozen=True)
class Scenario:
    driver: str | None = "580.65.06"
    cuda: int | None = 13000
    gpus: tuple[GPUSpec, ...] = ()
    init_error: int | None = None  # an NVML error code raised by nvmlInit
    processes: tuple[tuple[int, str, int], ...] = ()  # (pid, name, bytes) on GPU 0
    extra: dict[str, Any] = field(default_factory=dict)


A100 = GPUSpec("NVIDIA A100-SXM4-80GB", 81920, (8, 0), used_mib=4)
A100_40 = GPUSpec("NVIDIA A100-SXM4-40GB", 40960, (8, 0), used_mib=4)
H100 = GPUSpec("NVIDIA H100 80GB HBM3", 81559, (9, 0), used_mib=4)
T4 = GPUSpec("Tesla T4", 15360, (7, 5), used_mib=4)
L4 = GPUSpec("NVIDIA L4", 23034, (8, 9), used_mib=4)
V100 = GPUSpec("Tesla V100-SXM2-16GB", 16384, (7, 0), used_mib=4)

SCENARIOS: dict[str, Scenario] = {
    "a100": Scenario(gpus=(A100,)),
    "2xa100": Scenario(gpus=(A100, A100)),
    "a100-40g": Scenario(gpus=(A100_40,)),
    "h100": Scenario(gpus=(H100,)),
    "t4": Scenario(gpus=(T4,)),
    "l4": Scenario(gpus=(L4,)),
    "v100": Scenario(gpus=(V100,)),
    "no-driver": Scenario(driver=None, cuda=None, init_error=NVML_ERROR_LIBRARY_NOT_FOUND),
    "driver-not-loaded": Scenario(driver=None, cuda=None, init_error=NVML_ERROR_DRIVER_NOT_LOADED),
    "old-driver": Scenario(driver="550.54.15", cuda=12040, gpus=(A100,)),
    "busy": Scenario(gpus=(A100,), processes=((4242, "python3", 30 * 1000**3),)),
}


class _Mem:
    def __init__(self, total: int, used: int) -> None:
        self.total = total
        self.used = used
        self.free = total - used


class _Proc:
    def __init__(self, pid: int, used: int | None) -> None:
        self.pid = pid
        self.usedGpuMemory = used


def _make_errors(mod: types.ModuleType) -> None:
    class NVMLError(Exception):
        _valClassMapping: dict[int, type] = {}  # noqa: RUF012 - mirrors nvidia-ml-py

        def __new__(cls, value: int) -> NVMLError:
            if cls is NVMLError:
                cls = NVMLError._valClassMapping.get(value, cls)
            obj = Exception.__new__(cls)
            obj.value = value  # type: ignore[attr-defined]
            return obj

        def __init__(self, value: int) -> None:
            super().__init__(value)
            self.value = value

        def __str__(self) -> str:
            return _MESSAGES.get(self.value, f"Unknown Error {self.value}")

    mod.NVMLError = NVMLError  # type: ignore[attr-defined]
    for code, cls_name in (
        (NVML_ERROR_LIBRARY_NOT_FOUND, "NVMLError_LibraryNotFound"),
        (NVML_ERROR_DRIVER_NOT_LOADED, "NVMLError_DriverNotLoaded"),
        (NVML_ERROR_NOT_SUPPORTED, "NVMLError_NotSupported"),
        (NVML_ERROR_INVALID_ARGUMENT, "NVMLError_InvalidArgument"),
    ):
        sub = type(cls_name, (NVMLError,), {})
        NVMLError._valClassMapping[code] = sub
        setattr(mod, cls_name, sub)
    mod.NVML_ERROR_LIBRARY_NOT_FOUND = NVML_ERROR_LIBRARY_NOT_FOUND  # type: ignore[attr-defined]
    mod.NVML_ERROR_DRIVER_NOT_LOADED = NVML_ERROR_DRIVER_NOT_LOADED  # type: ignore[attr-defined]


_MESSAGES = {
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
}


def make(
    scenario: str = "a100",
    *,
    gpus: int | Sequence[GPUSpec] | None = None,
    processes: Sequence[tuple[int, str, int]] | None = None,
    driver: str | None = None,
    cuda: int | None = None,
) -> types.ModuleType:
    """Build a fake ``pynvml`` module for a named scenario (see the module docstring).

    Args:
        scenario: a key of ``SCENARIOS``.
        gpus: an int repeats the scenario's first GPU; a list of :class:`GPUSpec` replaces them.
        processes: ``(pid, name, bytes)`` holding memory on GPU 0 (replaces the scenario's).
        driver, cuda: override the driver string / CUDA driver version (e.g. ``12040``).
    """
    sc = SCENARIOS[scenario]
    specs: list[GPUSpec] = list(sc.gpus)
    if isinstance(gpus, int):
        specs = [specs[0]] * gpus if specs else []
    elif gpus is not None:
        specs = list(gpus)
    specs = [replace(s, uuid=s.uuid or f"GPU-{i:08x}-fake-{i:04d}") for i, s in enumerate(specs)]
    procs = list(sc.processes if processes is None else processes)
    drv = sc.driver if driver is None else driver
    cu = sc.cuda if cuda is None else cuda

    mod = types.ModuleType("pynvml")
    mod.__file__ = "<fake pynvml>"
    _make_errors(mod)
    err = mod.NVMLError  # type: ignore[attr-defined]
    state = {"init": 0}
    mod.proc_names = {pid: name for pid, name, _ in procs}  # type: ignore[attr-defined]
    mod.calls = []  # type: ignore[attr-defined]

    def nvmlInit() -> None:
        if sc.init_error is not None:
            raise err(sc.init_error)
        state["init"] += 1

    def nvmlShutdown() -> None:
        state["init"] = max(0, state["init"] - 1)

    def _need_init() -> None:
        if state["init"] <= 0:
            raise err(NVML_ERROR_DRIVER_NOT_LOADED)

    def nvmlSystemGetDriverVersion() -> str:
        _need_init()
        assert drv is not None
        return drv

    def nvmlSystemGetCudaDriverVersion() -> int:
        _need_init()
        assert cu is not None
        return cu

    def nvmlDeviceGetCount() -> int:
        _need_init()
        return len(specs)

    def nvmlDeviceGetHandleByIndex(i: int) -> int:
        _need_init()
        if not 0 <= i < len(specs):
            raise err(NVML_ERROR_INVALID_ARGUMENT)
        return i

    def nvmlDeviceGetName(h: int) -> str:
        return specs[h].name

    def nvmlDeviceGetUUID(h: int) -> str:
        return specs[h].uuid

    def nvmlDeviceGetMemoryInfo(h: int, version: int | None = None) -> _Mem:
        s = specs[h]
        used = s.used_mib * MiB + (sum(b for _, _, b in procs) if h == 0 else 0)
        return _Mem(s.total_mib * MiB, used)

    def nvmlDeviceGetCudaComputeCapability(h: int) -> tuple[int, int]:
        return specs[h].cc

    def nvmlDeviceGetComputeRunningProcesses(h: int) -> list[_Proc]:
        return [_Proc(pid, b) for pid, _, b in procs] if h == 0 else []

    def nvmlDeviceGetGraphicsRunningProcesses(h: int) -> list[_Proc]:
        raise err(NVML_ERROR_NOT_SUPPORTED)  # datacenter GPUs: no graphics processes

    for fn in (nvmlInit, nvmlShutdown, nvmlSystemGetDriverVersion, nvmlSystemGetCudaDriverVersion,
               nvmlDeviceGetCount, nvmlDeviceGetHandleByIndex, nvmlDeviceGetName, nvmlDeviceGetUUID,
               nvmlDeviceGetMemoryInfo, nvmlDeviceGetCudaComputeCapability,
               nvmlDeviceGetComputeRunningProcesses, nvmlDeviceGetGraphicsRunningProcesses):
        setattr(mod, fn.__name__, fn)
    return mod


def install(monkeypatch: pytest.MonkeyPatch, scenario: str = "a100", **kw: Any) -> types.ModuleType:
    """Build a fake (see :func:`make`) and put it in ``sys.modules["pynvml"]`` for this test.

    Also makes ``qembed.serving.gpu`` read process names from the fake instead of ``/proc``.
    """
    import sys

    fake = make(scenario, **kw)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    import qembed.serving.gpu as qgpu

    names: dict[int, str] = fake.proc_names  # type: ignore[attr-defined]
    monkeypatch.setattr(qgpu, "_proc_name", lambda pid: names.get(pid, ""))
    return fake


def remove(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import pynvml`` fail (nvidia-ml-py not installed)."""
    import sys

    monkeypatch.setitem(sys.modules, "pynvml", None)  # type: ignore[arg-type]


__all__ = ["SCENARIOS", "GPUSpec", "Scenario", "install", "make", "remove"]
