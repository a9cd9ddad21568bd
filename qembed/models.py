"""Model shapes (layers, heads, hidden size), FLOPs per token, and the GPU memory-fit estimate.

Shapes come from the model's own ``config.json`` when it is on disk (a local directory or the
Hugging Face cache), else from the table of known Qwen3-Embedding shapes below.

The memory arithmetic follows what SGLang 0.5.23 does at launch:

* ``--mem-fraction-static`` left unset is worked out by
  ``sglang/srt/arg_groups/memory_hook.py:handle_gpu_memory_settings`` (see :func:`auto_mem_fraction`);
* the KV pool is ``free memory before load x mem_fraction - weights``
  (``sglang/srt/mem_cache/kv_cache_configurator.py:_profile_available_bytes``: the pool gets what is
  free after loading minus ``pre_model_load_memory * (1 - mem_fraction_static)``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MiB = 1024**2  #: the byte units every module uses (gpu, doctor, deploy import them from here)
GiB = 1024**3


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a decoder that memory and FLOPs depend on."""

    name: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    tie_word_embeddings: bool

    @property
    def params(self) -> int:
        """Parameters of the embedding checkpoint (embedding table + decoder layers + norms).

        Qwen3-Embedding checkpoints carry no LM head, so the table counts once.
        """
        h, d = self.hidden_size, self.head_dim
        q = self.num_heads * d
        kv = self.num_kv_heads * d
        attn = h * q + 2 * h * kv + q * h + 2 * d  # q, k, v, o projections + q/k RMSNorm
        mlp = 3 * h * self.intermediate_size  # gate, up, down (SwiGLU)
        norms = 2 * h  # input + post-attention RMSNorm
        return self.vocab_size * h + self.num_layers * (attn + mlp + norms) + h

    @property
    def loaded_params(self) -> int:
        """Parameters SGLang allocates on the GPU.

        With ``tie_word_embeddings: false`` SGLang's ``Qwen3ForCausalLM`` still builds a
        ``ParallelLMHead`` (``srt/models/qwen3.py:579-591``), even though embeddings never use it.
        """
        extra = 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size
        return self.params + extra

    def kv_bytes_per_token(self, dtype_bytes: int, *, tp_size: int = 1) -> int:
        """KV cache bytes per token on one GPU: layers x KV heads x head_dim x 2 (K and V) x bytes."""
        kv_heads = max(1, math.ceil(self.num_kv_heads / max(1, tp_size)))
        return self.num_layers * kv_heads * self.head_dim * 2 * dtype_bytes


# Sources: Qwen3-Embedding README model table (layers, dims, 32K context), the config.json copies
# of Qwen3-Embedding-0.6B (vocab 151669, 16 q heads, 8 KV heads, MLP 3072, tied), the 4B config
# quoted in the performance reference (36 layers, hidden 2560, 32/8 heads, MLP 9728, vocab 151665,
# tied, 4.02B params) and the 8B shape (36 layers, hidden 4096, 32/8 heads, MLP 12288, vocab 151665;
# 7.57B params per mteb, which means no LM head in the checkpoint; the config says untied).
KNOWN_SHAPES: dict[str, ModelShape] = {
    s.name: s
    for s in (
        ModelShape("Qwen/Qwen3-Embedding-0.6B", 1024, 28, 16, 8, 128, 3072, 151669, 32768, True),
        ModelShape("Qwen/Qwen3-Embedding-4B", 2560, 36, 32, 8, 128, 9728, 151665, 32768, True),
        ModelShape("Qwen/Qwen3-Embedding-8B", 4096, 36, 32, 8, 128, 12288, 151665, 32768, False),
    )
}


# -- FLOPs per token (``qembed bench``'s MFU) ---------------------------------------------------


def matmul_params(shape: ModelShape) -> int:
    """Parameters that take part in a matmul per token (the embedding table is a lookup).

    Per layer: q ``h x heads*d``, k and v ``h x kv*d`` each, o ``heads*d x h``, SwiGLU MLP ``3 x h x mlp``.
    """
    h, d = shape.hidden_size, shape.head_dim
    q = shape.num_heads * d
    kv = shape.num_kv_heads * d
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * shape.intermediate_size
    return shape.num_layers * per_layer


def flops_per_token(shape: ModelShape, ctx: float) -> float:
    """``2 x matmul params + 4 x layers x ctx x head_dim x heads`` (performance.md section 2.1).

    ``ctx`` is the input length (the PaLM MFU convention; causal attention really does about
    half of the second term).
    """
    attention = 4 * shape.num_layers * ctx * shape.head_dim * shape.num_heads
    return 2.0 * matmul_params(shape) + attention


def mfu(tokens_per_s: float, flops_per_tok: float, peak_tflops: float) -> float:
    """Model FLOPs utilisation as a fraction (0.5 = 50 %); the peak comes from
    :func:`qembed.serving.gpu.gpu_peak`."""
    return tokens_per_s * flops_per_tok / (peak_tflops * 1e12)


def hf_hub_cache(environ: Mapping[str, str] | None = None) -> Path:
    """The HF hub cache directory (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else the default)."""
    env = os.environ if environ is None else environ
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"])
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]) / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def hf_snapshot_dir(repo_id: str, environ: Mapping[str, str] | None = None) -> Path | None:
    """Newest snapshot dir of a Hub repo in the local HF cache (the one holding config.json)."""
    if "/" not in repo_id or os.path.isabs(repo_id):
        return None
    repo_dir = hf_hub_cache(environ) / ("models--" + repo_id.replace("/", "--"))
    snaps = repo_dir / "snapshots"
    if not snaps.is_dir():
        return None
    candidates = [p for p in snaps.iterdir() if (p / "config.json").is_file()]
    if not candidates:
        return None
    return max(candidates, key=lambda p: (p / "config.json").stat().st_mtime)


def model_dir(model: str, environ: Mapping[str, str] | None = None) -> Path | None:
    """The directory that holds the model files: a local dir, or the newest HF cache snapshot
    (in the cache ``environ`` names; default this process's)."""
    p = Path(model).expanduser()
    if p.is_dir():
        return p
    return hf_snapshot_dir(model, environ)


def find_model_config(model: str) -> dict[str, Any] | None:
    """``config.json`` of a local model dir or of the newest HF cache snapshot, else ``None``.

    Args:
        model: a local directory or a Hub id such as ``Qwen/Qwen3-Embedding-4B``.

    Returns:
        The parsed JSON, or ``None`` when no readable config.json exists locally.

    Example:
        >>> find_model_config("/nonexistent") is None
        True
    """
    d = model_dir(model)
    if d is None:
        return None
    try:
        data = json.loads((d / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def shape_from_config(name: str, cfg: dict[str, Any]) -> ModelShape | None:
    """A :class:`ModelShape` from a HF config dict; ``None`` when a needed key is missing."""
    try:
        hidden = int(cfg["hidden_size"])
        heads = int(cfg["num_attention_heads"])
        return ModelShape(
            name=name,
            hidden_size=hidden,
            num_layers=int(cfg["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or hidden // heads),
            intermediate_size=int(cfg["intermediate_size"]),
            vocab_size=int(cfg["vocab_size"]),
            max_position_embeddings=int(cfg.get("max_position_embeddings") or 32768),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        )
    except (KeyError, TypeError, ValueError):
        return None


def known_shape(model: str) -> ModelShape | None:
    """The known Qwen3-Embedding shape whose name ends like ``model`` (case-insensitive)."""
    tail = model.rstrip("/").split("/")[-1].lower()
    for name, shape in KNOWN_SHAPES.items():
        if name.lower() == model.lower() or name.split("/")[-1].lower() == tail:
            return shape
    return None


def model_shape(model: str) -> ModelShape | None:
    """Shape from the local config.json when there is one, else the known Qwen3-Embedding table."""
    cfg = find_model_config(model)
    if cfg is not None:
        shape = shape_from_config(model, cfg)
        if shape is not None:
            return shape
    return known_shape(model)


# -- SGLang's own defaults (memory_hook.py) ---------------------------------------------------


def default_chunked_prefill(gpu_mem_mib: float | None) -> int:
    """SGLang's auto ``--chunked-prefill-size`` by GPU memory (``memory_hook.py:89-178``)."""
    if gpu_mem_mib is None:
        return 4096
    if gpu_mem_mib < 20 * 1024:
        return 2048
    if gpu_mem_mib < 60 * 1024:
        return 4096
    if gpu_mem_mib < 160 * 1024:
        return 8192
    return 16384


def _default_decode_max_bs(gpu_mem_mib: float, tp_size: int) -> int:
    # memory_hook.py:89-178 (decode cuda_graph max_bs, still counted for embedding models)
    if gpu_mem_mib < 20 * 1024:
        return 8
    if gpu_mem_mib < 35 * 1024:
        return 48 if tp_size < 4 else 160
    if gpu_mem_mib < 60 * 1024:
        return 32 if tp_size < 4 else 160
    if gpu_mem_mib < 160 * 1024:
        return 256 if tp_size < 4 else 512
    return 512


def _prefill_graph_sizes(max_bs: int) -> int:
    # cuda_graph_hook.py:480-497 generate_prefill_cuda_graph_batch_sizes
    sizes = (
        list(range(4, 33, 4))
        + list(range(48, 257, 16))
        + list(range(288, 513, 32))
        + list(range(576, 1024 + 1, 64))
        + list(range(1280, 4096 + 1, 256))
        + list(range(4608, max_bs + 1, 512))
    )
    return len([s for s in sizes if s <= max_bs])


def auto_reserved_mib(gpu_mem_mib: float, *, chunked_prefill_size: int | None = None,
                      tp_size: int = 1, pp_size: int = 1) -> float:
    """MiB SGLang keeps outside ``--mem-fraction-static`` when it picks the fraction itself.

    ``memory_hook.py:281-343`` (eager sizing; ``SGLANG_ENABLE_POST_CAPTURE_KV_SIZING`` is off by
    default): ``512 + 1.5 x max(chunked_prefill, 2048) + tp x pp / 8 x 1024 + graph reserve``,
    floored at 10 GiB on GPUs over 60 GB. Graph reserve (``reserve_for_graph_mb``): decode
    ``max_bs x 2`` plus ``8`` per captured prefill size (breakable CUDA graph, the CUDA default).
    """
    chunk = chunked_prefill_size or default_chunked_prefill(gpu_mem_mib)
    activation_tokens = max(chunk, 2048) if chunk > 0 else 16384  # max_prefill_tokens default
    reserved = 512 + activation_tokens * 1.5 + tp_size * pp_size / 8 * 1024
    graph = _default_decode_max_bs(gpu_mem_mib, tp_size) * 2
    if chunk > 0:
        graph += _prefill_graph_sizes(chunk) * 8
    reserved += graph
    if gpu_mem_mib > 60 * 1024:
        reserved = max(reserved, 10 * 1024)
    return reserved


def auto_mem_fraction(gpu_total_bytes: int, *, chunked_prefill_size: int | None = None,
                      tp_size: int = 1) -> float:
    """SGLang's auto ``--mem-fraction-static``: ``round((gpu_mem - reserved) / gpu_mem, 3)``."""
    gpu_mem = gpu_total_bytes / MiB
    reserved = auto_reserved_mib(gpu_mem, chunked_prefill_size=chunked_prefill_size, tp_size=tp_size)
    return round((gpu_mem - reserved) / gpu_mem, 3)


@dataclass(frozen=True)
class MemoryFit:
    """What fits on one GPU. Byte counts are per GPU (weights and KV heads split by ``tp_size``)."""

    weights_bytes: int
    kv_bytes_per_token: int
    pool_bytes: int  # may be negative: the weights alone overflow the static budget
    pool_tokens: int
    full_context_requests: int
    fits: bool
    note: str
    mem_fraction: float = 0.0  # the fraction used (the profile's, or SGLang's auto value)
    mem_fraction_is_auto: bool = False
    context_length: int = 0
    chunked_prefill_size: int = 0
    suggestions: tuple[str, ...] = field(default=())

    @property
    def starts(self) -> bool:
        """SGLang would start: the pool holds at least :data:`MIN_POOL_TOKENS` (or one context,
        if shorter). Below one full context it only warns (``KV pool holds N tokens, fewer than
        --context-length``, ``tp_worker.py:558-567``) and refuses long inputs at serving time."""
        return self.pool_bytes > 0 and self.pool_tokens >= min(MIN_POOL_TOKENS, self.context_length)


#: The smallest pool worth starting a server for: SGLang's smallest auto chunked-prefill size.
MIN_POOL_TOKENS = 2048


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def estimate_fit(
    shape: ModelShape,
    *,
    dtype_bytes: int,
    gpu_total_bytes: int,
    mem_fraction: float | None,
    context_length: int | None,
    chunked_prefill_size: int | None = None,
    tp_size: int = 1,
    gpu_free_bytes: int | None = None,
    kv_dtype_bytes: int | None = None,
) -> MemoryFit:
    """Estimate the KV pool SGLang will build, and whether one full-context request fits.

    Args:
        shape: the model shape (:func:`model_shape`).
        dtype_bytes: bytes per weight (2 for bf16/fp16, 4 for fp32).
        gpu_total_bytes: total memory of one GPU (what ``nvidia-smi`` reports).
        mem_fraction: the profile's ``gpu_memory_fraction``; ``None`` = SGLang's auto value.
        context_length: the profile's ``context_length``; ``None`` = the model's maximum.
        chunked_prefill_size: the profile's value; ``None`` = SGLang's default for this GPU size.
        tp_size: tensor-parallel width (weights and KV heads are split across GPUs).
        gpu_free_bytes: free memory now, when known (SGLang sizes the pool from free memory,
            so memory held by other processes shrinks it).
        kv_dtype_bytes: bytes per KV element (1 for fp8 KV cache); default ``dtype_bytes``.

    Returns:
        A :class:`MemoryFit`; ``fits`` is False when the pool is empty or smaller than one
        full context. ``suggestions`` name profile keys and values that would fit.

    Example:
        >>> fit = estimate_fit(KNOWN_SHAPES["Qwen/Qwen3-Embedding-4B"], dtype_bytes=2,
        ...                    gpu_total_bytes=80 * GiB, mem_fraction=0.85, context_length=None)
        >>> fit.kv_bytes_per_token
        147456
    """
    tp = max(1, tp_size)
    gpu_mem_mib = gpu_total_bytes / MiB
    chunk = chunked_prefill_size if chunked_prefill_size is not None else default_chunked_prefill(gpu_mem_mib)
    is_auto = mem_fraction is None
    frac = (
        auto_mem_fraction(gpu_total_bytes, chunked_prefill_size=chunk, tp_size=tp)
        if mem_fraction is None
        else float(mem_fraction)
    )
    ctx = context_length or shape.max_position_embeddings
    weights = math.ceil(shape.loaded_params * dtype_bytes / tp)
    kv_tok = shape.kv_bytes_per_token(kv_dtype_bytes or dtype_bytes, tp_size=tp)
    base = gpu_total_bytes if gpu_free_bytes is None else min(gpu_free_bytes, gpu_total_bytes)
    pool = int(base * frac - weights)
    tokens = pool // kv_tok if pool > 0 else 0
    full = tokens // ctx if ctx > 0 else 0
    fits = pool > 0 and tokens >= ctx
    if pool <= 0:
        note = (f"weights ({_gb(weights)}) exceed the static budget "
                f"({frac:.3f} x {_gb(base)} = {_gb(base * frac)}): no room for the KV cache")
    elif tokens < ctx:
        note = (f"KV pool {_gb(pool)} holds {tokens:,} tokens, fewer than one context of {ctx:,}")
    else:
        note = (f"KV pool {_gb(pool)} holds {tokens:,} tokens = {full:,} full {ctx:,}-token requests")
    suggestions: list[str] = []
    if not fits:
        suggestions = _suggest(shape, weights=weights, kv_tok=kv_tok, base=base, frac=frac,
                               ctx=ctx, tokens=tokens, is_auto=is_auto, chunk=chunk,
                               gpu_total_bytes=gpu_total_bytes, tp=tp)
    return MemoryFit(
        weights_bytes=weights,
        kv_bytes_per_token=kv_tok,
        pool_bytes=pool,
        pool_tokens=tokens,
        full_context_requests=full,
        fits=fits,
        note=note,
        mem_fraction=frac,
        mem_fraction_is_auto=is_auto,
        context_length=ctx,
        chunked_prefill_size=chunk,
        suggestions=tuple(suggestions),
    )


# Above this SGLang leaves too little for activations and graphs; it is also what the
# launcher treats as the highest sensible `gpu_memory_fraction`.
MAX_SENSIBLE_FRACTION = 0.95


def _suggest(shape: ModelShape, *, weights: int, kv_tok: int, base: int, frac: float, ctx: int,
             tokens: int, is_auto: bool, chunk: int, gpu_total_bytes: int, tp: int) -> list[str]:
    out: list[str] = []
    # 1. a higher fraction that holds one full context
    need = (weights + ctx * kv_tok) / base
    need_r = math.ceil(need * 100) / 100
    if need_r <= MAX_SENSIBLE_FRACTION:
        out.append(f"set `gpu_memory_fraction: {need_r:.2f}` (now {'auto ' if is_auto else ''}{frac:.3f})")
    # 2. a shorter context at the present fraction
    if tokens >= 1024:
        new_ctx = (tokens // 1024) * 1024
        out.append(f"set `context_length: {new_ctx}` (the pool holds {tokens:,} tokens; now {ctx:,})")
    elif need_r > MAX_SENSIBLE_FRACTION:
        # even a 1K context needs this much
        small = math.ceil((weights + 1024 * kv_tok) / base * 100) / 100
        if small <= MAX_SENSIBLE_FRACTION:
            out.append(f"set `context_length: 1024` and `gpu_memory_fraction: {small:.2f}`")
    # 3. with the auto fraction, a smaller prefill chunk frees SGLang's activation reserve
    if is_auto and chunk > 2048:
        f2 = auto_mem_fraction(gpu_total_bytes, chunked_prefill_size=2048, tp_size=tp)
        pool2 = int(base * f2 - weights)
        if pool2 > 0 and pool2 // kv_tok >= ctx:
            out.append(f"set `chunked_prefill_size: 2048` (auto fraction becomes {f2:.3f})")
    if not out:
        out.append(f"the weights alone need {_gb(weights)} per GPU: use a smaller model, "
                   "a GPU with more memory, or raise `tp_size`")
    return out


def dtype_bytes_for(dtype: str | None, sm: int | None = None) -> int:
    """Bytes per weight element for a profile ``dtype`` (``auto`` = the bf16 checkpoint)."""
    return 4 if (dtype or "auto") in ("float32", "float") else 2


def kv_dtype_bytes_for(kv_cache_dtype: str | None, dtype_bytes: int) -> int:
    """Bytes per KV element for a profile ``kv_cache_dtype``."""
    if kv_cache_dtype and kv_cache_dtype.startswith(("fp8", "mxfp8")):
        return 1
    if kv_cache_dtype in ("bf16", "bfloat16"):
        return 2
    return dtype_bytes


__all__ = [
    "KNOWN_SHAPES",
    "MIN_POOL_TOKENS",
    "MemoryFit",
    "ModelShape",
    "auto_mem_fraction",
    "auto_reserved_mib",
    "default_chunked_prefill",
    "dtype_bytes_for",
    "estimate_fit",
    "find_model_config",
    "flops_per_token",
    "hf_snapshot_dir",
    "known_shape",
    "kv_dtype_bytes_for",
    "matmul_params",
    "mfu",
    "model_dir",
    "model_shape",
    "shape_from_config",
]
