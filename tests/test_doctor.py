"""`qembed doctor`: rows on a machine without GPU/driver/SGLang, and with NVML faked as an A100,
a T4, a busy GPU and an old driver; the CLI's exit codes, stdout/stderr split and --json."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qembed.cli import app
from qembed.fleet import doctor, doctor_probe, doctor_rows
from tests import fake_nvml
from tests.fake_site import harness
from tests.helpers.doctor import probe_with, rows
from tests.helpers.hub import loopback_hub

LOGS = Path(__file__).parent / "logs"

TEMPLATE_POST = {
    "type": "TemplateProcessing",
    "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}],
    "pair": [], "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [151643], "tokens": ["<|endoftext|>"]}},
}


def write_model(d: Path, *, eos: bool = True, arch: str = "Qwen3ForCausalLM") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps({
        "architectures": [arch], "model_type": "qwen3", "hidden_size": 2560, "num_hidden_layers": 36,
        "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 9728,
        "vocab_size": 151665, "max_position_embeddings": 32768, "tie_word_embeddings": True}))
    post = TEMPLATE_POST if eos else {"type": "ByteLevel", "add_prefix_space": False}
    (d / "tokenizer.json").write_text(json.dumps({"version": "1.0", "added_tokens": [],
                                                  "post_processor": post, "model": {"vocab": {}}}))
    (d / "model.safetensors").write_bytes(b"\0" * 16)
    return d


def write_profile(tmp: Path, **values: object) -> str:
    lines = [f"{k}: {json.dumps(v)}" for k, v in values.items()]
    p = tmp / "p.yaml"
    p.write_text("\n".join(lines) + "\n")
    return str(p)


# -- this machine: no GPU, no driver, no SGLang --------------------------------------------------


def test_no_driver_no_sglang_every_row_renders(monkeypatch: pytest.MonkeyPatch, quiet_env: None) -> None:
    fake_nvml.install(monkeypatch, "no-driver")
    monkeypatch.setattr(doctor, "run_probe", lambda python, timeout=60.0, env=None: probe_with(
        torch="2.13.0+cpu", torch_cuda=None, sglang=None))
    result = CliRunner().invoke(app, ["doctor"], env={"COLUMNS": "400"})
    assert result.exit_code == 1, result.output
    out = result.stdout
    for text in ("NVML", "no NVIDIA driver installed", "not installed", "Memory fit", "no GPU to check",
                 "Network", "Server", "Last failure"):
        assert text in out, text
    # the summary goes to stderr, the table to stdout
    assert "failed" in result.stderr and "failed" not in out.splitlines()[-1]


def test_no_driver_json(monkeypatch: pytest.MonkeyPatch, quiet_env: None) -> None:
    fake_nvml.install(monkeypatch, "no-driver")
    monkeypatch.setattr(doctor, "run_probe", lambda python, timeout=60.0, env=None: probe_with(sglang=None, torch=None))
    result = CliRunner().invoke(app, ["doctor", "--json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["exit_code"] == 1
    by = {f"{r['section']}/{r['name']}": r for r in data["checks"]}
    assert by["NVIDIA driver/NVML"]["status"] == "FAIL"
    assert "driver" in by["NVIDIA driver/NVML"]["fix"]
    assert by["SGLang/sglang"]["status"] == "FAIL" and "qembed[serve]" in by["SGLang/sglang"]["fix"]
    assert by["Memory fit/fit"]["status"] == "SKIP" and "144 KiB/token" in by["Memory fit/fit"]["found"]
    assert all(set(r) == {"section", "name", "status", "found", "fix"} for r in data["checks"])
    assert data["summary"]["FAIL"] == sum(r["status"] == "FAIL" for r in data["checks"])
    assert result.stderr == ""


def test_real_probe_in_this_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    # the probe really runs in a subprocess; whatever is installed, it answers with versions
    import sys

    pr = doctor_probe.run_probe(sys.executable)
    assert pr.ok and pr.python_version and pr.executable
    bad = doctor_probe.run_probe("/nonexistent/python")
    assert not bad.ok and "cannot run" in (bad.error or "")


# -- faked NVML -------------------------------------------------------------------------------


def test_a100_all_pass(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, quiet_env: None) -> None:
    fake_nvml.install(monkeypatch, "a100")
    monkeypatch.setattr(doctor, "run_probe", lambda python, timeout=60.0, env=None: probe_with())
    ref = write_profile(tmp_path, model=str(write_model(tmp_path / "m")), port=harness.free_port())
    checks = doctor.run_checks(profile=ref)
    assert [c for c in checks if c.status in ("WARN", "FAIL")] == []
    r = rows(checks)
    assert "A100-SXM4-80GB, sm80: bf16 yes" in r["GPU 0/compute capability"].found
    assert "Qwen3ForCausalLM" in r["Model/architecture"].found and "--is-embedding" in r["Model/architecture"].found
    assert "runs sglang 0.5.20 or later" in r["NVIDIA driver/driver"].found
    assert "full 32,768-token requests" in r["Memory fit/fit"].found
    assert doctor_rows.exit_code(checks) == 0
    result = CliRunner().invoke(app, ["doctor", "--profile", ref])
    assert result.exit_code == 0, result.output


def test_t4_bf16_warning_exit_6(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, quiet_env: None) -> None:
    fake_nvml.install(monkeypatch, "t4")
    monkeypatch.setattr(doctor, "run_probe", lambda python, timeout=60.0, env=None: probe_with())
    ref = write_profile(tmp_path, model=str(write_model(tmp_path / "m")), port=harness.free_port(), context_length=8192)
    result = CliRunner().invoke(app, ["doctor", "--profile", ref, "--json"])
    assert result.exit_code == 6, result.stdout
    warns = [r for r in json.loads(result.stdout)["checks"] if r["status"] == "WARN"]
    assert [(r["section"], r["name"]) for r in warns] == [("GPU 0", "compute capability")]
    assert "runs as float16" in warns[0]["found"] and "`dtype: float16`" in warns[0]["fix"]


def test_t4_full_context_will_not_fit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, quiet_env: None) -> None:
    fake_nvml.install(monkeypatch, "t4")
    monkeypatch.setattr(doctor, "run_probe", lambda python, timeout=60.0, env=None: probe_with())
    ref = write_profile(tmp_path, model=str(write_model(tmp_path / "m")), dtype="float16")
    fit = rows(doctor.run_checks(profile=ref))["Memory fit/fit"]
    assert fit.status == "WARN" and fit.found.startswith("a full-context request will not fit")
    assert "`context_length: " in (fit.fix or "") and "`gpu_memory_fraction: " in (fit.fix or "")


def test_8b_on_t4_will_not_fit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, quiet_env: None) -> None:
    fake_nvml.install(monkeypatch, "t4")
    monkeypatch.setattr(doctor, "run_probe", lambda python, timeout=60.0, env=None: probe_with())
    ref = write_profile(tmp_path, model="Qwen/Qwen3-Embedding-8B", dtype="float16", port=harness.free_port())
    fit = rows(doctor.run_checks(profile=ref))["Memory fit/fit"]
    assert fit.status == "FAIL" and "will not fit on GPU 0" in fit.found
    assert "weights alone" in (fit.fix or "")


def test_busy_gpu_names_the_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, quiet_env: None) -> None:
    fake_nvml.install(monkeypatch, "busy")
    monkeypatch.setattr(doctor, "run_probe", lambda python, timeout=60.0, env=None: probe_with())
    ref = write_profile(tmp_path, model=str(write_model(tmp_path / "m")), port=harness.free_port())
    r = rows(doctor.run_checks(profile=ref))
    assert r["GPU 0/other processes"].status == "WARN"
    assert r["GPU 0/other processes"].found == "GPU 0 is already in use: pid 4242 python3 28610 MiB"
    # the 30 GB are gone from the pool: free 50.0 GiB is what the fit uses
    assert "GPU 0 (" in r["Memory fit/fit"].found and "52.1 GiB free of 80.0 GiB" in r["Memory fit/fit"].found


def test_old_driver_with_sglang_0_5_23(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, quiet_env: None) -> None:
    fake_nvml.install(monkeypatch, "old-driver")
    monkeypatch.setattr(doctor, "run_probe", lambda python, timeout=60.0, env=None: probe_with())
    ref = write_profile(tmp_path, model=str(write_model(tmp_path / "m")), port=harness.free_port())
    r = rows(doctor.run_checks(profile=ref))
    drv = r["NVIDIA driver/driver"]
    assert drv.status == "FAIL"
    assert "550.54.15 (CUDA 12.4)" in drv.found and "sglang<=0.5.19 only" in drv.found
    assert "R580" in (drv.fix or "") and "sglang==0.5.19" in (drv.fix or "")
    assert r["Torch/CUDA/torch"].status == "FAIL"  # torch cu13.0 on a CUDA 12.4 driver


# -- model files ------------------------------------------------------------------------------


def test_tokenizer_without_eos_post_processor_warns(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                    quiet_env: None) -> None:
    fake_nvml.install(monkeypatch, "a100")
    monkeypatch.setattr(doctor, "run_probe", lambda python, timeout=60.0, env=None: probe_with())
    ref = write_profile(tmp_path, model=str(write_model(tmp_path / "m", eos=False)), port=harness.free_port())
    tok = rows(doctor.run_checks(profile=ref))["Model/tokenizer"]
    assert tok.status == "WARN" and "tokenizer.json" in (tok.fix or "") and "`hf download " in (tok.fix or "")


def test_tokenizer_appends_eos(tmp_path: Path) -> None:
    d = write_model(tmp_path / "a")
    assert doctor.tokenizer_appends_eos(d / "tokenizer.json") is True
    d = write_model(tmp_path / "b", eos=False)
    assert doctor.tokenizer_appends_eos(d / "tokenizer.json") is False
    seq = tmp_path / "seq.json"
    seq.write_text(json.dumps({"post_processor": {"type": "Sequence", "processors": [
        {"type": "ByteLevel"}, TEMPLATE_POST]}}))
    assert doctor.tokenizer_appends_eos(seq) is True


def test_dir_without_config_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, quiet_env: None) -> None:
    fake_nvml.install(monkeypatch, "a100")
    monkeypatch.setattr(doctor, "run_probe", lambda python, timeout=60.0, env=None: probe_with())
    (tmp_path / "empty").mkdir()
    ref = write_profile(tmp_path, model=str(tmp_path / "empty"), port=harness.free_port())
    m = rows(doctor.run_checks(profile=ref))["Model/model"]
    assert m.status == "FAIL" and "no config.json" in m.found and "`model`" in (m.fix or "")


def test_hub_id_not_cached_warns_with_size(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, quiet_env: None) -> None:
    fake_nvml.install(monkeypatch, "a100")
    monkeypatch.setattr(doctor, "run_probe", lambda python, timeout=60.0, env=None: probe_with())
    ref = write_profile(tmp_path, model="Qwen/Qwen3-Embedding-8B", port=harness.free_port())
    with loopback_hub("Qwen/Qwen3-Embedding-8B") as hub:  # the Hub answers: serve would download it
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        m = rows(doctor.run_checks(profile=ref))["Model/model"]
    assert m.status == "WARN" and "15.1 GB" in m.found and hub.url in m.found, m  # 7,567,295,488 params x 2 bytes
    assert "downloads it" in m.found and "before the launch" in m.found
    # no Hub answers (the newcomer trial's offline box): FAIL in seconds, as serve refuses
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    m = rows(doctor.run_checks(profile=ref))["Model/model"]
    assert m.status == "FAIL" and "not reachable" in m.found and "hf download" in (m.fix or ""), m
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    m = rows(doctor.run_checks(profile=ref))["Model/model"]
    assert m.status == "FAIL" and "HF_HUB_OFFLINE" in m.found
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    with loopback_hub("Qwen/Qwen3-Embedding-8B") as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        assert rows(doctor.run_checks(profile=ref))["Model/model"].status == "PASS"


# -- network ----------------------------------------------------------------------------------


def test_port_in_use_names_the_holder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, quiet_env: None) -> None:
    fake_nvml.install(monkeypatch, "a100")
    monkeypatch.setattr(doctor, "run_probe", lambda python, timeout=60.0, env=None: probe_with())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        ref = write_profile(tmp_path, model=str(write_model(tmp_path / "m")), port=port)
        r = rows(doctor.run_checks(profile=ref))["Network/port"]
    assert r.status == "FAIL"
    assert f"pid {os.getpid()}" in r.found
    assert "`port: " in (r.fix or "")


def test_proxy_without_no_proxy_warns(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, quiet_env: None) -> None:
    fake_nvml.install(monkeypatch, "a100")
    monkeypatch.setattr(doctor, "run_probe", lambda python, timeout=60.0, env=None: probe_with())
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    ref = write_profile(tmp_path, model=str(write_model(tmp_path / "m")), port=harness.free_port())
    r = rows(doctor.run_checks(profile=ref))["Network/proxy"]
    assert r.status == "WARN" and "NO_PROXY=127.0.0.1,localhost,::1" in (r.fix or "")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    assert rows(doctor.run_checks(profile=ref))["Network/proxy"].status == "PASS"


@pytest.mark.parametrize(("value", "covered"), [
    (None, False), ("", False), ("example.com", False), ("127.0.0.1", True), ("localhost", True),
    ("*", True), ("10.0.0.0/8,127.0.0.0/8", True), (".corp, 127.0.0.1 ", True),
])
def test_no_proxy_covers_loopback(value: str | None, covered: bool) -> None:
    assert doctor.no_proxy_covers_loopback(value) is covered


def test_small_shm_in_container_warns(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, quiet_env: None) -> None:
    fake_nvml.install(monkeypatch, "a100")
    monkeypatch.setattr(doctor, "run_probe", lambda python, timeout=60.0, env=None: probe_with())
    monkeypatch.setattr(doctor, "shm_size", lambda path="/dev/shm": 64 * 1024**2)
    monkeypatch.setattr(doctor, "_in_container", lambda: True)
    ref = write_profile(tmp_path, model=str(write_model(tmp_path / "m")), port=harness.free_port())
    r = rows(doctor.run_checks(profile=ref))["Network//dev/shm"]
    assert r.status == "WARN" and "64 MiB" in r.found and "--shm-size" in (r.fix or "")


# -- a running server (the stand-in SGLang HTTP server) ---------------------------------------


@pytest.mark.parametrize("matryoshka", [True, False])
def test_running_server(monkeypatch: pytest.MonkeyPatch, quiet_env: None, matryoshka: bool) -> None:
    from tests.standin.server import StandinConfig, serve_in_thread

    fake_nvml.install(monkeypatch, "no-driver")
    monkeypatch.setattr(doctor, "run_probe", lambda python, timeout=60.0, env=None: probe_with())
    with serve_in_thread(StandinConfig(dim=2560, matryoshka=matryoshka)) as srv:
        url = f"http://127.0.0.1:{srv.port}"
        r = rows(doctor.run_checks(profile="generic", url=url))
    assert r["Server//health"].status == "PASS"
    assert "max_model_len 32768" in r["Server//v1/models"].found
    assert r["Server/embedding"].status == "PASS" and r["Server/embedding"].found.startswith("2560 dimensions, norm 1.0000")
    assert r["Server/dimensions"].status == ("PASS" if matryoshka else "WARN")


def test_server_unreachable_fails(monkeypatch: pytest.MonkeyPatch, quiet_env: None) -> None:
    fake_nvml.install(monkeypatch, "no-driver")
    monkeypatch.setattr(doctor, "run_probe", lambda python, timeout=60.0, env=None: probe_with())
    r = rows(doctor.run_checks(profile="generic", url=f"http://127.0.0.1:{harness.free_port()}"))
    assert r["Server//health"].status == "FAIL" and "no answer" in r["Server//health"].found


# -- failure diagnosis ------------------------------------------------------------------------


def test_log_option_diagnoses(monkeypatch: pytest.MonkeyPatch, quiet_env: None) -> None:
    fake_nvml.install(monkeypatch, "no-driver")
    monkeypatch.setattr(doctor, "run_probe", lambda python, timeout=60.0, env=None: probe_with())
    result = CliRunner().invoke(app, ["doctor", "--profile", "a100-40g", "--json", "--log", str(LOGS / "cuda_oom.log")])
    assert result.exit_code == 1
    (row,) = [r for r in json.loads(result.stdout)["checks"] if r["section"] == "Last failure"]
    assert row["status"] == "FAIL" and row["name"] == "CUDA out of memory"
    assert "torch.OutOfMemoryError: CUDA out of memory" in row["found"]
    assert "`gpu_memory_fraction` in profile `a100-40g`" in row["fix"]


def test_newest_serve_log_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, quiet_env: None) -> None:
    fake_nvml.install(monkeypatch, "no-driver")
    monkeypatch.setattr(doctor, "run_probe", lambda python, timeout=60.0, env=None: probe_with())
    logs = Path(os.environ["QEMBED_STATE_DIR"]) / "logs"
    logs.mkdir(parents=True)
    old = logs / "generic-20261119-090000.log"  # `serve -p generic` names its server `generic`
    old.write_text((LOGS / "port_in_use.log").read_text())
    os.utime(old, (1_000_000, 1_000_000))
    (logs / "generic-20261120-100000.log").write_text((LOGS / "weights_no_kv.log").read_text())
    os.utime(logs / "generic-20261120-100000.log", (2_000_000, 2_000_000))
    (logs / "emb-20261121-100000.log").write_text((LOGS / "port_in_use.log").read_text())  # another server's, newer
    r = [c for c in doctor.run_checks(profile="generic") if c.section == "Last failure"]
    assert [c.name for c in r] == ["no GPU memory left for the KV cache"]
    assert r[0].status == "WARN"  # found on its own: maybe already fixed, so not a FAIL
    assert "generic-20261120-100000.log" in r[0].found


def test_missing_log_file_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, quiet_env: None) -> None:
    fake_nvml.install(monkeypatch, "no-driver")
    monkeypatch.setattr(doctor, "run_probe", lambda python, timeout=60.0, env=None: probe_with())
    r = [c for c in doctor.run_checks(profile="generic", log=tmp_path / "nope.log") if c.section == "Last failure"]
    assert r[0].status == "FAIL" and "cannot read" in r[0].found


def test_exit_code_table() -> None:
    def c(status: str) -> doctor_rows.Check:
        return doctor_rows.Check("s", "n", status, "f")  # type: ignore[arg-type]

    assert doctor_rows.exit_code([c("PASS"), c("SKIP")]) == 0
    assert doctor_rows.exit_code([c("PASS"), c("WARN")]) == 6
    assert doctor_rows.exit_code([c("WARN"), c("FAIL")]) == 1


def test_help_documents_exit_codes() -> None:
    result = CliRunner().invoke(app, ["doctor", "--help"])
    assert result.exit_code == 0
    assert "6 warnings only" in result.stdout and "QEMBED_PROFILE" in result.stdout


# -- doctor checks what `serve` will run (issue 11) -----------------------------------------------


def test_doctor_takes_serves_profile_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, quiet_env: None) -> None:
    fake_nvml.install(monkeypatch, "a100")
    monkeypatch.setattr(doctor, "run_probe", lambda python, timeout=60.0, env=None: probe_with())
    model = write_model(tmp_path / "run #3")
    port = harness.free_port()
    result = CliRunner().invoke(app, ["doctor", "-p", "a100", "--model", str(model), "--port", str(port),
                                      "--host", "::1", "--set", "context_length=8192", "--json"])
    assert result.exit_code in (0, 6), result.output
    by = {f"{r['section']}/{r['name']}": r for r in json.loads(result.stdout)["checks"]}
    assert str(model) in by["Model/model"]["found"]  # taken as written: `#3` is no YAML comment
    assert f"::1:{port} is free" in by["Network/port"]["found"]


def test_python_ranked_as_serve_ranks_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, quiet_env: None) -> None:
    fake_nvml.install(monkeypatch, "a100")
    seen: list[str] = []

    def probe(python: str) -> doctor_probe.Probe:
        seen.append(python)
        return probe_with()

    monkeypatch.setenv("QEMBED_SGLANG_PYTHON", "/env/bin/python")
    ref = write_profile(tmp_path, python="/profile/bin/python")
    doctor.run_checks(profile=ref, probe=probe)
    doctor.run_checks(profile=ref, python="/cli/bin/python", probe=probe)
    doctor.run_checks(profile="generic", probe=probe)
    assert seen == ["/profile/bin/python", "/cli/bin/python", "/env/bin/python"]


def test_probe_sees_pythonpath_as_the_launch_does(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, quiet_env: None) -> None:
    import sys

    site = tmp_path / "site"
    dist = site / "sglang-9.9.9.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: sglang\nVersion: 9.9.9\n")
    monkeypatch.setenv("PYTHONPATH", str(site))
    fake_nvml.install(monkeypatch, "no-driver")
    r = rows(doctor.run_checks(profile="generic", python=sys.executable))
    assert r["SGLang/sglang"].found.startswith("9.9.9")


def test_default_url_is_probed_without_a_record(monkeypatch: pytest.MonkeyPatch, quiet_env: None) -> None:
    from tests.standin.server import StandinConfig, serve_in_thread

    fake_nvml.install(monkeypatch, "no-driver")
    monkeypatch.setattr(doctor, "run_probe", lambda python, timeout=60.0, env=None: probe_with())
    with serve_in_thread(StandinConfig(dim=1024)) as srv:
        monkeypatch.setenv("QEMBED_URL", f"http://127.0.0.1:{srv.port}")
        r = rows(doctor.run_checks(profile="generic"))
    assert r["Server//health"].status == "PASS" and str(srv.port) in r["Server//health"].found
    monkeypatch.setenv("QEMBED_URL", f"http://127.0.0.1:{harness.free_port()}")
    r = rows(doctor.run_checks(profile="generic"))
    assert r["Server/server"].status == "SKIP" and "client's default URL" in r["Server/server"].found


def test_port_held_by_the_healthy_server_being_checked_passes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                              quiet_env: None) -> None:
    from tests.standin.server import StandinConfig, serve_in_thread

    fake_nvml.install(monkeypatch, "no-driver")
    monkeypatch.setattr(doctor, "run_probe", lambda python, timeout=60.0, env=None: probe_with())
    with serve_in_thread(StandinConfig(dim=2560)) as srv:
        url = f"http://127.0.0.1:{srv.port}"
        checks = doctor.run_checks(profile="generic", options={"port": srv.port}, url=url)
    r = rows(checks)
    assert r["Network/port"].status == "PASS" and "healthy embedding server" in r["Network/port"].found
    assert "FAIL" not in {c.status for c in checks if c.section in ("Network", "Server")}


def test_gpu_class_rule_is_shared_with_serve(monkeypatch: pytest.MonkeyPatch, quiet_env: None) -> None:
    from qembed.serving import gpu, policy
    from qembed.serving.profiles.resolve import load_profile

    fake_nvml.install(monkeypatch, "a100")
    monkeypatch.setattr(doctor, "run_probe", lambda python, timeout=60.0, env=None: probe_with())
    r = rows(doctor.run_checks(profile="t4"))["Profile/GPU class"]
    served = [f for f in policy.require_launchable(gpu.snapshot(), load_profile("t4"), sglang_version="0.5.23")
              if f.check == "profile"]
    assert r.status == "WARN" and "-p a100-80g" in (r.fix or "")
    assert [(f.message, f.hint) for f in served] == [(r.found, r.fix)]


def test_readable_in_80_columns(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, quiet_env: None) -> None:
    fake_nvml.install(monkeypatch, "t4")
    monkeypatch.setattr(doctor, "run_probe", lambda python, timeout=60.0, env=None: probe_with())
    model = write_model(tmp_path / "a-rather-long-directory-name" / "Qwen3-Embedding-4B-snapshot", eos=False)
    result = CliRunner().invoke(app, ["doctor", "--model", str(model)], env={"COLUMNS": "80"})
    out = result.stdout
    assert "…" not in out
    assert str(model) in out  # whole, never cut
    assert "    fix:" in out and "    found:" in out  # stacked rows
    for line in out.splitlines():
        # only a command, or one word longer than the screen (a path), may run past, unbroken
        assert len(line) <= 80 or "`" in line or " " not in line.strip().split(": ", 1)[-1].strip(), line
    assert "`hf download Qwen/Qwen3-Embedding-4B tokenizer.json`" in out


def test_cli_python_ranking_matches_serve(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, quiet_env: None) -> None:
    # `QEMBED_SGLANG_PYTHON` must not act as `--python`: the profile's `python` ranks above it
    fake_nvml.install(monkeypatch, "no-driver")
    seen: list[str] = []

    def fake_probe(python: str, timeout: float = 60.0, env: object = None) -> doctor_probe.Probe:
        seen.append(python)
        return probe_with()

    monkeypatch.setattr(doctor, "run_probe", fake_probe)
    ref = write_profile(tmp_path, python="/profile/bin/python")
    result = CliRunner().invoke(app, ["doctor", "-p", ref, "--json"], env={"QEMBED_SGLANG_PYTHON": "/env/bin/python"})
    assert seen == ["/profile/bin/python"], result.output


def test_doctor_profile_cpu_with_its_own_server_running(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                       quiet_env: None) -> None:
    """Issue 23 item 8: `doctor -p cpu` while `serve -p cpu` runs: its port is the server being
    checked (PASS, not WARN exit 6), the Last failure row reads that server's newest log (not a
    newer log of another server), and no GPU points to both CPU options."""
    from qembed.host import state
    from tests.standin.server import StandinConfig, serve_in_thread

    fake_nvml.install(monkeypatch, "no-driver")
    monkeypatch.setattr(doctor, "run_probe", lambda python, timeout=60.0, env=None: probe_with(
        sentence_transformers="5.1.0"))
    monkeypatch.delenv("QEMBED_URL", raising=False)
    model = write_model(tmp_path / "m")
    logs = state.ensure_dir(state.logs_dir())
    (logs / "cpu-20261120-100000.log").write_text("Load weight begin\n")
    os.utime(logs / "cpu-20261120-100000.log", (1_000_000, 1_000_000))
    (logs / "emb-20261121-100000.log").write_text((LOGS / "weights_no_kv.log").read_text())  # newer, not ours
    with serve_in_thread(StandinConfig(dim=2560)) as srv:
        # the record `qembed serve -p cpu --port N` writes (the stand-in runs in this process)
        state.save(state.make_record(name="cpu", pid=os.getpid(), host="127.0.0.1", port=srv.port,
                                     url=f"http://127.0.0.1:{srv.port}", model=str(model), profile="cpu",
                                     log_path=logs / "cpu-20261120-100000.log"))
        result = CliRunner().invoke(app, ["doctor", "-p", "cpu", "--model", str(model), "--port", str(srv.port),
                                          "--json"])
    by = {f"{r['section']}/{r['name']}": r for r in json.loads(result.stdout)["checks"]}
    assert by["Network/port"]["status"] == "PASS", by["Network/port"]
    assert "`cpu`, the running server of profile `cpu`" in by["Network/port"]["found"]
    assert by["Server//health"]["status"] == "PASS" and "(`cpu`)" in by["Server//health"]["found"]
    assert [(k, r["status"]) for k, r in by.items() if k.startswith("Last failure")] == [("Last failure/log", "PASS")]
    assert "cpu-20261120-100000.log" in by["Last failure/log"]["found"]
    assert result.exit_code == 0, [r for r in by.values() if r["status"] != "PASS"]


def test_no_gpu_points_to_both_cpu_options(monkeypatch: pytest.MonkeyPatch, quiet_env: None) -> None:
    """Issue 23 item 8: a machine without a GPU is told about `--profile xeon` and `--profile cpu`."""
    fake_nvml.install(monkeypatch, "no-driver")
    monkeypatch.setattr(doctor, "run_probe", lambda python, timeout=60.0, env=None: probe_with())
    result = CliRunner().invoke(app, ["doctor", "--json"])
    by = {f"{r['section']}/{r['name']}": r for r in json.loads(result.stdout)["checks"]}
    fix = by["NVIDIA driver/NVML"]["fix"]
    assert "qembed serve --profile xeon" in fix and "qembed serve --profile cpu" in fix and "docs/serving.md" in fix


def test_the_summary_says_1_warning(monkeypatch: pytest.MonkeyPatch, quiet_env: None) -> None:
    """Issue 23 item 9: "1 warnings" (the newcomer's machine: no driver, a CPU-only torch)."""
    fake_nvml.install(monkeypatch, "no-driver")
    monkeypatch.setattr(doctor, "run_probe", lambda python, timeout=60.0, env=None: probe_with(
        torch="2.13.0+cpu", torch_cuda=None, sglang=None))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    warns = json.loads(CliRunner().invoke(app, ["doctor", "--json"]).stdout)["summary"]["WARN"]
    assert warns == 1
    err = CliRunner().invoke(app, ["doctor"]).stderr
    assert ", 1 warning, " in err, err
