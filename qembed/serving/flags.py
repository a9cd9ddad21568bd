"""The SGLang flags qembed owns, and the check of a profile's ``extra_args`` against them.

The profile model validates ``extra_args`` with :func:`check_extra_args`; the argv builder
(:mod:`qembed.serving.sglang_args`) sets these flags itself. vLLM/TEI habits come from
:data:`qembed.habits.HABIT_FLAGS` (one table with the profile keys).
"""

from __future__ import annotations

from collections.abc import Sequence

from qembed.habits import HABIT_FLAGS

# Flags qembed sets from profile keys (or must not be passed at all) -> what to use instead.
# argparse accepts unambiguous prefixes, so `check_extra_args` also rejects prefixes of these.
MANAGED_FLAGS: dict[str, str] = {
    "--model-path": "the `model` key (or `qembed serve --model`)",
    "--model": "the `model` key (or `qembed serve --model`)",
    "--is-embedding": "nothing: qembed always passes `--is-embedding`",
    "--host": "the `host` key",
    "--port": "the `port` key (or `qembed serve --port`)",
    "--api-key": "the `QEMBED_API_KEY` environment variable (`api_key_env`) or `api_key_file`, never a flag in a file",
    "--served-model-name": "the `served_model_name` key",
    "--dtype": "the `dtype` key",
    "--mem-fraction-static": "the `gpu_memory_fraction` key",
    "--max-running-requests": "the `max_running_requests` key",
    "--chunked-prefill-size": "the `chunked_prefill_size` key",
    "--max-prefill-tokens": "the `max_prefill_tokens` key",
    "--max-queued-requests": "the `max_queued_requests` key",
    "--context-length": "the `context_length` key",
    "--max-total-tokens": "the `max_total_tokens` key",
    "--device": "the `device` key (`cpu` for SGLang's CPU backend, profile `xeon`)",
    "--enable-torch-compile": "the `torch_compile` key",
    "--json-model-override-args": "the `matryoshka` and `model_override_args` keys",
    "--enable-metrics": "the `metrics` key",
    "--attention-backend": "the `attention_backend` key",
    "--quantization": "the `quantization` key",
    "--kv-cache-dtype": "the `kv_cache_dtype` key",
    "--tp-size": "the `tp_size` key",
    "--tensor-parallel-size": "the `tp_size` key",
    "--dp-size": "the `dp_size` key",
    "--data-parallel-size": "the `dp_size` key",
    "--log-level": "the `log_level` key",
    "--config": "profile keys and `extra_args` (a second config file would override qembed's flags)",
    "--model-type": "nothing: qembed passes `--model-type llm` itself",
    "--help": "`sglang serve --help` directly",
}


def _flag_name(arg: str) -> str:
    return arg.split("=", 1)[0]


def check_extra_args(args: Sequence[str]) -> str | None:
    """Why ``extra_args`` cannot be passed through, or ``None`` when it can.

    The real parser checks the rest (:func:`check_flags`); this catches what the parser would
    accept but qembed must own (``--port``, ``--api-key``, prefixes such as ``--mem-frac``),
    and vLLM/TEI habits, with the qembed key to use instead.
    """
    if args and not str(args[0]).startswith("-"):
        return (f"must start with a flag, got `{args[0]}` (a positional argument would become "
                "the model path)")
    for arg in args:
        if not isinstance(arg, str) or not arg.startswith("--"):
            continue
        name = _flag_name(arg)
        if name in HABIT_FLAGS:
            return f"`{name}` is not a SGLang 0.5.23 flag; use {HABIT_FLAGS[name]}"
        if len(name) > 3:
            for managed, use in MANAGED_FLAGS.items():
                if managed.startswith(name):
                    spelled = "" if managed == name else f" (argparse reads it as `{managed}`)"
                    return f"`{name}`{spelled} is set by qembed; use {use}"
    return None


__all__ = ["MANAGED_FLAGS", "check_extra_args"]
