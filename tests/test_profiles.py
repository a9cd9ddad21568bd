"""Profile model, YAML loading, extends, overrides, aliases, auto pick and API keys."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from qembed import habits
from qembed.errors import ProfileError
from qembed.models import GiB
from qembed.redact import SECRET_WORDS, is_secret_name
from qembed.serving.gpu import GPUInfo, GPUSnapshot
from qembed.serving.profiles.display import list_profiles
from qembed.serving.profiles.model import Profile
from qembed.serving.profiles.resolve import (
    ALIASES,
    FALLBACK_PROFILE,
    load_profile,
    pick_auto,
    resolve_api_key,
    resolve_profile,
    shipped_dir,
    shipped_names,
)

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def gpu(name: str, gib: float, cc: tuple[int, int], index: int = 0) -> GPUInfo:
    total = int(gib * GiB)
    return GPUInfo(index=index, name=name, uuid=f"GPU-{index}", memory_total=total,
                   memory_free=total, memory_used=0, compute_capability=cc)


def snap(*gpus: GPUInfo) -> GPUSnapshot:
    return GPUSnapshot(driver_version="580.65.06", cuda_driver_version=13000, gpus=tuple(gpus))


# -- shipped profiles ---------------------------------------------------------------------------


def test_shipped_dir_is_repo_profiles_in_a_checkout() -> None:
    assert shipped_dir().resolve() == (REPO / "profiles").resolve()


REQUIRED = {"a100-80g", "a100-40g", "h100", "l4", "a10", "rtx4090", "t4", "auto", "generic"}


def test_required_profiles_are_shipped() -> None:
    assert set(shipped_names()) >= REQUIRED


@pytest.mark.parametrize("name", sorted(REQUIRED - {"auto"}))
def test_every_shipped_profile_loads(name: str) -> None:
    p = load_profile(name)
    assert p.name == name
    assert p.description
    assert p.gpu


def test_every_shipped_value_has_a_comment() -> None:
    # Each key line that sets a sizing value must be preceded by, or carry, a `#` comment.
    for path in sorted((REPO / "profiles").glob("*.yaml")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            m = re.match(r"^([a-z_]+):", line)
            if not m or m.group(1) in {"description", "gpu", "extends"}:
                continue
            previous = lines[i - 1] if i else ""
            assert "#" in line or previous.lstrip().startswith("#"), f"{path.name}: `{line}` has no comment"


def test_list_profiles_has_descriptions_and_gpus() -> None:
    rows = {r.name: r for r in list_profiles()}
    assert set(rows) >= REQUIRED
    assert "A100 80GB" in rows["a100-80g"].gpu
    assert rows["a100-80g"].aliases == ("a100",)
    assert rows["a10"].description != rows["l4"].description
    assert rows["t4"].path.name == "t4.yaml"


def test_t4_uses_float16_and_small_chunks() -> None:
    p = load_profile("t4")
    assert p.dtype == "float16"
    assert p.chunked_prefill_size == 2048
    assert p.context_length is not None and p.context_length <= 8192


def test_80g_profiles_use_sglang_chunk_rule() -> None:
    assert load_profile("a100-80g").chunked_prefill_size == 8192
    assert load_profile("h100").chunked_prefill_size == 8192
    assert load_profile("a100-40g").chunked_prefill_size == 4096


def test_alias_a100_is_a100_80g() -> None:
    assert ALIASES["a100"] == "a100-80g"
    a, b = load_profile("a100"), load_profile("a100-80g")
    assert a.name == "a100-80g"
    assert a == b


def test_a10_extends_l4() -> None:
    r = resolve_profile("a10")
    assert r.chain == ["a10", "l4"]
    assert r.profile.context_length == load_profile("l4").context_length
    assert r.sources["context_length"] == "l4.yaml"
    assert r.sources["description"] == "a10.yaml"
    assert r.sources["port"] == "default"


def test_defaults() -> None:
    p = load_profile("generic")
    assert p.model == "Qwen/Qwen3-Embedding-4B"
    assert p.matryoshka is True
    assert p.host == "127.0.0.1" and p.port == 30000
    assert p.api_key_env == "QEMBED_API_KEY"
    assert p.gpu_memory_fraction is None


def test_unknown_shipped_name_suggests_closest() -> None:
    with pytest.raises(ProfileError) as ei:
        load_profile("a100-80")
    assert "unknown profile `a100-80`" in ei.value.message
    assert ei.value.hint is not None and "a100-80g" in ei.value.hint


def test_missing_path() -> None:
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile("/nonexistent/prof.yaml")


# -- user files ---------------------------------------------------------------------------------


def test_user_file_by_path(tmp_path: Path) -> None:
    path = write(tmp_path, "mine.yaml", "port: 31000\ngpu_memory_fraction: 0.7\n")
    p = load_profile(str(path))
    assert p.name == "mine"
    assert p.port == 31000 and p.gpu_memory_fraction == 0.7


def test_empty_file_is_all_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "empty.yaml", "")
    assert load_profile(str(path)).port == 30000


def test_not_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "list.yaml", "- a\n- b\n")
    with pytest.raises(ProfileError, match="mapping"):
        load_profile(str(path))


def test_bad_yaml_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", "port: 1\nmodel: [unclosed\n")
    with pytest.raises(ProfileError, match="not valid YAML at line 3") as ei:
        load_profile(str(path))
    assert ei.value.details == ["expected ',' or ']', but got '<stream end>'"]  # YAML's own words


def test_unknown_key_names_key_file_and_closest(tmp_path: Path) -> None:
    path = write(tmp_path, "typo.yaml", "chunked_prefil_size: 4096\n")
    with pytest.raises(ProfileError) as ei:
        load_profile(str(path))
    assert "`chunked_prefil_size`" in ei.value.message
    assert str(path) in ei.value.message
    assert ei.value.hint == "did you mean `chunked_prefill_size`?"


def test_dashed_key_suggests_underscore(tmp_path: Path) -> None:
    path = write(tmp_path, "dash.yaml", "gpu-memory-fraction: 0.8\n")
    with pytest.raises(ProfileError) as ei:
        load_profile(str(path))
    assert ei.value.hint == "did you mean `gpu_memory_fraction`?"


def test_name_key_is_reserved(tmp_path: Path) -> None:
    path = write(tmp_path, "n.yaml", "name: other\n")
    with pytest.raises(ProfileError, match="set by the loader"):
        load_profile(str(path))


HABITS = [
    ("max_batch_size", "max_running_requests", "--max-running-requests"),
    ("gpu_memory_utilization", "gpu_memory_fraction", "--mem-fraction-static"),
    ("max_model_len", "context_length", "--context-length"),
    ("max_num_seqs", "max_running_requests", "--max-running-requests"),
    ("max_num_batched_tokens", "max_prefill_tokens", "--max-prefill-tokens"),
    ("task", None, "--is-embedding"),
    ("pooling", None, "last-token pooling"),
    ("normalize", None, "L2-normalises"),
    ("enforce_eager", "extra_args", "--cuda-graph-backend-prefill"),
    ("hf_overrides", "model_override_args", "--json-model-override-args"),
    ("max_client_batch_size", None, "no cap on inputs per request"),
    ("max_batch_tokens", "max_prefill_tokens", "--max-prefill-tokens"),
    ("mem_fraction_static", "gpu_memory_fraction", "--mem-fraction-static"),
    ("tensor_parallel_size", "tp_size", "--tp-size"),
]


@pytest.mark.parametrize(("key", "qkey", "flag"), HABITS)
def test_habit_keys_name_the_equivalent(tmp_path: Path, key: str, qkey: str | None, flag: str) -> None:
    path = write(tmp_path, "habit.yaml", f"{key}: 1\n")
    with pytest.raises(ProfileError) as ei:
        load_profile(str(path))
    assert f"`{key}`" in ei.value.message and str(path) in ei.value.message
    hint = ei.value.hint or ""
    if qkey:
        assert f"`{qkey}" in hint
    assert flag in hint


def test_habit_key_in_override_names_the_equivalent() -> None:
    with pytest.raises(ProfileError) as ei:
        load_profile("generic", overrides=["max_model_len=8192"])
    assert "`context_length`" in (ei.value.hint or "")
    assert "--context-length" in (ei.value.hint or "")


# -- ranges -------------------------------------------------------------------------------------

BAD_VALUES = [
    ("gpu_memory_fraction", "0", "strictly between 0 and 1"),
    ("gpu_memory_fraction", "1", "strictly between 0 and 1"),
    ("gpu_memory_fraction", "90", "strictly between 0 and 1"),
    ("port", "0", "between 1 and 65535"),
    ("port", "70000", "between 1 and 65535"),
    ("tp_size", "0", "at least 1"),
    ("dp_size", "-2", "at least 1"),
    ("chunked_prefill_size", "0", "-1 to disable"),
    ("chunked_prefill_size", "-5", "-1 to disable"),
    ("max_running_requests", "0", "positive"),
    ("context_length", "-1", "positive"),
    ("max_queued_requests", "0", "positive"),
    ("max_prefill_tokens", "0", "positive"),
    ("dtype", "bf16", "bfloat16"),
    ("dtype", "int8", "dtype"),
    ("kv_cache_dtype", "fp8", "fp8_e4m3"),
    ("kv_cache_dtype", "fp9_e4m3", "fp8_e4m3"),
    ("attention_backend", "flashinfr", "flashinfer"),
    ("quantization", "fp4", "SGLang's choices"),
    ("log_level", "verbose", "log_level"),
    ("served_model_name", "qwen:4b", "`:`"),
    ("gpu_ids", "[]", "at least one"),
    ("gpu_ids", "[0, 0]", "twice"),
    ("ready_timeout", "0", "positive"),
    ("model", "''", "empty"),
    ("port", "abc", "port"),
]


@pytest.mark.parametrize(("key", "value", "needle"), BAD_VALUES)
def test_out_of_range_values_in_file(tmp_path: Path, key: str, value: str, needle: str) -> None:
    path = write(tmp_path, "bad.yaml", f"{key}: {value}\n")
    with pytest.raises(ProfileError) as ei:
        load_profile(str(path))
    text = ei.value.message + " " + (ei.value.hint or "")
    assert f"`{key}`" in ei.value.message
    assert str(path) in ei.value.message
    assert needle in text


@pytest.mark.parametrize(
    ("key", "value"),
    [("gpu_memory_fraction", 0.5), ("port", 1), ("port", 65535), ("chunked_prefill_size", -1),
     ("chunked_prefill_size", 512), ("attention_backend", "fa3"), ("quantization", "fp8"),
     ("kv_cache_dtype", "fp8_e4m3"), ("log_level", "WARNING"), ("served_model_name", "qwen-4b")],
)
def test_valid_boundary_values(key: str, value: object) -> None:
    p = load_profile("generic", overrides={key: value})
    got = getattr(p, key)
    assert got == (value.lower() if key == "log_level" and isinstance(value, str) else value)


def test_gpu_ids_must_cover_tp_times_dp() -> None:
    with pytest.raises(ProfileError, match="lists 1"):
        load_profile("generic", overrides=["tp_size=2", "gpu_ids=[0]"])
    assert load_profile("generic", overrides=["dp_size=2", "gpu_ids=[2,3]"]).gpu_ids == [2, 3]


def test_error_names_the_file_that_set_the_value(tmp_path: Path) -> None:
    base = write(tmp_path, "base.yaml", "port: 99999\n")
    child = write(tmp_path, "child.yaml", f"extends: {base}\ndescription: child\n")
    with pytest.raises(ProfileError) as ei:
        load_profile(str(child))
    assert str(base) in ei.value.message


def test_env_values_become_strings_and_bools_are_refused(tmp_path: Path) -> None:
    ok = write(tmp_path, "env.yaml", "env:\n  OMP_NUM_THREADS: 4\n")
    assert load_profile(str(ok)).env == {"OMP_NUM_THREADS": "4"}
    bad = write(tmp_path, "env2.yaml", "env:\n  FLAG: yes\n")
    with pytest.raises(ProfileError, match="quote it"):
        load_profile(str(bad))


def test_extra_args_rejects_managed_and_habit_flags() -> None:
    with pytest.raises(ProfileError, match="`port`"):
        load_profile("generic", overrides={"extra_args": ["--port", "1"]})
    with pytest.raises(ProfileError, match="--mem-fraction-static"):
        load_profile("generic", overrides={"extra_args": ["--mem-frac", "0.5"]})
    with pytest.raises(ProfileError, match="gpu_memory_fraction"):
        load_profile("generic", overrides={"extra_args": ["--gpu-memory-utilization", "0.9"]})
    with pytest.raises(ProfileError, match="never a flag"):
        load_profile("generic", overrides={"extra_args": ["--api-key=abc"]})
    with pytest.raises(ProfileError, match="model path"):
        load_profile("generic", overrides={"extra_args": ["Qwen/other"]})


def test_extra_args_string_override_is_split() -> None:
    p = load_profile("generic", overrides=["extra_args=--disable-radix-cache --tokenizer-worker-num 2"])
    assert p.extra_args == ["--disable-radix-cache", "--tokenizer-worker-num", "2"]


# -- extends ------------------------------------------------------------------------------------


def test_extends_shipped_name_and_path(tmp_path: Path) -> None:
    mid = write(tmp_path, "mid.yaml", "extends: h100\nport: 31000\nenv:\n  A: '1'\n")
    leaf = write(tmp_path, "leaf.yaml", "extends: mid.yaml\nenv:\n  B: '2'\nmetrics: true\n")
    r = resolve_profile(str(leaf))
    p = r.profile
    assert r.chain == ["leaf", "mid", "h100"]
    assert p.port == 31000 and p.metrics is True
    assert p.chunked_prefill_size == 8192  # from h100
    assert p.env == {"A": "1", "B": "2"}  # mappings merge key by key
    assert r.sources["port"] == str(mid)
    assert r.sources["chunked_prefill_size"] == "h100.yaml"


def test_extends_alias(tmp_path: Path) -> None:
    leaf = write(tmp_path, "x.yaml", "extends: a100\n")
    assert resolve_profile(str(leaf)).chain == ["x", "a100-80g"]


def test_extends_cycle(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "extends: b.yaml\n")
    write(tmp_path, "b.yaml", "extends: c.yaml\n")
    write(tmp_path, "c.yaml", "extends: a.yaml\n")
    with pytest.raises(ProfileError) as ei:
        load_profile(str(tmp_path / "a.yaml"))
    assert "a -> b -> c -> a" in ei.value.message


def test_extends_self(tmp_path: Path) -> None:
    write(tmp_path, "s.yaml", "extends: s.yaml\n")
    with pytest.raises(ProfileError, match="extends itself"):
        load_profile(str(tmp_path / "s.yaml"))


def test_extends_unknown(tmp_path: Path) -> None:
    path = write(tmp_path, "u.yaml", "extends: h101\n")
    with pytest.raises(ProfileError) as ei:
        load_profile(str(path))
    assert "h100" in (ei.value.hint or "")


def test_extends_auto_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "u.yaml", "extends: auto\n")
    with pytest.raises(ProfileError, match="extends: auto"):
        load_profile(str(path))


# -- overrides ----------------------------------------------------------------------------------


def test_overrides_parse_yaml_scalars() -> None:
    r = resolve_profile("l4", overrides=["port=31000", "env.FOO=bar", "gpu_ids=[0,1]",
                                         "metrics=true", "gpu_memory_fraction=0.5",
                                         "served_model_name=qwen3-emb"])
    p = r.profile
    assert p.port == 31000 and isinstance(p.port, int)
    assert p.env == {"FOO": "bar"}
    assert p.gpu_ids == [0, 1]
    assert p.metrics is True
    assert p.gpu_memory_fraction == 0.5
    assert r.sources["port"] == "override" and r.sources["context_length"] == "l4.yaml"


def test_env_override_keeps_strings() -> None:
    p = load_profile("generic", overrides=["env.FLAG=yes", "env.N=010"])
    assert p.env == {"FLAG": "yes", "N": "010"}


def test_env_override_merges_with_file(tmp_path: Path) -> None:
    path = write(tmp_path, "e.yaml", "env:\n  A: '1'\n")
    assert load_profile(str(path), overrides=["env.B=2"]).env == {"A": "1", "B": "2"}


def test_override_validated_like_the_file() -> None:
    with pytest.raises(ProfileError) as ei:
        load_profile("generic", overrides=["port=0"])
    assert "`port`" in ei.value.message and "override" in ei.value.message


def test_override_unknown_key_suggests_closest() -> None:
    with pytest.raises(ProfileError) as ei:
        load_profile("generic", overrides=["prot=1"])
    assert "`prot`" in ei.value.message
    assert ei.value.hint == "did you mean `port`?"


def test_override_without_equals() -> None:
    with pytest.raises(ProfileError, match="key=value"):
        load_profile("generic", overrides=["port"])


def test_override_subkey_on_scalar() -> None:
    with pytest.raises(ProfileError, match="no sub-keys"):
        load_profile("generic", overrides=["port.x=1"])


def test_override_mapping_form() -> None:
    p = load_profile("generic", overrides={"port": 31001, "env.X": "y"})
    assert p.port == 31001 and p.env == {"X": "y"}


# -- auto ---------------------------------------------------------------------------------------

AUTO_CASES = [
    (gpu("NVIDIA A100-SXM4-80GB", 79.2, (8, 0)), "a100-80g"),
    (gpu("NVIDIA A100-PCIE-40GB", 39.4, (8, 0)), "a100-40g"),
    (gpu("NVIDIA H100 80GB HBM3", 79.6, (9, 0)), "h100"),
    (gpu("NVIDIA L4", 22.5, (8, 9)), "l4"),
    (gpu("NVIDIA A10", 22.2, (8, 6)), "a10"),
    (gpu("NVIDIA A10G", 22.2, (8, 6)), "a10"),
    (gpu("NVIDIA GeForce RTX 4090", 23.6, (8, 9)), "rtx4090"),
    (gpu("Tesla T4", 14.6, (7, 5)), "t4"),
    (gpu("Quadro RTX 5000", 16.0, (7, 5)), "t4"),
    # no profile of their own: matched by memory and compute capability, never by name
    (gpu("NVIDIA L40S", 44.5, (8, 9)), "a100-40g"),
    (gpu("NVIDIA H200", 139.8, (9, 0)), "h100"),
    (gpu("NVIDIA RTX A4000", 15.7, (8, 6)), FALLBACK_PROFILE),
    (gpu("NVIDIA GeForce RTX 3090", 23.7, (8, 6)), "a10"),
    (gpu("Tesla V100-SXM2-32GB", 31.7, (7, 0)), FALLBACK_PROFILE),
]


@pytest.mark.parametrize(("info", "expected"), AUTO_CASES, ids=[c[0].name for c in AUTO_CASES])
def test_pick_auto(info: GPUInfo, expected: str) -> None:
    name, reason = pick_auto(snap(info))
    assert name == expected
    assert info.name in reason
    assert "\n" not in reason


def test_pick_auto_no_gpu() -> None:
    name, reason = pick_auto(GPUSnapshot(error="NVML Shared Library Not Found"))
    assert name == FALLBACK_PROFILE
    assert "no GPU" in reason and "NVML Shared Library Not Found" in reason
    assert pick_auto(None)[0] == FALLBACK_PROFILE


def test_pick_auto_v100_reason_mentions_sm75() -> None:
    assert "sm75" in pick_auto(snap(gpu("Tesla V100", 16, (7, 0))))[1]


def test_pick_auto_several_gpus() -> None:
    name, reason = pick_auto(snap(gpu("NVIDIA L4", 22.5, (8, 9), 0), gpu("NVIDIA L4", 22.5, (8, 9), 1)))
    assert name == "l4" and "of 2" in reason


def test_load_auto_uses_gpus() -> None:
    r = resolve_profile("auto", gpus=snap(gpu("Tesla T4", 14.6, (7, 5))))
    assert r.profile.name == "t4" and r.profile.dtype == "float16"
    assert r.auto_reason and "Tesla T4" in r.auto_reason
    assert r.requested == "auto"
    assert load_profile(gpus=GPUSnapshot(error="no driver")).name == FALLBACK_PROFILE


def test_auto_with_overrides() -> None:
    p = load_profile("auto", gpus=snap(gpu("NVIDIA H100 80GB HBM3", 79.6, (9, 0))), overrides=["port=1234"])
    assert (p.name, p.port) == ("h100", 1234)


# -- API keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["api_key", "api-key", "apikey", "API_KEY", "hf_token", "secret"])
def test_api_key_in_yaml_is_refused(tmp_path: Path, key: str) -> None:
    path = write(tmp_path, "k.yaml", f"{key}: sk-123\n")
    with pytest.raises(ProfileError) as ei:
        load_profile(str(path))
    text = ei.value.message + (ei.value.hint or "")
    assert "QEMBED_API_KEY" in text and "api_key_file" in text
    assert "sk-123" not in text


@pytest.mark.parametrize("word", SECRET_WORDS)
def test_every_secret_name_of_redact_is_refused_as_a_key(word: str) -> None:
    # one table: a key is refused as a secret exactly when qembed.redact would hide its value
    for key in (f"db_{word.lower()}", f"my{word.title()}"):
        assert is_secret_name(key)
        with pytest.raises(ProfileError, match="looks like a secret") as ei:
            load_profile("generic", overrides=[f"{key}=sk-123"])
        assert "sk-123" not in ei.value.message + (ei.value.hint or "")


def test_api_key_in_override_is_refused() -> None:
    with pytest.raises(ProfileError) as ei:
        load_profile("generic", overrides=["api_key=sk-123"])
    assert "sk-123" not in ei.value.message + (ei.value.hint or "")


def test_api_key_env_must_be_a_name() -> None:
    with pytest.raises(ProfileError, match="name"):
        load_profile("generic", overrides=["api_key_env=sk-live-abcdefghijkl"])


def test_api_key_env_in_profile_env_is_refused() -> None:
    with pytest.raises(ProfileError, match="store the API key"):
        load_profile("generic", overrides=["env.QEMBED_API_KEY=x"])


def test_resolve_api_key_env_then_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keyfile = write(tmp_path, "key.txt", "  from-file\n")
    p = load_profile("generic", overrides={"api_key_file": str(keyfile)})
    assert resolve_api_key(p) == "from-file"
    monkeypatch.setenv("QEMBED_API_KEY", " from-env \n")
    assert resolve_api_key(p) == "from-env"
    q = load_profile("generic", overrides={"api_key_env": "MY_KEY"})
    assert resolve_api_key(q) is None
    monkeypatch.setenv("MY_KEY", "mine")
    assert resolve_api_key(q) == "mine"


def test_resolve_api_key_none() -> None:
    assert resolve_api_key(Profile()) is None


def test_resolve_api_key_missing_or_empty_file(tmp_path: Path) -> None:
    p = load_profile("generic", overrides={"api_key_file": str(tmp_path / "nope")})
    with pytest.raises(ProfileError, match="does not exist"):
        resolve_api_key(p)
    empty = write(tmp_path, "empty", "\n")
    with pytest.raises(ProfileError, match="empty"):
        resolve_api_key(load_profile("generic", overrides={"api_key_file": str(empty)}))


@pytest.mark.parametrize("flag", [f for f, h in habits.HABITS.items() if h.as_key])
def test_every_habit_key_is_refused_with_the_tables_equivalent(flag: str) -> None:
    key = habits.key_of(flag)
    with pytest.raises(ProfileError) as ei:
        load_profile("generic", overrides=[f"{key}=1"])
    if key == "api_key":
        assert "never stored in a profile" in ei.value.message
        return
    assert f"`{key}`" in ei.value.message and "habit" in ei.value.message
    assert (ei.value.hint or "").startswith(f"use {habits.HABITS[flag].use}")

