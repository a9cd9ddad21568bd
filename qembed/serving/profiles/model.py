"""The pydantic :class:`Profile`: every key of a profile, its value checks, and SGLang's choice lists.

Field names are qembed's (user terms); :mod:`qembed.serving.sglang_args` maps each onto its
SGLang 0.5.23 flag. Loading, ``extends`` and overrides are :mod:`qembed.serving.profiles.resolve`;
the bounded YAML parser is :mod:`qembed.serving.profiles.loader`.

Example:
    >>> from qembed.serving.profiles.model import Profile, engine_name
    >>> p = Profile(port=31000)                    # doctest: +SKIP
    >>> p.port, engine_name(p)                     # doctest: +SKIP
    (31000, 'SGLang')
"""

from __future__ import annotations

import difflib
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import pydantic

from qembed.redact import REDACTED
from qembed.serving.profiles.loader import MAX_DEPTH

# Choice lists copied from SGLang 0.5.23 (`srt/arg_groups/choices.py`, `fields/exec_.py`);
# tests/test_conformance.py feeds every entry to the real parser, so a drift fails CI.
ATTENTION_BACKENDS: tuple[str, ...] = (
    "triton", "torch_native", "flex_attention", "dsa", "nsa", "qsa", "dsv4", "compressed",
    "fa3", "fa4", "flashinfer", "llada2_cfg_flashinfer", "flashmla", "trtllm_mla", "cutedsl_mla",
    "tokenspeed_mla", "trtllm_mha", "hpc_ops", "minicpm_flashattn", "minicpm_flashinfer", "aiter",
    "wave", "intel_amx", "ascend", "intel_xpu",
)  # fmt: skip
QUANTIZATIONS: tuple[str, ...] = (
    "awq", "fp8", "mxfp8", "gptq", "gptq_marlin", "awq_marlin", "bitsandbytes", "gguf", "modelopt",
    "modelopt_fp8", "modelopt_fp4", "nvfp4_online", "modelopt_mixed", "petit_nvfp4", "w8a8_int8",
    "w8a8_fp8", "moe_wna16", "w4afp8", "mxfp4", "auto-round", "auto-round-int8",
    "compressed-tensors", "modelslim", "mxfp_w4a8", "quark", "quark_int4fp8_moe", "quark_mxfp4",
    "mlx_q4", "mlx_q8", "unquant", "humming",
)  # fmt: skip
KV_CACHE_DTYPES: tuple[str, ...] = (
    "auto", "fp8_e5m2", "fp8_e4m3", "mxfp8", "bf16", "bfloat16", "nvfp4", "fp4_mx_block16",
)  # fmt: skip

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Profile(pydantic.BaseModel):
    """Every setting of one SGLang embedding server, in user terms.

    Field names are qembed's; :func:`qembed.serving.sglang_args.build_flags` maps each onto its SGLang
    0.5.23 flag. ``None`` means "leave it to SGLang's own rule at launch".
    """

    # strict: `port: true` is not port 1, `port: "30000"` is not a number; finite: `nan`/`.inf`
    # are no timeout or fraction.
    model_config = pydantic.ConfigDict(extra="forbid", validate_assignment=True, strict=True,
                                       allow_inf_nan=False)

    name: str | None = None  # set by the loader (shipped name or file stem)
    description: str = ""
    gpu: str = ""  # the GPU this profile is sized for, in words (shown by `qembed profiles list`)
    # NVIDIA GPU Feature Discovery `nvidia.com/gpu.product` values of the GPUs this profile is sized
    # for (`qembed deploy k8s` requires one on the node); empty: any GPU node
    gpu_products: list[str] = []
    extends: str | None = None  # consumed by the loader
    # `sglang`, or `reference`: the model card's recipe on CPU (`qembed serve --profile cpu`, qembed.reference.server)
    engine: Literal["sglang", "reference"] = "sglang"
    # `cuda`, or `cpu`: SGLang's CPU backend (`--device cpu` + SGLANG_USE_CPU_ENGINE=1; profile `xeon`)
    device: Literal["cuda", "cpu"] = "cuda"
    model: str = "Qwen/Qwen3-Embedding-4B"  # HF id or local dir -> --model-path
    served_model_name: str | None = None  # -> --served-model-name
    host: str = "127.0.0.1"  # -> --host
    port: int = 30000  # -> --port
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"  # -> --dtype
    gpu_memory_fraction: float | None = None  # -> --mem-fraction-static, 0 < x < 1
    max_running_requests: int | None = None  # -> --max-running-requests
    chunked_prefill_size: int | None = None  # -> --chunked-prefill-size; -1 disables chunking
    max_prefill_tokens: int | None = None  # -> --max-prefill-tokens
    max_queued_requests: int | None = None  # -> --max-queued-requests
    context_length: int | None = None  # -> --context-length
    max_total_tokens: int | None = None  # -> --max-total-tokens (the KV pool; on CPU sized from free RAM)
    torch_compile: bool = False  # -> --enable-torch-compile (no effect on embeddings in 0.5.23)
    matryoshka: bool = True  # -> --json-model-override-args '{"is_matryoshka": true}'
    model_override_args: dict[str, Any] = {}  # merged into --json-model-override-args
    metrics: bool = False  # -> --enable-metrics
    attention_backend: str | None = None  # -> --attention-backend
    quantization: str | None = None  # -> --quantization
    kv_cache_dtype: str | None = None  # -> --kv-cache-dtype
    tp_size: int = 1  # -> --tp-size
    dp_size: int = 1  # -> --dp-size
    gpu_ids: list[int] | None = None  # -> CUDA_VISIBLE_DEVICES
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"  # -> --log-level
    env: dict[str, str] = {}  # extra environment for the SGLang process
    extra_args: list[str] = []  # validated pass-through SGLang flags
    api_key_env: str = "QEMBED_API_KEY"  # name of the env var holding the key
    api_key_file: str | None = None  # path of a file holding the key
    python: str | None = None  # interpreter with SGLang (default: QEMBED_SGLANG_PYTHON, else sys.executable)
    ready_timeout: float = 1800.0  # seconds
    shutdown_timeout: float = 30.0  # seconds

    # -- value checks (messages are completed with key and file by the loader) ---------------

    @pydantic.field_validator("model", "host")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        if v.startswith("-"):
            # SGLang's argparse would read `--model-path --host=0.0.0.0` as a flag, after the spawn
            raise ValueError(f"must not start with `-` (it would reach SGLang as a flag), got {v!r}; "
                             "write a relative path as `./" + v + "`")
        bad = next((c for c in v if ord(c) < 32 or ord(c) == 127), None)
        if bad is not None:
            raise ValueError(f"must not contain a control character (U+{ord(bad):04X}), got {v!r}")
        return v

    @pydantic.field_validator("served_model_name")
    @classmethod
    def _served_name(cls, v: str | None) -> str | None:
        if v is not None:
            if not v.strip():
                raise ValueError("must not be empty")
            if ":" in v:
                # SGLang asserts at resolution, and clients would parse `a:b` as a LoRA adapter.
                raise ValueError(f"must not contain `:` (SGLang rejects it), got {v!r}")
        return v

    @pydantic.field_validator("gpu_products")
    @classmethod
    def _products(cls, v: list[str]) -> list[str]:
        # a label value: at most 63 characters of [A-Za-z0-9-_.], starting and ending alphanumeric
        for item in v:
            if not re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?", item):
                raise ValueError(f"{item!r} is not a Kubernetes label value (GPU Feature Discovery writes "
                                 "the NVML name with `-` for spaces, e.g. `NVIDIA-L4`)")
        return v

    @pydantic.field_validator("port")
    @classmethod
    def _port(cls, v: int) -> int:
        if not 1 <= v <= 65535:
            raise ValueError(f"must be between 1 and 65535, got {v}")
        return v

    @pydantic.field_validator("gpu_memory_fraction")
    @classmethod
    def _fraction(cls, v: float | None) -> float | None:
        if v is not None and not 0.0 < v < 1.0:
            raise ValueError(f"must be strictly between 0 and 1 (a fraction, not a percentage), got {v}")
        return v

    @pydantic.field_validator("chunked_prefill_size")
    @classmethod
    def _chunk(cls, v: int | None) -> int | None:
        if v is not None and v != -1 and v <= 0:
            raise ValueError(f"must be a positive number of tokens, or -1 to disable chunking, got {v}")
        return v

    @pydantic.field_validator("max_running_requests", "max_prefill_tokens", "max_queued_requests", "context_length",
                              "max_total_tokens")
    @classmethod
    def _positive_opt(cls, v: int | None) -> int | None:
        if v is not None and v <= 0:
            raise ValueError(f"must be a positive integer, got {v}")
        return v

    @pydantic.field_validator("tp_size", "dp_size")
    @classmethod
    def _at_least_one(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"must be at least 1, got {v}")
        return v

    @pydantic.field_validator("ready_timeout", "shutdown_timeout")
    @classmethod
    def _positive_seconds(cls, v: float) -> float:
        if v <= 0:
            raise ValueError(f"must be a positive number of seconds, got {v}")
        return v

    @pydantic.field_validator("attention_backend")
    @classmethod
    def _attention(cls, v: str | None) -> str | None:
        return _choice(v, ATTENTION_BACKENDS)

    @pydantic.field_validator("quantization")
    @classmethod
    def _quant(cls, v: str | None) -> str | None:
        return _choice(v, QUANTIZATIONS)

    @pydantic.field_validator("kv_cache_dtype", mode="before")
    @classmethod
    def _kv(cls, v: Any) -> Any:
        if v == "fp8":
            raise ValueError("`fp8` is not a SGLang choice: use `fp8_e4m3` or `fp8_e5m2`")
        return v

    @pydantic.field_validator("kv_cache_dtype")
    @classmethod
    def _kv_choice(cls, v: str | None) -> str | None:
        return _choice(v, KV_CACHE_DTYPES)

    @pydantic.field_validator("dtype", mode="before")
    @classmethod
    def _dtype_alias(cls, v: Any) -> Any:
        if isinstance(v, str) and v.lower() in {"bf16", "fp16", "half", "fp32", "float"}:
            full = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}[v.lower()]
            raise ValueError(f"write `{full}` (SGLang's `--dtype` rejects `{v}` or spells it differently)")
        return v

    @pydantic.field_validator("log_level", mode="before")
    @classmethod
    def _log_level(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v

    @pydantic.field_validator("gpu_ids")
    @classmethod
    def _gpu_ids(cls, v: list[int] | None) -> list[int] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("must list at least one GPU index (leave it out to use every visible GPU)")
        if any(i < 0 for i in v):
            raise ValueError(f"GPU indices must be >= 0, got {v}")
        if len(set(v)) != len(v):
            raise ValueError(f"lists a GPU twice: {v}")
        return v

    @pydantic.field_validator("env", mode="before")
    @classmethod
    def _env_values(cls, v: Any) -> Any:
        if not isinstance(v, Mapping):
            return v
        out: dict[Any, Any] = {}
        for k, val in v.items():
            if isinstance(val, bool):
                raise ValueError(f"value of `{k}` is a YAML boolean; quote it (`\"1\"`, `\"true\"`)")
            out[k] = str(val) if isinstance(val, int | float) else val
        return out

    @pydantic.field_validator("env")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        for k in v:
            if not _ENV_NAME.match(k):
                raise ValueError(f"`{k}` is not a valid environment variable name")
        return v

    @pydantic.field_validator("model_override_args")
    @classmethod
    def _json_only(cls, v: dict[str, Any]) -> dict[str, Any]:
        problem = _json_problem(v, "model_override_args", 0)
        if problem:
            raise ValueError(problem)
        return v

    @pydantic.field_validator("extra_args", mode="before")
    @classmethod
    def _extra_args_str(cls, v: Any) -> Any:
        # `--set extra_args="--disable-radix-cache --tokenizer-worker-num 2"` arrives as a string.
        if isinstance(v, str):
            return shlex.split(v)
        if isinstance(v, list):
            return [str(x) if isinstance(x, int | float) and not isinstance(x, bool) else x for x in v]
        return v

    @pydantic.field_validator("extra_args")
    @classmethod
    def _extra_args(cls, v: list[str]) -> list[str]:
        from qembed.serving.flags import check_extra_args

        problem = check_extra_args(v)
        if problem:
            raise ValueError(problem)
        return v

    @pydantic.field_validator("api_key_env")
    @classmethod
    def _api_key_env(cls, v: str) -> str:
        if not _ENV_NAME.match(v):
            raise ValueError(
                f"must be the *name* of an environment variable (e.g. `QEMBED_API_KEY`), got {_redact_maybe(v)!r}"
            )
        return v

    @pydantic.model_validator(mode="after")
    def _cross_checks(self) -> Profile:
        if self.gpu_ids is not None and self.tp_size * self.dp_size > len(self.gpu_ids):
            raise ValueError(
                f"`tp_size` x `dp_size` = {self.tp_size * self.dp_size} GPUs, but `gpu_ids` lists "
                f"{len(self.gpu_ids)} ({self.gpu_ids})"
            )
        if self.gpu_ids is not None and "CUDA_VISIBLE_DEVICES" in self.env:
            raise ValueError("`gpu_ids` and `env.CUDA_VISIBLE_DEVICES` are both set; keep only `gpu_ids`")
        if self.api_key_env in self.env:
            raise ValueError(
                f"`env.{self.api_key_env}` would store the API key in the profile; set it in your "
                "shell or use `api_key_file`"
            )
        return self


def engine_name(profile: Profile | None, *, capital: bool = False) -> str:
    """The engine a profile runs, as every message names it: ``SGLang``, or ``the reference
    engine`` (``engine: reference``, ``--profile cpu``). ``capital``: to start a sentence.
    The one place the name comes from (phases, failures, the ready block, the stop line)."""
    name = "the reference engine" if profile is not None and profile.engine == "reference" else "SGLang"
    return name[:1].upper() + name[1:] if capital else name


def _choice(v: str | None, choices: Sequence[str]) -> str | None:
    if v is None or v in choices:
        return v
    close = difflib.get_close_matches(v, choices, n=1)
    extra = f" (did you mean `{close[0]}`?)" if close else ""
    raise ValueError(f"`{v}` is not one of SGLang's choices{extra}: {', '.join(choices)}")


def _json_problem(v: Any, where: str, depth: int) -> str | None:
    """Why ``v`` cannot go into ``--json-model-override-args`` (JSON types, finite numbers)."""
    if depth > MAX_DEPTH:
        return f"`{where}` is nested more than {MAX_DEPTH} levels deep"
    if v is None or isinstance(v, bool | int | str):
        return None
    if isinstance(v, float):
        return None if math.isfinite(v) else f"`{where}` is {v}; JSON has no NaN or infinity"
    if isinstance(v, list):
        for i, item in enumerate(v):
            problem = _json_problem(item, f"{where}[{i}]", depth + 1)
            if problem:
                return problem
        return None
    if isinstance(v, dict):
        for k, item in v.items():
            if not isinstance(k, str):
                return f"`{where}` has a key that is not a string: {k!r}"
            problem = _json_problem(item, f"{where}.{k}", depth + 1)
            if problem:
                return problem
        return None
    return f"`{where}` holds a {type(v).__name__}, which JSON cannot carry (quote it)"


def _redact_maybe(v: str) -> str:
    return v if len(v) < 12 else v[:3] + REDACTED


#: Every profile key, in the order of :class:`Profile`'s fields.
FIELDS: tuple[str, ...] = tuple(Profile.model_fields)


__all__ = [
    "ATTENTION_BACKENDS",
    "FIELDS",
    "KV_CACHE_DTYPES",
    "QUANTIZATIONS",
    "Profile",
    "engine_name",
]
