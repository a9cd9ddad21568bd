"""The official Qwen3-Embedding recipe (the model card / QwenLM README), and the comparison rule.

Reference vectors come from plain transformers, exactly as the README computes them:
``AutoTokenizer(padding_side="left")`` + ``AutoModel``, batched with padding, ``last_token_pool``,
``F.normalize``; queries formatted ``Instruct: {task}\\nQuery:{query}``; documents raw; Matryoshka
= truncate first, then normalise. fp32 on CPU, two threads. Nothing here imports qembed: the
reference must not share code with what it checks.

The comparison rule (``../shared/reference/tiny-reference-model.md`` section 5): for every row,
cos >= 1 - 1e-5 and | ||v|| - 1 | <= 1e-4, plus the same row count (order) and dimensions; the
verdict is taken on the minimum over a set of texts of mixed languages and lengths.
"""

from __future__ import annotations

import contextlib
import os
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

COS_TOL = 1e-6  # fp32 noise <= 1.2e-7 (real SGLang on CPU, fp32: 1.0000000); subtlest per-text mistake (EOS twice) 3.5e-4
NORM_TOL = 1e-4
MAX_LENGTH = 8192  # the README's max_length

# The README's default task (also config_sentence_transformers.json prompts["query"]).
RETRIEVAL_TASK = "Given a web search query, retrieve relevant passages that answer the query"


def format_query(task: str, query: str) -> str:
    """The README's ``get_detailed_instruct``: no space after ``Query:``."""
    return f"Instruct: {task}\nQuery:{query}"


def last_token_pool(last_hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Verbatim from the Qwen3-Embedding README."""
    import torch

    left_padding = attention_mask[:, -1].sum() == attention_mask.shape[0]
    if left_padding:
        return last_hidden_states[:, -1]
    sequence_lengths = attention_mask.sum(dim=1) - 1
    batch_size = last_hidden_states.shape[0]
    return last_hidden_states[
        torch.arange(batch_size, device=last_hidden_states.device), sequence_lengths
    ]


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE for the duration of a load, then restored.

    The fixture is a local directory, so nothing should reach the hub; this makes a stray lookup
    fail fast. It is scoped to the load so the setting does not leak into other tests (doctor
    reads HF_HUB_OFFLINE).
    """
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update(dict.fromkeys(saved, "1"))
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Reference:
    """The tokenizer and model loaded once, the README way, in fp32."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        self._cache: dict[tuple[int, tuple[str, ...]], np.ndarray] = {}
        with offline():  # before the first import: huggingface_hub reads it at import time
            import torch
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging

            torch.set_num_threads(2)
            hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
            self.tokenizer: Any = AutoTokenizer.from_pretrained(str(model_dir), padding_side="left")
            model, info = AutoModel.from_pretrained(
                str(model_dir), dtype=torch.float32, output_loading_info=True
            )
        self.model: Any = model.eval()
        self.loading_info: dict[str, Any] = info

    def encode(self, texts: Sequence[str], *, batch_size: int = 8) -> np.ndarray:
        """Unit vectors (float32, shape (n, hidden)) for ``texts`` taken as they are (cached)."""
        key = (batch_size, tuple(texts))
        if key not in self._cache:
            self._cache[key] = self._encode(key[1], batch_size=batch_size)
        return self._cache[key].copy()

    def _encode(self, texts: Sequence[str], *, batch_size: int) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        out: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = list(texts[start : start + batch_size])
                enc = self.tokenizer(
                    batch, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
                )
                hidden = self.model(**enc).last_hidden_state
                emb = F.normalize(last_token_pool(hidden, enc["attention_mask"]), p=2, dim=1)
                out.append(emb.numpy().astype(np.float32))
        return np.concatenate(out, axis=0)

    def encode_queries(self, queries: Sequence[str], *, task: str = RETRIEVAL_TASK) -> np.ndarray:
        return self.encode([format_query(task, q) for q in queries])

    def encode_documents(self, documents: Sequence[str]) -> np.ndarray:
        return self.encode(documents)  # "No need to add instruction for retrieval documents"


def truncate_normalise(vectors: np.ndarray, dims: int) -> np.ndarray:
    """Matryoshka as in examples/qwen3_embedding_transformers.py: truncate, then F.normalize."""
    import torch
    import torch.nn.functional as F

    return F.normalize(
        torch.from_numpy(np.ascontiguousarray(vectors[:, :dims])), p=2, dim=1
    ).numpy()


# -- the comparison rule ---------------------------------------------------------------------


@dataclass
class Comparison:
    """``actual`` vs ``expected``, row by row. ``problems`` is empty when everything matches."""

    label: str
    cos: list[float] = field(default_factory=list)
    norm_err: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def min_cos(self) -> float:
        return min(self.cos) if self.cos else float("nan")

    @property
    def median_cos(self) -> float:
        return statistics.median(self.cos) if self.cos else float("nan")

    @property
    def max_cos(self) -> float:
        return max(self.cos) if self.cos else float("nan")

    @property
    def max_norm_err(self) -> float:
        return max(self.norm_err) if self.norm_err else float("nan")

    def summary(self) -> str:
        return (
            f"{self.label}: n={len(self.cos)} min cos {self.min_cos:.8f} (1-min {1 - self.min_cos:.1e}) "
            f"median {self.median_cos:.8f} max {self.max_cos:.8f} max |norm-1| {self.max_norm_err:.1e}"
            + ("" if self.ok else " -> " + "; ".join(self.problems))
        )


MEASURED: list[Comparison] = []  # every comparison of a test run, for the terminal summary


def compare(
    actual: np.ndarray,
    expected: np.ndarray,
    *,
    label: str = "",
    cos_tol: float = COS_TOL,
    norm_tol: float = NORM_TOL,
) -> Comparison:
    """Apply the rule; never raises, so tests can also assert that a mistake is caught."""
    result = Comparison(label)
    _check(result, np.asarray(actual), np.asarray(expected), cos_tol=cos_tol, norm_tol=norm_tol)
    MEASURED.append(result)
    return result


def _check(
    result: Comparison, actual: np.ndarray, expected: np.ndarray, *, cos_tol: float, norm_tol: float
) -> None:
    if actual.ndim != 2 or expected.ndim != 2:
        result.problems.append(f"not 2-D: {actual.shape} vs {expected.shape}")
        return
    if actual.shape[0] != expected.shape[0]:
        result.problems.append(f"row count {actual.shape[0]} != {expected.shape[0]}")
        return
    if actual.shape[1] != expected.shape[1]:
        result.problems.append(f"dimensions {actual.shape[1]} != {expected.shape[1]}")
        return
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    na = np.linalg.norm(a, axis=1)
    ne = np.linalg.norm(e, axis=1)
    cos = np.sum(a * e, axis=1) / np.maximum(na * ne, 1e-300)
    result.cos = [float(c) for c in cos]
    result.norm_err = [float(abs(n - 1.0)) for n in na]
    if result.min_cos < 1.0 - cos_tol:
        worst = int(np.argmin(cos))
        result.problems.append(f"min cos {result.min_cos:.8f} < {1.0 - cos_tol} (row {worst})")
    if result.max_norm_err > norm_tol:
        worst = int(np.argmax(result.norm_err))
        result.problems.append(
            f"|norm-1| {result.max_norm_err:.3e} > {norm_tol} (row {worst}, norm {na[worst]:.6f})"
        )


def assert_matches(actual: np.ndarray, expected: np.ndarray, *, label: str) -> Comparison:
    result = compare(actual, expected, label=label)
    assert result.ok, result.summary()
    return result


def assert_caught(actual: np.ndarray, expected: np.ndarray, *, label: str) -> Comparison:
    """A deliberate mistake must fail the same rule that the correct vectors pass."""
    result = compare(actual, expected, label=label)
    assert not result.ok, f"mistake NOT caught: {result.summary()}"
    return result
