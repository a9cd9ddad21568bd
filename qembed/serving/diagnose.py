"""SGLang log lines -> what went wrong and which profile change fixes it.

Shared by ``qembed serve`` (when SGLang exits before it is ready) and ``qembed doctor --log``.
The signatures are the exact strings of SGLang 0.5.23 (reference §6); each fix names profile keys
(``gpu_memory_fraction``, ``context_length``, ...), never raw SGLang flags, and uses the profile's
actual values when one is given.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from qembed.serving.profiles.model import Profile

#: How much of a log the diagnosis reads: SGLang tracebacks run to a few KiB and the
#: ``server_args=ServerArgs(...)`` line alone can pass 8 KiB, so keep more than Ollama's 8 KiB.
TAIL_BYTES = 64 * 1024
TAIL_LINES = 400


@dataclass(frozen=True)
class Diagnosis:
    """One recognised failure.

    ``key`` is stable (for tests and scripts); ``title`` is a few words; ``cause`` explains;
    ``fix`` names the profile keys and values to change; ``evidence`` is the log line that
    matched and ``line_no`` its 1-based number in the lines given (``None`` when it came from
    the exit status alone). ``level`` is ``error`` for launch failures, ``warning`` for
    degradations that do not stop the server.
    """

    key: str
    title: str
    cause: str
    fix: str
    evidence: str
    line_no: int | None
    level: Literal["error", "warning"] = "error"


# -- reading logs ------------------------------------------------------------------------------


def tail_lines(lines: Iterable[str], max_lines: int = TAIL_LINES) -> list[str]:
    """The last ``max_lines`` lines of an iterable, in O(max_lines) memory."""
    return [ln.rstrip("\r\n") for ln in deque(lines, maxlen=max_lines)]


def read_redacted_tail(path: str | Path, *, max_bytes: int = TAIL_BYTES, max_lines: int = TAIL_LINES) -> list[str]:
    """The last lines of a log file, reading at most ``max_bytes`` from its end.

    A partial first line (cut by the byte limit) is dropped; undecodable bytes are replaced.
    Lines come back redacted (:func:`qembed.redact.redact`): SGLang logs its API key, and these
    lines are shown as evidence.

    Raises:
        OSError: the file cannot be read.
    """
    from qembed.host.logfiles import read_log_tail
    from qembed.redact import redact

    return [redact(line) for line in read_log_tail(Path(path), max_lines, max_bytes=max_bytes)]


def diagnose_file(path: str | Path, *, profile: Profile | None = None,
                  returncode: int | None = None) -> list[Diagnosis]:
    """:func:`diagnose` over the bounded tail of a log file."""
    return diagnose(read_redacted_tail(path), profile=profile, returncode=returncode)


# -- helpers to phrase fixes ------------------------------------------------------------------


def _where(profile: Profile | None) -> str:
    name = profile.name if profile is not None else None
    return f"in profile `{name}`" if name else "in the profile"


def _now(profile: Profile | None, v: float | int | None, log_value: str | None = None) -> str:
    """``(now 0.90)`` from the profile's value ``v``, else ``(SGLang used 0.83)`` from the log,
    else ``(now auto)``."""
    if v is not None:
        return f"(now {v})"
    if log_value is not None:
        return f"(unset; SGLang used {log_value})"
    return "(now unset: SGLang's auto value)" if profile is not None else ""


def _fmt_frac(x: float) -> str:
    return f"{x:.2f}"


def _log_value(lines: list[str], key: str) -> str | None:
    """A value SGLang printed as ``key=value`` (the ServerArgs dump, the max_total_num_tokens line)."""
    pat = re.compile(rf"\b{re.escape(key)}=([0-9.]+)")
    for ln in reversed(lines):
        m = pat.search(ln)
        if m:
            return m.group(1).rstrip(".")
    return None


# -- signatures -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ctx:
    lines: list[str]
    profile: Profile | None
    returncode: int | None

    @property
    def fraction(self) -> float | None:
        """The profile's ``gpu_memory_fraction`` (``None``: no profile, or SGLang's auto value)."""
        return self.profile.gpu_memory_fraction if self.profile else None

    def find(self, pattern: str | re.Pattern[str]) -> tuple[int, re.Match[str]] | None:
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        for i in range(len(self.lines) - 1, -1, -1):  # the last occurrence is the one that killed it
            m = rx.search(self.lines[i])
            if m:
                return i, m
        return None


Rule = Callable[[_Ctx], Diagnosis | None]


def _d(ctx: _Ctx, hit: tuple[int, re.Match[str]], key: str, title: str, cause: str, fix: str,
       level: Literal["error", "warning"] = "error") -> Diagnosis:
    i, _ = hit
    return Diagnosis(key, title, cause, fix, ctx.lines[i].strip(), i + 1, level)


def _flags_rejected(ctx: _Ctx) -> Diagnosis | None:
    hit = ctx.find(r"error: (unrecognized arguments: (?P<args>.*)|argument (?P<flag>--[\w-]+)[^:]*: "
                   r"invalid choice: '(?P<val>[^']*)'|ambiguous option: (?P<amb>--[\w-]+))")
    if not hit:
        return None
    _, m = hit
    where = _where(ctx.profile)
    extra = list(ctx.profile.extra_args) if ctx.profile else []
    key_of = {"--dtype": "dtype", "--kv-cache-dtype": "kv_cache_dtype", "--quantization": "quantization",
              "--attention-backend": "attention_backend", "--log-level": "log_level",
              "--load-balance-method": "extra_args"}
    if m.group("args"):
        bad = m.group("args").split()
        in_extra = [a for a in bad if a in extra and a.startswith("-")]
        fix = (f"remove {', '.join(f'`{a}`' for a in in_extra)} (and its value) from `extra_args` {where}"
               if in_extra else
               f"check `extra_args` {where} against `sglang serve --help`; if qembed built the flag, "
               "the installed SGLang is not the version qembed targets (run `qembed doctor`)")
        cause = f"SGLang's argument parser does not know {' '.join(bad)}"
    elif m.group("flag"):
        flag, val = m.group("flag"), m.group("val")
        key = key_of.get(flag, "extra_args")
        fix = f"change `{key}` {where} (`{val}` is not a valid choice for `{flag}`; see the parser's list)"
        cause = f"`{flag} {val}` is not one of SGLang's choices"
    else:
        amb = m.group("amb")
        fix = f"spell out the full flag instead of `{amb}` in `extra_args` {where}"
        cause = f"`{amb}` is a prefix of several SGLang flags"
    return _d(ctx, hit, "flags_rejected", "SGLang rejected a flag", cause, fix)


def _port_in_use(ctx: _Ctx) -> Diagnosis | None:
    hit = ctx.find(r"\[Errno 98\].*address already in use")
    if not hit:
        return None
    port = ctx.profile.port if ctx.profile else None
    m = re.search(r"\('([^']*)', (\d+)\)", ctx.lines[hit[0]])
    port = port or (int(m.group(2)) if m else None)
    suggestion = f" (now {port}) to a free port, e.g. {port + 1}" if port else " to a free port"
    return _d(ctx, hit, "port_in_use", "HTTP port already in use",
              "uvicorn could not bind the HTTP port; SGLang binds it only after loading the model, "
              "so the whole load was wasted",
              f"set `port` {_where(ctx.profile)}{suggestion}, or stop the process that holds it "
              "(`qembed doctor` names it)")


def _warmup_proxy(ctx: _Ctx) -> Diagnosis | None:
    hit = ctx.find(r"Initialization failed\. warmup error")
    if not hit:
        return None
    proxied = ctx.find(r"\b502\b|Bad Gateway|ProxyError")
    if proxied:
        return _d(ctx, hit, "warmup_proxy", "warm-up request went through an HTTP proxy",
                  "SGLang's warm-up request to its own port went to the HTTP(S)_PROXY, which answered 502; "
                  "the server then killed itself (exit -9)",
                  f"add `NO_PROXY: 127.0.0.1,localhost,::1` to `env` {_where(ctx.profile)} "
                  "(or unset HTTP_PROXY/HTTPS_PROXY before `qembed serve`)")
    return _d(ctx, hit, "warmup_failed", "warm-up request failed",
              "the server loaded but its first (warm-up) request failed, so it killed itself",
              "read the traceback after `warmup error` in the log; if a proxy is set, add "
              f"`NO_PROXY: 127.0.0.1,localhost,::1` to `env` {_where(ctx.profile)}")


def _weights_no_kv(ctx: _Ctx) -> Diagnosis | None:
    hit = ctx.find(r"Loaded weights leave no GPU memory for the KV cache")
    if not hit:
        return None
    line = ctx.lines[hit[0]]
    m = re.search(r"Raise --mem-fraction-static above ([0-9.]+)", line)
    cur = re.search(r"--mem-fraction-static=([0-9.]+)", line)
    where = _where(ctx.profile)
    if m:
        minimum = float(m.group(1))
        target = math.ceil((minimum + 0.05) * 100) / 100  # room for a useful pool, not just > 0
        if target <= 0.95:
            fix = (f"raise `gpu_memory_fraction` {where} {_now(ctx.profile, ctx.fraction, cur and cur.group(1))} "
                   f"to {_fmt_frac(target)} (SGLang's minimum is {minimum:.3f})")
        else:
            fix = (f"the weights need more than 95% of the free memory (minimum fraction {minimum:.3f}): "
                   f"free the GPU, use a smaller `model`, or raise `tp_size` {where}")
    else:
        fix = f"raise `gpu_memory_fraction` {where}"
    return _d(ctx, hit, "weights_no_kv", "no GPU memory left for the KV cache",
              "after loading the weights nothing of the static memory budget was left for the KV pool",
              fix)


def _kv_pool_empty(ctx: _Ctx) -> Diagnosis | None:
    hit = ctx.find(r"Not enough memory\. Please try to increase --mem-fraction-static")
    if not hit:
        return None
    m = re.search(r"mem_fraction_static=([0-9.]+)", ctx.lines[hit[0]])
    cur = ctx.fraction
    base = cur if cur is not None else (float(m.group(1)) if m else None)
    where = _where(ctx.profile)
    if base is not None:
        target = min(0.95, round(base + 0.05, 2))
        frac = f"raise `gpu_memory_fraction` {where} {_now(ctx.profile, ctx.fraction, m and m.group(1))} to {_fmt_frac(target)}"
    else:
        frac = f"raise `gpu_memory_fraction` {where}"
    ctxlen = ctx.profile.context_length if ctx.profile else None
    return _d(ctx, hit, "kv_pool_empty", "KV cache pool is empty",
              "the KV pool came out at 0 tokens: weights plus reserved memory fill the budget",
              f"{frac}, or lower `context_length` ({'now ' + str(ctxlen) if ctxlen else 'now the model maximum'})")


def _bcg_capture(ctx: _Ctx) -> Diagnosis | None:
    hit = ctx.find(r"Fail when using backend: breakable for prefill runner")
    if not hit:
        return None
    where = _where(ctx.profile)
    oom = ctx.find(r"CUDA out of memory|OutOfMemoryError")
    cur = ctx.fraction
    lower = (f"lower `gpu_memory_fraction` {where} (now {cur}) to {_fmt_frac(max(0.5, cur - 0.1))}"
             if cur else f"set `gpu_memory_fraction: 0.80` {where}")
    disable = f"add `--cuda-graph-backend-prefill disabled` to `extra_args` {where}"
    fix = f"{lower}, or lower `chunked_prefill_size`; or {disable}" if oom else f"{disable}; if it is memory, {lower}"
    return _d(ctx, hit, "prefill_graph_capture", "prefill CUDA-graph capture failed",
              "capturing the prefill CUDA graphs (breakable backend) failed" + (" out of GPU memory" if oom else ""),
              fix)


def _cuda_oom(ctx: _Ctx) -> Diagnosis | None:
    hit = ctx.find(r"CUDA out of memory")
    if not hit:
        return None
    where = _where(ctx.profile)
    cur = ctx.fraction
    logged = _log_value(ctx.lines, "mem_fraction_static")
    base = cur if cur is not None else (float(logged) if logged else None)
    chunk = (ctx.profile.chunked_prefill_size if ctx.profile else None) or _log_value(ctx.lines, "chunked_prefill_size")
    if base is not None:
        frac = (f"lower `gpu_memory_fraction` {where} {_now(ctx.profile, ctx.fraction, logged)} "
                f"to {_fmt_frac(max(0.5, round(base - 0.1, 2)))}")
    else:
        frac = f"set `gpu_memory_fraction: 0.80` {where}"
    chunk_s = (f"or lower `chunked_prefill_size` (now {chunk}) to {max(1024, int(chunk) // 2)}"
               if chunk and str(chunk).lstrip("-").isdigit() and int(chunk) > 0
               else "or lower `chunked_prefill_size`")
    during = "while capturing CUDA graphs" if ctx.find(r"Capture .*CUDA graph|cuda graph", ) else "while loading or running"
    return _d(ctx, hit, "cuda_oom", "CUDA out of memory",
              f"the GPU ran out of memory {during} (another process may hold part of it)",
              f"{frac}, {chunk_s}; or free the GPU (`qembed doctor` lists the processes on it)")


def _host_oom(ctx: _Ctx) -> Diagnosis | None:
    hit = ctx.find(r"scheduler died during initialization \(exit code: -9\)")
    if not hit:
        return None
    dp = ctx.profile.dp_size if ctx.profile else None
    dp_s = f", or lower `dp_size` {_where(ctx.profile)} (now {dp}): every replica loads the weights in host RAM" if dp and dp > 1 else ""
    return _d(ctx, hit, "host_oom", "scheduler killed (host out of memory)",
              "the OS killed SGLang's scheduler with SIGKILL during start-up, usually the OOM killer "
              "(check `dmesg -T | grep -i oom`)",
              f"free host RAM or give the container more memory{dp_s}")


def _quant_capability(ctx: _Ctx) -> Diagnosis | None:
    hit = ctx.find(r"The quantization method (\S+) is not supported for the current GPU\. "
                   r"Minimum capability: (\d+)\. Current capability: (\d+)")
    if not hit:
        return None
    _, m = hit
    return _d(ctx, hit, "quantization_capability", "quantization not supported on this GPU",
              f"`{m.group(1)}` needs compute capability {m.group(2)}; this GPU is {m.group(3)}",
              f"remove `quantization` {_where(ctx.profile)} (now {(ctx.profile.quantization if ctx.profile else None) or m.group(1)}), "
              "or pick a method this GPU supports")


def _jit(ctx: _Ctx) -> Diagnosis | None:
    hit = ctx.find(r"Could not find nvcc|nvcc: not found|ninja: build stopped|Ninja is required|"
                   r"ninja: error|FileNotFoundError: .*ninja")
    if not hit:
        return None
    where = _where(ctx.profile)
    return _d(ctx, hit, "flashinfer_jit", "FlashInfer JIT build failed (no nvcc/ninja)",
              "FlashInfer compiles kernels at start-up and needs the CUDA toolkit (nvcc) and ninja",
              f"set `attention_backend: fa3` {where} on H100/H200 (sm90) or `attention_backend: triton` "
              f"elsewhere, and add `--cuda-graph-backend-prefill disabled` to `extra_args`; "
              "or install the CUDA 13 toolkit and ninja")


def _sm_too_old(ctx: _Ctx) -> Diagnosis | None:
    hit = ctx.find(r"SGLang only supports sm75 and above")
    if not hit:
        return None
    return _d(ctx, hit, "gpu_too_old", "GPU too old for SGLang",
              "SGLang needs compute capability 7.5 (Turing) or newer",
              f"run on a newer GPU: set `gpu_ids` {_where(ctx.profile)} to an sm75+ GPU")


def _context_too_long(ctx: _Ctx) -> Diagnosis | None:
    hit = ctx.find(r"User-specified context_length \((\d+)\) is greater than the derived context_length \((\d+)\)")
    if not hit:
        return None
    _, m = hit
    return _d(ctx, hit, "context_too_long", "context_length above the model's maximum",
              f"the model supports {m.group(2)} tokens; {m.group(1)} was asked for",
              f"set `context_length` {_where(ctx.profile)} (now {(ctx.profile.context_length if ctx.profile else None) or m.group(1)}) "
              f"to {m.group(2)} or less (or add `SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN: \"1\"` to `env`)")


def _no_config(ctx: _Ctx) -> Diagnosis | None:
    hit = ctx.find(r"Unrecognized model in (\S+?)\.? Should have|does not appear to have a file named config\.json")
    if not hit:
        return None
    model = ctx.profile.model if ctx.profile else None
    return _d(ctx, hit, "model_no_config", "model directory has no config.json",
              "the model path is not a Hugging Face model directory (config.json missing)",
              f"set `model` {_where(ctx.profile)}{f' (now {model})' if model else ''} to the snapshot "
              "directory that contains config.json, or to a Hub id such as `Qwen/Qwen3-Embedding-4B`")


def _cpu_ranks_unbound(ctx: _Ctx) -> Diagnosis | None:
    """SGLang's CPU backend binds each rank's OpenMP threads to a NUMA node, or to one
    ``|``-separated entry of ``SGLANG_CPU_OMP_THREADS_BIND``; a rank with neither fails an
    assertion in ``init_threads_binding`` (``sglang/srt/utils/numa_utils.py``) during start-up."""
    hit = ctx.find(r"SGLANG_CPU_OMP_THREADS_BIND is not set, in this case, the total number of ranks "
                   r"\(dp_size \* tp_size \* pp_size = (?P<ranks>\d+)\) should be smaller than or equal to "
                   r"number of numa node on the machine (?P<nodes>\d+)|"
                   r"NUMA index (?P<index>\d+) \(derived from [^)]*\) is out of range for "
                   r"(?:the (?P<entries>\d+) SGLANG_CPU_OMP_THREADS_BIND entries|(?P<nodes2>\d+) numa nodes)")
    if not hit:
        return None
    _, m = hit
    p = ctx.profile
    where = _where(p)
    # quote the profile only when it asks for several ranks: `doctor --log` without `--profile`
    # reads the log against the default profile, which has one
    now = f" (now `tp_size: {p.tp_size}`, `dp_size: {p.dp_size}`)" if p is not None and p.tp_size * p.dp_size > 1 else ""
    bind = ("or bind each rank to its own CPUs with one `|`-separated CPU list per rank in `env`, "
            "e.g. `SGLANG_CPU_OMP_THREADS_BIND: \"0-15|16-31\"` for `dp_size: 2`")
    if m.group("entries"):
        cause = (f"SGLang's CPU backend takes one `|`-separated entry of SGLANG_CPU_OMP_THREADS_BIND per rank; "
                 f"it has {m.group('entries')} entries, and rank {m.group('index')} has none")
        fix = (f"give `SGLANG_CPU_OMP_THREADS_BIND` in `env` {where} one CPU list per rank "
               f"(`tp_size` x `dp_size` entries){now}, or lower `dp_size` / `tp_size`")
    else:
        nodes = m.group("nodes") or m.group("nodes2")
        ranks = m.group("ranks") or f"more than {nodes}"
        cause = (f"SGLang's CPU backend runs one rank per NUMA node unless SGLANG_CPU_OMP_THREADS_BIND says "
                 f"otherwise: {ranks} ranks (`tp_size` x `dp_size`) on {nodes} NUMA node(s)")
        fix = f"set `tp_size` x `dp_size` to at most {nodes} {where}{now}, {bind}"
    return _d(ctx, hit, "cpu_ranks_unbound", "CPU ranks without a NUMA node or CPU binding", cause, fix)


def _tp_unbalanced(ctx: _Ctx) -> Diagnosis | None:
    hit = ctx.find(r"The memory capacity is unbalanced\. Some GPUs may be occupied by other processes")
    if not hit:
        return None
    return _d(ctx, hit, "gpu_memory_unbalanced", "GPUs partly used by other processes",
              "free memory differs between the tensor-parallel GPUs",
              f"free those GPUs, or set `gpu_ids` {_where(ctx.profile)} to idle GPUs", level="warning")


def _kv_pool_small(ctx: _Ctx) -> Diagnosis | None:
    hit = ctx.find(r"KV pool holds (\d+) tokens, fewer than --context-length (\d+)")
    if not hit:
        return None
    _, m = hit
    tokens, ctxlen = int(m.group(1)), int(m.group(2))
    new_ctx = max(512, (tokens // 1024) * 1024) if tokens >= 1024 else tokens
    cur = ctx.fraction
    if ctx.profile is not None and ctx.profile.device == "cpu":
        more = f"raise `max_total_tokens` (now {tokens}; it needs free RAM)"
    else:
        more = f"raise `gpu_memory_fraction` (now {cur})" if cur else "raise `gpu_memory_fraction`"
    # Measured on real SGLang 0.5.23 (CPU): a request longer than the pool but within the
    # context is accepted and never answered; the client waits until its own deadline.
    return _d(ctx, hit, "kv_pool_small", "KV pool smaller than one full context",
              f"the pool holds {tokens} tokens but the context is {ctxlen}: SGLang accepts a request "
              f"of {tokens + 1}..{ctxlen} tokens and never answers it",
              f"set `context_length: {new_ctx}` {_where(ctx.profile)}, or {more}", level="warning")


def _bf16_fallback(ctx: _Ctx) -> Diagnosis | None:
    hit = ctx.find(r"Compute capability below sm80\. Use float16 due to lack of bfloat16 support")
    if not hit:
        return None
    return _d(ctx, hit, "bf16_fallback", "running float16 instead of bfloat16",
              "this GPU is older than sm80 (no bfloat16), so SGLang silently switched to float16; "
              "vectors differ slightly from the bf16 reference",
              f"set `dtype: float16` {_where(ctx.profile)} to make it explicit, and check recall on your data",
              level="warning")


def _init_failed(ctx: _Ctx) -> Diagnosis | None:
    hit = ctx.find(r"Initialization failed\. Please see the error messages above|"
                   r"Scheduler hit an exception|Received sigquit from a child process")
    if not hit:
        return None
    # the last exception line of the scheduler traceback is the most useful evidence
    exc = ctx.find(r"^\s*[\w.]+(Error|Exception)\b(?!.*Initialization failed\. Please see).*:")
    d = _d(ctx, exc or hit, "init_failed", "SGLang failed to start",
           "a SGLang process raised during start-up (see the traceback in the log)",
           "read the scheduler traceback in the log (`qembed logs`); `qembed doctor` checks the usual causes")
    return d


# most specific first
RULES: tuple[Rule, ...] = (
    _flags_rejected,
    _port_in_use,
    _warmup_proxy,
    _weights_no_kv,
    _kv_pool_empty,
    _quant_capability,
    _sm_too_old,
    _context_too_long,
    _no_config,
    _cpu_ranks_unbound,
    _jit,
    _bcg_capture,
    _cuda_oom,
    _host_oom,
    _init_failed,
    _tp_unbalanced,
    _kv_pool_small,
    _bf16_fallback,
)


def diagnose(lines: Iterable[str], *, profile: Profile | None = None,
             returncode: int | None = None) -> list[Diagnosis]:
    """Recognise SGLang failures in log lines, most specific first.

    Args:
        lines: log lines (any iterable; only the last :data:`TAIL_LINES` are read).
        profile: the profile that was launched; fixes then quote its values.
        returncode: the exit status of SGLang, when it exited (``-9`` = SIGKILL).

    Returns:
        Diagnoses, errors first (most specific first), then warnings. Empty when nothing is
        recognised and the exit status says nothing either.

    Example:
        >>> [d.key for d in diagnose(["[2026-11-20 10:00:00] ERROR: [Errno 98] error while "
        ...     "attempting to bind on address ('127.0.0.1', 30000): address already in use"])]
        ['port_in_use']
    """
    ctx = _Ctx(tail_lines(lines), profile, returncode)
    found = [d for d in (rule(ctx) for rule in RULES) if d is not None]
    errors = [d for d in found if d.level == "error"]
    if errors and errors[0].key != "init_failed":
        # the generic line adds nothing once a specific cause is known
        errors = [d for d in errors if d.key != "init_failed"]
    if not errors and returncode in (-9, 137):
        errors.append(Diagnosis(
            "killed", "SGLang was killed (SIGKILL)",
            "the process got SIGKILL with no error in the log: usually the OS OOM killer "
            "(check `dmesg -T | grep -i oom`), or SGLang killing itself after a child failed",
            "free host RAM or give the container more memory; if a supervisor (systemd, k8s) "
            "killed it, check that supervisor's memory and start-up limits",
            f"exit status {returncode}", None))
    return errors + [d for d in found if d.level == "warning"]


__all__ = ["TAIL_BYTES", "TAIL_LINES", "Diagnosis", "diagnose", "diagnose_file", "read_redacted_tail", "tail_lines"]
