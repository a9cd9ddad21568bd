"""Every argv qembed builds goes through the REAL SGLang 0.5.23 parser (`prepare_server_args`).

The parser lives in its own venv (scripts/setup_sglang_parser.sh builds `.venv-sglang`); set
QEMBED_SGLANG_PARSER_PYTHON to use another. All checks share ONE interpreter (imports take
about 3 s, each parse a few ms), through a module-scoped fixture around `check_many`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qembed.profiles import (
    ATTENTION_BACKENDS,
    KV_CACHE_DTYPES,
    QUANTIZATIONS,
    Profile,
    load_profile,
    shipped_names,
)
from qembed.sglang_args import ParserCheck, build_flags, check_many, installed_sglang_version

pytestmark = pytest.mark.conformance

REPO = Path(__file__).resolve().parent.parent


def parser_python() -> str:
    configured = os.environ.get("QEMBED_SGLANG_PARSER_PYTHON")
    path = Path(configured) if configured else REPO / ".venv-sglang" / "bin" / "python"
    if not path.exists():
        pytest.skip(f"no SGLang parser interpreter at {path}: run `bash scripts/setup_sglang_parser.sh` "
                    "(or set QEMBED_SGLANG_PARSER_PYTHON)")
    return str(path)


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


ACCEPTED: dict[str, list[str]] = {}
for _name in shipped_names():
    if _name != "auto":
        ACCEPTED[f"shipped:{_name}"] = build_flags(load_profile(_name))
        ACCEPTED[f"shipped:{_name}+key"] = build_flags(load_profile(_name), api_key="sk-test")
ACCEPTED["everything"] = build_flags(everything_profile(), api_key="sk-test")
ACCEPTED["minimal"] = build_flags(Profile(matryoshka=False))
for _b in ATTENTION_BACKENDS:
    ACCEPTED[f"attention_backend:{_b}"] = build_flags(Profile(attention_backend=_b))
for _q in QUANTIZATIONS:
    ACCEPTED[f"quantization:{_q}"] = build_flags(Profile(quantization=_q))
for _k in KV_CACHE_DTYPES:
    ACCEPTED[f"kv_cache_dtype:{_k}"] = build_flags(Profile(kv_cache_dtype=_k))
for _d in ("auto", "bfloat16", "float16", "float32"):
    ACCEPTED[f"dtype:{_d}"] = build_flags(Profile(dtype=_d))  # type: ignore[arg-type]
for _lvl in ("debug", "info", "warning", "error", "critical"):
    ACCEPTED[f"log_level:{_lvl}"] = build_flags(Profile(log_level=_lvl))  # type: ignore[arg-type]

BASE = ["--model-path", "Qwen/Qwen3-Embedding-4B", "--is-embedding"]
# Habit flags SGLang 0.5.23 rejects (reference section 1.5) -> text the error must contain.
REJECTED: dict[str, tuple[list[str], str]] = {
    "max-batch-size": (["--max-batch-size", "32"], "--max-batch-size"),
    "gpu-memory-utilization": (["--gpu-memory-utilization", "0.9"], "--gpu-memory-utilization"),
    "max-model-len": (["--max-model-len", "8192"], "--max-model-len"),
    "max-num-seqs": (["--max-num-seqs", "8"], "--max-num-seqs"),
    "task": (["--task", "embed"], "--task"),
    "pooling-type": (["--pooling-type", "LAST"], "--pooling-type"),
    "hf-overrides": (["--hf-overrides", "{}"], "--hf-overrides"),
    "enforce-eager": (["--enforce-eager"], "--enforce-eager"),
    "cuda-graph-max-bs": (["--cuda-graph-max-bs", "32"], "--cuda-graph-max-bs"),
    "kv-cache-dtype-fp8": (["--kv-cache-dtype", "fp8"], "fp8"),
    "dtype-bf16": (["--dtype", "bf16"], "bf16"),
    "normalize": (["--normalize"], "--normalize"),
    "embedding-dim": (["--embedding-dim", "512"], "--embedding-dim"),
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
