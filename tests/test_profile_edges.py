"""Profiles at the edges (issue 9 §5-§7, issue 11 "Profiles"): options taken as written, bounded
YAML, strict types, secrets redacted wherever printed, GPU classes, and a fuzzer of profile texts.

CLI-facing behaviour is driven through the real CLI: ``qembed serve --dry-run`` as a subprocess
against the fake SGLang of ``tests/fake_site`` (a test double), ``qembed profiles show`` as a
subprocess for exit codes.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qembed.errors import ExitCode, ProfileError
from qembed.models import GiB
from qembed.redact import redact
from qembed.serving import gpu, policy
from qembed.serving.gpu import GPUInfo, GPUSnapshot, gpu_peak
from qembed.serving.profiles.loader import MAX_DEPTH, load_yaml_text
from qembed.serving.profiles.model import FIELDS, Profile
from qembed.serving.profiles.resolve import load_profile
from qembed.serving.sglang_args import build_command, build_flags
from tests.fake_site import harness

SECRET = "hf_Sup3rSecretTokenValue"


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def qembed(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qembed", *args], capture_output=True, text=True,
                          timeout=120, env=env)


def dry_run(tmp_path: Path, *args: str, nvml: str = "a100", **env: str) -> subprocess.CompletedProcess[str]:
    port = str(harness.free_port())
    argv = ["serve", "--python", str(harness.WRAPPER), "--port", port, "--dry-run", *args]
    return harness.run_qembed(argv, harness.fake_env(tmp_path / "pids.json", QEMBED_FAKE_NVML=nvml, **env))


# -- §5 options are taken as written ------------------------------------------------------------


@pytest.mark.parametrize(("option", "value", "flag"), [
    ("--host", "::", "--host"),
    ("--model", "/data/run #3", "--model-path"),
    ("--model", "2024", "--model-path"),
    ("--model", "yes", "--model-path"),
])
def test_serve_options_are_taken_as_written(tmp_path: Path, option: str, value: str, flag: str) -> None:
    if value.startswith("/data/"):  # a real directory (a dry run refuses a missing one, as serve does)
        real = tmp_path / value.removeprefix("/data/")
        real.mkdir()
        value = str(real)
    r = dry_run(tmp_path, "-p", "a100", option, value, "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    argv = data["argv"]
    assert argv[argv.index(flag) + 1] == value
    key = "host" if option == "--host" else "model"
    assert data["profile"][key] == value  # a string, never an int, a bool or a cut-off comment


@pytest.mark.parametrize(("how", "value", "needle"), [
    ("set", "--host=0.0.0.0", "must not start with `-`"),
    ("option", "--host=0.0.0.0", "must not start with `-`"),
    ("option", "Qwen/Qwen3-Embedding-4B\n--host=0.0.0.0", "control character (U+000A)"),
])
def test_a_model_that_would_reach_sglang_as_a_flag_is_refused(tmp_path: Path, how: str, value: str,
                                                               needle: str) -> None:
    """Issue 19: `--set model=--host=0.0.0.0` used to be caught only by SGLang's argparse after the
    spawn; a newline showed in `--dry-run` as if it were a space."""
    args = ["--set", f"model={value}"] if how == "set" else ["--model", value]
    r = dry_run(tmp_path, "-p", "a100", *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert "SGLang pid" not in r.stderr and r.stdout == ""


def test_set_still_parses_values_and_options_win_over_set() -> None:
    p = load_profile("generic", overrides=["port=31000", "model_override_args={a: 1}"],
                     options={"port": 31001, "model": "2024"})
    assert p.port == 31001 and p.model == "2024" and p.model_override_args == {"a": 1}


def test_options_are_never_parsed() -> None:
    p = load_profile("generic", options={"model": "/data/run #3", "host": "::", "python": "~/py #1"})
    assert (p.model, p.host, p.python) == ("/data/run #3", "::", "~/py #1")


def test_typed_option_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(ProfileError) as ei:
        load_profile("generic", options={"port": "31000"})
    assert "`port`" in ei.value.message and "command-line option" in ei.value.message


# -- §6 profiles are bounded --------------------------------------------------------------------

ALIAS_BOMB = """\
model_override_args:
  a0: &a0 [x, x, x, x, x, x, x, x, x, x]
  a1: &a1 [*a0, *a0, *a0, *a0, *a0, *a0, *a0, *a0, *a0, *a0]
  a2: &a2 [*a1, *a1, *a1, *a1, *a1, *a1, *a1, *a1, *a1, *a1]
  a3: &a3 [*a2, *a2, *a2, *a2, *a2, *a2, *a2, *a2, *a2, *a2]
  a4: &a4 [*a3, *a3, *a3, *a3, *a3, *a3, *a3, *a3, *a3, *a3]
  a5: &a5 [*a4, *a4, *a4, *a4, *a4, *a4, *a4, *a4, *a4, *a4]
  a6: &a6 [*a5, *a5, *a5, *a5, *a5, *a5, *a5, *a5, *a5, *a5]
  a7: &a7 [*a6, *a6, *a6, *a6, *a6, *a6, *a6, *a6, *a6, *a6]
  a8: &a8 [*a7, *a7, *a7, *a7, *a7, *a7, *a7, *a7, *a7, *a7]
"""

MERGE_BOMB = "a0: &a0 {k0: 1}\n" + "".join(
    f"a{i}: &a{i} {{<<: [*a{i - 1}, *a{i - 1}], k{i}: 1}}\n" for i in range(1, 40))


@pytest.mark.parametrize(("name", "text", "needle"), [
    ("bomb.yaml", ALIAS_BOMB, "expands to more than"),
    ("merge.yaml", MERGE_BOMB, "expands to more than"),
    ("deep.yaml", "model_override_args: " + "[" * 5000 + "]" * 5000 + "\n", f"more than {MAX_DEPTH} levels"),
    ("deepmap.yaml", "model_override_args:\n" + "".join("  " * i + f" k{i}:\n" for i in range(1, 80)), "levels"),
    ("self.yaml", "model_override_args: &a {x: *a}\n", "refused"),
])
def test_unbounded_yaml_is_refused_naming_the_file(tmp_path: Path, name: str, text: str, needle: str) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(ProfileError) as ei:
        load_profile(str(path))
    assert str(path) in ei.value.message
    assert needle in ei.value.message


def test_oversized_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "big.yaml", "description: '" + "x" * (1024 * 1024) + "'\n")
    with pytest.raises(ProfileError, match="larger than 1024 KiB") as ei:
        load_profile(str(path))
    assert str(path) in ei.value.message


def test_non_utf8_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "latin1.yaml", "description: 'caf\xe9'\n".encode("latin-1"))
    with pytest.raises(ProfileError, match="not UTF-8") as ei:
        load_profile(str(path))
    assert str(path) in ei.value.message


def test_bomb_through_the_cli_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, "bomb.yaml", ALIAS_BOMB)
    r = qembed("profiles", "show", str(path))
    assert r.returncode == ExitCode.USAGE
    assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr and str(path) in r.stderr


def test_set_values_go_through_the_bounded_loader() -> None:
    with pytest.raises(ProfileError, match="more than"):
        load_profile("generic", overrides=["model_override_args=" + "[" * 500 + "]" * 500])
    bomb = "{a: &a [x,x,x,x,x,x,x,x], b: &b [*a,*a,*a,*a,*a,*a,*a,*a], c: &c [*b,*b,*b,*b,*b,*b,*b,*b], " \
           "d: &d [*c,*c,*c,*c,*c,*c,*c,*c], e: &e [*d,*d,*d,*d,*d,*d,*d,*d], f: [*e,*e,*e,*e,*e,*e,*e,*e]}"
    with pytest.raises(ProfileError, match="expands to more than"):
        load_profile("generic", overrides=["model_override_args=" + bomb])


@pytest.mark.parametrize(("text", "key"), [
    ("port: true\n", "port"),
    ("port: '30000'\n", "port"),
    ("ready_timeout: .nan\n", "ready_timeout"),
    ("ready_timeout: .inf\n", "ready_timeout"),
    ("shutdown_timeout: -.inf\n", "shutdown_timeout"),
    ("gpu_memory_fraction: .nan\n", "gpu_memory_fraction"),
    ("tp_size: 2.0\n", "tp_size"),
    ("torch_compile: 1\n", "torch_compile"),
    ("gpu_ids: [true]\n", "gpu_ids"),
    ("model_override_args: {rope: .nan}\n", "model_override_args"),
    ("model_override_args: {when: 2024-01-01}\n", "model_override_args"),
])
def test_strict_types(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, "t.yaml", text)
    with pytest.raises(ProfileError) as ei:
        load_profile(str(path))
    assert f"`{key}`" in ei.value.message


def test_set_nan_timeout_is_refused() -> None:
    with pytest.raises(ProfileError, match="ready_timeout"):
        load_profile("generic", overrides=["ready_timeout=.nan"])
    assert load_profile("generic", overrides=["ready_timeout=60"]).ready_timeout == 60.0


def test_every_bad_key_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, "vllm.yaml", "gpu_memory_utilization: 0.9\nmax_model_len: 8192\nmax_num_seqs: 64\n")
    with pytest.raises(ProfileError) as ei:
        load_profile(str(path))
    text = ei.value.message + "\n".join(ei.value.details)
    assert "3 keys" in ei.value.message
    for key, use in (("gpu_memory_utilization", "gpu_memory_fraction"), ("max_model_len", "context_length"),
                     ("max_num_seqs", "max_running_requests")):
        assert f"`{key}`" in text and use in text


# -- §7 secrets stay secret ---------------------------------------------------------------------


def test_profiles_show_redacts_secret_env(tmp_path: Path) -> None:
    for fmt in ([], ["--json"]):
        r = qembed("profiles", "show", "generic", "--set", f"env.HF_TOKEN={SECRET}",
                   "--set", "env.MY_PASSWORD=pw-123456", "--set", "env.HF_HOME=/data/hf", *fmt)
        assert r.returncode == 0, r.stderr
        assert SECRET not in r.stdout + r.stderr and "pw-123456" not in r.stdout + r.stderr
        assert "/data/hf" in r.stdout and "[...]" in r.stdout


def test_dry_run_redacts_secret_env_in_profile_and_json(tmp_path: Path) -> None:
    human = dry_run(tmp_path, "-p", "a100", "--set", f"env.HF_TOKEN={SECRET}")
    assert human.returncode == 0, human.stderr
    assert SECRET not in human.stdout + human.stderr
    assert "HF_TOKEN" in human.stdout
    js = dry_run(tmp_path, "-p", "a100", "--set", f"env.HF_TOKEN={SECRET}", "--json")
    assert js.returncode == 0, js.stderr
    assert SECRET not in js.stdout + js.stderr
    assert json.loads(js.stdout)["profile"]["env"]["HF_TOKEN"] == "[...]"


def test_validation_error_does_not_echo_secret_env() -> None:
    with pytest.raises(ProfileError) as ei:
        load_profile("generic", overrides=[f"env.HF_TOKEN={SECRET}", "env.bad-name=1"])
    assert SECRET not in ei.value.message + " ".join(ei.value.details) + (ei.value.hint or "")


def test_command_display_redacts_secret_env() -> None:
    p = load_profile("generic", overrides=[f"env.HF_TOKEN={SECRET}", "env.AWS_SECRET_ACCESS_KEY=abcdef"])
    cmd = build_command(p, python="python3")
    assert SECRET not in cmd.display() and "abcdef" not in cmd.display()


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=4, max_size=40).filter(lambda s: s.strip() not in ("", "None", "[...]")))
def test_repr_logged_key_is_hidden_whatever_it_holds(secret: str) -> None:
    # SGLang logs `server_args=ServerArgs(..., api_key='...')` and dicts with repr: quotes and
    # backslashes come escaped
    for line in (f"server_args={ {'api_key': secret}!r}", f"ServerArgs(api_key={secret!r}, port=1)"):
        out = redact(line)
        assert repr(secret) not in out, out
        assert "[...]" in out


@pytest.mark.parametrize("secret", ["ab'cd\"ef", "back\\slash\\key", "it's-a-key", 'dq"only"key'])
def test_named_secret_is_hidden_in_its_escaped_forms(secret: str) -> None:
    for text in (repr(secret), json.dumps(secret), f"api_key={secret!r}", f"{ {'x': secret}!r}"):
        out = redact(text, [secret])
        assert secret not in out and repr(secret)[1:-1] not in out and json.dumps(secret)[1:-1] not in out


# -- issue 11: GPU classes ----------------------------------------------------------------------


def _gpu(name: str, gib: float, cc: tuple[int, int]) -> GPUSnapshot:
    g = GPUInfo(0, name, "GPU-0", int(gib * GiB), int(gib * GiB), 0, cc)
    return GPUSnapshot("580.65.06", 13000, (g,))


@pytest.mark.parametrize(("profile", "snap", "want"), [
    ("a100", _gpu("Tesla T4", 14.6, (7, 5)), "-p t4"),
    ("t4", _gpu("NVIDIA A100-SXM4-80GB", 79.2, (8, 0)), "-p a100-80g"),
    ("a100-40g", _gpu("NVIDIA H100 80GB HBM3", 79.6, (9, 0)), "-p h100"),
])
def test_profile_for_another_gpu_class_warns(profile: str, snap: GPUSnapshot, want: str) -> None:
    findings = policy.launch_findings(snap, load_profile(profile), sglang_version="0.5.23")
    warns = [f for f in findings if f.check == "profile"]
    assert len(warns) == 1 and warns[0].level == "warn" and want in (warns[0].hint or "")


@pytest.mark.parametrize(("profile", "snap"), [
    ("l4", _gpu("NVIDIA A10G", 22.2, (8, 6))),
    ("a10", _gpu("NVIDIA L4", 22.5, (8, 9))),
    ("a100", _gpu("NVIDIA A100-SXM4-80GB", 79.2, (8, 0))),
    ("generic", _gpu("Tesla T4", 14.6, (7, 5))),
])
def test_profile_for_the_same_class_does_not_warn(profile: str, snap: GPUSnapshot) -> None:
    findings = policy.launch_findings(snap, load_profile(profile), sglang_version="0.5.23")
    assert not [f for f in findings if f.check == "profile"]


def test_dry_run_warns_a_profile_made_for_another_gpu(tmp_path: Path) -> None:
    r = dry_run(tmp_path, "-p", "a100", nvml="t4")
    assert r.returncode == 0, r.stderr
    assert "made for the A100 80GB" in r.stderr and "-p t4" in r.stderr


def test_dry_run_explains_auto_and_would_refuse(tmp_path: Path) -> None:
    r = dry_run(tmp_path, "-p", "auto")
    assert r.returncode == 0, r.stderr
    assert "auto: detected NVIDIA A100-SXM4-80GB" in r.stderr
    old = dry_run(tmp_path, "-p", "auto", "--json", nvml="old-driver")
    assert old.returncode == 0, old.stderr
    data = json.loads(old.stdout)
    assert data["serve_would_refuse"] is True and data["auto_reason"]
    human = dry_run(tmp_path, "-p", "auto", nvml="old-driver")
    assert "a real `qembed serve` would refuse on this machine" in human.stderr


def test_dry_run_and_show_use_the_same_words(tmp_path: Path) -> None:
    r = dry_run(tmp_path, "-p", "generic")
    assert r.returncode == 0, r.stderr
    assert "gpu_memory_fraction: (SGLang decides)" in r.stdout and ": None" not in r.stdout
    show = qembed("profiles", "show", "generic")
    assert "(SGLang decides)" in show.stdout


def test_unknown_gpu_name_is_matched_by_memory_not_spelling() -> None:
    r = qembed("profiles", "show", "l40s")
    assert r.returncode == ExitCode.USAGE
    assert "`l4`" not in r.stderr and "a100-40g" in r.stderr


def test_bench_peaks_and_profiles_read_one_table() -> None:
    for cls in gpu.GPU_CLASSES:
        if cls.peak_label:
            assert gpu_peak(" ".join(sorted(cls.words))) == (cls.peak_label, cls.peak_tflops)
    assert gpu.match_gpu_name("NVIDIA L40S") is not None
    assert gpu.match_gpu_name("NVIDIA L40S").profile is None  # type: ignore[union-attr]


# -- fuzzing: a profile text becomes a Profile or a ProfileError, nothing else ---------------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=True),
                     st.text(max_size=12))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)), max_leaves=8)
_keys = st.one_of(st.sampled_from(FIELDS), st.text(max_size=12))


def _check(load: object) -> None:
    try:
        p = load() if callable(load) else None
    except ProfileError:
        return
    assert isinstance(p, Profile)
    flags = build_flags(p)  # and a valid profile always becomes a command line
    assert "--is-embedding" in flags
    for f in (p.ready_timeout, p.shutdown_timeout):
        assert math.isfinite(f)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(_keys, _values, max_size=5))
def test_fuzz_profile_mappings(tmp_path: Path, data: dict[str, object]) -> None:
    try:
        text = yaml.safe_dump(data, allow_unicode=True)
    except yaml.YAMLError:
        return
    path = write(tmp_path, "fuzz.yaml", text)
    _check(lambda: load_profile(str(path)))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200))
def test_fuzz_profile_texts(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "fuzz.yaml", text.encode("utf-8", "surrogatepass"))
    _check(lambda: load_profile(str(path)))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(_keys, st.text(max_size=30)), max_size=4))
def test_fuzz_set_pairs(pairs: list[tuple[str, str]]) -> None:
    _check(lambda: load_profile("generic", overrides=[f"{k}={v}" for k, v in pairs]))


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=120))
def test_fuzz_yaml_text_loader(text: str) -> None:
    """The bounded loader is YAML's safe loader plus bounds: on any text it gives what
    `yaml.safe_load` gives, or refuses what safe_load refuses (naming where the text came
    from); it differs only on the bounds (depth, aliases, size), and says so."""
    import math

    import yaml

    try:
        got = load_yaml_text(text, "fuzz")
    except ProfileError as exc:
        assert exc.message.startswith("fuzz "), exc.message
        if " is refused: " in exc.message:  # a bound, not a YAML error: nothing to compare
            return
        with pytest.raises(yaml.YAMLError):
            yaml.safe_load(text)
        return
    want = yaml.safe_load(text)
    if isinstance(want, float) and math.isnan(want):
        assert isinstance(got, float) and math.isnan(got)
    else:
        assert repr(got) == repr(want)
