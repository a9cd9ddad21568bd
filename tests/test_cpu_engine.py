"""SGLang on CPU (`--profile xeon`, qembed/serving/cpu.py): the host facts, the kernel check, the dtype
and KV rules, the plan as serve / dry-run / doctor use it, and the deploy refusal.

Host files are planted in tmp_path (an AMX Xeon, an EPYC without AMX). The kernel check runs for
real in a subprocess: in ``tests/fake_site/python`` (torch from the test venv, no ``sgl_kernel``:
the CPU build is missing), and with a planted ``sgl_kernel`` package (a TEST DOUBLE written here)
that defines the CPU op with ``torch.library``, as the CPU build does in C++.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qembed.cli import app
from qembed.errors import ExitCode, GPUError, MissingDependency
from qembed.fleet import doctor, doctor_probe
from qembed.serving import cpu, cpu_host
from qembed.serving.profiles.resolve import load_profile
from tests.fake_site import harness
from tests.helpers.cli import run_main
from tests.helpers.paths import REPO

GB = 10**9


def _cpu_block(i: int, *, model: str, vendor: str, flags: str, phys: int, core: int) -> str:
    return textwrap.dedent(f"""\
        processor\t: {i}
        vendor_id\t: {vendor}
        model name\t: {model}
        physical id\t: {phys}
        core id\t\t: {core}
        flags\t\t: {flags}
        """)


XEON_FLAGS = "fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8 avx512_fp16"
EPYC_FLAGS = "fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni"


def plant_host(root: Path, *, flags: str, model: str, vendor: str, sockets: int, cores: int, smt: int,
               avail_kb: int = 20_000_000, total_kb: int = 32_000_000, cgroup: tuple[str, str] | None = None) -> dict[str, Path]:
    """/proc/cpuinfo, /proc/meminfo, one NUMA node per socket, and optionally a cgroup v2 limit."""
    proc, nodes, cg = root / "proc", root / "node", root / "cgroup"
    for d in (proc, nodes, cg):
        d.mkdir(parents=True)
    blocks, i = [], 0
    per_socket = cores * smt
    for s in range(sockets):
        for _t in range(smt):
            for c in range(cores):
                blocks.append(_cpu_block(i, model=model, vendor=vendor, flags=flags, phys=s, core=c))
                i += 1
        (nodes / f"node{s}").mkdir()
        (nodes / f"node{s}" / "cpulist").write_text(f"{s * per_socket}-{(s + 1) * per_socket - 1}\n")
    (nodes / "node9").mkdir()  # a memory-only node (CXL): no CPUs, no rank
    (nodes / "node9" / "cpulist").write_text("\n")
    (nodes / "possible").write_text("0-9\n")
    (proc / "cpuinfo").write_text("\n".join(blocks))
    (proc / "meminfo").write_text(f"MemTotal:       {total_kb} kB\nMemFree:        1000 kB\n"
                                  f"MemAvailable:   {avail_kb} kB\n")
    if cgroup is not None:
        (cg / "memory.max").write_text(cgroup[0] + "\n")
        (cg / "memory.current").write_text(cgroup[1] + "\n")
    return {"proc": proc, "sys_nodes": nodes, "cgroup": cg}


def xeon(tmp_path: Path, **kw: object) -> cpu_host.HostInfo:
    paths = plant_host(tmp_path, flags=XEON_FLAGS, model="Intel(R) Xeon(R) Platinum 8480+", vendor="GenuineIntel",
                       sockets=2, cores=4, smt=2, **kw)  # type: ignore[arg-type]
    return cpu_host.read_host(**paths)


def epyc(tmp_path: Path) -> cpu_host.HostInfo:
    paths = plant_host(tmp_path, flags=EPYC_FLAGS, model="AMD EPYC 9654 96-Core Processor", vendor="AuthenticAMD",
                       sockets=1, cores=4, smt=1)
    return cpu_host.read_host(**paths)


def kernels(path: str) -> cpu.KernelCheck:
    """A kernel check as SGLang's interpreter would answer for each path."""
    if path == "missing":
        return cpu.KernelCheck("/opt/sgl/bin/python", sglang="0.5.23", torch="2.14.1",
                               import_error="ImportError: Could not load any common_ops library!")
    return cpu.KernelCheck("/opt/sgl/bin/python", sglang="0.5.23", torch="2.14.1", sgl_kernel=True, cpu_op=True,
                           amx_kernels=path == "amx", amx_tile=True)


# -- the host -------------------------------------------------------------------------------------


def test_amx_xeon_cpuinfo_numa_and_memory(tmp_path: Path) -> None:
    h = xeon(tmp_path)
    assert h.model_name == "Intel(R) Xeon(R) Platinum 8480+" and h.vendor == "GenuineIntel"
    assert h.has_avx512 and h.has_amx_bf16 and "amx_int8" in h.flags
    assert (h.logical_cpus, h.physical_cores) == (16, 8)  # hyper-thread siblings count once
    assert h.numa_nodes == ((0, "0-7"), (1, "8-15")) and h.numa_count == 2  # node9 has no CPUs
    assert (h.mem_total, h.mem_available, h.available) == (32_000_000 * 1024, 20_000_000 * 1024, 20_000_000 * 1024)
    assert h.flags_text() == "avx512f yes, amx_tile yes, amx_bf16 yes, amx_int8 yes"


def test_epyc_without_amx(tmp_path: Path) -> None:
    h = epyc(tmp_path)
    assert h.vendor == "AuthenticAMD" and h.has_avx512 and not h.has_amx_bf16
    assert h.flags_text() == "avx512f yes, amx_tile no, amx_bf16 no, amx_int8 no"
    assert (h.logical_cpus, h.physical_cores, h.numa_count) == (4, 4, 1)


def test_cgroup_limit_lowers_free_memory(tmp_path: Path) -> None:
    h = xeon(tmp_path, cgroup=(str(8 * GB), str(2 * GB)))
    assert h.cgroup_limit == 6 * GB and h.available == 6 * GB
    unlimited = cpu_host.read_host(**plant_host(tmp_path / "b", flags="", model="x", vendor="y", sockets=1, cores=1,
                                           smt=1, cgroup=("max", "5")))
    assert unlimited.cgroup_limit is None


def test_unreadable_host_degrades(tmp_path: Path) -> None:
    h = cpu_host.read_host(proc=tmp_path / "none", sys_nodes=tmp_path / "none", cgroup=tmp_path / "none")
    assert (h.model_name, h.flags, h.logical_cpus, h.physical_cores, h.available, h.numa_count) == (
        None, frozenset(), 0, None, None, 1)


def test_cpuinfo_without_core_ids_leaves_cores_unknown() -> None:
    text = "processor : 0\nflags : avx512f\n\nprocessor : 1\nflags : avx512f\n"
    assert cpu_host.parse_cpuinfo(text)[3:] == (2, None)


# -- the rules ------------------------------------------------------------------------------------


@pytest.mark.parametrize("host,path,explicit,want", [
    ("xeon", "amx", None, "bfloat16"),
    ("xeon", "torch-native", None, "float32"),  # AMX CPU, kernels without the AMX GEMMs
    ("xeon", "missing", None, "float32"),
    ("epyc", "amx", None, "float32"),  # no amx_bf16 in /proc/cpuinfo: never bf16
    ("epyc", "torch-native", None, "float32"),
    ("xeon", "amx", "float32", "float32"),  # the user's choice wins, both ways
    ("epyc", "torch-native", "bfloat16", "bfloat16"),
    ("xeon", "amx", "auto", "auto"),
])
def test_dtype_matrix(tmp_path: Path, host: str, path: str, explicit: str | None, want: str) -> None:
    h = xeon(tmp_path) if host == "xeon" else epyc(tmp_path)
    dtype, why = cpu.choose_dtype(h, kernels(path), explicit=explicit)
    assert dtype == want
    assert ("set in the profile" in why) == (explicit is not None)


def test_kv_budget_arithmetic_cap_and_floor() -> None:
    kv = cpu.kv_budget(available=40 * GB, numa_nodes=2, weights_bytes=2 * GB, kv_bytes_per_token=100_000)
    # 50 % of 20 GB per node - 2 GB weights - 3.5 GB runtime = 4.5 GB
    assert kv.available_bytes == 20 * GB and kv.budget_bytes == 4_500_000_000 and kv.tokens == 45_000
    big = cpu.kv_budget(available=1000 * GB, weights_bytes=GB, kv_bytes_per_token=1000)
    assert big.tokens == cpu.MAX_KV_TOKENS and big.capped
    none = cpu.kv_budget(available=6 * GB, weights_bytes=4 * GB, kv_bytes_per_token=1000)
    assert none.tokens == 0 and none.budget_bytes is not None and none.budget_bytes < 0
    unknown = cpu.kv_budget(available=6 * GB, weights_bytes=None, kv_bytes_per_token=None)
    assert unknown.tokens == cpu.UNKNOWN_SHAPE_KV_TOKENS and unknown.budget_bytes is None


# -- the plan -------------------------------------------------------------------------------------


def test_plan_on_an_amx_xeon_picks_bf16_and_sizes_the_pool(tmp_path: Path) -> None:
    prof = load_profile("xeon")
    assert prof.dtype == "auto" and prof.max_total_tokens is None
    p = cpu.plan(prof, python="/opt/sgl/bin/python", env={}, host=xeon(tmp_path), kernels=kernels("amx"))
    assert p.path == "amx" and p.refusal is None
    assert p.profile.dtype == "bfloat16"
    # 0.6B in bf16: 50 % of 20,000,000 KiB per node (2 nodes) - weights - runtime, / 112 KiB per token
    per_node = 20_000_000 * 1024 // 2
    want = (per_node // 2 - p.kv.weights_bytes - cpu.RUNTIME_BYTES) // (28 * 8 * 128 * 2 * 2)  # type: ignore[operator]
    assert p.profile.max_total_tokens == want == p.kv.tokens
    by = {v.key: v for v in p.values}
    assert by["dtype"].source == "qembed" and by["max_total_tokens"].source == "qembed"
    assert by[cpu.THREADS_BIND_ENV].source == "sglang" and by[cpu.THREADS_BIND_ENV].value is None
    # the launch argv carries both values explicitly
    from qembed.serving.sglang_args import build_command

    cmd = build_command(p.profile, python="python3")
    assert cmd.argv[cmd.argv.index("--dtype") + 1] == "bfloat16"
    assert str(want) == cmd.argv[cmd.argv.index("--max-total-tokens") + 1]
    assert cmd.env["SGLANG_USE_CPU_ENGINE"] == "1" and "--device" in cmd.argv
    # an idle CPU scheduler otherwise busy-polls a whole core
    assert cmd.argv.count("--sleep-on-idle") == 1
    again = build_command(p.profile.model_copy(update={"extra_args": ["--sleep-on-idle"]}), python="python3")
    assert again.argv.count("--sleep-on-idle") == 1


def test_plan_explicit_values_win(tmp_path: Path) -> None:
    prof = load_profile("xeon", overrides=["dtype=float32", "max_total_tokens=4096"])
    p = cpu.plan(prof, python="py", env={}, host=xeon(tmp_path), kernels=kernels("amx"))
    assert (p.profile.dtype, p.profile.max_total_tokens) == ("float32", 4096)
    assert {v.key: v.source for v in p.values}["max_total_tokens"] == "profile"
    assert {v.key: v.source for v in p.values}["dtype"] == "profile"


def test_plan_fits_the_context_in_a_small_pool(tmp_path: Path) -> None:
    """Real SGLang 0.5.23 never answers a request longer than the pool but within the context
    (tests/engine/test_e_failures.py), so qembed shrinks the context it did not get told."""
    prof = load_profile("xeon", overrides=["max_total_tokens=5000"])
    host = xeon(tmp_path)
    p = cpu.plan(prof, python="py", env={}, host=host, kernels=kernels("amx"))
    assert p.refusal is None and p.profile.context_length == 4096
    assert {v.key: v.source for v in p.values}["context_length"] == "qembed"
    warn = next(f for f in p.findings if f.check == "context")
    assert warn.level == "warn" and "never answers" in warn.message
    from qembed.serving.sglang_args import build_command

    argv = build_command(p.profile, python="python3").argv
    assert argv[argv.index("--context-length") + 1] == "4096"
    # a pool that holds the whole context changes nothing
    roomy = cpu.plan(load_profile("xeon", overrides=["max_total_tokens=65536"]), python="py", env={},
                     host=host, kernels=kernels("amx"))
    assert roomy.profile.context_length is None and not any(f.check == "context" for f in roomy.findings)


def test_plan_refuses_a_context_larger_than_the_pool(tmp_path: Path) -> None:
    prof = load_profile("xeon", overrides=["max_total_tokens=1024", "context_length=8192"])
    p = cpu.plan(prof, python="py", env={}, host=xeon(tmp_path), kernels=kernels("amx"))
    fail = next(f for f in p.findings if f.check == "context")
    assert fail.level == "fail" and "never answers" in fail.message
    assert "`context_length: 1024`" in (fail.hint or "")


def test_plan_torch_native_says_its_cost_and_picks_float32(tmp_path: Path) -> None:
    p = cpu.plan(load_profile("xeon"), python="py", env={}, host=epyc(tmp_path), kernels=kernels("torch-native"))
    assert p.path == "torch-native" and p.profile.dtype == "float32"
    warn = next(f for f in p.findings if f.check == "path")
    assert warn.level == "warn" and "2.2–3.2×" in warn.message and "--profile cpu" in (warn.hint or "")


def test_plan_missing_build_refuses_with_the_install_hint(tmp_path: Path) -> None:
    p = cpu.plan(load_profile("xeon"), python="py", env={}, host=xeon(tmp_path), kernels=kernels("missing"))
    assert p.path == "missing" and p.refusal is not None and p.refusal.check == "kernels"
    with pytest.raises(MissingDependency) as exc:
        p.require()
    assert exc.value.exit_code == ExitCode.USAGE
    assert "install_sglang_cpu.sh" in (exc.value.hint or "") and "common_ops" in exc.value.message


def test_plan_model_larger_than_free_ram_refuses(tmp_path: Path) -> None:
    host = cpu_host.read_host(**plant_host(tmp_path, flags=XEON_FLAGS, model="Xeon", vendor="GenuineIntel", sockets=1,
                                      cores=2, smt=1, avail_kb=8_000_000))
    p = cpu.plan(load_profile("xeon", overrides=["model=Qwen/Qwen3-Embedding-8B"]), python="py", env={},
                 host=host, kernels=kernels("torch-native"))
    with pytest.raises(GPUError) as exc:  # exit 3: the model does not fit
        p.require()
    assert "does not fit in free RAM" in exc.value.message and exc.value.exit_code == ExitCode.NO_GPU


def test_threads_bind_from_the_profile_env_is_reported(tmp_path: Path) -> None:
    prof = load_profile("xeon", overrides=['env={"SGLANG_CPU_OMP_THREADS_BIND": "0-3"}'])
    p = cpu.plan(prof, python="py", host=xeon(tmp_path), kernels=kernels("amx"))
    v = {v.key: v for v in p.values}[cpu.THREADS_BIND_ENV]
    assert (v.value, v.source) == ("0-3", "profile") and "no longer sizes memory" in v.why


# -- the kernel check, really run in an interpreter -----------------------------------------------


def test_kernel_check_in_an_interpreter_without_sgl_kernel() -> None:
    k = cpu.check_kernels(str(harness.WRAPPER))
    assert k.error is None, k.error
    assert k.sglang == "0.5.23" and not k.sgl_kernel and k.path == "missing"  # the fake SGLang has no kernels
    assert "sgl_kernel" in k.why_missing()


def test_kernel_check_deadline_and_missing_interpreter(tmp_path: Path) -> None:
    k = cpu.check_kernels(str(tmp_path / "nope"))
    assert k.path == "missing" and "cannot run" in (k.error or "")
    slow = tmp_path / "slow"
    slow.write_text("#!/bin/sh\nexec sleep 30\n")
    slow.chmod(0o755)
    k = cpu.check_kernels(str(slow), timeout=0.5)
    assert "longer than" in (k.error or "")


def plant_sgl_kernel(site: Path, *, amx: bool) -> Path:
    """TEST DOUBLE: an ``sgl_kernel`` that defines the CPU op (and, for ``amx``, the AMX packing op)."""
    pkg = site / "sgl_kernel"
    pkg.mkdir(parents=True)
    ops = ["assign_req_to_token_pool_cpu(Tensor a) -> ()"] + (["convert_weight_packed(Tensor a) -> Tensor"] if amx else [])
    pkg.joinpath("__init__.py").write_text(
        "import torch\n_lib = torch.library.Library('sgl_kernel', 'FRAGMENT')\n"
        + "".join(f"_lib.define({op!r})\n" for op in ops))
    return site


def test_kernel_check_with_the_cpu_op(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(plant_sgl_kernel(tmp_path / "site", amx=False)))
    k = cpu.check_kernels(str(harness.WRAPPER))
    assert k.error is None and k.sgl_kernel and k.cpu_op and not k.amx_kernels
    assert k.path == "torch-native"


# -- the commands ---------------------------------------------------------------------------------


def test_dry_run_refuses_without_the_cpu_build(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(monkeypatch, capsys, ["serve", "--profile", "xeon", "--dry-run", "--json",
                                                    "--python", str(harness.WRAPPER)])
    assert code == ExitCode.USAGE, err
    doc = json.loads(out)
    assert doc["serve_would_refuse"] is True and doc["parser_check"] == "skipped"
    assert doc["cpu_plan"]["path"] == "missing"
    assert doc["env"]["SGLANG_USE_CPU_ENGINE"] == "1"
    assert "--device" in doc["argv"] and "--max-total-tokens" in doc["argv"]
    assert doc["argv"][doc["argv"].index("--dtype") + 1] == "float32"  # explicit, never `auto`
    assert err.startswith("error: SGLang's CPU build is not installed")
    assert "hint: install SGLang's CPU build" in err and "Traceback" not in err


def test_dry_run_with_the_cpu_build_checks_the_planned_argv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PYTHONPATH", str(plant_sgl_kernel(tmp_path / "site", amx=False)))
    result = CliRunner().invoke(app, ["serve", "--profile", "xeon", "--dry-run", "--json",
                                      "--python", str(harness.WRAPPER)])
    err = result.stderr
    assert result.exit_code == 0, err
    doc = json.loads(result.stdout)
    assert doc["parser_check"] == "ok" and doc["serve_would_refuse"] is False
    assert doc["cpu_plan"]["path"] == "torch-native"
    values = {v["key"]: v for v in doc["cpu_plan"]["values"]}
    assert values["dtype"]["value"] == "float32" and values["dtype"]["source"] == "qembed"
    assert doc["profile"]["max_total_tokens"] == values["max_total_tokens"]["value"] > 0
    assert any("torch-native path" in f["message"] and "2.2–3.2×" in f["message"] for f in doc["launch_findings"])
    assert err == ""  # --json: the findings are in the document, nothing on stderr


def test_serve_refuses_before_anything_starts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from qembed.serving import launcher

    def no_launch(*a: object, **kw: object) -> None:
        raise AssertionError("SGLang was launched")

    monkeypatch.setattr(launcher, "launch", no_launch)
    code, out, err = run_main(monkeypatch, capsys, ["serve", "--profile", "xeon", "--python", str(harness.WRAPPER),
                                                    "--port", str(harness.free_port())])
    assert code == ExitCode.USAGE and out == ""
    assert "error: SGLang's CPU build is not installed" in err and "install_sglang_cpu.sh" in err


def test_no_gpu_hint_names_both_cpu_options() -> None:
    from qembed.serving import gpu, policy

    (f,) = policy.launch_findings(gpu.GPUSnapshot(error="no driver"), load_profile("generic"), sglang_version=None)
    assert f.level == "fail" and "--profile xeon" in (f.hint or "") and "--profile cpu" in (f.hint or "")


def test_doctor_xeon_rows(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from qembed.serving import sglang_args

    host = xeon(tmp_path)
    monkeypatch.setattr(cpu, "read_host", lambda **kw: host)
    monkeypatch.setattr(cpu, "check_kernels", lambda python, env=None, timeout=90.0: kernels("amx"))
    monkeypatch.setattr(doctor, "run_probe", lambda python, timeout=60.0, env=None: doctor_probe.Probe(
        python, True, python_version="3.12.3", executable=python, torch="2.14.1", sglang="0.5.23"))
    seen: list[list[str]] = []

    def parser(flags: list[str], *, python: str, timeout: float = 180.0, env: object = None) -> sglang_args.ParserCheck:
        seen.append(list(flags))
        return sglang_args.ParserCheck(True, "", 0.1)

    monkeypatch.setattr(sglang_args, "check_flags", parser)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    result = CliRunner().invoke(app, ["doctor", "--profile", "xeon", "--json", "--python", "/opt/sgl/bin/python"])
    data = json.loads(result.stdout)
    by = {f"{r['section']}/{r['name']}": r for r in data["checks"]}
    assert by["NVIDIA driver/GPU"]["status"] == "SKIP" and "NVIDIA driver/NVML" not in by
    assert by["CPU/cpu"]["status"] == "PASS" and "amx_bf16 yes" in by["CPU/cpu"]["found"]
    assert by["SGLang/CPU build"]["status"] == "PASS"
    assert by["SGLang/path"]["status"] == "PASS" and "AMX" in by["SGLang/path"]["found"]
    assert by["SGLang/dtype"]["found"].startswith("`bfloat16`")
    assert by["Memory fit/RAM"]["status"] == "PASS" and "Memory fit/KV pool" in by
    assert "physical cores of NUMA node 0" in by["CPU/threads"]["found"]
    assert by["SGLang/flags"]["status"] == "PASS"
    # the parser saw the argv serve would launch: explicit dtype and KV pool
    assert seen and seen[0][seen[0].index("--dtype") + 1] == "bfloat16" and "--max-total-tokens" in seen[0]


def test_doctor_xeon_fails_without_the_build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    result = CliRunner().invoke(app, ["doctor", "--profile", "xeon", "--json", "--python", str(harness.WRAPPER)])
    assert result.exit_code == ExitCode.FAILURE
    by = {f"{r['section']}/{r['name']}": r for r in json.loads(result.stdout)["checks"]}
    assert by["SGLang/CPU build"]["status"] == "FAIL" and "install_sglang_cpu.sh" in by["SGLang/CPU build"]["fix"]
    assert by["SGLang/flags"]["status"] == "SKIP"


@pytest.mark.parametrize("target", ["docker", "k8s"])
def test_deploy_refuses_a_cpu_profile(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                      target: str) -> None:
    # without `--image`: the official image is CUDA-only (issue 20: with a CPU image it is allowed,
    # tests/test_deploy_k8s.py::test_cpu_profile_needs_an_image_and_gets_no_gpu_scheduling)
    code, out, err = run_main(monkeypatch, capsys, ["deploy", target, "--profile", "xeon"])
    assert code == ExitCode.USAGE and out == ""
    assert "error: profile `xeon` runs SGLang on CPU" in err and "PyPI has no SGLang CPU build" in err
    assert "xeon.Dockerfile" in err and "--image" in err


def test_the_install_script_names_every_missing_prerequisite_at_once(tmp_path: Path) -> None:
    """`scripts/install_sglang_cpu.sh` says every missing tool in one run (the third newcomer trial
    got "uv is not installed", then, one run later, "libnuma headers are missing"), before it
    writes anything."""
    import os
    import shutil
    import subprocess

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("uname", "grep", "sed", "cut", "cat", "printf", "dirname"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    # git and make are there; gcc, g++ and uv are not
    for tool in ("git", "make"):
        (bin_dir / tool).write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / tool).chmod(0o755)
    venv = tmp_path / "venv"
    r = subprocess.run(["/bin/bash", str(REPO / "scripts" / "install_sglang_cpu.sh"), "--venv", str(venv)],
                       capture_output=True, text=True, timeout=60, env={**os.environ, "PATH": str(bin_dir)})
    assert r.returncode == 1
    error = next(line for line in r.stderr.splitlines() if line.startswith("error: "))
    for name in ("`gcc`", "`g++`", "uv"):
        assert name in error, r.stderr
    assert ("libnuma" in error) is (not Path("/usr/include/numa.h").exists())
    assert "hint: `sudo apt-get install gcc g++" in r.stderr and "pip install uv" in r.stderr
    assert not venv.exists()
