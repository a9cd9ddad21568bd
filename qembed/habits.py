"""vLLM / TEI / SGLang habits qembed refuses, with what to use instead: one table.

A habit is refused in two places, and both read :data:`HABITS`:

* as a profile key (``max_model_len: 8192``): :data:`HABIT_KEYS`, used by
  :mod:`qembed.serving.profiles.resolve` for "not a qembed key";
* as a flag in ``extra_args`` (``--max-model-len 8192``), which SGLang 0.5.23 rejects:
  :data:`HABIT_FLAGS`, used by :mod:`qembed.serving.sglang_args` (the extra_args check, and the hint
  on a parser error). ``tests/test_conformance.py`` runs every one of these flags through
  SGLang's own parser to prove it is rejected.

Each entry is keyed by the flag spelling; the profile key is the same words in snake_case.
Source of the SGLang equivalents: reference sglang-0.5.23.md section 1.5.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Habit:
    """One habit. ``use`` reads after "use " in the hint."""

    use: str
    qembed_key: str | None = None  # the qembed key that replaces it; None = nothing to set
    as_key: bool = True  # refused as a profile key
    as_flag: bool = True  # refused as a flag: SGLang 0.5.23 rejects it (or it is a real flag qembed sets)


_IS_EMBEDDING = "nothing: qembed always passes `--is-embedding`"
_POOLING = "nothing: SGLang hard-codes last-token pooling for Qwen3-Embedding"
_MATRYOSHKA = "`matryoshka: true` (the default) and the per-request `dimensions` field"
_RUNNING = "`max_running_requests` (`--max-running-requests`)"
_PREFILL = "`max_prefill_tokens` (`--max-prefill-tokens`) or `chunked_prefill_size` (`--chunked-prefill-size`)"
_MEM_FRACTION = "`gpu_memory_fraction` (`--mem-fraction-static`)"
_MODEL = "`model` (`--model-path`)"
_OVERRIDES = "`model_override_args` (`--json-model-override-args`)"
_GPU_IDS = "`gpu_ids` (sets `CUDA_VISIBLE_DEVICES`)"

# flag spelling -> Habit; as_flag=False: a key only (SGLang has the flag and qembed sets it, or
# the habit is a config-file key). as_key=False: a flag only.
HABITS: dict[str, Habit] = {
    "--max-batch-size": Habit(f"{_RUNNING} caps concurrent requests; `max_prefill_tokens` (`--max-prefill-tokens`) or `chunked_prefill_size` (`--chunked-prefill-size`) cap tokens per batch; `max_queued_requests` (`--max-queued-requests`) caps the queue", "max_running_requests"),
    "--gpu-memory-utilization": Habit(_MEM_FRACTION, "gpu_memory_fraction"),
    "--max-model-len": Habit("`context_length` (`--context-length`)", "context_length"),
    "--max-num-seqs": Habit(_RUNNING, "max_running_requests"),
    "--max-num-batched-tokens": Habit(_PREFILL, "max_prefill_tokens"),
    "--task": Habit(_IS_EMBEDDING),
    "--runner": Habit(_IS_EMBEDDING),
    "--pooling": Habit(_POOLING),
    "--pooling-type": Habit(_POOLING),
    "--pooler-config": Habit(_POOLING, as_flag=False),
    "--normalize": Habit("nothing: SGLang always L2-normalises Qwen3-Embedding vectors"),
    "--embedding-dim": Habit(_MATRYOSHKA, "matryoshka"),
    "--dimensions": Habit(_MATRYOSHKA, "matryoshka", as_flag=False),
    "--is-matryoshka": Habit("`matryoshka` (`--json-model-override-args '{\"is_matryoshka\": true}'`)", "matryoshka", as_flag=False),
    "--enforce-eager": Habit("`extra_args: [--cuda-graph-backend-prefill, disabled]` (SGLang has no `--enforce-eager`)", "extra_args"),
    "--hf-overrides": Habit(_OVERRIDES, "model_override_args"),
    "--json-model-override-args": Habit(_OVERRIDES, "model_override_args", as_flag=False),
    "--max-client-batch-size": Habit("nothing on the server: SGLang has no cap on inputs per request; the client splits large batches"),
    "--max-batch-tokens": Habit(_PREFILL, "max_prefill_tokens"),
    "--max-batch-prefill-tokens": Habit("`max_prefill_tokens` (`--max-prefill-tokens`)", "max_prefill_tokens", as_flag=False),
    "--max-concurrent-requests": Habit(f"{_RUNNING} and `max_queued_requests` (`--max-queued-requests`)", "max_running_requests"),
    "--model-id": Habit(_MODEL, "model"),
    "--model-path": Habit(_MODEL, "model", as_flag=False),
    "--model-name": Habit("`served_model_name` (`--served-model-name`)", "served_model_name", as_flag=False),
    "--mem-fraction-static": Habit(_MEM_FRACTION, "gpu_memory_fraction", as_flag=False),
    "--tensor-parallel-size": Habit("`tp_size` (`--tp-size`)", "tp_size", as_flag=False),
    "--data-parallel-size": Habit("`dp_size` (`--dp-size`)", "dp_size", as_flag=False),
    "--enable-torch-compile": Habit("`torch_compile` (`--enable-torch-compile`)", "torch_compile", as_flag=False),
    "--enable-metrics": Habit("`metrics` (`--enable-metrics`)", "metrics", as_flag=False),
    "--is-embedding": Habit(_IS_EMBEDDING, as_flag=False),
    "--enable-prefix-caching": Habit("nothing: prefix caching is on by default; turn it off with `extra_args: [--disable-radix-cache]`"),
    "--enable-chunked-prefill": Habit("nothing: chunked prefill is on by default; `chunked_prefill_size: -1` turns it off", "chunked_prefill_size"),
    "--cuda-visible-devices": Habit(_GPU_IDS, "gpu_ids", as_flag=False),
    "--gpus": Habit(_GPU_IDS, "gpu_ids", as_flag=False),
    "--api-key": Habit("`api_key_env` (name of the environment variable holding the key, default `QEMBED_API_KEY`) or `api_key_file`", "api_key_env", as_flag=False),
    "--cuda-graph-max-bs": Habit("`--cuda-graph-max-bs-prefill` (embeddings only capture prefill graphs); the bare flag is an ambiguous prefix", as_key=False),
    "--cuda-graph-bs": Habit("`--cuda-graph-bs-prefill`; the bare flag is an ambiguous prefix", as_key=False),
}  # fmt: skip


def key_of(flag: str) -> str:
    """``--max-model-len`` -> ``max_model_len``: the profile-key spelling of a habit."""
    return flag.removeprefix("--").replace("-", "_")


#: profile key -> (qembed key or None, what to use instead)
HABIT_KEYS: dict[str, tuple[str | None, str]] = {
    key_of(flag): (h.qembed_key, h.use) for flag, h in HABITS.items() if h.as_key
}
#: flag SGLang 0.5.23 rejects -> what to use instead
HABIT_FLAGS: dict[str, str] = {flag: h.use for flag, h in HABITS.items() if h.as_flag}

__all__ = ["HABITS", "HABIT_FLAGS", "HABIT_KEYS", "Habit", "key_of"]
