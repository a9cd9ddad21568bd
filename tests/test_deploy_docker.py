"""`qembed deploy docker`: the run line and the compose file, parsed and checked field by field;
the keyed entry (fail closed, redacted log) and the health probe are executed for real (sh, python, the stand-in)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from qembed.errors import ConfigError
from qembed.fleet.deploy import PINNED_SGLANG, docker, write_files
from qembed.serving.profiles.resolve import load_profile
from qembed.serving.sglang_args import ENTRY_CODE, check_many
from tests.standin.server import StandinConfig, serve_in_thread

SERVE_PREFIX = ["python3", "-c", "from sglang.cli.main import main; main()", "serve", "--model-type", "llm"]


def run_argv(line: str) -> list[str]:
    """The argv of the `docker run` line (comments dropped, continuations joined)."""
    body = "\n".join(x for x in line.splitlines() if not x.startswith("#")).replace("\\\n", " ")
    return shlex.split(body.replace('"$HOME', '"/home/u'))


def plan(profile: str = "h100", **kw: object) -> docker.DockerPlan:
    return docker.plan_container(load_profile(profile), **kw)  # type: ignore[arg-type]


def test_run_line_has_every_part_of_a_deployment() -> None:
    argv = run_argv(docker.run_line(plan()))
    assert argv[:3] == ["docker", "run", "-d"]
    image_at = argv.index("lmsysorg/sglang:v0.5.23")
    opts, command = argv[:image_at], argv[image_at + 1:]
    assert opts[opts.index("--gpus") + 1] == "1"
    assert "--ipc=host" in opts
    assert opts[opts.index("-p") + 1] == "127.0.0.1:30000:30000"
    envs = [opts[i + 1] for i, a in enumerate(opts) if a == "-e"]
    assert "HF_TOKEN" in envs and "QEMBED_API_KEY" in envs  # by name: values come from the caller
    assert "NO_PROXY=127.0.0.1,localhost,::1" in envs
    vols = [opts[i + 1] for i, a in enumerate(opts) if a == "-v"]
    assert vols == ["/home/u/.cache/huggingface:/root/.cache/huggingface"]
    assert "--health-start-period=1800s" in opts and "--health-timeout=25s" in opts
    # the key: read from QEMBED_API_KEY inside the container, fail closed, redacted from the log
    assert command[:2] == ["python3", "-c"] and "os.environ.pop('QEMBED_API_KEY'" in command[2]
    assert command[2].endswith(ENTRY_CODE) and "setLogRecordFactory" in command[2]
    serve = [command[0], "-c", ENTRY_CODE, *command[3:]]
    assert serve[:6] == SERVE_PREFIX
    for pair in (["--host", "0.0.0.0"], ["--port", "30000"], ["--mem-fraction-static", "0.82"]):
        i = serve.index(pair[0])
        assert serve[i:i + 2] == pair
    assert "--is-embedding" in serve and "--enable-metrics" in serve and "--api-key" not in serve


def test_secrets_never_reach_the_output(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QEMBED_API_KEY", "sk-live-very-secret")
    monkeypatch.setenv("HF_TOKEN", "hf_very_secret")
    p = docker.plan_container(load_profile("l4", overrides=["env.WANDB_API_KEY=wb-secret", "env.FOO=bar"]))
    for text in (docker.run_line(p), docker.compose(p), str(p.to_json())):
        for secret in ("sk-live-very-secret", "hf_very_secret", "wb-secret"):
            assert secret not in text
    assert "WANDB_API_KEY" in p.pass_env and p.env["FOO"] == "bar"


def test_gpu_ids_shm_size_bind_and_no_api_key() -> None:
    p = docker.plan_container(load_profile("h100", overrides={"gpu_ids": [2, 3], "dp_size": 2}),
                    bind="0.0.0.0", host_port=8080, shm_size="16g", api_key=False)
    argv = run_argv(docker.run_line(p))
    assert argv[argv.index("--gpus") + 1] == '"device=2,3"'
    assert argv[argv.index("--shm-size") + 1] == "16g" and "--ipc=host" not in argv
    assert argv[argv.index("-p") + 1] == "0.0.0.0:8080:30000"
    assert "sh" not in argv and "QEMBED_API_KEY" not in argv
    assert "CUDA_VISIBLE_DEVICES" not in " ".join(argv)  # the container numbers its GPUs 0..n-1
    assert any("without an API key" in n for n in p.notes)


@pytest.mark.parametrize("shutdown", [30.0, 95.5])
def test_stop_timeout_outlasts_the_drain(shutdown: float) -> None:
    """Issue 20: Docker's default 10 s stop timeout SIGKILLed SGLang mid-drain."""
    p = docker.plan_container(load_profile("l4", overrides={"shutdown_timeout": shutdown}))
    argv = run_argv(docker.run_line(p))
    (opt,) = [a for a in argv if a.startswith("--stop-timeout=")]
    assert int(opt.split("=")[1]) > shutdown
    grace = yaml.safe_load(docker.compose(p))["services"]["qembed"]["stop_grace_period"]
    assert grace.endswith("s") and int(grace[:-1]) > shutdown


def test_image_is_pinned_whatever_sglang_is_installed_here(tmp_path: Path) -> None:
    """Issue 20: the tag came from the SGLang installed on the generating machine. The CLI runs
    here with a (fake) SGLang 0.5.19 as the profile's interpreter: the image is still the pinned one."""
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 0.5.19\n")
    fake.chmod(0o755)
    from qembed.serving.sglang_args import installed_sglang_version

    assert installed_sglang_version(str(fake)) == "0.5.19"  # what the old code tagged the image with
    proc = subprocess.run([sys.executable, "-m", "qembed", "deploy", "docker", "-p", "h100", "--json"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "QEMBED_SGLANG_PYTHON": str(fake)})
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["image"] == f"lmsysorg/sglang:v{PINNED_SGLANG}" and data["sglang_version"] == PINNED_SGLANG
    assert any("R580" in n for n in data["notes"])
    # --image: a private registry; no driver note about an image qembed did not pick
    own = docker.plan_container(load_profile("h100"), image="registry.example.com/ml/sglang:v0.5.23")
    assert own.image == "registry.example.com/ml/sglang:v0.5.23" and not any("R580" in n for n in own.notes)
    with pytest.raises(ConfigError, match="not an image reference"):
        docker.plan_container(load_profile("h100"), image="two words")


def test_cpu_profile_needs_an_image_and_gets_no_gpu() -> None:
    """`device: cpu` (xeon): refused without `--image` (the official image is CUDA-only); with a
    CPU image, no `--gpus` and no GPU reservation, and the argv holds the CPU plan's values."""
    with pytest.raises(ConfigError, match="CUDA-only") as err:
        docker.plan_container(load_profile("xeon"))
    assert "xeon.Dockerfile" in (err.value.hint or "") and "--image" in (err.value.hint or "")
    p = docker.plan_container(load_profile("xeon"), image="reg.example/sglang-cpu:0.5.23")
    argv = run_argv(docker.run_line(p))
    assert "--gpus" not in argv and argv[argv.index("reg.example/sglang-cpu:0.5.23") - 1] != "--gpus"
    assert "deploy" not in yaml.safe_load(docker.compose(p))["services"]["qembed"]
    cmd = p.command
    for pair in (["--device", "cpu"], ["--dtype", "float32"]):
        i = cmd.index(pair[0])
        assert cmd[i:i + 2] == pair
    assert "--max-total-tokens" in cmd and "SGLANG_USE_CPU_ENGINE=1" in [f"{k}={v}" for k, v in p.env.items()]
    # a GPU profile still asks for its GPU
    assert "--gpus" in run_argv(docker.run_line(plan("l4")))


def test_compose_file_fields() -> None:
    p = plan("l4")
    text = docker.compose(p)
    data = yaml.safe_load(text)
    svc = data["services"]["qembed"]
    assert svc["image"] == "lmsysorg/sglang:v0.5.23"
    assert svc["ipc"] == "host" and svc["ports"] == ["127.0.0.1:30000:30000"]
    assert svc["environment"] == ["NO_PROXY=127.0.0.1,localhost,::1", "HF_TOKEN", "QEMBED_API_KEY"]
    assert svc["volumes"] == ["${HOME}/.cache/huggingface:/root/.cache/huggingface"]
    (dev,) = svc["deploy"]["resources"]["reservations"]["devices"]
    assert dev == {"driver": "nvidia", "capabilities": ["gpu"], "count": 1}
    hc = svc["healthcheck"]
    assert hc["test"][0] == "CMD" and hc["start_period"] == "1800s" and hc["timeout"] == "25s"
    # the keyed entry has no `$` for compose to interpolate; the rest is the serve argv
    assert "$" not in svc["command"][2] and "os.environ.pop('QEMBED_API_KEY'" in svc["command"][2]
    assert svc["command"][3:6] == SERVE_PREFIX[3:6]
    assert text.startswith("# sglang 0.5.23 is a CUDA 13 build")


@pytest.mark.parametrize("value", [None, "", "   "])
def test_the_container_refuses_to_start_without_its_key(value: str | None) -> None:
    """Issue 20: with the variable unset, the old `sh -c` wrapper started SGLang with no key
    (fail open). The generated command itself, run here, must exit 2 before importing SGLang."""
    command = plan().command
    env = {"PATH": "/usr/bin:/bin"} | ({"QEMBED_API_KEY": value} if value is not None else {})
    r = subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: the API key variable `QEMBED_API_KEY` is unset or empty")
    assert "\n\nhint: " in r.stderr and "sglang" not in r.stdout


def test_the_keyed_entry_passes_the_key_in_memory_and_redacts_every_log_record() -> None:
    from qembed.redact import key_from_env_code

    key = "sk-it's\\tricky"  # a quote and a backslash: the repr form differs from the raw one
    main = ("import json\nlogging.basicConfig(level=logging.INFO, format='%(message)s', force=True)\n"
            "logging.getLogger('x').info('server_args=%r', {'api_key': sys.argv[-1]})\n"
            "logging.getLogger('y').warning('raw %s', sys.argv[-1])\n"
            "print(json.dumps(sys.argv[1:] == ['serve', '--api-key', sys.argv[-1]]))\n"
            "print(json.dumps(os.environ.get('QEMBED_API_KEY')))\n")
    code = key_from_env_code("QEMBED_API_KEY", missing_exit=2) + main
    r = subprocess.run([sys.executable, "-c", code, "serve"], capture_output=True, text=True, timeout=60,
                       env={"PATH": "/usr/bin:/bin", "QEMBED_API_KEY": key})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["true", "null"]  # flag appended in memory; children never inherit it
    assert key not in r.stderr and repr(key)[1:-1] not in r.stderr
    assert "server_args={'api_key': \"[...]\"}" in r.stderr and "raw [...]" in r.stderr  # repr quotes it


def test_health_probe_against_the_standin() -> None:
    with serve_in_thread(StandinConfig(dim=8, health_503_count=1)) as srv:
        probe = docker.health_probe(srv.port)
        first = subprocess.run([sys.executable, *probe[1:]], capture_output=True, timeout=60)
        second = subprocess.run([sys.executable, *probe[1:]], capture_output=True, timeout=60)
        shell = subprocess.run(["sh", "-c", docker.health_shell(srv.port).replace("python3", sys.executable, 1)],
                               capture_output=True, timeout=60)
    assert first.returncode != 0  # 503 while warming up
    assert second.returncode == 0 and shell.returncode == 0


def test_write_files_refuses_to_overwrite(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text("mine\n")
    with pytest.raises(ConfigError, match="already exists"):
        write_files({"compose.yaml": "new\n", "other.yaml": "x\n"}, tmp_path)
    assert (tmp_path / "compose.yaml").read_text() == "mine\n" and not (tmp_path / "other.yaml").exists()
    write_files({"compose.yaml": "new\n"}, tmp_path, force=True)
    assert (tmp_path / "compose.yaml").read_text() == "new\n"


def test_cli_compose_output_and_refusal(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "qembed", "deploy", "docker", "-p", "l4", "--compose", "-o", str(tmp_path)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert yaml.safe_load((tmp_path / "compose.yaml").read_text())["services"]["qembed"]["image"].startswith("lmsysorg/sglang:v")
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "already exists" in again.stderr and "hint: pass `--force`" in again.stderr


def test_cli_refuses_auto_and_a_missing_profile() -> None:
    """Issue 20: `-p auto` (the old default) read this machine's GPU and silently became `generic`
    without one, so the artefact depended on where it was generated."""
    env = {k: v for k, v in os.environ.items() if k != "QEMBED_PROFILE"}
    for extra in (["-p", "auto"], []):
        proc = subprocess.run([sys.executable, "-m", "qembed", "deploy", "docker", *extra],
                              capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 2 and proc.stdout == "", proc.stderr
        assert proc.stderr.startswith("error: `qembed deploy` needs the profile of the nodes")
        assert "qembed profiles list" in proc.stderr


def test_cli_json() -> None:
    proc = subprocess.run([sys.executable, "-m", "qembed", "deploy", "docker", "-p", "h100", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = __import__("json").loads(proc.stdout)
    assert data["ipc"] == "host" and data["healthcheck"]["start_period_s"] == 1800


@pytest.mark.conformance
def test_container_flags_pass_the_real_sglang_parser() -> None:
    from tests.helpers.sglang import parser_python

    flag_lists = [plan(p).command[len(SERVE_PREFIX):] for p in ("generic", "t4", "a100-40g", "h100")]
    flag_lists.append(docker.plan_container(load_profile("xeon"), image="reg/sglang-cpu:1").command[len(SERVE_PREFIX):])
    results = check_many(flag_lists, python=parser_python())
    assert [r.message for r in results if not r.ok] == []
