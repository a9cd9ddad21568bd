"""NVML snapshot of the driver and the visible GPUs, as plain dataclasses.

``pynvml`` (from the ``nvidia-ml-py`` package) is imported inside :func:`snapshot` only. Tests
fake NVML at that boundary by putting a fake ``pynvml`` module in ``sys.modules``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
