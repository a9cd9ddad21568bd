"""``qembed doctor``: every check, as data.

:func:`run_checks` returns a list of :class:`Check` rows (section, name, status, what was found,
what to do). It never prints; the CLI renders the rows as a table or as JSON.

Nothing heavy runs in this process: torch and SGLang are inspected by a short probe subprocess
in the target interpreter (the one SGLang would run in), NVML through :mod:`qembed.serving.gpu`, a
running server through :mod:`qembed.probe` (:mod:`qembed.fleet.doctor_server`).
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qembed._version import __version__
from qembed.errors import QembedError
from qembed.fleet.doctor_probe import Probe, run_probe
from qembed.fleet.doctor_rows import FAIL, PASS, SKIP, WARN, Check, Ctx, Status
from qembed.fleet.doctor_server import (
    default_url,
    diagnosis_checks,
    healthy_checked_server,
    own_record,
    recorded_url,
    server_checks,
)
from qembed.models import GiB, MiB
from qembed.serving.policy import NO_GPU_OPTIONS
from qembed.serving.policy import profile_label as _plabel

if TYPE_CHECKING:
    import httpx

    from qembed.serving.cpu import KernelCheck
    from qembed.serving.cpu_host import HostInfo
    from qembed.serving.gpu import GPUSnapshot


INSTALL_SERVE = "pip install 'qembed[serve]'"
SHM_MIN = 1 * GiB


# -- the probe subprocess ---------------------------------------------------------------------


# -- helpers ----------------------------------------------------------------------------------


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


# -- sections ---------------------------------------------------------------------------------


def _system(c: Ctx) -> None:
    s = "System"
    c.add(s, "Python", PASS, f"{platform.python_version()} ({sys.executable})")
    osname = platform.system()
    if osname == "Linux":
        c.add(s, "OS", PASS, platform.platform())
    else:
        c.add(s, "OS", WARN, platform.platform(), "SGLang serves on Linux with NVIDIA GPUs only; "
              "use `qembed` here as a client (`--url`)")
    c.add(s, "qembed", PASS, __version__)


def _profile(c: Ctx) -> None:
    s = "Profile"
    from qembed.serving.profiles.resolve import resolve_profile

    try:
        resolved = resolve_profile(c.profile_ref, overrides=c.overrides,
                                   options={**c.options, "python": c.python}, gpus=c.snap)
    except QembedError as exc:
        c.add(s, "profile", FAIL, exc.message, exc.hint or "run `qembed profiles list`")
        return
    c.profile = resolved.profile
    why = f" (auto: {resolved.auto_reason})" if resolved.auto_reason else ""
    c.add(s, "profile", PASS, f"`{c.profile.name}`{why}; model {c.profile.model}")


def _nvml(c: Ctx, sglang_version: str | None) -> None:
    from qembed.serving import gpu

    s = "NVIDIA driver"
    snap = c.snap
    assert snap is not None
    if snap.driver_version is None and snap.error:
        fix = ("`pip install nvidia-ml-py`" if "nvidia-ml-py" in snap.error
               else "install the NVIDIA driver (R580+ for SGLang 0.5.20 and later) and check `nvidia-smi`; "
               + _NO_GPU)
        c.add(s, "NVML", FAIL, snap.error, fix)
        c.add(s, "driver", SKIP, "no driver", None)
        return
    c.add(s, "NVML", PASS, "loaded")
    found = (f"{snap.driver_version} (CUDA {snap.cuda_driver_str or '?'}); "
             f"runs {gpu.sglang_for_driver(snap)}")
    if gpu.driver_too_old(snap, sglang_version):
        c.add(s, "driver", FAIL, f"{found}; installed sglang {sglang_version} is built for CUDA "
              f"{gpu.sglang_cuda_major(sglang_version)}", gpu.DRIVER_HINT)
    elif sglang_version is None and (gpu.driver_cuda_major(snap) or 0) < 13:
        c.add(s, "driver", WARN, found + "; `pip install 'qembed[serve]'` would get a CUDA 13 SGLang",
              gpu.DRIVER_HINT)
    else:
        c.add(s, "driver", PASS, found)
    for note in snap.notes:
        c.add(s, "CUDA_VISIBLE_DEVICES" if "CUDA_VISIBLE" in note else "NVML note", WARN, note,
              "fix `CUDA_VISIBLE_DEVICES` (indices or GPU UUIDs, comma-separated)")
    if snap.error:
        c.add(s, "GPUs", FAIL, snap.error, "check `nvidia-smi` and `CUDA_VISIBLE_DEVICES`")


_STATUS: dict[str, Status] = {"fail": FAIL, "warn": WARN, "info": PASS}
#: the fix on a machine without an NVIDIA GPU: both CPU options (:data:`qembed.serving.policy.NO_GPU_OPTIONS`)
_NO_GPU = f"{NO_GPU_OPTIONS} (docs/serving.md)"


def _gpus(c: Ctx, sglang_version: str | None) -> None:
    """The GPU, GPU-class and memory-fit rows: :func:`qembed.serving.policy.launch_findings`, the rules
    ``qembed serve`` refuses or warns by, rendered as rows (a new rule shows up in both)."""
    from qembed import models
    from qembed.serving import policy

    def fit(status: Status, found: str, fix: str | None = None, name: str = "fit") -> None:
        c.fit_rows.append(Check("Memory fit", name, status, found, fix if status != PASS else None))

    snap = c.snap
    assert snap is not None
    if not snap.gpus:
        # without a driver the NVML row already names the CPU options
        c.add("GPU", "GPUs", SKIP, "no GPU visible", None if snap.driver_version is None and snap.error else _NO_GPU)
        model = c.settings.model
        shape = models.model_shape(model)
        if shape is None:
            fit(SKIP, f"unknown shape for {model} (no config.json)")
            return
        dbytes = models.dtype_bytes_for(c.settings.dtype)
        kvb = models.kv_dtype_bytes_for(c.settings.kv_cache_dtype, dbytes)
        tp = max(1, c.settings.tp_size)
        need = (f"weights {_gb(shape.loaded_params * dbytes / tp)} per GPU, "
                f"KV {shape.kv_bytes_per_token(kvb, tp_size=tp) // 1024} KiB/token")
        fit(SKIP, f"no GPU to check; {shape.name.split('/')[-1]} needs {need}")
        return
    findings = policy.launch_findings(snap, c.settings, sglang_version=sglang_version, include_info=True)
    by_gpu: dict[int, list[policy.Finding]] = {}
    fit_rows: list[policy.Finding] = []
    for f in findings:
        if f.check == "driver":
            continue  # the driver row of the NVIDIA driver section says it
        if f.check in ("fit", "GPUs"):
            fit_rows.append(f)
        elif f.check == "profile":
            c.add("Profile", "GPU class", _STATUS[f.level], f.message, f.hint)
        else:
            by_gpu.setdefault(f.gpu if f.gpu is not None else -1, []).append(f)
    order = {"compute capability": 0, "memory": 1, "other processes": 2}
    for index in sorted(by_gpu):
        for f in sorted(by_gpu[index], key=lambda f: order.get(f.check, 9)):
            c.add(f"GPU {index}" if index >= 0 else "GPU", f.check, _STATUS[f.level], f.message, f.hint)
    if not any(f.check == "fit" for f in fit_rows):
        model = c.settings.model
        if models.model_shape(model) is None:
            fit(SKIP, f"unknown shape for {model} (no config.json)")
    for f in sorted(fit_rows, key=lambda f: f.check != "GPUs"):
        fit(_STATUS[f.level], f.message, f.hint, name=f.check)


def _fit(c: Ctx) -> None:
    c.rows.extend(c.fit_rows)


def _torch(c: Ctx) -> None:
    from qembed.serving import gpu

    s = "Torch/CUDA"
    pr = c.probe
    assert pr is not None
    if not pr.ok:
        c.add(s, "interpreter", FAIL, pr.error or "probe failed",
              "pass `--python PATH` (or set `QEMBED_SGLANG_PYTHON`) to the interpreter with SGLang")
        return
    c.add(s, "interpreter", PASS, f"{pr.executable} (Python {pr.python_version})")
    if pr.torch is None:
        status = FAIL if pr.sglang else SKIP
        c.add(s, "torch", status, f"not installed in {pr.python}",
              f"`{INSTALL_SERVE}` installs SGLang with its pinned torch")
        return
    build = f"CUDA {pr.torch_cuda}" if pr.torch_cuda else "CPU-only build"
    found = f"torch {pr.torch} ({build})"
    snap = c.snap
    have = gpu.driver_cuda_major(snap) if snap is not None else None
    if pr.torch_cuda is None:
        c.add(s, "torch", FAIL if pr.sglang else WARN, found,
              f"install a CUDA build of torch in that interpreter (`{INSTALL_SERVE}` pulls the right one)")
        return
    need = int(pr.torch_cuda.split(".")[0])
    if have is None:
        c.add(s, "torch", WARN, found + "; no driver to run it", "install the NVIDIA driver")
    elif have < need:
        c.add(s, "torch", FAIL, found + f"; the driver supports CUDA {snap.cuda_driver_str if snap else '?'}",
              gpu.DRIVER_HINT)
    else:
        c.add(s, "torch", PASS, found + f"; driver supports CUDA {snap.cuda_driver_str if snap else '?'}")


def _reference_engine(c: Ctx) -> None:
    """``engine: reference`` (``--profile cpu``): no driver, GPU or SGLang; sentence-transformers."""
    from qembed.reference.engine import INSTALL_HINT

    c.add("NVIDIA driver", "GPU", SKIP,
          "the reference engine runs on CPU: no driver, GPU or SGLang needed")
    s = "Reference engine"
    pr = c.probe
    assert pr is not None
    if not pr.ok:
        c.add(s, "interpreter", FAIL, pr.error or "probe failed", "pass `--python PATH` to a working interpreter")
        return
    c.add(s, "interpreter", PASS, f"{pr.executable} (Python {pr.python_version})")
    for label, have in (("torch", pr.torch), ("sentence-transformers", pr.sentence_transformers)):
        if have is None:
            c.add(s, label, FAIL, f"not installed in {pr.python}", INSTALL_HINT)
        else:
            c.add(s, label, PASS, have)


def _sglang(c: Ctx) -> None:
    from qembed.serving import gpu

    s = "SGLang"
    pr = c.probe
    if pr is None or not pr.ok:
        c.add(s, "sglang", SKIP, "no interpreter to look in")
        return
    if pr.sglang is None:
        c.add(s, "sglang", FAIL, f"not installed in {pr.python}",
              f"`{INSTALL_SERVE}` (CUDA 13, needs an R580+ driver) or `pip install 'sglang==0.5.19'` "
              "(CUDA 12); or pass `--python` to the interpreter that has it")
        c.add(s, "flags", SKIP, "no SGLang to check the profile's flags with")
        return
    cuda = gpu.sglang_cuda_major(pr.sglang)
    extra = f"; flashinfer {pr.flashinfer}" if pr.flashinfer else ""
    c.add(s, "sglang", PASS, f"{pr.sglang} (CUDA {cuda} build){extra}")
    if c.profile is None:
        c.add(s, "flags", SKIP, "no profile loaded")
        return
    _parser_flags(c, s, pr.python)


def _parser_flags(c: Ctx, s: str, python: str) -> None:
    """The argv verdict of SGLang's own parser for the profile (as `serve` would launch it), and
    the profile settings worth a warning."""
    from qembed.serving.sglang_args import (
        build_flags,
        check_flags,
        profile_warnings,
        verdict_source,
    )

    assert c.profile is not None
    try:
        result = check_flags(build_flags(c.profile), python=python, env=c.env)
    except QembedError as exc:
        c.add(s, "flags", FAIL, exc.message, exc.hint)
    else:
        if result.ok:
            c.add(s, "flags", PASS, f"SGLang's parser accepts {_plabel(c.profile)} ({verdict_source(result)})")
        else:
            c.add(s, "flags", FAIL, f"SGLang's parser rejects {_plabel(c.profile)}: {result.message}",
                  f"fix `extra_args` (or the key it names) in {_plabel(c.profile)}")
    for w in profile_warnings(c.profile):
        c.add(s, "profile setting", WARN, w, f"edit {_plabel(c.profile)}")


#: Where each finding of the CPU plan (:func:`qembed.serving.cpu.plan`) shows: (section, row name).
_CPU_ROWS: dict[str, tuple[str, str]] = {
    "cpu": ("CPU", "cpu"), "flags": ("CPU", "AVX-512/AMX"), "threads": ("CPU", "threads"),
    "kernels": ("SGLang", "CPU build"), "path": ("SGLang", "path"), "dtype": ("SGLang", "dtype"),
    "ram": ("Memory fit", "RAM"), "kv": ("Memory fit", "KV pool"),
}


def _cpu_engine(c: Ctx, *, python: str, host: HostInfo | None, kernels: KernelCheck | None) -> None:
    """``device: cpu`` (``--profile xeon``): no driver or GPU; the CPU, SGLang's CPU build and the
    path it takes, the dtype, RAM and the KV pool, from the plan ``qembed serve`` launches by, then
    the parser's verdict on the argv with the plan's values."""
    from qembed.serving import cpu

    assert c.profile is not None
    c.add("NVIDIA driver", "GPU", SKIP, "`device: cpu`: SGLang's CPU backend needs no driver or GPU")
    pr = c.probe
    p = cpu.plan(c.profile, python=python, env=c.env, host=host, kernels=kernels)
    status = {"fail": FAIL, "warn": WARN, "info": PASS}
    order = list(_CPU_ROWS)
    sglang_row = False
    for f in sorted(p.findings, key=lambda f: order.index(f.check) if f.check in order else len(order)):
        section, name = _CPU_ROWS.get(f.check, ("CPU", f.check))
        if section == "SGLang" and not sglang_row:
            sglang_row = True
            if pr is not None and pr.ok and pr.sglang:
                c.add("SGLang", "sglang", PASS, f"{pr.sglang} in {pr.executable}")
            else:
                c.add("SGLang", "sglang", FAIL, (pr.error if pr is not None and not pr.ok else None)
                      or f"not installed in {python}", "see the `CPU build` row")
        row = Check(section, name, status[f.level], f.message, f.hint if f.level != "info" else None)
        (c.fit_rows if section == "Memory fit" else c.rows).append(row)
    c.profile = p.profile  # the parser checks what `serve` launches: explicit dtype and KV pool
    if p.path == "missing" or pr is None or not pr.ok or not pr.sglang:
        c.add("SGLang", "flags", SKIP, "no SGLang CPU build to check the profile's flags with")
        return
    _parser_flags(c, "SGLang", pr.python)


def tokenizer_appends_eos(tokenizer_json: Path) -> bool | None:
    """Whether tokenizer.json's post-processor appends ``<|endoftext|>`` (``None``: unreadable).

    Reads only the ``post_processor`` object of the (11 MB) file.
    """
    try:
        text = tokenizer_json.read_text(encoding="utf-8")
    except OSError:
        return None
    i = text.find('"post_processor"')
    if i < 0:
        return False
    k = text.find(":", i) + 1
    while k < len(text) and text[k].isspace():
        k += 1
    try:
        obj, _ = json.JSONDecoder().raw_decode(text, k)
    except ValueError:
        return None

    def walk(o: Any) -> bool:
        if isinstance(o, dict):
            if o.get("type") == "TemplateProcessing":
                return "<|endoftext|>" in json.dumps(o.get("single", []))
            return any(walk(v) for v in o.values())
        if isinstance(o, list):
            return any(walk(v) for v in o)
        return False

    return walk(obj)


def _model(c: Ctx) -> None:
    from qembed import models

    s = "Model"
    model = c.settings.model
    shape = models.model_shape(model)
    size = _gb(shape.params * 2) if shape else "several GB"
    local = Path(model).expanduser()
    is_path = model.startswith(("/", ".", "~")) or local.exists()
    d = models.model_dir(model)
    if d is None:
        if is_path:
            c.add(s, "model", FAIL, f"{model}: no such directory", f"set `model` in {_plabel(c.profile)} to a "
                  "directory with config.json, or a Hub id such as `Qwen/Qwen3-Embedding-4B`")
            return
        from qembed.errors import ConfigError
        from qembed.hub import check_available

        env = c.env if c.env is not None else dict(os.environ)
        try:  # the same check `qembed serve` makes before any launch: offline, or no Hub, in seconds
            found = check_available(model, environ=env)
        except ConfigError as exc:
            c.add(s, "model", FAIL, exc.message, exc.hint)
            return
        where = f"from {found.detail}" if found.source in ("download", "unknown") else ""
        if not env.get("HF_TOKEN"):
            c.add(s, "model", WARN, f"{model} is not in the local HF cache: `qembed serve` downloads it "
                  f"{where} before the launch ({size}), anonymously", f"pre-fetch with `hf download {model}` "
                  "(set HF_TOKEN to avoid anonymous rate limits)")
        else:
            c.add(s, "model", PASS, f"{model} not cached yet: `qembed serve` downloads it {where} before the "
                  f"launch ({size}) with HF_TOKEN")
        return
    cfg_path = d / "config.json"
    if not cfg_path.is_file():
        c.add(s, "model", FAIL, f"{d} has no config.json", f"set `model` in {_plabel(c.profile)} to the "
              "snapshot directory that contains config.json")
        return
    c.add(s, "model", PASS, f"{model} -> {d}")
    cfg = models.find_model_config(str(d)) or {}
    arch = ", ".join(cfg.get("architectures") or ["?"])
    if "Qwen3ForCausalLM" in arch:
        c.add(s, "architecture", PASS, f"{arch}: SGLang needs `--is-embedding`, which qembed always passes")
    elif "Qwen3Model" in arch:
        c.add(s, "architecture", PASS, f"{arch}: detected as an embedding model")
    else:
        c.add(s, "architecture", WARN, f"{arch}: not a Qwen3-Embedding architecture",
              "qembed is tested with Qwen/Qwen3-Embedding-0.6B/4B/8B")
    if not any(d.glob("*.safetensors")):
        c.add(s, "weights", FAIL, f"no *.safetensors in {d}", f"re-download: `hf download {model}`")
    tok = d / "tokenizer.json"
    eos = tokenizer_appends_eos(tok) if tok.is_file() else None
    repo = model if not is_path else "Qwen/Qwen3-Embedding-4B"
    if not tok.is_file():
        c.add(s, "tokenizer", WARN, f"no tokenizer.json in {d}", f"`hf download {repo} tokenizer.json`")
    elif eos:
        c.add(s, "tokenizer", PASS, "tokenizer.json appends <|endoftext|> (TemplateProcessing)")
    else:
        c.add(s, "tokenizer", WARN, "tokenizer.json does not append <|endoftext|> (an older snapshot): "
              "last-token vectors differ from the reference",
              f"update it: `hf download {repo} tokenizer.json` (or re-download the model)")


def _in_container() -> bool:
    if Path("/.dockerenv").exists() or Path("/run/.containerenv").exists():
        return True
    try:
        text = Path("/proc/1/cgroup").read_text()
    except OSError:
        return False
    return bool(re.search(r"docker|kubepods|containerd|lxc|libpod", text))


def shm_size(path: str = "/dev/shm") -> int | None:
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_blocks * st.f_frsize


def no_proxy_covers_loopback(value: str | None) -> bool:
    """Whether a NO_PROXY value bypasses the proxy for 127.0.0.1 (as ``requests`` reads it)."""
    if not value:
        return False
    entries = [e.strip().lower() for e in value.split(",") if e.strip()]
    if "*" in entries:
        return True
    import ipaddress

    for e in entries:
        if e in ("127.0.0.1", "localhost"):
            return True
        if "/" in e:
            try:
                if ipaddress.ip_address("127.0.0.1") in ipaddress.ip_network(e, strict=False):
                    return True
            except ValueError:
                continue
    return False


def _network(c: Ctx) -> None:
    s = "Network"
    host = c.settings.host
    port = c.settings.port
    from qembed.host.ports import find_free_port, port_is_free
    from qembed.host.procfs import port_holder

    if port_is_free(host, port):
        c.add(s, "port", PASS, f"{host}:{port} is free")
    else:
        holder = port_holder(port)
        free = find_free_port(host, port)
        ours = _recorded_on_port(port)
        own = own_record(c)
        who = f" by {holder}" if holder else " (holder not visible: another user or container)"
        if own is not None and own.port == port:  # the server this run checks: its port is meant to be held
            c.add(s, "port", PASS, f"{host}:{port} is held by qembed server `{own.name}`, the running server "
                  f"of {_plabel(c.profile)} that this run checks (see Server)")
        elif ours:
            c.add(s, "port", WARN, f"{host}:{port} is used by qembed server `{ours}`",
                  f"fine if you mean to use it; otherwise `qembed stop {ours}` or set `port` in {_plabel(c.profile)}")
        else:
            c.port_row = len(c.rows)
            c.add(s, "port", FAIL, f"{host}:{port} is in use{who}",
                  f"set `port: {free or port + 1}` in {_plabel(c.profile)} (or `--set port={free or port + 1}`), "
                  "or stop that process")
    from qembed.net import PROXY_VARS

    proxies = {k: v for k in PROXY_VARS if (v := os.environ.get(k))}
    no_proxy = os.environ.get("NO_PROXY") or os.environ.get("no_proxy")
    if not proxies:
        c.add(s, "proxy", PASS, "no HTTP(S)_PROXY set")
    elif no_proxy_covers_loopback(no_proxy):
        c.add(s, "proxy", PASS, f"{', '.join(sorted(proxies))} set; NO_PROXY covers loopback. "
              "SGLang keeps the proxy for Hub downloads, loopback added to NO_PROXY; "
              "`qembed gateway` starts smg without proxy variables, so worker traffic never goes through it")
    else:
        c.add(s, "proxy", WARN, f"{', '.join(sorted(proxies))} set without NO_PROXY for 127.0.0.1: SGLang's "
              "warm-up request (and clients) go through the proxy, and the server kills itself on the 502 "
              "(`qembed serve` adds loopback to NO_PROXY for SGLang itself, and keeps the proxy for Hub "
              "downloads; `qembed gateway` starts smg without proxy variables, so worker traffic never "
              "goes through it)",
              "export NO_PROXY=127.0.0.1,localhost,::1")
    size = shm_size()
    if size is None:
        c.add(s, "/dev/shm", SKIP, "no /dev/shm")
    elif _in_container():
        if size < SHM_MIN:
            c.add(s, "/dev/shm", WARN, f"{size / MiB:.0f} MiB inside a container (Docker's default is 64 MiB)",
                  "start the container with `--shm-size 16g` or `--ipc=host`")
        else:
            c.add(s, "/dev/shm", PASS, f"{size / GiB:.1f} GiB (container)")
    else:
        c.add(s, "/dev/shm", PASS, f"{size / GiB:.1f} GiB (not a container)")


def _recorded_on_port(port: int) -> str | None:
    try:
        from qembed.host import state

        for rec in state.list_records(clean=True):
            if rec.port == port:
                return rec.name
    except Exception:  # state is best effort here: a broken record must not break doctor
        return None
    return None


# -- entry point ------------------------------------------------------------------------------


def run_checks(
    *,
    profile: str = "auto",
    url: str | None = None,
    python: str | None = None,
    log: str | Path | None = None,
    snapshot: GPUSnapshot | None = None,
    probe: Callable[[str], Probe] | None = None,
    transport: httpx.BaseTransport | None = None,
    overrides: Sequence[str] = (),
    options: Mapping[str, object] | None = None,
    host: HostInfo | None = None,
    kernels: KernelCheck | None = None,
) -> list[Check]:
    """Run every check and return the rows, in display order. Never prints.

    Args:
        profile: profile reference (shipped name, YAML path or ``auto``).
        url: a running server to check; default the one ``qembed serve`` recorded, else the
            client's default URL (``QEMBED_URL``, else ``http://127.0.0.1:30000``) when something
            listens there.
        python: ``--python``: the interpreter to probe for torch/SGLang, ranked as ``qembed
            serve`` ranks it (:func:`qembed.serving.sglang_args.resolve_sglang`: this, else
            ``profile.python``, else ``QEMBED_SGLANG_PYTHON``, else this interpreter).
        log: an SGLang log to diagnose; default the newest log in the state dir.
        snapshot: an NVML snapshot (default: :func:`qembed.serving.gpu.snapshot`).
        probe: replaces :func:`run_probe` (tests).
        transport: an httpx transport for the server checks (tests).
        overrides: ``--set KEY=VALUE`` texts, as ``qembed serve`` takes them.
        options: typed profile values, as ``qembed serve --model/--port/--host`` gives them.
        host: the CPU and RAM for a ``device: cpu`` profile (default :func:`qembed.serving.cpu_host.read_host`).
        kernels: SGLang's CPU build as :func:`qembed.serving.cpu.check_kernels` reports it (default: asked
            in the target interpreter).

    Returns:
        :class:`Check` rows; use :func:`exit_code` for the process exit status.

    Example:
        >>> rows = run_checks(profile="generic")                 # doctest: +SKIP
        >>> [r.name for r in rows if r.status == "FAIL"]         # doctest: +SKIP
    """
    from qembed.serving import gpu
    from qembed.serving.sglang_args import resolve_sglang

    c = Ctx(profile_ref=profile or "auto", url=url, python=python, log=str(log) if log else None,
             overrides=list(overrides), options={k: v for k, v in (options or {}).items() if v is not None})
    c.snap = snapshot if snapshot is not None else gpu.snapshot()
    _system(c)
    _profile(c)
    # the interpreter and environment `qembed serve` with the same options would launch
    reference = c.profile is not None and c.profile.engine == "reference"
    if reference and c.profile is not None:
        from qembed.serving.engines import reference_command

        cmd = reference_command(c.profile, python=python)
        target, c.env = cmd.argv[0], {**os.environ, **cmd.env}
    else:
        target, c.env = resolve_sglang(c.profile, python)
    c.probe = probe(target) if probe is not None else run_probe(target, env=c.env)
    sglang_version = c.probe.sglang if c.probe.ok else None
    if reference:
        _reference_engine(c)
    elif c.profile is not None and c.profile.device == "cpu":
        _cpu_engine(c, python=target, host=host, kernels=kernels)
    else:
        _nvml(c, sglang_version)
        _gpus(c, sglang_version)
        _torch(c)
        _sglang(c)
    if c.profile is not None:
        _model(c)
        if not reference:
            _fit(c)
    _network(c)
    checked = default_url(c)
    if checked is not None or c.url or recorded_url()[0]:
        c.url = checked
        server_checks(c, transport)
    healthy_checked_server(c, c.url or recorded_url()[0])
    diagnosis_checks(c)
    return c.rows


__all__ = [
    "no_proxy_covers_loopback",
    "run_checks",
    "shm_size",
    "tokenizer_appends_eos",
]
