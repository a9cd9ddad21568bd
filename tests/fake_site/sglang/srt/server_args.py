"""TEST DOUBLE: ``prepare_server_args`` with argparse semantics like SGLang 0.5.23's parser.

Stock argparse with ``prog="sglang serve"``, so prefixes are accepted and an unknown flag, a bad
choice or an ambiguous prefix exits with status 2 and argparse's message on stderr. Only the
flags of ``../shared/reference/sglang-0.5.23.md`` section 1.2/1.3 exist here.
"""

from __future__ import annotations

import argparse
import logging
import os


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sglang serve")
    a = p.add_argument
    a("--model-path", "--model", dest="model_path", required=True)
    a("--is-embedding", action="store_true")
    a("--host", default="127.0.0.1")
    a("--port", type=int, default=30000)
    a("--dtype", default="auto", choices=["auto", "half", "float16", "bfloat16", "float", "float32"])
    a("--mem-fraction-static", type=float)
    a("--max-running-requests", type=int)
    a("--max-queued-requests", type=int)
    a("--max-total-tokens")
    a("--chunked-prefill-size", type=int)
    a("--max-prefill-tokens", default="16384")
    a("--context-length")
    a("--enable-torch-compile", action="store_true")
    a("--torch-compile-max-bs", type=int, default=32)
    a("--cuda-graph-max-bs-decode", type=int)
    a("--cuda-graph-max-bs-prefill", type=int)
    a("--cuda-graph-bs-decode", type=int, nargs="+")
    a("--cuda-graph-bs-prefill", type=int, nargs="+")
    a("--cuda-graph-backend-decode", choices=["full", "breakable", "disabled"])
    a("--cuda-graph-backend-prefill", choices=["full", "breakable", "disabled"])
    a("--disable-cuda-graph", action="store_true")
    a("--disable-prefill-cuda-graph", action="store_true")
    a("--disable-decode-cuda-graph", action="store_true")
    a("--disable-radix-cache", action="store_true")
    a("--attention-backend", choices=["triton", "torch_native", "flex_attention", "fa3", "fa4", "flashinfer", "trtllm_mha"])
    a("--tp-size", "--tensor-parallel-size", dest="tp_size", type=int, default=1)
    a("--dp-size", "--data-parallel-size", dest="dp_size", type=int, default=1)
    a("--load-balance-method", default="auto", choices=["auto", "round_robin", "follow_bootstrap_room", "total_requests", "total_tokens"])
    a("--enable-metrics", action="store_true")
    a("--api-key")
    a("--served-model-name")
    a("--json-model-override-args", default="{}")
    a("--log-level", default="info")
    a("--skip-server-warmup", action="store_true")
    a("--trust-remote-code", action="store_true")
    a("--tokenizer-mode", default="auto", choices=["auto", "slow"])
    a("--device")
    a("--sleep-on-idle", action="store_true")
    a("--quantization", choices=["awq", "fp8", "mxfp8", "gptq", "gptq_marlin", "awq_marlin", "bitsandbytes", "gguf", "modelopt", "modelopt_fp8", "modelopt_fp4", "w8a8_int8", "w8a8_fp8", "compressed-tensors", "unquant"])
    a("--kv-cache-dtype", default="auto", choices=["auto", "fp8_e5m2", "fp8_e4m3", "mxfp8", "bf16", "bfloat16", "nvfp4", "fp4_mx_block16"])
    a("--random-seed", type=int)
    a("--watchdog-timeout", type=float, default=300)
    a("--allow-auto-truncate", action="store_true")
    a("--tokenizer-worker-num", type=int, default=1)
    a("--enable-tokenizer-batch-encode", action="store_true")
    a("--enable-dynamic-batch-tokenizer", action="store_true")
    a("--base-gpu-id", type=int, default=0)
    a("--gpu-id-step", type=int, default=1)
    a("--dist-timeout", type=int)
    a("--prefill-only-disable-kv-cache", action="store_true")
    return p


def prepare_server_args(argv: list[str]) -> argparse.Namespace:
    """Parse like SGLang: SystemExit(2) on a rejected flag; ``--log-level`` crashes on a bad
    level name (it is not choice-validated in 0.5.23)."""
    log = os.environ.get("FAKE_SGLANG_PARSE_LOG")
    if log:  # each import-and-parse leaves a line: tests count them (the verdict cache, issue 23)
        with open(log, "a", encoding="utf-8") as f:
            f.write(" ".join(argv) + "\n")
    ns = _parser().parse_args(argv)
    getattr(logging, ns.log_level.upper())  # AttributeError for e.g. "verbose", as in SGLang
    return ns
