"""Profile -> SGLang argv/env mapping, redaction, warnings and the parser-check plumbing.

The real parser is exercised in tests/test_conformance.py; here the parser-check plumbing runs
against small real interpreters (this one, with and without a fake `sglang` on its path).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import pytest

from qembed.errors import FlagsRejected, MissingDependency
from qembed.habits import HABIT_FLAGS, HABITS
from qembed.serving.flags import check_extra_args
from qembed.serving.profiles.model import Profile
from qembed.serving.profiles.resolve import load_profile
from qembed.serving.sglang_args import (
    ENTRY_ARGS,
    LaunchCommand,
    build_command,
    build_env,
    build_flags,
    check_many,
    ensure_accepted,
    installed_sglang_version,
    keyed_entry_args,
    profile_warnings,
    sglang_python,
)


def flag_value(flags: list[str], flag: str) -> str:
    assert flags.count(flag) == 1, f"{flag} appears {flags.count(flag)} times in {flags}"
    return flags[flags.index(flag) + 1]


# -- key -> flag --------------------------------------------------------------------------------

VALUE_FLAGS = [
    ("model", "/models/q3", "--model-path", "/models/q3"),
    ("served_model_name", "qwen3-emb", "--served-model-name", "qwen3-emb"),
    ("host", "0.0.0.0", "--host", "0.0.0.0"),
    ("port", 31000, "--port", "31000"),
    ("dtype", "float16", "--dtype", "float16"),
    ("gpu_memory_fraction", 0.8, "--mem-fraction-static", "0.8"),
    ("max_running_requests", 64, "--max-running-requests", "64"),
    ("chunked_prefill_size", -1, "--chunked-prefill-size", "-1"),
    ("max_prefill_tokens", 8192, "--max-prefill-tokens", "8192"),
    ("max_queued_requests", 256, "--max-queued-requests", "256"),
    ("context_length", 8192, "--context-length", "8192"),
    ("attention_backend", "triton", "--attention-backend", "triton"),
    ("quantization", "w8a8_int8", "--quantization", "w8a8_int8"),
    ("kv_cache_dtype", "fp8_e4m3", "--kv-cache-dtype", "fp8_e4m3"),
    ("tp_size", 2, "--tp-size", "2"),
    ("dp_size", 4, "--dp-size", "4"),
    ("log_level", "debug", "--log-level", "debug"),
]


@pytest.mark.parametrize(("key", "value", "flag", "expected"), VALUE_FLAGS)
def test_value_keys_map_to_flags(key: str, value: object, flag: str, expected: str) -> None:
    flags = build_flags(Profile(**{key: value}))  # type: ignore[arg-type]
    assert flag_value(flags, flag) == expected


@pytest.mark.parametrize(
    ("key", "flag"), [("torch_compile", "--enable-torch-compile"), ("metrics", "--enable-metrics")]
)
def test_bool_keys_map_to_store_true_flags(key: str, flag: str) -> None:
    assert flag not in build_flags(Profile())
    flags = build_flags(Profile(**{key: True}))  # type: ignore[arg-type]
    assert flags.count(flag) == 1
    i = flags.index(flag)
    assert i + 1 == len(flags) or flags[i + 1].startswith("--")  # no value after a store-true flag


def test_unset_keys_are_not_passed() -> None:
    flags = build_flags(Profile(matryoshka=False))
    assert flags == ["--model-path", "Qwen/Qwen3-Embedding-4B", "--is-embedding", "--host",
                     "127.0.0.1", "--port", "30000", "--log-level", "info"]


@pytest.mark.parametrize("name", ["generic", "t4", "h100", "a10"])
def test_is_embedding_always(name: str) -> None:
    assert build_flags(load_profile(name)).count("--is-embedding") == 1
    assert build_flags(load_profile(name, overrides={"matryoshka": False})).count("--is-embedding") == 1


def test_matryoshka_on_by_default() -> None:
    flags = build_flags(Profile())
    assert json.loads(flag_value(flags, "--json-model-override-args")) == {"is_matryoshka": True}
    assert "--json-model-override-args" not in build_flags(Profile(matryoshka=False))


def test_model_override_args_merge_with_matryoshka() -> None:
    p = Profile(model_override_args={"matryoshka_dimensions": [128, 256]})
    got = json.loads(flag_value(build_flags(p), "--json-model-override-args"))
    assert got == {"matryoshka_dimensions": [128, 256], "is_matryoshka": True}


def test_api_key_flag_and_extra_args_last() -> None:
    p = Profile(extra_args=["--disable-radix-cache"])
    flags = build_flags(p, api_key="sk-1")
    assert flag_value(flags, "--api-key") == "sk-1"
    assert flags[-1] == "--disable-radix-cache"
    assert "--api-key" not in build_flags(p)


def test_build_command_entry_point_and_python() -> None:
    cmd = build_command(Profile(), python="/opt/sgl/bin/python")
    assert cmd.argv[0] == "/opt/sgl/bin/python"
    assert cmd.argv[1:6] == ["-c", "from sglang.cli.main import main; main()", "serve", "--model-type", "llm"]
    assert tuple(cmd.argv[1:6]) == ENTRY_ARGS
    assert cmd.argv[6:] == build_flags(Profile())


def test_sglang_python_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    assert sglang_python() == sys.executable
    monkeypatch.setenv("QEMBED_SGLANG_PYTHON", "/env/python")
    assert sglang_python(Profile()) == "/env/python"
    assert sglang_python(Profile(python="/prof/python")) == "/prof/python"
    assert build_command(Profile(python="/prof/python")).argv[0] == "/prof/python"
    assert build_command(Profile(python="/prof/python"), python="/arg/python").argv[0] == "/arg/python"


def test_resolve_sglang_ranks_interpreters_and_keeps_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule itself; that the launch, the dry run and doctor all use it is shown end to end by
    tests/test_serve_cli.py::test_profile_env_pythonpath_reaches_every_parser_check."""
    from qembed.serving.sglang_args import resolve_sglang

    monkeypatch.setenv("QEMBED_SGLANG_PYTHON", "/env/python")
    monkeypatch.setenv("PYTHONPATH", "/checkout/sglang/python")
    monkeypatch.setenv("NO_PROXY", "corp.example")
    prof = Profile(python="/prof/python", env={"HF_HOME": "/data"}, gpu_ids=[1])
    py, env = resolve_sglang(prof, None)
    assert py == "/prof/python"  # the profile's key ranks above QEMBED_SGLANG_PYTHON, as serve does
    assert resolve_sglang(prof, "/cli/python")[0] == "/cli/python"
    assert resolve_sglang(Profile(), None)[0] == "/env/python"
    # the launch's environment: PYTHON* kept, the profile's additions on top
    assert env["PYTHONPATH"] == "/checkout/sglang/python"
    assert env["HF_HOME"] == "/data" and env["CUDA_VISIBLE_DEVICES"] == "1"
    assert env["NO_PROXY"] == "corp.example,127.0.0.1,localhost,::1"


@pytest.mark.parametrize("name", ["HF_TOKEN", "SOME_API_KEY", "DB_PASSWORD", "MY_SECRET", "hf_token"])
def test_secret_env_never_printed(name: str) -> None:
    """A profile's secret-looking env value never reaches what qembed prints (the dry run's
    argv, env and display line); plain values stay readable."""
    cmd = build_command(Profile(env={name: "s3cr3t-value", "HF_HOME": "/d"}), python="p")
    assert cmd.redacted_env()[name] == "[...]" and cmd.redacted_env()["HF_HOME"] == "/d"
    shown = " ".join([*cmd.redacted_argv(), cmd.display(), *cmd.redacted_env().values()])
    assert "s3cr3t-value" not in shown
    assert cmd.env[name] == "s3cr3t-value"  # the child still gets it


# -- env ----------------------------------------------------------------------------------------


def test_env_adds_no_proxy_and_gpu_ids() -> None:
    env = build_env(Profile(gpu_ids=[2, 3], env={"HF_HOME": "/data"}), environ={})
    assert env == {"HF_HOME": "/data", "CUDA_VISIBLE_DEVICES": "2,3", "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                   "NO_PROXY": "127.0.0.1,localhost,::1", "no_proxy": "127.0.0.1,localhost,::1"}


def test_no_proxy_appends_to_existing() -> None:
    env = build_env(Profile(), environ={"NO_PROXY": "corp.example,localhost", "no_proxy": "x"})
    assert env["NO_PROXY"] == "corp.example,localhost,127.0.0.1,::1"
    assert env["no_proxy"] == "x,127.0.0.1,localhost,::1"


def test_no_proxy_from_profile_env_wins_over_process_env() -> None:
    env = build_env(Profile(env={"NO_PROXY": "a.b"}), environ={"NO_PROXY": "c.d"})
    assert env["NO_PROXY"] == "a.b,127.0.0.1,localhost,::1"


def test_no_cuda_visible_devices_without_gpu_ids() -> None:
    assert "CUDA_VISIBLE_DEVICES" not in build_env(Profile(), environ={})


# -- display / redaction ------------------------------------------------------------------------


def test_display_redacts_api_key_and_quotes() -> None:
    cmd = build_command(Profile(env={"HF_TOKEN": "hf_secret", "A": "x y"}), api_key="sk-very-secret",
                        python="/p/python", environ={})
    shown = cmd.display()
    assert "sk-very-secret" not in shown and "hf_secret" not in shown
    assert "QEMBED_SGLANG_API_KEY='[...]'" in shown
    assert "A='x y'" in shown
    assert "sk-very-secret" not in repr(cmd) and "sk-very-secret" not in str(cmd)
    # The display is a valid shell line: splitting it gives back env + redacted argv.
    parts = shlex.split(shown)
    n_env = len(cmd.env)
    assert parts[n_env:] == cmd.redacted_argv()
    # issue 20: the key is in the child's environment only; the keyed entry hands it to
    # SGLang's `--api-key` in memory (so `ps` and SGLang's log never show it)
    assert parts[n_env + 2].endswith("from sglang.cli.main import main; main()")
    assert "--api-key" not in cmd.argv and "sk-very-secret" not in " ".join(cmd.argv)
    assert cmd.env["QEMBED_SGLANG_API_KEY"] == "sk-very-secret"
    assert cmd.argv[1:3] == list(keyed_entry_args("QEMBED_SGLANG_API_KEY")[:2])


def test_display_redacts_equals_form() -> None:
    cmd = LaunchCommand(argv=["py", "--api-key=abc"], env={})
    assert cmd.display() == "py '--api-key=[...]'"


# -- extra_args checks ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model-path", "x"], "`model`"),
        (["--model", "x"], "`model`"),
        (["--port=1"], "`port`"),
        (["--is-embedding"], "always"),
        (["--api-key", "k"], "QEMBED_API_KEY"),
        (["--tp", "2"], "`tp_size`"),
        (["--mem-frac", "0.5"], "--mem-fraction-static"),
        (["--config", "x.yaml"], "config"),
        (["--max-batch-size", "32"], "max_running_requests"),
        (["--enforce-eager"], "--cuda-graph-backend-prefill"),
        (["--cuda-graph-max-bs", "32"], "--cuda-graph-max-bs-prefill"),
        (["positional"], "positional"),
    ],
)
def test_check_extra_args_rejects(args: list[str], needle: str) -> None:
    problem = check_extra_args(args)
    assert problem is not None and needle in problem


@pytest.mark.parametrize(
    "args",
    [[], ["--disable-radix-cache"], ["--cuda-graph-backend-prefill", "disabled"],
     ["--tokenizer-worker-num", "2", "--log-level-http", "warning"], ["--cuda-graph-max-bs-prefill=2048"]],
)
def test_check_extra_args_accepts(args: list[str]) -> None:
    assert check_extra_args(args) is None


# -- warnings -----------------------------------------------------------------------------------


def test_torch_compile_warning() -> None:
    assert not any("torch_compile" in w for w in profile_warnings(Profile()))
    warnings = profile_warnings(Profile(torch_compile=True))
    assert any("torch_compile" in w and "no effect" in w for w in warnings)


def test_public_host_without_key_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    assert any("host" in w for w in profile_warnings(Profile(host="0.0.0.0")))
    monkeypatch.setenv("QEMBED_API_KEY", "k")
    assert not any("host" in w for w in profile_warnings(Profile(host="0.0.0.0")))


def test_shipped_profiles_have_no_warnings() -> None:
    for name in ("a100-80g", "a100-40g", "h100", "l4", "a10", "rtx4090", "t4", "generic"):
        assert profile_warnings(load_profile(name)) == [], name


# -- parser-check plumbing (real subprocesses, no SGLang needed) ------------------------------


def test_check_many_missing_interpreter(tmp_path: Path) -> None:
    with pytest.raises(MissingDependency) as ei:
        check_many([["--model-path", "x"]], python=str(tmp_path / "nope" / "python"))
    assert "--python" in (ei.value.hint or "")


def _bare_python(tmp_path: Path) -> str:
    """This interpreter without site-packages (`-S`): certainly no `sglang` to import."""
    wrapper = tmp_path / "bare-python"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def test_check_many_without_sglang_names_install(tmp_path: Path) -> None:
    with pytest.raises(MissingDependency) as ei:
        check_many([["--model-path", "x"]], python=_bare_python(tmp_path))
    assert "SGLang cannot be imported" in ei.value.message
    assert "pip install 'qembed[serve]'" in (ei.value.hint or "")
    assert "--python" in (ei.value.hint or "")


def _fake_sglang_python(tmp_path: Path) -> str:
    """A wrapper interpreter whose `sglang.srt.server_args` is a tiny argparse stand-in.

    It stands in for SGLang only to test the plumbing (stdout noise, exit codes, crashes);
    the real parser is checked in test_conformance.py.
    """
    pkg = tmp_path / "site" / "sglang" / "srt"
    pkg.mkdir(parents=True)
    (tmp_path / "site" / "sglang" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "server_args.py").write_text(
        "import argparse, logging\n"
        "def prepare_server_args(argv):\n"
        "    print('noise on stdout')\n"
        "    p = argparse.ArgumentParser(prog='sglang serve')\n"
        "    p.add_argument('--model-path', required=True)\n"
        "    p.add_argument('--log-level', default='info')\n"
        "    a = p.parse_args(argv)\n"
        "    getattr(logging, a.log_level.upper())\n"
        "    return a\n"
    )
    wrapper = tmp_path / "python"
    # The check runs plain `python` (no `-I`, as the launch), so PYTHONPATH reaches it; a `-I`
    # would hide the fake site and fail this test.
    wrapper.write_text(
        "#!/bin/sh\n"
        f'PYTHONPATH="{tmp_path / "site"}" exec "{sys.executable}" -s "$@"\n'
    )
    wrapper.chmod(0o755)
    return str(wrapper)


def test_check_many_plumbing(tmp_path: Path) -> None:
    py = _fake_sglang_python(tmp_path)
    ok, bad, crash = check_many(
        [["--model-path", "m"], ["--model-path", "m", "--max-model-len", "8"],
         ["--model-path", "m", "--log-level", "verbose"]],
        python=py,
    )
    assert ok.ok and ok.exit_code is None and not ok.crashed
    assert not bad.ok and bad.exit_code == 2 and "unrecognized arguments: --max-model-len 8" in bad.message
    assert not crash.ok and crash.crashed and "AttributeError" in crash.message


def test_ensure_accepted_raises_with_habit_hint(tmp_path: Path) -> None:
    py = _fake_sglang_python(tmp_path)
    ensure_accepted(["--model-path", "m"], python=py, env=os.environ)
    with pytest.raises(FlagsRejected) as ei:
        ensure_accepted(["--model-path", "m", "--max-model-len", "8", "--api-key", "sk-x"], python=py, env=os.environ)
    assert "--max-model-len" in ei.value.message
    assert "context_length" in (ei.value.hint or "")
    assert all("sk-x" not in d for d in ei.value.details)


def test_installed_sglang_version(tmp_path: Path) -> None:
    assert installed_sglang_version(str(tmp_path / "nope")) is None
    assert installed_sglang_version(_bare_python(tmp_path)) is None


@pytest.mark.parametrize("flag", list(HABIT_FLAGS))
def test_every_habit_flag_is_refused_in_extra_args_with_its_equivalent(flag: str) -> None:
    # qembed.habits is the one table: the extra_args check refuses each flag with the same
    # equivalent the profile-key check gives for its key
    problem = check_extra_args([flag, "1"])
    assert problem == f"`{flag}` is not a SGLang 0.5.23 flag; use {HABITS[flag].use}"
    problem_eq = check_extra_args([f"{flag}=1"])
    assert problem_eq is not None and problem_eq.startswith(f"`{flag}` is not a SGLang 0.5.23 flag")
