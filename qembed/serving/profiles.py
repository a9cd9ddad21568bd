"""Deployment profiles: a pydantic :class:`Profile`, YAML loading, ``extends``, overrides, auto pick.

A profile holds every setting of one SGLang server in *user terms* (``gpu_memory_fraction``,
``context_length``); :mod:`qembed.serving.sglang_args` maps each key onto the real SGLang 0.5.23 flag.
Profiles are YAML files: the shipped ones live in ``profiles/`` of the repository and are packaged
into the wheel as ``qembed/_profiles``.

Keys people copy from vLLM, TEI or SGLang's own flag names (``gpu_memory_utilization``,
``max_model_len``, ``mem_fraction_static``) are answered with the qembed key and the SGLang flag
that do the same job, unknown keys with the closest valid key. API keys are never read from a
profile: a profile names the environment variable (``api_key_env``) or the file
(``api_key_file``) that holds the key.

Example:
    >>> from qembed.serving.profiles import load_profile
    >>> p = load_profile("a100", overrides=["port=31000"])   # doctest: +SKIP
    >>> p.name, p.port                                         # doctest: +SKIP
    ('a100-80g', 31000)
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pydantic

from qembed.errors import ProfileError
from qembed.habits import HABIT_KEYS
from qembed.redact import REDACTED, is_secret_name, redact_profile_dump

if TYPE_CHECKING:
    from qembed.serving.gpu import GPUInfo, GPUSnapshot

logger = logging.getLogger(__name__)

DEFAULT_PROFILE = "auto"
#: shipped profile used when no GPU is detected or the GPU has no profile of its own
FALLBACK_PROFILE = "generic"
#: other names for shipped profiles
ALIASES: dict[str, str] = {"a100": "a100-80g", "h100-80g": "h100", "4090": "rtx4090"}

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

# Keys copied from vLLM / TEI / SGLang habits: qembed.habits.HABIT_KEYS (one table with the flags).

# Unknown keys that look like a secret get the API-key answer rather than "closest key".
_SECRET_KEY = re.compile(r"(api[_-]?key|apikey|secret|password|passwd|token|bearer|auth)", re.I)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Bounds on what a profile (or a `--set` value) may be: a YAML text expands to at most
# MAX_NODES values after aliases, nests at most MAX_DEPTH levels and a file is at most MAX_BYTES.
MAX_BYTES = 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 100_000
MAX_ALIASES = 1_000


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
    return v if len(v) < 12 else v[:3] + "[...]"


FIELDS: tuple[str, ...] = tuple(Profile.model_fields)
# Keys a profile file may not set itself.
_LOADER_KEYS = {"name"}
_DICT_KEYS = {"env", "model_override_args"}


#: Keys whose unset value means "SGLang's own rule at launch"; shown as :data:`SGLANG_DECIDES_TEXT`.
SGLANG_DECIDES: frozenset[str] = frozenset({
    "gpu_memory_fraction", "max_running_requests", "chunked_prefill_size", "max_prefill_tokens",
    "max_queued_requests", "context_length", "attention_backend", "quantization", "kv_cache_dtype",
})
SGLANG_DECIDES_TEXT = "(SGLang decides)"


def display_value(key: str, value: Any) -> str:
    """A profile value in words, the same in ``profiles show`` and ``serve --dry-run``.

    ``None`` of a key SGLang sizes itself reads ``(SGLang decides)``; secret-named ``env``
    values are already hidden when the dump came through :func:`redacted_values`.
    """
    if value is None:
        return SGLANG_DECIDES_TEXT if key in SGLANG_DECIDES else "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        import json

        return json.dumps(value) if value else ("{}" if isinstance(value, dict) else "[]")
    return str(value)


def redacted_values(profile: Profile) -> dict[str, Any]:
    """``profile.model_dump(mode="json")`` with secret-named ``env`` values shown as ``[...]``:
    what ``profiles show`` and ``serve --dry-run`` print."""
    return redact_profile_dump(profile.model_dump(mode="json"))


# -- shipped profiles ---------------------------------------------------------------------------


def shipped_dir() -> Path:
    """The directory with the shipped profile YAML files.

    An installed wheel has them as ``qembed/_profiles`` (pyproject force-include); an editable
    checkout has them in the repository's ``profiles/``.
    """
    from importlib import resources

    try:
        packaged = resources.files("qembed") / "_profiles"
        if packaged.is_dir():
            return Path(str(packaged))
    except (ModuleNotFoundError, NotADirectoryError):  # pragma: no cover - exotic loaders
        pass
    return Path(__file__).resolve().parents[2] / "profiles"


def shipped_names() -> list[str]:
    d = shipped_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


@dataclass(frozen=True)
class ProfileSummary:
    name: str
    description: str
    path: Path
    gpu: str = ""
    aliases: tuple[str, ...] = ()


@dataclass
class ResolvedProfile:
    """A loaded profile plus where each value came from (for ``qembed profiles show``)."""

    profile: Profile
    sources: dict[str, str]  # key -> "default", "<name>.yaml", "override", ...
    chain: list[str]  # files read, the profile itself first, then what it extends
    auto_reason: str | None = None  # set when `auto` picked the profile
    requested: str = DEFAULT_PROFILE


def list_profiles() -> list[ProfileSummary]:
    """The shipped profiles, sorted by name (``auto`` included)."""
    out: list[ProfileSummary] = []
    for name in shipped_names():
        path = shipped_dir() / f"{name}.yaml"
        try:
            raw = _resolve_chain(path, label=name)[0]
        except ProfileError:
            raw = {}
        aliases = tuple(sorted(a for a, target in ALIASES.items() if target == name))
        out.append(
            ProfileSummary(
                name=name,
                description=str(raw.get("description", ("", ""))[0] or ""),
                path=path,
                gpu=str(raw.get("gpu", ("", ""))[0] or ""),
                aliases=aliases,
            )
        )
    return out


# -- auto pick ----------------------------------------------------------------------------------


def _pick_one(g: GPUInfo) -> tuple[str, str]:
    from qembed.serving import gpu as gpu_mod

    name, reason = gpu_mod.profile_for(g)
    if name is not None:
        return name, reason
    if g.sm < gpu_mod.MIN_SM:
        return FALLBACK_PROFILE, f"{reason}; using `{FALLBACK_PROFILE}` (run `qembed doctor`)"
    return FALLBACK_PROFILE, (
        f"{reason}; `{FALLBACK_PROFILE}` leaves memory sizing to SGLang's own rules for this GPU"
    )


def pick_auto(gpus: GPUSnapshot | None) -> tuple[str, str]:
    """Pick a shipped profile for the detected GPU.

    Matches the first visible GPU by name (A100/A800, H100/H800, L4, A10/A10G, RTX 4090, T4;
    :data:`qembed.serving.gpu.GPU_CLASSES`), else by memory and compute capability
    (:func:`qembed.serving.gpu.profile_for_memory`: an L40S takes the A100 40GB sizing, a 16 GB sm75
    card the T4's); a GPU no profile fits, and a machine without a usable GPU, get ``generic``,
    which sets no sizing and lets SGLang apply its own rules at launch.

    Args:
        gpus: an NVML snapshot (:func:`qembed.serving.gpu.snapshot`), or ``None`` for "no GPU".

    Returns:
        ``(profile name, one-line reason)``.
    """
    if gpus is None or not gpus.gpus:
        why = f" ({gpus.error})" if gpus is not None and gpus.error else ""
        return FALLBACK_PROFILE, (
            f"no GPU detected{why}; using `{FALLBACK_PROFILE}`, which leaves memory sizing to "
            "SGLang's own rules at launch"
        )
    first = gpus.gpus[0]
    name, reason = _pick_one(first)
    if len(gpus.gpus) > 1:
        names = {g.name for g in gpus.gpus}
        more = "" if len(names) == 1 else " (the GPUs differ; sized for the first)"
        reason += f"; GPU {first.index} of {len(gpus.gpus)}{more}"
    return name, reason


# -- loading ------------------------------------------------------------------------------------


def _closest(key: str, candidates: Sequence[str]) -> str | None:
    norm = key.replace("-", "_").lower()
    if norm in candidates and norm != key:
        return norm
    m = difflib.get_close_matches(norm, candidates, n=1, cutoff=0.6)
    return m[0] if m else None


def _key_error(key: str, where: str) -> ProfileError:
    """The error for a key that is not a profile field."""
    norm = key.replace("-", "_").lower()
    if norm in HABIT_KEYS:
        qkey, use = HABIT_KEYS[norm]
        if norm == "api_key":
            return ProfileError(
                f"`{key}` in {where}: API keys are never stored in a profile",
                hint="export the key as `QEMBED_API_KEY` (or name another variable with "
                "`api_key_env`), or put it in a file and set `api_key_file`",
            )
        return ProfileError(
            f"`{key}` in {where} is not a qembed key (a vLLM/TEI/SGLang habit)",
            hint=f"use {use}" + ("" if qkey is None else "; see docs/profiles.md"),
        )
    close = _closest(key, [f for f in FIELDS if f not in _LOADER_KEYS])
    # `max_prefil_tokens` is a typo, not a secret: only keys close to a token-count key escape.
    if _SECRET_KEY.search(key) and not (close and "tokens" in close):
        return ProfileError(
            f"`{key}` in {where} looks like a secret; secrets are never stored in a profile",
            hint="export the API key as `QEMBED_API_KEY` (or name the variable with `api_key_env`), "
            "or set `api_key_file`",
        )
    hint = f"did you mean `{close}`?" if close else "see `qembed profiles show` for the valid keys"
    return ProfileError(f"unknown key `{key}` in {where}", hint=hint)


class _Unbounded(Exception):
    """A YAML text over one of the bounds (MAX_DEPTH, MAX_NODES, MAX_ALIASES)."""


def _expanded_size(root: Any) -> int:
    """How many values ``root`` (a composed YAML node) becomes once every alias is expanded.

    Memoised per node, so an alias bomb is measured in linear time instead of being built;
    also refuses an expansion deeper than MAX_DEPTH and an alias that contains itself.
    """
    import yaml

    sizes: dict[int, tuple[int, int]] = {}
    active: set[int] = set()

    def walk(node: Any) -> tuple[int, int]:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise _Unbounded("an alias refers to the value that contains it")
        active.add(key)
        count, depth = 1, 1
        if isinstance(node, yaml.SequenceNode):
            children: list[Any] = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        for child in children:
            c, d = walk(child)
            count += c
            depth = max(depth, d + 1)
            if count > MAX_NODES:
                raise _Unbounded(f"it expands to more than {MAX_NODES:,} values (a YAML alias bomb?)")
            if depth > MAX_DEPTH:
                raise _Unbounded(f"it nests more than {MAX_DEPTH} levels deep")
        active.discard(key)
        sizes[key] = (count, depth)
        return count, depth

    return walk(root)[0]


def _loader_class() -> type[Any]:
    import yaml

    class BoundedLoader(yaml.SafeLoader):
        """SafeLoader that stops at MAX_DEPTH levels and MAX_ALIASES aliases while composing."""

        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self._qembed_depth = 0
            self._qembed_aliases = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                self._qembed_aliases += 1
                if self._qembed_aliases > MAX_ALIASES:
                    raise _Unbounded(f"it uses more than {MAX_ALIASES:,} aliases")
                return super().compose_node(parent, index)
            self._qembed_depth += 1
            try:
                if self._qembed_depth > MAX_DEPTH:
                    raise _Unbounded(f"it nests more than {MAX_DEPTH} levels deep")
                return super().compose_node(parent, index)
            finally:
                self._qembed_depth -= 1

    return BoundedLoader


def load_yaml_text(text: str, where: str) -> Any:
    """Parse a YAML text with the bounds every profile and ``--set`` value obeys.

    Refuses, with a :class:`ProfileError` naming ``where``: invalid YAML, more than
    :data:`MAX_DEPTH` levels of nesting, more than :data:`MAX_ALIASES` aliases, and texts that
    expand to more than :data:`MAX_NODES` values (alias bombs), before anything is built.
    """
    import yaml

    loader: Any = None
    try:
        loader = _loader_class()(text)  # the reader already refuses control characters
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node)
        return loader.construct_document(node)
    except _Unbounded as exc:
        raise ProfileError(f"{where} is refused: {exc}",
                           hint=f"profiles nest at most {MAX_DEPTH} levels and expand to at most "
                           f"{MAX_NODES:,} values; remove the repeated aliases") from None
    except yaml.YAMLError as exc:
        marked = exc if isinstance(exc, yaml.MarkedYAMLError) else None
        mark = marked.problem_mark if marked else None
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ProfileError(f"{where} is not valid YAML{at}",
                           details=[str((marked.problem if marked else None) or exc)]) from None
    except RecursionError:
        raise ProfileError(f"{where} is refused: it nests too deeply",
                           hint=f"profiles nest at most {MAX_DEPTH} levels") from None
    finally:
        if loader is not None:
            loader.dispose()


def _read_text(path: Path) -> str:
    """A profile file's text: at most MAX_BYTES, UTF-8. Errors name the file."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except FileNotFoundError as exc:
        raise ProfileError(f"profile file `{path}` does not exist",
                           hint="run `qembed profiles list` for the shipped profiles") from exc
    except IsADirectoryError as exc:
        raise ProfileError(f"profile `{path}` is a directory, not a YAML file") from exc
    except OSError as exc:
        raise ProfileError(f"cannot read profile file `{path}`: {exc.strerror or exc}") from exc
    if len(raw) > MAX_BYTES:
        raise ProfileError(f"profile file `{path}` is larger than {MAX_BYTES // 1024} KiB",
                           hint="a profile is a few lines of YAML; check that this is the right file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProfileError(f"profile file `{path}` is not UTF-8 text (byte {exc.start + 1} is 0x{raw[exc.start]:02x})",
                           hint="save it as UTF-8") from None


def _read_yaml(path: Path, label: str) -> dict[str, Any]:
    text = _read_text(path)
    data = load_yaml_text(text, f"`{path}`")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ProfileError(f"`{path}` must be a YAML mapping of keys to values, not a {type(data).__name__}")
    errors: list[ProfileError] = []
    for key in data:
        if not isinstance(key, str):
            errors.append(ProfileError(f"key `{key}` in `{path}` is not a string"))
        elif key in _LOADER_KEYS:
            errors.append(ProfileError(f"`{key}` in `{path}` is set by the loader (the file name)",
                                       hint=f"remove `{key}`; the profile is named `{label}`"))
        elif key not in FIELDS:
            errors.append(_key_error(key, f"`{path}`"))
    if len(errors) == 1:
        raise errors[0]
    if errors:
        # every bad key at once, each with its own answer
        raise ProfileError(
            f"{len(errors)} keys in `{path}` are not profile keys",
            details=[e.message + (f" ({e.hint})" if e.hint else "") for e in errors],
            hint="fix each of them; `qembed profiles show` lists the valid keys (docs/profiles.md)",
        )
    return data


def _locate(ref: str, *, base: Path | None = None) -> tuple[Path, str]:
    """A profile reference -> (file path, label). Shipped names and aliases first, then paths."""
    name = ALIASES.get(ref, ref)
    is_pathlike = "/" in ref or os.sep in ref or ref.endswith((".yaml", ".yml"))
    if not is_pathlike:
        path = shipped_dir() / f"{name}.yaml"
        if path.is_file():
            return path, name
    candidate = Path(ref).expanduser()
    if base is not None and not candidate.is_absolute():
        candidate = base / candidate
    if candidate.is_file():
        return candidate, candidate.stem
    names = shipped_names() + list(ALIASES)
    hint = "run `qembed profiles list` for the shipped profiles, or pass a YAML file path"
    from qembed.serving import gpu as gpu_mod

    cls = gpu_mod.match_gpu_name(ref)
    same_name = sorted({c.profile for c in gpu_mod.GPU_CLASSES if c.profile and c.label.split()[0] == (cls.label.split()[0] if cls else None)})
    if cls is not None and cls.profile is not None:
        # a GPU that has profiles (`a100-80`): the closest of those, by spelling
        close = difflib.get_close_matches(ref, same_name, n=1, cutoff=0.0)
        hint = f"did you mean `{close[0] if close else cls.profile}`? " + hint
    elif cls is not None:
        # a GPU without a profile: answer by memory and compute capability, never by spelling
        # (`l40s` is no `l4`)
        made_for = gpu_mod.profile_for_memory(cls.memory_gib * 0.95, cls.sm)[0]
        if made_for:
            hint = (f"no profile is named after the {cls.label} ({cls.memory_gib:.0f} GB, sm{cls.sm}); "
                    f"by memory and compute capability it takes `{made_for}`, and `auto` picks it "
                    f"on that GPU; {hint}")
        else:
            hint = f"no shipped profile fits the {cls.label}; use `{FALLBACK_PROFILE}` or `auto`; {hint}"
    else:
        close = difflib.get_close_matches(ref, names, n=1)
        hint = (f"did you mean `{close[0]}`? " if close else "") + hint
    if is_pathlike:
        raise ProfileError(f"profile file `{candidate}` does not exist", hint=hint)
    raise ProfileError(f"unknown profile `{ref}`", hint=hint)


def _resolve_chain(
    path: Path, *, label: str, seen: tuple[Path, ...] = (), labels: tuple[str, ...] = ()
) -> tuple[dict[str, tuple[Any, str]], list[str]]:
    """Read a profile and what it extends -> ({key: (value, source)}, chain of labels)."""
    real = path.resolve()
    if real in seen:
        cycle = " -> ".join((*labels, label))
        raise ProfileError(f"profile `{labels[0]}` extends itself: {cycle}",
                           hint="remove one of the `extends` keys in that chain")
    data = _read_yaml(path, label)
    merged: dict[str, tuple[Any, str]] = {}
    chain = [label]
    parent_ref = data.get("extends")
    if parent_ref is not None:
        if not isinstance(parent_ref, str) or not parent_ref.strip():
            raise ProfileError(f"`extends` in `{path}` must be a profile name or a file path")
        if parent_ref.strip() == DEFAULT_PROFILE:
            raise ProfileError(f"`extends: auto` in `{path}` is not supported",
                               hint="extend a concrete profile, e.g. `extends: a100-80g`")
        ppath, plabel = _locate(parent_ref, base=path.parent)
        merged, pchain = _resolve_chain(ppath, label=plabel, seen=(*seen, real), labels=(*labels, label))
        chain += pchain
    source = f"{label}.yaml" if path.parent == shipped_dir() else str(path)
    for key, value in data.items():
        if key == "extends":
            continue
        if key in _DICT_KEYS and isinstance(value, dict) and key in merged and isinstance(merged[key][0], dict):
            value = {**merged[key][0], **value}
        merged[key] = (value, source)
    return merged, chain


def _parse_overrides(overrides: Sequence[str] | Mapping[str, object]) -> list[tuple[str, Any, str]]:
    """-> [(key, value, text for messages)]. ``key`` may be dotted (``env.FOO``).

    ``KEY=VALUE`` strings (``--set``) are the only values parsed, as YAML, with the bounds of a
    profile file (:func:`load_yaml_text`); a mapping's values are taken as they are.
    """
    out: list[tuple[str, Any, str]] = []
    if isinstance(overrides, Mapping):
        return [(str(k), v, f"{k}={v}") for k, v in overrides.items()]
    for item in overrides:
        if "=" not in item:
            raise ProfileError(f"override `{item}` is not `key=value`",
                               hint="e.g. `--set port=31000` or `--set env.HF_HOME=/data/hf`")
        key, _, text = item.partition("=")
        key = key.strip()
        if key.startswith("env."):
            # Environment values stay strings: YAML would turn `yes` into True and `010` into 8.
            out.append((key, text, item))
            continue
        if len(text) > MAX_BYTES:
            raise ProfileError(f"the value of `--set {key}` is larger than {MAX_BYTES // 1024} KiB")
        try:
            value = load_yaml_text(text, f"the value of `--set {key}`") if text.strip() else None
        except ProfileError as exc:
            if exc.message.endswith("is not valid YAML") or " is not valid YAML at " in exc.message:
                value = text  # not YAML: the text itself (`--set model=/data/run:1`)
            else:
                raise
        out.append((key, value, item))
    return out


def _apply_overrides(values: dict[str, tuple[Any, str]], overrides: Sequence[str] | Mapping[str, object],
                     source: str = "override") -> None:
    for key, value, _text in _parse_overrides(overrides):
        # No value in messages: it may be a secret someone tried to pass (`api_key=...`).
        where = "an override"
        top, _, sub = key.partition(".")
        if top not in FIELDS or top in _LOADER_KEYS or top == "extends":
            if top == "extends":
                raise ProfileError(f"`extends` cannot be overridden ({where})",
                                   hint="pass the other profile with `--profile`")
            raise _key_error(top, where)
        if sub:
            if top not in _DICT_KEYS:
                raise ProfileError(f"`{top}` has no sub-keys ({where})",
                                   hint=f"write `{top}=VALUE`")
            current = values.get(top, ({}, "default"))[0]
            current = dict(current) if isinstance(current, dict) else {}
            current[sub] = value
            values[top] = (current, source)
        else:
            values[top] = (value, source)


def _validate(values: dict[str, tuple[Any, str]], label: str) -> Profile:
    data = {k: v for k, (v, _) in values.items()}
    data["name"] = label
    try:
        return Profile.model_validate(data)
    except pydantic.ValidationError as exc:
        errs = exc.errors()
        first = errs[0]
        key = str(first["loc"][0]) if first["loc"] else ""
        src = values.get(key, (None, "default"))[1] if key else label
        where = {"override": "an override", "option": "a command-line option"}.get(src, f"`{src}`")
        msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        if key:
            got = data.get(key)
            if key == "env" and isinstance(got, Mapping):
                got = redact_profile_dump({"env": got})["env"]
            elif isinstance(got, str) and is_secret_name(key):
                got = REDACTED
            shown = "" if got is None or "got" in msg else f" (got {_short(got)})"
            message = f"invalid `{key}` in {where}: {msg}{shown}"
        else:
            message = f"invalid profile `{label}`: {msg}"
        details = []
        for e in errs[1:]:
            k = ".".join(str(p) for p in e["loc"])
            details.append(f"`{k}`: {str(e.get('msg', '')).removeprefix('Value error, ')}")
        hint = f"fix `{key}` (see docs/profiles.md)" if key else "see docs/profiles.md"
        raise ProfileError(message, hint=hint, details=details) from exc


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:199] + "…"


def resolve_profile(
    ref: str = DEFAULT_PROFILE,
    *,
    overrides: Sequence[str] | Mapping[str, object] = (),
    options: Mapping[str, object] | None = None,
    gpus: GPUSnapshot | None = None,
) -> ResolvedProfile:
    """Like :func:`load_profile`, but also says where each value came from."""
    ref = (ref or DEFAULT_PROFILE).strip()
    auto_reason: str | None = None
    if ref == "auto":
        if gpus is None:
            from qembed.serving import gpu as gpu_mod

            gpus = gpu_mod.snapshot()
        ref, auto_reason = pick_auto(gpus)
    path, label = _locate(ref)
    values, chain = _resolve_chain(path, label=label)
    _apply_overrides(values, overrides)
    _apply_overrides(values, {k: v for k, v in (options or {}).items() if v is not None}, source="option")
    profile = _validate(values, label)
    sources = {k: values[k][1] if k in values else "default" for k in FIELDS}
    sources = {k: ("override" if v == "option" else v) for k, v in sources.items()}
    sources["name"] = "auto" if auto_reason else "loader"
    return ResolvedProfile(profile=profile, sources=sources, chain=chain,
                           auto_reason=auto_reason, requested=ref if auto_reason is None else "auto")


def load_profile(
    ref: str = DEFAULT_PROFILE,
    *,
    overrides: Sequence[str] | Mapping[str, object] = (),
    options: Mapping[str, object] | None = None,
    gpus: GPUSnapshot | None = None,
) -> Profile:
    """Load a profile by shipped name, alias or YAML path, apply ``extends`` and overrides.

    Args:
        ref: a shipped name (``a100-80g``; ``a100`` is an alias), ``auto`` (picks from ``gpus``
            with :func:`pick_auto`), or a path to a YAML file.
        overrides: ``"key=value"`` strings (``--set``: values parsed as bounded YAML,
            ``env.NAME=value`` sets one environment variable as a string), or a mapping of keys
            to values (taken as they are).
        options: typed values applied after ``overrides``, never parsed (``qembed serve
            --model/--port/--host/--python``: ``{"model": "/data/run #3", "port": 31000}``);
            ``None`` values are skipped.
        gpus: the GPU snapshot ``auto`` picks from; ``None`` takes one with
            :func:`qembed.serving.gpu.snapshot` (only when ``ref`` is ``auto``).

    Returns:
        The validated :class:`Profile`; ``name`` is the shipped name or the file stem.

    Raises:
        ProfileError: unknown profile or key, bad value, ``extends`` cycle.

    Example:
        >>> load_profile("l4", overrides=["port=31000", "env.HF_HOME=/data/hf"]).port  # doctest: +SKIP
        31000
    """
    return resolve_profile(ref, overrides=overrides, options=options, gpus=gpus).profile


def resolve_api_key(profile: Profile) -> str | None:
    """The API key: the ``api_key_env`` variable, else the ``api_key_file``; never from YAML.

    Returns ``None`` when neither is set. Surrounding whitespace (a trailing newline) is removed
    by :func:`qembed.net.clean_api_key`, the rule every client applies too.

    Raises:
        ProfileError: ``api_key_file`` is set but missing, unreadable or empty.
        ConfigError: the key holds a control character (named by variable or file, not shown).
    """
    from qembed.net import clean_api_key

    value = clean_api_key(os.environ.get(profile.api_key_env), source=f"`{profile.api_key_env}`")
    if value:
        return value
    if profile.api_key_file:
        path = Path(profile.api_key_file).expanduser()
        try:
            text = clean_api_key(path.read_text(encoding="utf-8"), source=f"`api_key_file` (`{path}`)") or ""
        except FileNotFoundError as exc:
            raise ProfileError(f"API key file `{path}` does not exist",
                               hint=f"create it, fix `api_key_file`, or export `{profile.api_key_env}`") from exc
        except OSError as exc:
            raise ProfileError(f"cannot read API key file `{path}`: {exc.strerror}",
                               hint=f"check its permissions, or export `{profile.api_key_env}`") from exc
        if not text:
            raise ProfileError(f"API key file `{path}` is empty",
                               hint=f"write the key into it, or export `{profile.api_key_env}`")
        return text
    return None


__all__ = [
    "ALIASES",
    "ATTENTION_BACKENDS",
    "DEFAULT_PROFILE",
    "FALLBACK_PROFILE",
    "HABIT_KEYS",
    "KV_CACHE_DTYPES",
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_NODES",
    "QUANTIZATIONS",
    "SGLANG_DECIDES",
    "Profile",
    "ProfileSummary",
    "ResolvedProfile",
    "display_value",
    "engine_name",
    "list_profiles",
    "load_profile",
    "load_yaml_text",
    "pick_auto",
    "redacted_values",
    "resolve_api_key",
    "resolve_profile",
    "shipped_dir",
    "shipped_names",
]
