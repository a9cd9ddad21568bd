"""sentence-transformers on the tiny model: the reference the framework adapters are judged by.

The fixture directory from ``tiny_model.build_tiny_model`` already is a sentence-transformers
model (modules.json, last-token pooling, Normalize, ``prompts`` with the official query prompt),
so this only loads it, offline, on the CPU, in fp32. Nothing here imports qembed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tests.numerics.reference import offline, truncate_normalise


class STReference:
    """``encode_query`` / ``encode_document`` / ``encode(prompt=...)`` as float32 unit rows."""

    def __init__(self, model_dir: Path) -> None:
        with offline():
            import torch
            from sentence_transformers import SentenceTransformer

            torch.set_num_threads(2)
            self.model: Any = SentenceTransformer(str(model_dir), device="cpu")

    def queries(self, texts: Sequence[str], *, dims: int | None = None) -> np.ndarray:
        return self._cut(self.model.encode_query(list(texts), convert_to_numpy=True), dims)

    def documents(self, texts: Sequence[str], *, dims: int | None = None) -> np.ndarray:
        return self._cut(self.model.encode_document(list(texts), convert_to_numpy=True), dims)

    def with_prompt(self, texts: Sequence[str], prompt: str, *, dims: int | None = None) -> np.ndarray:
        return self._cut(self.model.encode(list(texts), prompt=prompt, convert_to_numpy=True), dims)

    @staticmethod
    def _cut(vectors: Any, dims: int | None) -> np.ndarray:
        # ST's truncate_dim keeps the already-normalised head (non-unit rows): the model card
        # truncates, then normalises, so renormalise here.
        arr = np.asarray(vectors, dtype=np.float32)
        return arr if dims is None else truncate_normalise(arr, dims)
