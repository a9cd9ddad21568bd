"""Each SGLang failure signature in tests/logs/ is recognised, with its evidence and profile fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from qembed.serving import diagnose as dg
from qembed.serving.profiles.model import Profile

LOGS = Path(__file__).parent / "logs"


def make_profile(**kw: Any) -> Profile:
    kw.setdefault("name", None)
    return Profile(**kw)


A40 = {"name": "a100-40g", "gpu_memory_fraction": 0.9, "chunked_prefill_size": 4096}

# (log file, first key, text in the evidence line, text in the fix, profile kwargs, returncode)
CASES = [
    ("cuda_oom.log", "cuda_oom", "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
     "lower `gpu_memory_fraction` in profile `a100-40g` (now 0.9) to 0.80, or lower `chunked_prefill_size` (now 4096) to 2048",
     A40, -9),
    ("weights_no_kv.log", "weights_no_kv", "Loaded weights leave no GPU memory for the KV cache",
     "raise `gpu_memory_fraction` in profile `tiny` (now 0.3) to 0.38 (SGLang's minimum is 0.322)",
     {"name": "tiny", "gpu_memory_fraction": 0.3}, -9),
    ("not_enough_memory.log", "kv_pool_empty", "RuntimeError: Not enough memory. Please try to increase --mem-fraction-static",
     "raise `gpu_memory_fraction` in profile `t4` (now 0.35) to 0.40, or lower `context_length` (now 8192)",
     {"name": "t4", "gpu_memory_fraction": 0.35, "context_length": 8192}, -9),
    ("kv_pool_small.log", "kv_pool_small", "KV pool holds 20480 tokens, fewer than --context-length 32768",
     "set `context_length: 20480` in profile `a100-40g`, or raise `gpu_memory_fraction` (now 0.9)",
     A40, None),
    ("host_oom.log", "host_oom", "Rank 0 scheduler died during initialization (exit code: -9)",
     "lower `dp_size` in profile `multi` (now 4)", {"name": "multi", "dp_size": 4}, 1),
    ("warmup_proxy.log", "warmup_proxy", "Initialization failed. warmup error",
     "add `NO_PROXY: 127.0.0.1,localhost,::1` to `env` in profile `a100-40g`", A40, -9),
    ("port_in_use.log", "port_in_use", "[Errno 98] error while attempting to bind on address ('127.0.0.1', 30000)",
     "set `port` in profile `a100-40g` (now 30000) to a free port, e.g. 30001", A40, -9),
    ("bad_flag.log", "flags_rejected", "sglang serve: error: unrecognized arguments: --gpu-memory-utilization 0.9",
     "check `extra_args` in profile `x` against `sglang serve --help`", {"name": "x"}, 2),
    ("bad_choice.log", "flags_rejected", "argument --kv-cache-dtype: invalid choice: 'fp8'",
     "change `kv_cache_dtype` in profile `x`", {"name": "x"}, 2),
    ("ambiguous.log", "flags_rejected", "ambiguous option: --cuda-graph-max-bs could match",
     "spell out the full flag instead of `--cuda-graph-max-bs` in `extra_args` in profile `x`", {"name": "x"}, 2),
    ("quantization.log", "quantization_capability",
     "The quantization method fp8 is not supported for the current GPU. Minimum capability: 80. Current capability: 75.",
     "remove `quantization` in profile `t4` (now fp8)", {"name": "t4", "quantization": "fp8"}, -9),
    ("flashinfer_jit.log", "flashinfer_jit", "Could not find nvcc",
     "set `attention_backend: fa3` in profile `h100`", {"name": "h100"}, -9),
    ("bf16_fallback.log", "bf16_fallback", "Compute capability below sm80. Use float16",
     "set `dtype: float16` in profile `t4`", {"name": "t4", "dtype": "bfloat16"}, None),
    ("sm_too_old.log", "gpu_too_old", "RuntimeError: SGLang only supports sm75 and above.",
     "set `gpu_ids` in profile `p`", {"name": "p"}, -9),
    ("context_too_long.log", "context_too_long",
     "User-specified context_length (65536) is greater than the derived context_length (32768)",
     "set `context_length` in profile `long` (now 65536) to 32768 or less", {"name": "long", "context_length": 65536}, 1),
    ("model_no_config.log", "model_no_config", "ValueError: Unrecognized model in /models/qwen3-4b.",
     "set `model` in profile `local` (now /models/qwen3-4b) to the snapshot directory that contains config.json",
     {"name": "local", "model": "/models/qwen3-4b"}, 1),
    ("bcg_capture.log", "prefill_graph_capture", "Fail when using backend: breakable for prefill runner",
     "lower `gpu_memory_fraction` in profile `a100-40g` (now 0.9) to 0.80, or lower `chunked_prefill_size`; "
     "or add `--cuda-graph-backend-prefill disabled` to `extra_args`", A40, -9),
    ("init_failed.log", "init_failed", "KeyError: 'layers.22.mlp.gate_up_proj.weight'",
     "read the scheduler traceback", A40, -9),
    ("killed.log", "killed", "exit status -9", "free host RAM", A40, -9),
]


@pytest.mark.parametrize(("log", "key", "evidence", "fix", "prof", "rc"), CASES, ids=[c[0] for c in CASES])
def test_signature(log: str, key: str, evidence: str, fix: str, prof: dict[str, Any], rc: int | None) -> None:
    lines = (LOGS / log).read_text(encoding="utf-8").splitlines()
    found = dg.diagnose(lines, profile=make_profile(**prof), returncode=rc)
    assert found, f"nothing recognised in {log}"
    first = found[0]
    assert first.key == key, [d.key for d in found]
    assert evidence in first.evidence
    assert fix in first.fix
    if first.line_no is not None:
        assert lines[first.line_no - 1].strip() == first.evidence


def test_rejected_flag_from_extra_args_is_named() -> None:
    lines = (LOGS / "bad_flag.log").read_text().splitlines()
    # a stand-in: the real Profile already refuses this vLLM flag at load time
    # model_construct: a profile as a hand-written YAML might hold it before validation
    prof = Profile.model_construct(name="x", extra_args=["--gpu-memory-utilization", "0.9"])
    assert "remove `--gpu-memory-utilization` (and its value) from `extra_args` in profile `x`" in dg.diagnose(lines, profile=prof)[0].fix


def test_every_sample_log_is_tested() -> None:
    assert {p.name for p in LOGS.glob("*.log")} == {c[0] for c in CASES}


def test_without_profile_the_fix_still_names_the_key() -> None:
    lines = (LOGS / "cuda_oom.log").read_text().splitlines()
    (d,) = dg.diagnose(lines)
    # the ServerArgs dump says SGLang ran with 0.9
    assert "lower `gpu_memory_fraction` in the profile (unset; SGLang used 0.9) to 0.80" in d.fix


def test_auto_fraction_profile_uses_logged_value() -> None:
    lines = (LOGS / "cuda_oom.log").read_text().splitlines()
    d = dg.diagnose(lines, profile=make_profile(name="a100"))[0]
    assert "(unset; SGLang used 0.9)" in d.fix


def test_warmup_without_proxy_is_generic() -> None:
    lines = [ln for ln in (LOGS / "warmup_proxy.log").read_text().splitlines() if "502" not in ln]
    assert dg.diagnose(lines)[0].key == "warmup_failed"


def test_weights_needing_more_than_95_percent() -> None:
    line = ("ValueError: Loaded weights leave no GPU memory for the KV cache under --mem-fraction-static=0.9. "
            "Raise --mem-fraction-static above 0.970 (minimum viable = 1 - available/pre = 0.9695).")
    (d,) = dg.diagnose([line])
    assert "smaller `model`" in d.fix and "gpu_memory_fraction" not in d.fix


def test_nothing_recognised() -> None:
    assert dg.diagnose(["[2026-11-20 10:00:23] The server is fired up and ready to roll!"]) == []
    assert dg.diagnose([], returncode=0) == []
    assert dg.diagnose([], returncode=-9)[0].key == "killed"


def test_errors_before_warnings() -> None:
    lines = (LOGS / "bf16_fallback.log").read_text().splitlines() + \
        (LOGS / "cuda_oom.log").read_text().splitlines()
    keys = [d.key for d in dg.diagnose(lines)]
    assert keys == ["cuda_oom", "bf16_fallback"]


def test_read_redacted_tail_is_bounded(tmp_path: Path) -> None:
    p = tmp_path / "big.log"
    body = "".join(f"[2026-11-20 10:00:00] line {i}\n" for i in range(100_000))
    p.write_text(body + "RuntimeError: SGLang only supports sm75 and above.\n")
    lines = dg.read_redacted_tail(p, max_bytes=4096, max_lines=50)
    assert len(lines) == 50
    assert lines[-1] == "RuntimeError: SGLang only supports sm75 and above."
    assert all(ln.startswith("[2026") for ln in lines[:-1])  # no partial first line
    assert dg.diagnose_file(p)[0].key == "gpu_too_old"


def test_tail_lines_keeps_the_end() -> None:
    assert dg.tail_lines((f"{i}\n" for i in range(1000)), 3) == ["997", "998", "999"]


def test_log_tail_is_redacted(tmp_path: Path) -> None:
    """SGLang logs its API key in the startup `server_args=` line; evidence shown from a log
    file must never carry it."""
    log = tmp_path / "x.log"
    log.write_text("[2026-11-26 05:00:00] server_args=ServerArgs(model_path='m', api_key='sk-secret-123', port=30000)\n"
                   "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n")
    lines = dg.read_redacted_tail(log)
    assert not any("sk-secret-123" in ln for ln in lines)
    assert "api_key='[...]'" in lines[0]
