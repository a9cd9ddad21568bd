"""The host SGLang's CPU engine would run on, as Linux reports it: the CPU's model and flags
(AVX-512, AMX), sockets and NUMA nodes, free RAM (cgroup limits included).

Read by :mod:`qembed.serving.cpu`'s plan, by ``doctor`` and by ``deploy`` (a node's sizing). Only
the standard library; every path can be pointed elsewhere for tests.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: the CPU flags SGLang's CPU kernels use (AVX-512; AMX tiles, bf16 and int8)
CPU_FLAGS: tuple[str, ...] = ("avx512f", "amx_tile", "amx_bf16", "amx_int8")

# -- the host ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostInfo:
    """The CPU and RAM, as Linux reports them. Sizes in bytes; ``None`` where unreadable."""

    model_name: str | None = None
    vendor: str | None = None
    flags: frozenset[str] = frozenset()
    logical_cpus: int = 0
    physical_cores: int | None = None
    numa_nodes: tuple[tuple[int, str], ...] = ()  # (node id, cpulist as the kernel writes it)
    mem_total: int | None = None
    mem_available: int | None = None
    cgroup_limit: int | None = None  # memory.max - memory.current of this cgroup (v2), if limited

    @property
    def has_avx512(self) -> bool:
        return "avx512f" in self.flags

    @property
    def has_amx_bf16(self) -> bool:
        """AMX tiles with bf16 (Xeon 4th generation, Sapphire Rapids, and newer)."""
        return "amx_tile" in self.flags and "amx_bf16" in self.flags

    @property
    def available(self) -> int | None:
        """Free RAM as SGLang counts it: ``MemAvailable``, or less under a cgroup limit."""
        if self.mem_available is None:
            return self.cgroup_limit
        if self.cgroup_limit is None:
            return self.mem_available
        return min(self.mem_available, self.cgroup_limit)

    @property
    def numa_count(self) -> int:
        return max(1, len(self.numa_nodes))

    def flags_text(self) -> str:
        """``avx512f yes, amx_tile yes, amx_bf16 yes, amx_int8 yes``."""
        return ", ".join(f"{f} {'yes' if f in self.flags else 'no'}" for f in CPU_FLAGS)

    def to_json(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "vendor": self.vendor,
                "flags": {f: f in self.flags for f in CPU_FLAGS}, "logical_cpus": self.logical_cpus,
                "physical_cores": self.physical_cores,
                "numa_nodes": [{"node": n, "cpus": c} for n, c in self.numa_nodes],
                "mem_total_bytes": self.mem_total, "mem_available_bytes": self.mem_available,
                "cgroup_free_bytes": self.cgroup_limit}


def parse_cpuinfo(text: str) -> tuple[str | None, str | None, frozenset[str], int, int | None]:
    """``(model name, vendor, flags of the first CPU, logical CPUs, physical cores)``.

    Physical cores count distinct ``(physical id, core id)`` pairs; ``None`` when the file does
    not say (some VMs and non-x86 kernels leave them out).
    """
    model = vendor = None
    flags: frozenset[str] = frozenset()
    logical = 0
    cores: set[tuple[str, str]] = set()
    missing_ids = False
    for block in re.split(r"\n\s*\n", text.strip()):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        if "processor" not in fields:
            continue
        logical += 1
        model = model or fields.get("model name")
        vendor = vendor or fields.get("vendor_id")
        if not flags and "flags" in fields:
            flags = frozenset(fields["flags"].split())
        if "physical id" in fields and "core id" in fields:
            cores.add((fields["physical id"], fields["core id"]))
        else:
            missing_ids = True
    return model, vendor, flags, logical, (None if missing_ids or not cores else len(cores))


def parse_meminfo(text: str) -> dict[str, int]:
    """``/proc/meminfo`` in bytes: ``{"MemTotal": ..., "MemAvailable": ...}``."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        m = re.match(r"^(\w+):\s+(\d+)\s*kB", line)
        if m:
            out[m.group(1)] = int(m.group(2)) * 1024
    return out


def read_text(path: Path) -> str | None:
    """The text of ``path`` (undecodable bytes replaced), or ``None`` when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _cgroup_free(root: Path) -> int | None:
    limit, current = read_text(root / "memory.max"), read_text(root / "memory.current")
    if limit is None or current is None or limit.strip() == "max":
        return None
    try:
        return max(0, int(limit) - int(current))
    except ValueError:
        return None


def read_host(*, proc: str | os.PathLike[str] = "/proc", sys_nodes: str | os.PathLike[str] =
              "/sys/devices/system/node", cgroup: str | os.PathLike[str] = "/sys/fs/cgroup") -> HostInfo:
    """Read the CPU and RAM. Never raises: what cannot be read stays ``None`` / empty.

    Args:
        proc: where ``cpuinfo`` and ``meminfo`` are (tests plant their own).
        sys_nodes: the NUMA node directory (``node0/cpulist``, ...); absent on non-NUMA kernels.
        cgroup: the cgroup v2 directory with ``memory.max`` / ``memory.current``.

    Example:
        >>> host = read_host(proc="/nonexistent")
        >>> host.logical_cpus, host.mem_available
        (0, None)
    """
    model = vendor = None
    flags: frozenset[str] = frozenset()
    logical, physical = 0, None
    text = read_text(Path(proc) / "cpuinfo")
    if text is not None:
        model, vendor, flags, logical, physical = parse_cpuinfo(text)
    mem = parse_meminfo(read_text(Path(proc) / "meminfo") or "")
    nodes: list[tuple[int, str]] = []
    base = Path(sys_nodes)
    try:
        entries = sorted(base.iterdir()) if base.is_dir() else []
    except OSError:
        entries = []
    for entry in entries:
        m = re.fullmatch(r"node(\d+)", entry.name)
        if m:
            cpus = (read_text(entry / "cpulist") or "").strip()
            if cpus:  # memory-only nodes (CXL, HBM) have no CPUs and get no rank
                nodes.append((int(m.group(1)), cpus))
    return HostInfo(model_name=model, vendor=vendor, flags=flags, logical_cpus=logical,
                    physical_cores=physical, numa_nodes=tuple(sorted(nodes)),
                    mem_total=mem.get("MemTotal"), mem_available=mem.get("MemAvailable"),
                    cgroup_limit=_cgroup_free(Path(cgroup)))


# -- SGLang's CPU build, asked in SGLang's interpreter ---------------------------------------


__all__ = ["CPU_FLAGS", "HostInfo", "parse_cpuinfo", "parse_meminfo", "read_host", "read_text"]
