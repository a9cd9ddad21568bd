"""Every argv qembed builds goes through the REAL SGLang 0.5.23 parser (`prepare_server_args`).

The parser lives in its own venv (scripts/setup_sglang_parser.sh builds `.venv-sglang`); set
QEMBED_SGLANG_PARSER_PYTHON to use another. All checks share ONE interpreter (imports take
about 3 s, each parse a few ms), through a module-scoped fixture around `check_many`.
"""

from __future__ import annotations

import json

import pytest

from qembed.habits import HABIT_FLAGS
from qembed.serving.profiles.model import (
    ATTENTION_BACKENDS,
    KV_CACHE_DTYPES,
    QUANTIZATIONS,
    Profile,
)
from qembed.serving.profiles.resolve import load_profile, shipped_names
from qembed.serving.sglang_args import (
    ParserCheck,
    build_flags,
    check_many,
    installed_sglang_version,
)
from tests.helpers.sglang import parser_python

pytestmark = pytest.mark.conformance

def everything_profile() -> Profile:
    """A profile with every key that produces a flag set to a non-default value."""
    return load_profile(
        "generic",
        overrides={
            "model": "/models/Qwen3-Embedding-4B",
            "served_model_name": "qwen3-embedding",
            "host": "0.0.0.0",
            "port": 31000,
            "dtype": "bfloat16",
            "gpu_memory_fraction": 0.8,
            "max_running_requests": 128,
            "chunked_prefill_size": -1,
            "max_prefill_tokens": 16384,
            "max_queued_requests": 512,
            "context_length": 8192,
            "torch_compile": True,
            "matryoshka": True,
            "model_override_args": {"matryoshka_dimensions": [128, 256, 2560]},
            "metrics": True,
            "attention_backend": "fa3",
            "quantization": "fp8",
            "kv_cache_dtype": "fp8_e4m3",
            "tp_size": 2,
            "dp_size": 2,
            "gpu_ids": [0, 1, 2, 3],
            "log_level": "warning",
            "extra_args": ["--disable-radix-cache", "--cuda-graph-backend-prefill", "disabled",
                           "--tokenizer-worker-num", "2", "--allow-auto-truncate",
                           "--cuda-graph-max-bs-prefill=2048", "--skip-server-warmup"],
        },
    )


# case -> (profile, api key): every argv qembed builds from them must parse, with its values
PROFILES: dict[str, tuple[Profile, str | None]] = {}
for _name in shipped_names():
    if _name != "auto":
        PROFILES[f"shipped:{_name}"] = (load_profile(_name), None)
        PROFILES[f"shipped:{_name}+key"] = (load_profile(_name), "sk-test")
PROFILES["everything"] = (everything_profile(), "sk-test")
PROFILES["minimal"] = (Profile(matryoshka=False), None)
for _b in ATTENTION_BACKENDS:
    PROFILES[f"attention_backend:{_b}"] = (Profile(attention_backend=_b), None)
for _q in QUANTIZATIONS:
    PROFILES[f"quantization:{_q}"] = (Profile(quantization=_q), None)
for _k in KV_CACHE_DTYPES:
    PROFILES[f"kv_cache_dtype:{_k}"] = (Profile(kv_cache_dtype=_k), None)
for _d in ("auto", "bfloat16", "float16", "float32"):
    PROFILES[f"dtype:{_d}"] = (Profile(dtype=_d), None)  # type: ignore[arg-type]
for _lvl in ("debug", "info", "warning", "error", "critical"):
    PROFILES[f"log_level:{_lvl}"] = (Profile(log_level=_lvl), None)  # type: ignore[arg-type]
ACCEPTED: dict[str, list[str]] = {
    case: build_flags(profile, api_key=key) for case, (profile, key) in PROFILES.items()
}

BASE = ["--model-path", "Qwen/Qwen3-Embedding-4B", "--is-embedding"]
# Flags SGLang 0.5.23 rejects (reference section 1.5) -> text the error must contain: every habit
# flag qembed refuses in `extra_args` (qembed.habits, the one table), and a few bad values.
REJECTED: dict[str, tuple[list[str], str]] = {
    **{flag.removeprefix("--"): ([flag, "1"], flag) for flag in HABIT_FLAGS},
    "kv-cache-dtype-fp8": (["--kv-cache-dtype", "fp8"], "fp8"),
    "dtype-bf16": (["--dtype", "bf16"], "bf16"),
    "is-embedding-true": (["--is-embedding", "true"], "true"),
    "bogus-attention": (["--attention-backend", "flashinfr"], "flashinfr"),
}


@pytest.fixture(scope="module")
def results() -> dict[str, ParserCheck]:
    py = parser_python()
    names = [*ACCEPTED, *(f"reject:{n}" for n in REJECTED), "crash:log-level"]
    argvs = [*ACCEPTED.values(), *(BASE + extra for extra, _ in REJECTED.values()),
             [*BASE, "--log-level", "verbose"]]
    return dict(zip(names, check_many(argvs, python=py), strict=True))


def test_parser_is_sglang_0_5_23() -> None:
    assert installed_sglang_version(parser_python()) == "0.5.23"


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_accepted_by_real_parser(results: dict[str, ParserCheck], case: str) -> None:
    r = results[case]
    assert r.ok, f"{case}: SGLang rejected {ACCEPTED[case]}: {r.message}"


@pytest.mark.parametrize("case", list(REJECTED))
def test_habit_flags_rejected_by_real_parser(results: dict[str, ParserCheck], case: str) -> None:
    r = results[f"reject:{case}"]
    assert not r.ok and not r.crashed, f"{case}: {r}"
    assert r.exit_code == 2
    assert REJECTED[case][1] in r.message, r.message
    assert "error:" in r.message


def test_log_level_typo_crashes_the_real_parser(results: dict[str, ParserCheck]) -> None:
    # Why qembed validates `log_level` itself: SGLang crashes (not a clean exit 2) on a typo.
    r = results["crash:log-level"]
    assert r.crashed and "AttributeError" in r.message


# -- the values arrive: what SGLang parsed is what the profile set ----------------------------


def expected_server_args(profile: Profile, api_key: str | None) -> dict[str, object]:
    """Profile key -> the ``ServerArgs`` field and value SGLang 0.5.23 must end up with.

    The test's own table (not build_flags'): a key that no longer reaches its field, or reaches
    another one, fails here even when the parser accepts the argv.
    """
    p = profile
    exp: dict[str, object] = {
        "model_path": p.model,
        "is_embedding": True,
        "host": p.host,
        "port": p.port,
        "log_level": p.log_level,
        "tp_size": p.tp_size,
        "dp_size": p.dp_size,
        "enable_metrics": p.metrics,
        "enable_torch_compile": p.torch_compile,
        # the key arrives, and comes back redacted
        "api_key": "[...]" if api_key else None,
    }
    optional: dict[str, object | None] = {
        "served_model_name": p.served_model_name,
        "mem_fraction_static": p.gpu_memory_fraction,
        "max_running_requests": p.max_running_requests,
        "chunked_prefill_size": p.chunked_prefill_size,
        "max_prefill_tokens": p.max_prefill_tokens,
        "max_queued_requests": p.max_queued_requests,
        "context_length": p.context_length,
        "attention_backend": p.attention_backend,
        "quantization": p.quantization,
        "kv_cache_dtype": p.kv_cache_dtype,
        "dtype": None if p.dtype == "auto" else p.dtype,
    }
    exp.update({k: v for k, v in optional.items() if v is not None})
    return exp


def expected_overrides(profile: Profile) -> dict[str, object]:
    overrides = dict(profile.model_override_args)
    if profile.matryoshka:
        overrides.setdefault("is_matryoshka", True)
    return overrides


@pytest.mark.parametrize("case", list(PROFILES))
def test_profile_values_arrive_in_server_args(results: dict[str, ParserCheck], case: str) -> None:
    r = results[case]
    assert r.ok and r.args is not None, f"{case}: {r.message}"
    profile, key = PROFILES[case]
    expected = expected_server_args(profile, key)
    got = {name: r.args.get(name, "<missing>") for name in expected}
    assert got == expected, case
    raw = r.args["json_model_override_args"]
    assert isinstance(raw, str)
    assert (json.loads(raw) if raw else {}) == expected_overrides(profile), case


def test_everything_profile_values_by_name(results: dict[str, ParserCheck]) -> None:
    """The issue's fields, spelled out for the profile that sets every key."""
    args = results["everything"].args
    assert args is not None
    assert args["mem_fraction_static"] == 0.8
    assert args["context_length"] == 8192
    assert args["is_embedding"] is True
    assert json.loads(str(args["json_model_override_args"])) == {
        "matryoshka_dimensions": [128, 256, 2560], "is_matryoshka": True}
    assert args["chunked_prefill_size"] == -1
    assert (args["tp_size"], args["dp_size"]) == (2, 2)
    # extra_args reach SGLang too
    assert args["disable_radix_cache"] is True and args["allow_auto_truncate"] is True
    assert args["tokenizer_worker_num"] == 2
    # the key was parsed but never came back in the clear
    assert args["api_key"] == "[...]"
    assert "sk-test" not in json.dumps(args)


def test_rejected_argv_has_no_parsed_values(results: dict[str, ParserCheck]) -> None:
    assert results["reject:max-model-len"].args is None
    assert results["crash:log-level"].args is None
