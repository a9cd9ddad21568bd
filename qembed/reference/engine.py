"""The reference engine: the Qwen3-Embedding model card's own recipe, run in this process.

This is what ``qembed verify`` compares a server with, and what ``qembed serve --profile cpu``
serves. It is sentence-transformers loading the model directory as the model card does:

* ``prompts`` from the model's ``config_sentence_transformers.json`` (``query`` is the
  retrieval instruction ``Instruct: {task}\\nQuery:``; documents get none);
* last-token pooling (``1_Pooling/config.json``) and ``Normalize``;
* Matryoshka: truncate, then renormalise (:func:`qembed.vectors.truncate`). sentence-transformers'
  own ``truncate_dim`` does *not* renormalise, so it is not used.

fp32 by default, on CPU or a GPU. For diagnosis, :meth:`ReferenceEngine.embed_ids` runs one
token sequence at a time without padding (as a server does) with last-token, mean or
first-token pooling, in fp32, fp16 or bf16.

Needs the ``verify`` extra (``pip install 'qembed[verify]'``: sentence-transformers, which
pulls torch and transformers). Nothing heavy is imported at module level.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

from qembed.errors import ConfigError, MissingDependency

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "Qwen/Qwen3-Embedding-0.6B"
INSTALL_HINT = "install the reference engine: `pip install 'qembed[verify]'` (sentence-transformers, torch)"

Pooling = Literal["last", "mean", "first"]
Precision = Literal["float32", "float16", "bfloat16"]


def _import_st() -> Any:
    try:
        import sentence_transformers
        import torch  # noqa: F401
    except ImportError as exc:
        raise MissingDependency(f"the reference engine needs sentence-transformers ({exc})",
                                hint=INSTALL_HINT) from exc
    return sentence_transformers


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """No progress bars while loading (they would land in logs and test output)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


class ReferenceEngine:
    """The model card's recipe, loaded once.

    Args:
        model: HF id or local directory laid out as a sentence-transformers model.
        device: ``cpu``, ``cuda``, ``cuda:1`` ... (default ``cpu``).
        threads: torch intra-op threads on CPU (default: torch's own choice).

    Raises:
        MissingDependency: sentence-transformers / torch are not installed.
        ConfigError: the model cannot be loaded (not found, offline, not an embedding model).
    """

    def __init__(self, model: str = DEFAULT_MODEL, *, device: str = "cpu", threads: int | None = None) -> None:
        from qembed.hub import check_available

        check_available(model)  # in seconds, not after a minute of Hub retries (issue 23)
        st_mod = _import_st()
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.model_name = model
        self.device = device
        try:
            with _quiet_loading():
                self.st: Any = st_mod.SentenceTransformer(
                    model, device=device, model_kwargs={"dtype": torch.float32})
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ConfigError(
                f"could not load the reference model `{model}`: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                hint="pass `--model` with a local model directory or an HF id this machine can "
                "download (HF_HUB_OFFLINE=1 needs it in the HF cache)",
            ) from exc
        self.st.eval()
        self.dim = int(self.st.get_embedding_dimension() or 0)
        self.prompts: dict[str, str] = dict(self.st.prompts or {})
        self.tokenizer: Any = self.st.tokenizer
        self.vocab_size = len(self.tokenizer)
        self.hf_model: Any = self.st[0].auto_model
        config = self.hf_model.config
        self.context_length = int(getattr(config, "max_position_embeddings", 0) or 32768)
        # sentence_bert_config.json may cap inputs below the context (e.g. 8192) and ST would then
        # cut longer texts silently; a server refuses them instead, so never truncate here.
        self.st.max_seq_length = max(int(self.st.max_seq_length or 0), self.context_length)
        self.lock = threading.Lock()  # one forward at a time (torch uses all threads anyway)
        # A fast tokenizer is not safe across threads while another call pads (encode): token
        # counting (a server's event loop) gets its own copy and lock.
        import copy

        self._count_tokenizer: Any = copy.deepcopy(self.tokenizer)
        self._count_lock = threading.Lock()
        self._copies: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"ReferenceEngine(model={self.model_name!r}, dim={self.dim}, device={self.device!r})"

    # -- prompts -----------------------------------------------------------------------------

    def query_prompt(self, instruction: str) -> str:
        """The prompt for a query under ``instruction``.

        The model's own ``prompts["query"]`` when it carries that instruction (the retrieval
        default), else the model card's ``Instruct: {task}\\nQuery:``.
        """
        from qembed.instructions import QUERY_TEMPLATE

        own = self.prompts.get("query")
        if own is not None and own == QUERY_TEMPLATE.format(task=instruction, text=""):
            return own
        return QUERY_TEMPLATE.format(task=instruction, text="")

    def document_prompt(self) -> str:
        return self.prompts.get("document") or ""

    # -- the recipe --------------------------------------------------------------------------

    def encode(self, texts: Sequence[str], *, prompt: str | None = None, dimensions: int | None = None,
               batch_size: int = 8) -> npt.NDArray[np.float32]:
        """Unit vectors for ``prompt + text``: sentence-transformers' ``encode`` with
        ``normalize_embeddings=True``; with ``dimensions``, truncated then renormalised."""
        import numpy as np

        from qembed.vectors import truncate

        if not texts:
            return np.zeros((0, dimensions or self.dim), dtype=np.float32)
        with self.lock:
            out = self.st.encode(list(texts), prompt=prompt or None, batch_size=batch_size,
                                 normalize_embeddings=True, convert_to_numpy=True,
                                 show_progress_bar=False)
        vecs: npt.NDArray[np.float32] = np.asarray(out, dtype=np.float32)
        return truncate(vecs, dimensions) if dimensions is not None else vecs

    # -- token level (diagnosis, token-id inputs) --------------------------------------------

    def token_ids(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        """The model's tokenizer, no extra kwargs: its post-processor appends ``<|endoftext|>``."""
        with self._count_lock:
            return list(self._count_tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    def _model_in(self, precision: Precision) -> Any:
        if precision == "float32":
            return self.hf_model
        if precision not in self._copies:
            import copy

            import torch

            self._copies[precision] = copy.deepcopy(self.hf_model).to(getattr(torch, precision)).eval()
        return self._copies[precision]

    def embed_ids(self, ids: Sequence[int], *, pooling: Pooling = "last",
                  precision: Precision = "float32") -> npt.NDArray[np.float32]:
        """One sequence, no padding (as a server runs it): pooled, L2-normalised, float32."""
        import numpy as np
        import torch
        import torch.nn.functional as F

        with self.lock, torch.inference_mode():
            model = self._model_in(precision)
            x = torch.tensor([list(ids)], dtype=torch.long, device=model.device)
            hidden = model(input_ids=x).last_hidden_state[0]
            pooled = hidden.mean(dim=0) if pooling == "mean" else hidden[0] if pooling == "first" else hidden[-1]
            vec = F.normalize(pooled.float(), p=2, dim=0)
            result: npt.NDArray[np.float32] = vec.cpu().numpy().astype(np.float32)
        return result


__all__ = ["DEFAULT_MODEL", "INSTALL_HINT", "ReferenceEngine"]
