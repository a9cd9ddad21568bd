"""SGLang on CPU (``device: cpu``, ``qembed serve --profile xeon``): the host, the kernels, the plan.

* :func:`read_host`: the CPU (model, AVX-512/AMX flags, cores, NUMA nodes) from ``/proc/cpuinfo``
  and ``/sys/devices/system/node``, and RAM from ``/proc/meminfo`` (and the cgroup v2 limit);
* :func:`check_kernels`: whether SGLang's CPU build is installed, asked in SGLang's own
  interpreter (with a deadline), and which path SGLang will take: its AMX kernels, or plain
  PyTorch ("torch-native");
* :func:`plan`: applies both to a profile. The profile that launches always gets an explicit
  ``dtype`` and ``max_total_tokens``, and every value says where it came from. ``qembed serve``
  (before anything starts), ``qembed serve --dry-run`` and ``qembed doctor`` all use it.

The rules, each measured or read in SGLang 0.5.23's source (``../shared/reference/sglang-cpu-engine.md``):

* **dtype**: never ``auto``, which serves a float32 checkpoint in *float16* on CPU (cos 0.9999991
  against sentence-transformers, two replies to one input differ by about 2e-4). ``bfloat16``
  only on SGLang's AMX path (``amx_bf16`` in ``/proc/cpuinfo`` and the CPU kernels installed):
  that is what the AMX GEMMs are for. Everywhere else ``float32``: the torch-native path has no
  fast bf16 GEMM on most CPUs, and float32 gives the model card's vectors exactly (cos 1.0).
  A ``dtype`` the user set (``--set dtype=...``, or in a profile file) wins.
* **KV pool** (``max_total_tokens``): without it SGLang's CPU pool takes about 72 % of RAM (13 GB,
  15 s to allocate, 1 GB left free, on a 24 GB box). qembed sizes it from *free* RAM instead:
  :data:`KV_RAM_FRACTION` of ``MemAvailable`` (per NUMA node, as SGLang counts memory per rank),
  minus the weights, minus :data:`RUNTIME_BYTES` that SGLang's three processes hold resident,
  divided by the model's KV bytes per token, capped at :data:`MAX_KV_TOKENS`. An embedding
  server only keeps the KV of the inputs in flight, and on a CPU few are. A
  ``max_total_tokens`` the user set wins.
* **threads**: SGLang's default is kept (``SGLANG_CPU_OMP_THREADS_BIND`` unset): its one rank
  binds OpenMP threads to the *physical* cores of NUMA node 0 (``numa_utils.init_threads_binding``,
  ``get_cpu_ids_by_node``: hyper-thread siblings left out), so memory stays local. Setting the
  variable makes SGLang give up sizing memory per rank (``get_cpu_memory_capacity`` returns
  ``None`` and warns); a value in the profile's ``env`` is passed through and reported.

Only the standard library is imported at module level; the kernel check runs in a subprocess.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from qembed.serving.cpu_host import HostInfo, read_host, read_text

if TYPE_CHECKING:
    from qembed.errors import QembedError
    from qembed.serving.policy import Finding
    from qembed.serving.profiles.model import Profile

#: The x86 feature flags that decide SGLang's CPU path, as ``/proc/cpuinfo`` spells them.
#: SGLang sizes memory per rank from this variable's absence (``srt/utils/common.py``).
THREADS_BIND_ENV = "SGLANG_CPU_OMP_THREADS_BIND"
#: The share of free RAM (``MemAvailable``) the weights, SGLang's processes and the KV pool may
#: use together; the rest stays with the OS, its page cache and other processes.
KV_RAM_FRACTION = 0.5
#: What SGLang's server, scheduler and detokenizer hold resident besides the weights and the
#: KV pool: 3.3 GB measured with the tiny model (1.0 + 1.35 + 0.95 GB), rounded up.
RUNTIME_BYTES = 3_500_000_000
#: The largest pool qembed sizes on its own: 128 K tokens is many full-context inputs in flight,
#: more than a CPU forwards at once.
MAX_KV_TOKENS = 131_072
#: Used when the model's shape is unknown (no config.json on disk, not a known Qwen3-Embedding).
UNKNOWN_SHAPE_KV_TOKENS = 8192
#: What the torch-native path (no AMX kernels) cost where it was measured.
TORCH_NATIVE_COST = (
    "the reference engine (`--profile cpu`) was 2.2–3.2× faster on short texts and 1.0–1.3× at "
    "512 tokens (tiny test model, 2-core Xeon and EPYC; docs/performance.md §9)"
)
#: Where users find how to install SGLang's CPU build.
INSTALL_DOC = 'docs/serving.md, "SGLang on CPU (`--profile xeon`)"'
INSTALL_HINT = (
    "install SGLang's CPU build (sgl-kernel compiled for CPU): the repository's "
    f"`scripts/install_sglang_cpu.sh`, or SGLang's xeon.Dockerfile ({INSTALL_DOC}); or pass "
    "`--python` to the interpreter that has it. Without it, `qembed serve --profile cpu` serves "
    "the reference engine (development and CI)"
)

Path_ = Literal["amx", "torch-native", "missing"]


# Runs in SGLang's interpreter with the launch's environment (SGLANG_USE_CPU_ENGINE=1 included).
# The CPU build is there when `assign_req_to_token_pool_cpu` resolves after `import sgl_kernel`:
# the one op SGLang's CPU path calls for Qwen3 even without AMX. The AMX path is SGLang's own
# test, `cpu_has_amx_support()` in srt/utils/common.py: torch.cpu._is_amx_tile_supported() and
# `convert_weight_packed` among the sgl_kernel ops (then `intel_amx` attention and packed weights;
# otherwise "will fallback to torch_native backend"). It does not import sglang (seconds saved).
_KERNEL_CHECK = r"""
import importlib.metadata as md, json, sys
out = {"python": sys.executable, "sglang": None, "torch": None, "sgl_kernel": False,
       "import_error": None, "cpu_op": False, "amx_kernels": False, "amx_tile": None}
for dist in ("sglang",):
    try:
        out[dist] = md.version(dist)
    except md.PackageNotFoundError:
        pass
def first_line(exc):
    lines = [l.strip() for l in str(exc).splitlines() if l.strip()]
    return "%s: %s" % (type(exc).__name__, lines[0][:300] if lines else "")
try:
    import torch
    out["torch"] = torch.__version__
except BaseException as exc:
    out["import_error"] = "import torch: " + first_line(exc)
else:
    try:
        out["amx_tile"] = bool(torch.cpu._is_amx_tile_supported())
    except BaseException:
        out["amx_tile"] = False
    try:
        import sgl_kernel
        out["sgl_kernel"] = True
    except BaseException as exc:
        out["import_error"] = "import sgl_kernel: " + first_line(exc)
    else:
        ops = torch.ops.sgl_kernel
        out["cpu_op"] = hasattr(ops, "assign_req_to_token_pool_cpu")
        out["amx_kernels"] = hasattr(ops, "convert_weight_packed")
sys.stdout.write("QEMBED-CPU " + json.dumps(out) + "\n")
"""


@dataclass(frozen=True)
class KernelCheck:
    """What SGLang's interpreter says about its CPU build.

    ``error`` is set when the check itself could not run (no interpreter, deadline passed);
    ``import_error`` when torch or ``sgl_kernel`` do not import there.
    """

    python: str
    error: str | None = None
    sglang: str | None = None
    torch: str | None = None
    sgl_kernel: bool = False
    import_error: str | None = None
    cpu_op: bool = False  # torch.ops.sgl_kernel.assign_req_to_token_pool_cpu resolves
    amx_kernels: bool = False  # torch.ops.sgl_kernel.convert_weight_packed resolves
    amx_tile: bool | None = None  # torch.cpu._is_amx_tile_supported() (CPU and OS allow AMX)
    seconds: float = 0.0

    @property
    def installed(self) -> bool:
        """SGLang and its CPU build are there (SGLang can serve on CPU)."""
        return self.sglang is not None and self.cpu_op

    @property
    def path(self) -> Path_:
        """``amx``: SGLang's ``cpu_has_amx_support()`` holds; ``torch-native``: installed
        without it; ``missing``: SGLang cannot serve on CPU from this interpreter."""
        if not self.installed:
            return "missing"
        return "amx" if (self.amx_tile and self.amx_kernels) else "torch-native"

    def why_missing(self) -> str:
        if self.error:
            return self.error
        if self.sglang is None:
            return f"SGLang is not installed in `{self.python}`"
        if self.import_error:
            return f"SGLang's CPU kernels do not load in `{self.python}` ({self.import_error})"
        return (f"`sgl_kernel` in `{self.python}` is not a CPU build "
                "(`torch.ops.sgl_kernel.assign_req_to_token_pool_cpu` does not resolve)")

    def to_json(self) -> dict[str, Any]:
        return {"python": self.python, "error": self.error, "sglang": self.sglang, "torch": self.torch,
                "sgl_kernel_imports": self.sgl_kernel, "import_error": self.import_error,
                "cpu_op": self.cpu_op, "amx_kernels": self.amx_kernels, "amx_tile": self.amx_tile,
                "installed": self.installed, "path": self.path, "seconds": round(self.seconds, 2)}


_CACHED_FIELDS = ("sglang", "torch", "sgl_kernel", "import_error", "cpu_op", "amx_kernels", "amx_tile")


def check_kernels(python: str, *, env: Mapping[str, str] | None = None, timeout: float = 90.0,
                  cache: bool = True) -> KernelCheck:
    """Ask ``python`` whether SGLang's CPU build is installed, and which path it takes. Never raises.

    Args:
        python: SGLang's interpreter (:func:`qembed.serving.sglang_args.resolve_sglang`).
        env: the environment the launch runs with (``SGLANG_USE_CPU_ENGINE=1`` in it).
        timeout: the deadline for importing torch and ``sgl_kernel`` (seconds; a cold start of
            torch on a busy box takes tens of seconds).
        cache: reuse the answer given for the same SGLang target, installed packages and CPU
            (:mod:`qembed.host.verdicts`; the import costs 5-10 s); a check that could not run is
            never cached.

    Returns:
        A :class:`KernelCheck`; ``error`` says why the check could not run.
    """
    from qembed.host import verdicts

    t0 = time.perf_counter()
    full_env = dict(os.environ if env is None else env)
    cpu_id = hashlib.sha256((read_text(Path("/proc/cpuinfo")) or "").split("\n\n")[0].encode()).hexdigest()
    cache_key = verdicts.key(python, full_env, ["cpu-kernels", cpu_id]) if cache else None
    if cache_key is not None:
        hit = verdicts.load_verdict(cache_key)
        if hit is not None and set(_CACHED_FIELDS) <= hit.keys():
            return KernelCheck(python, **{k: hit[k] for k in _CACHED_FIELDS}, seconds=time.perf_counter() - t0)
    result = _run_kernel_check(python, full_env, timeout, t0)
    if cache_key is not None and result.error is None:
        verdicts.store_verdict(cache_key, {k: getattr(result, k) for k in _CACHED_FIELDS})
    return result


def _run_kernel_check(python: str, env: dict[str, str], timeout: float, t0: float) -> KernelCheck:
    try:
        proc = subprocess.run([python, "-c", _KERNEL_CHECK], capture_output=True, text=True, timeout=timeout,
                              env=env, check=False)
    except subprocess.TimeoutExpired:
        return KernelCheck(python, error=f"importing torch and `sgl_kernel` in `{python}` took longer than "
                           f"{timeout:.0f} s", seconds=time.perf_counter() - t0)
    except OSError as exc:
        return KernelCheck(python, error=f"cannot run `{python}`: {exc.strerror or exc}",
                           seconds=time.perf_counter() - t0)
    line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("QEMBED-CPU ")), None)
    if line is None:
        tail = " ".join(proc.stderr.strip().splitlines()[-2:])[:300]
        return KernelCheck(python, error=f"`{python}` exited {proc.returncode} during the check: {tail}",
                           seconds=time.perf_counter() - t0)
    d = json.loads(line.removeprefix("QEMBED-CPU "))
    return KernelCheck(python, sglang=d.get("sglang"), torch=d.get("torch"), sgl_kernel=bool(d.get("sgl_kernel")),
                       import_error=d.get("import_error"), cpu_op=bool(d.get("cpu_op")),
                       amx_kernels=bool(d.get("amx_kernels")), amx_tile=d.get("amx_tile"),
                       seconds=time.perf_counter() - t0)


# -- the rules --------------------------------------------------------------------------------


def choose_dtype(host: HostInfo, kernels: KernelCheck, *, explicit: str | None = None) -> tuple[str, str]:
    """``(dtype, why)``: the user's choice, else ``bfloat16`` on the AMX path, else ``float32``.

    Example:
        >>> choose_dtype(HostInfo(), KernelCheck("python"))
        ('float32', 'no AMX bf16 path (no amx_bf16 in /proc/cpuinfo): float32 gives the reference vectors exactly')
    """
    if explicit is not None:
        return explicit, "set in the profile (or `--set dtype=...`)"
    if host.has_amx_bf16 and kernels.path == "amx":
        return "bfloat16", "AMX bf16 in /proc/cpuinfo and SGLang's AMX kernels installed"
    if not host.has_amx_bf16:
        why = "no amx_bf16 in /proc/cpuinfo"
    elif kernels.path != "amx":
        why = "SGLang's AMX kernels are not installed" if kernels.installed else "SGLang's CPU build is missing"
    else:  # pragma: no cover - both hold above
        why = ""
    return "float32", f"no AMX bf16 path ({why}): float32 gives the reference vectors exactly"


@dataclass(frozen=True)
class KVBudget:
    """The KV pool qembed sizes from free RAM (:func:`kv_budget`)."""

    tokens: int  # what ``max_total_tokens`` becomes
    available_bytes: int | None  # free RAM per NUMA node (per SGLang rank)
    weights_bytes: int | None
    kv_bytes_per_token: int | None
    budget_bytes: int | None  # what the pool may use
    capped: bool = False
    note: str = ""


def kv_budget(*, available: int | None, numa_nodes: int = 1, weights_bytes: int | None,
              kv_bytes_per_token: int | None, fraction: float = KV_RAM_FRACTION,
              runtime_bytes: int = RUNTIME_BYTES, cap: int = MAX_KV_TOKENS) -> KVBudget:
    """Tokens of KV the pool gets: ``(fraction x free RAM per NUMA node - weights - runtime) /
    KV bytes per token``, at most ``cap``; 0 when nothing is left.

    Example:
        >>> kv_budget(available=24 * 1024**3, weights_bytes=2 * 1024**3, kv_bytes_per_token=1024**2).tokens
        6656
    """
    if kv_bytes_per_token is None or weights_bytes is None:
        return KVBudget(UNKNOWN_SHAPE_KV_TOKENS, available, weights_bytes, kv_bytes_per_token, None,
                        note="the model's shape is unknown (no config.json on disk)")
    if available is None:
        return KVBudget(UNKNOWN_SHAPE_KV_TOKENS, None, weights_bytes, kv_bytes_per_token, None,
                        note="free RAM is unknown (no /proc/meminfo)")
    per_rank = available // max(1, numa_nodes)
    budget = int(per_rank * fraction) - weights_bytes - runtime_bytes
    tokens = max(0, budget // kv_bytes_per_token)
    capped = tokens > cap
    return KVBudget(min(tokens, cap), per_rank, weights_bytes, kv_bytes_per_token, budget, capped=capped)


# -- the plan ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanValue:
    """One value the launch uses, and where it came from."""

    key: str
    value: Any
    source: Literal["profile", "qembed", "sglang"]  # set by the user / chosen here / SGLang's own
    why: str

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "value": self.value, "source": self.source, "why": self.why}


@dataclass(frozen=True)
class CPUPlan:
    """What ``qembed serve`` will launch on this CPU. ``profile`` is the one to launch."""

    profile: Profile
    host: HostInfo
    kernels: KernelCheck
    kv: KVBudget
    values: tuple[PlanValue, ...]
    findings: tuple[Finding, ...] = field(default=())

    @property
    def path(self) -> Path_:
        return self.kernels.path

    @property
    def refusal(self) -> Finding | None:
        return next((f for f in self.findings if f.level == "fail"), None)

    def require(self) -> None:
        """Raise on the first ``fail`` finding.

        Raises:
            MissingDependency: SGLang's CPU build is not installed (exit code 2).
            GPUError: the model does not fit in RAM (exit code 3, "does not fit").
            ConfigError: the profile's ``context_length`` is more than its KV pool (exit code 2).
        """
        from qembed.errors import ConfigError, GPUError, MissingDependency

        fail = self.refusal
        if fail is None:
            return
        cls: type[QembedError] = {"kernels": MissingDependency, "context": ConfigError}.get(fail.check, GPUError)
        raise cls(fail.message, hint=fail.hint)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "host": self.host.to_json(), "kernels": self.kernels.to_json(),
                "values": [v.to_json() for v in self.values],
                "kv": {"tokens": self.kv.tokens, "available_bytes": self.kv.available_bytes,
                       "weights_bytes": self.kv.weights_bytes, "kv_bytes_per_token": self.kv.kv_bytes_per_token,
                       "budget_bytes": self.kv.budget_bytes, "capped": self.kv.capped,
                       "ram_fraction": KV_RAM_FRACTION, "runtime_bytes": RUNTIME_BYTES},
                "findings": [{"level": f.level, "check": f.check, "message": f.message, "hint": f.hint}
                             for f in self.findings]}


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def threads_binding(host: HostInfo, env: Mapping[str, str]) -> str:
    """How SGLang will bind its OpenMP threads, in words."""
    value = env.get(THREADS_BIND_ENV)
    if value:
        return (f"`{THREADS_BIND_ENV}={value}` (set in the environment): SGLang binds to those CPUs and "
                "no longer sizes memory per rank")
    cores = f"{host.physical_cores} physical cores" if host.physical_cores else "the physical cores"
    if host.numa_nodes:
        node, cpus = host.numa_nodes[0]
        where = f"NUMA node {node} (CPUs {cpus}; {host.numa_count} node{'s' if host.numa_count > 1 else ''})"
    else:
        where = "the only NUMA node"
    return (f"SGLang's default (`{THREADS_BIND_ENV}` unset): its rank binds OpenMP threads to the "
            f"physical cores of {where}; this machine has {cores}, {host.logical_cpus} logical CPUs")


def _ctx_fit(tokens: int) -> int:
    """The largest context that fits a pool of ``tokens``: whole KiB of tokens when it can."""
    return tokens // 1024 * 1024 if tokens >= 1024 else tokens


def _host_and_kernel_findings(host: HostInfo, kernels: KernelCheck) -> list[Finding]:
    """The CPU's flags and SGLang's CPU kernels (the path: AMX or torch-native), as findings."""
    from qembed.serving.policy import Finding

    findings: list[Finding] = []
    # the CPU
    cpu_name = host.model_name or "unknown CPU"
    findings.append(Finding("info", f"{cpu_name}: {host.flags_text()}", check="cpu"))
    if not host.flags:
        findings.append(Finding("warn", "no CPU flags in /proc/cpuinfo: AVX-512 and AMX cannot be checked",
                                "run on Linux (x86-64), where SGLang's CPU backend runs", check="flags"))
    elif not host.has_avx512:
        findings.append(Finding("warn", "no AVX-512 (avx512f): SGLang's CPU kernels are built for AVX-512 "
                                "and AMX Xeons; this CPU runs the torch-native path at best",
                                "for production use an AVX-512/AMX Xeon, or a GPU profile", check="flags"))

    # the kernels and the path
    path = kernels.path
    if path == "missing":
        findings.append(Finding("fail", f"SGLang's CPU build is not installed: {kernels.why_missing()}",
                                INSTALL_HINT, check="kernels"))
    else:
        built = f"sglang {kernels.sglang}, torch {kernels.torch}"
        findings.append(Finding("info", f"{built}: CPU kernels installed (`assign_req_to_token_pool_cpu` "
                                "resolves)", check="kernels"))
        if path == "amx":
            findings.append(Finding("info", "AMX kernels: `intel_amx` attention and packed bf16 weights "
                                    "(SGLang's `cpu_has_amx_support()` holds)", check="path"))
        else:
            why = ("the CPU or the OS does not allow AMX tiles" if not kernels.amx_tile
                   else "SGLang's AMX kernels (`convert_weight_packed`) are not in this sgl_kernel build")
            findings.append(Finding("warn", f"torch-native path ({why}): `torch_native` attention, unpacked "
                                    f"GEMMs; {TORCH_NATIVE_COST}",
                                    "for production throughput use a 4th-generation (or newer) Xeon with "
                                    "SGLang's full CPU build; for development, `--profile cpu`", check="path"))
    return findings


def _ram_and_kv(profile: Profile, host: HostInfo, dtype: str, label: str, findings: list[Finding],
                values: list[PlanValue]) -> tuple[int, Any, KVBudget]:
    """The weights against free RAM, then the KV pool (the profile's, or sized from free RAM):
    appends findings and values; returns the pool's tokens, the model's shape and the budget."""
    from qembed import models
    from qembed.serving.policy import Finding

    # RAM and the KV pool
    shape = models.model_shape(profile.model)
    dbytes = models.dtype_bytes_for(dtype if dtype != "auto" else "float16")
    kvb = models.kv_dtype_bytes_for(profile.kv_cache_dtype, dbytes)
    weights = shape.loaded_params * dbytes if shape is not None else None
    per_token = shape.kv_bytes_per_token(kvb) if shape is not None else None
    budget = kv_budget(available=host.available, numa_nodes=host.numa_count, weights_bytes=weights,
                       kv_bytes_per_token=per_token)
    model = profile.model.rstrip("/").split("/")[-1]
    ram = (f"{_gb(host.available)} free" if host.available is not None else "free RAM unknown") + (
        f" of {_gb(host.mem_total)}" if host.mem_total else "")
    if weights is not None:
        need = _gb(weights + RUNTIME_BYTES)
        line = (f"{model} in {dtype}: weights {_gb(weights)} + SGLang's processes about {_gb(RUNTIME_BYTES)} "
                f"= {need}; RAM {ram}")
        if host.available is not None and weights + RUNTIME_BYTES > host.available:
            findings.append(Finding("fail", f"{model} does not fit in free RAM: {line}",
                                    "free memory, use a smaller model (`--model Qwen/Qwen3-Embedding-0.6B`), "
                                    "or a machine with more RAM", check="ram"))
        else:
            findings.append(Finding("info", line, check="ram"))
    else:
        findings.append(Finding("warn", f"unknown shape for {profile.model} (no config.json on disk): "
                                f"weights not checked against RAM ({ram})",
                                f"download the model first (`hf download {profile.model}`)", check="ram"))

    if "max_total_tokens" in profile.model_fields_set and profile.max_total_tokens is not None:
        tokens = profile.max_total_tokens
        values.append(PlanValue("max_total_tokens", tokens, "profile", "set in the profile (or `--set`)"))
        if per_token is not None and budget.budget_bytes is not None and tokens * per_token > max(0, budget.budget_bytes):
            findings.append(Finding("warn", f"`max_total_tokens: {tokens}` needs {_gb(tokens * per_token)} of KV; "
                                    f"{KV_RAM_FRACTION:.0%} of free RAM leaves {_gb(max(0, budget.budget_bytes))} "
                                    "after the weights", f"lower `max_total_tokens` in {label}", check="kv"))
        else:
            findings.append(Finding("info", f"KV pool `max_total_tokens: {tokens}` (set in the profile)", check="kv"))
    else:
        tokens = budget.tokens
        if budget.budget_bytes is None:
            why_kv = f"{budget.note}: a conservative {tokens:,} tokens"
        else:
            assert per_token is not None and budget.available_bytes is not None
            per_node = f" per NUMA node ({host.numa_count})" if host.numa_count > 1 else ""
            why_kv = (f"{KV_RAM_FRACTION:.0%} of {_gb(budget.available_bytes)} free{per_node} - weights - "
                      f"SGLang's processes = {_gb(max(0, budget.budget_bytes))} / {per_token // 1024} KiB per "
                      f"token" + (f", capped at {MAX_KV_TOKENS:,}" if budget.capped else ""))
        values.append(PlanValue("max_total_tokens", tokens, "qembed", why_kv))
        if tokens < models.MIN_POOL_TOKENS:
            findings.append(Finding("fail", f"too little free RAM for a KV pool: {why_kv} -> {tokens:,} tokens "
                                    f"(at least {models.MIN_POOL_TOKENS:,} needed)",
                                    f"free memory, or set `max_total_tokens` in {label} yourself", check="kv"))
        elif budget.budget_bytes is None:
            findings.append(Finding("warn", f"KV pool `max_total_tokens: {tokens}`: {why_kv}",
                                    f"set `max_total_tokens` in {label}", check="kv"))
        else:
            findings.append(Finding("info", f"KV pool `max_total_tokens: {tokens}` ({why_kv})", check="kv"))
    return tokens, shape, budget


def _context(profile: Profile, shape: Any, tokens: int, label: str, findings: list[Finding],
             values: list[PlanValue]) -> int | None:
    """The context length against the KV pool (appends findings and values; returns the context)."""
    from qembed.serving.policy import Finding

    # The pool against the context. Real SGLang 0.5.23 (CPU, measured) accepts a request longer
    # than the KV pool but within `context_length`, never schedules it and never answers: the
    # client hangs until its own deadline. So the context must fit in the pool.
    ctx_limit = shape.max_position_embeddings if shape is not None else None
    context = profile.context_length
    if "context_length" in profile.model_fields_set and context is not None:
        if tokens < context:
            findings.append(Finding("fail", f"`context_length: {context}` is more than the KV pool "
                                    f"(`max_total_tokens: {tokens}`): SGLang 0.5.23 accepts a request of "
                                    f"{tokens + 1}..{context} tokens and never answers it",
                                    f"set `context_length: {_ctx_fit(tokens)}` in {label}, or raise "
                                    "`max_total_tokens` (it needs free RAM)", check="context"))
    elif ctx_limit is not None and tokens < ctx_limit:
        context = _ctx_fit(tokens)
        values.append(PlanValue("context_length", context, "qembed",
                                f"the KV pool holds {tokens:,} tokens, fewer than the model's {ctx_limit:,}: "
                                "longer inputs are refused with a clear error instead of hanging in SGLang"))
        findings.append(Finding("warn", f"`context_length: {context}` (the model allows {ctx_limit:,}): the KV pool "
                                f"holds {tokens:,} tokens, and SGLang never answers a longer request",
                                "raise `max_total_tokens` for longer inputs (it needs free RAM)", check="context"))
    return context


def _threads(profile: Profile, host: HostInfo, launch_env: Mapping[str, str], label: str,
             findings: list[Finding], values: list[PlanValue]) -> None:
    """How SGLang binds its threads, and ranks against NUMA nodes (appends findings and values)."""
    from qembed.serving.policy import Finding

    # threads
    binding = threads_binding(host, launch_env)
    values.append(PlanValue(THREADS_BIND_ENV, launch_env.get(THREADS_BIND_ENV),
                            "profile" if launch_env.get(THREADS_BIND_ENV) else "sglang", binding))
    findings.append(Finding("info", binding, check="threads"))
    if profile.tp_size * profile.dp_size > host.numa_count and not launch_env.get(THREADS_BIND_ENV):
        findings.append(Finding("fail", f"{label} asks for {profile.tp_size * profile.dp_size} ranks "
                                f"(`tp_size` x `dp_size`) but the machine has {host.numa_count} NUMA node(s): "
                                "SGLang needs one node per rank", f"set `tp_size: 1` and `dp_size: 1` in {label}, "
                                f"or bind each rank with `{THREADS_BIND_ENV}` in its `env`", check="threads"))


def plan(profile: Profile, *, python: str | None = None, env: Mapping[str, str] | None = None,
         host: HostInfo | None = None, kernels: KernelCheck | None = None, timeout: float = 90.0) -> CPUPlan:
    """Apply the CPU rules to ``profile`` (``device: cpu``): the kernel check, dtype, KV pool, threads.

    Args:
        profile: the resolved profile.
        python: SGLang's interpreter; default :func:`qembed.serving.sglang_args.resolve_sglang`'s.
        env: the launch's environment; default :func:`qembed.serving.sglang_args.resolve_sglang`'s.
        host: :func:`read_host` (default: this machine).
        kernels: :func:`check_kernels` (default: asked in ``python`` now, ``timeout`` seconds at most).

    Returns:
        A :class:`CPUPlan` whose ``profile`` has an explicit ``dtype`` and ``max_total_tokens``;
        ``findings`` hold the refusal (``fail``), the warnings and the facts (``info``).

    Example:
        >>> from qembed.serving.profiles.resolve import load_profile
        >>> p = plan(load_profile("xeon"))                 # doctest: +SKIP
        >>> p.profile.dtype, p.path                          # doctest: +SKIP
        ('bfloat16', 'amx')
    """
    from qembed.serving.policy import Finding, profile_label
    from qembed.serving.sglang_args import resolve_sglang

    py, launch_env = resolve_sglang(profile, python)
    if env is not None:
        launch_env = dict(env)
    host = host if host is not None else read_host()
    kernels = kernels if kernels is not None else check_kernels(py, env=launch_env, timeout=timeout)
    label = profile_label(profile)
    values: list[PlanValue] = []

    findings: list[Finding] = _host_and_kernel_findings(host, kernels)
    path = kernels.path

    # dtype
    explicit = profile.dtype if "dtype" in profile.model_fields_set else None
    dtype, why = choose_dtype(host, kernels, explicit=explicit)
    values.append(PlanValue("dtype", dtype, "profile" if explicit else "qembed", why))
    if dtype == "auto":
        findings.append(Finding("warn", "`dtype: auto` serves a float32 checkpoint in float16 on CPU "
                                "(vectors differ from the reference by up to 5e-4 in norm)",
                                f"remove `dtype` from {label} and let qembed choose", check="dtype"))
    elif dtype == "bfloat16" and path != "amx":
        findings.append(Finding("warn", "`dtype: bfloat16` without SGLang's AMX kernels is slow on CPU",
                                f"remove `dtype` from {label}: qembed picks float32 here", check="dtype"))
    else:
        findings.append(Finding("info", f"`{dtype}`: {why}", check="dtype"))

    tokens, shape, budget = _ram_and_kv(profile, host, dtype, label, findings, values)
    context = _context(profile, shape, tokens, label, findings, values)
    _threads(profile, host, launch_env, label, findings, values)

    applied = profile.model_copy(update={"dtype": dtype, "max_total_tokens": tokens, "context_length": context})
    order = {"fail": 0, "warn": 1, "info": 2}
    return CPUPlan(profile=applied, host=host, kernels=kernels, kv=budget, values=tuple(values),
                   findings=tuple(sorted(findings, key=lambda f: order[f.level])))


def notice_lines(p: CPUPlan) -> Sequence[str]:
    """What a serving session says about the plan, one line each (no findings)."""
    return [f"SGLang on CPU ({'AMX kernels' if p.path == 'amx' else p.path} path): "
            + ", ".join(f"{v.key} {v.value} ({'yours' if v.source == 'profile' else 'chosen by qembed'})"
                        for v in p.values if v.source != "sglang")]


__all__ = [
    "INSTALL_HINT",
    "KV_RAM_FRACTION",
    "MAX_KV_TOKENS",
    "RUNTIME_BYTES",
    "THREADS_BIND_ENV",
    "TORCH_NATIVE_COST",
    "CPUPlan",
    "KVBudget",
    "KernelCheck",
    "PlanValue",
    "check_kernels",
    "choose_dtype",
    "kv_budget",
    "notice_lines",
    "plan",
    "threads_binding",
]
