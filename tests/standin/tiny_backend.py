"""A stand-in :class:`~tests.standin.server.Backend` that runs the tiny random Qwen3 model.

TEST DOUBLE. It computes what SGLang computes for ``--is-embedding`` with last-token pooling:

* text is tokenized with the model's fast tokenizer, no extra kwargs, so the tokenizer's
  post-processor appends ``<|endoftext|>``;
* token-id inputs are used exactly as given (SGLang appends no EOS to them);
* each sequence runs on its own, without padding (SGLang's ragged batches);
* the pooled vector is the final-norm hidden state of the last token, L2-normalised, full size
  (``dimensions`` truncation + renormalisation is the stand-in server's job).

``mistake=`` switches in one known bug, so tests can prove they fail:
``"no-eos"`` (text tokenized without the EOS), ``"mean"`` (mean pooling instead of last-token),
``"no-renorm"`` (the pooled state is returned without L2 normalisation: right direction,
wrong length), ``"first-token"`` (the first token's state: CLS pooling), ``"bos"``
(``<|endoftext|>`` put before the text, as GGUF conversions with ``add_bos_token`` do),
``"token-limit-512"`` (text cut silently at 512 tokens: the first 511, then the EOS, as a
tokenizer with ``truncation=True, max_length=512`` gives).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from tests.numerics.reference import offline

Mistake = Literal["no-eos", "mean", "no-renorm", "first-token", "bos", "token-limit-512"]
MISTAKES: tuple[Mistake, ...] = ("no-eos", "mean", "no-renorm", "first-token", "bos", "token-limit-512")
TOKEN_LIMIT = 512


class _Loaded:
    """Tokenizer + model + the lock that serialises forward passes across handler threads."""

    def __init__(self, model_dir: Path) -> None:
        with offline():
            import torch
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging

            torch.set_num_threads(2)
            hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
            # no kwargs: add_eos_token= / add_bos_token= would rebuild the post-processor
            self.tokenizer: Any = AutoTokenizer.from_pretrained(str(model_dir))
            self.model: Any = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32).eval()
        self.hidden_size = int(self.model.config.hidden_size)
        self.lock = threading.Lock()


class TinyBackend:
    """Real last-token embeddings from the tiny model in ``model_dir``."""

    def __init__(
        self, model_dir: Path, *, mistake: Mistake | None = None, _loaded: _Loaded | None = None
    ) -> None:
        if mistake is not None and mistake not in MISTAKES:
            raise ValueError(f"unknown mistake {mistake!r}; choose from {MISTAKES}")
        self.model_dir = Path(model_dir)
        self.mistake = mistake
        self._loaded = _loaded or _Loaded(self.model_dir)
        self.dim = self._loaded.hidden_size

    def with_mistake(self, mistake: Mistake | None) -> TinyBackend:
        """Another backend on the same loaded model (no second load)."""
        return TinyBackend(self.model_dir, mistake=mistake, _loaded=self._loaded)

    def token_ids(self, item: str | list[int]) -> list[int]:
        if isinstance(item, list):
            return list(item)  # as SGLang: token ids are used as given, no EOS appended
        add_special = self.mistake != "no-eos"
        ids = list(self._loaded.tokenizer(item, add_special_tokens=add_special)["input_ids"])
        if self.mistake == "bos":
            ids = [int(self._loaded.tokenizer.convert_tokens_to_ids("<|endoftext|>")), *ids]
        elif self.mistake == "token-limit-512" and len(ids) > TOKEN_LIMIT:
            ids = [*ids[: TOKEN_LIMIT - 1], ids[-1]]
        return ids

    def count_tokens(self, item: str | list[int]) -> int:
        return len(self.token_ids(item))

    def embed(self, items: Sequence[str | list[int]]) -> list[list[float]]:
        import torch
        import torch.nn.functional as F

        out: list[list[float]] = []
        with self._loaded.lock, torch.inference_mode():
            for item in items:
                ids = torch.tensor([self.token_ids(item)], dtype=torch.long)
                hidden = self._loaded.model(input_ids=ids).last_hidden_state[
                    0
                ]  # after the final norm
                pooled = (hidden.mean(dim=0) if self.mistake == "mean" else
                          hidden[0] if self.mistake == "first-token" else hidden[-1])
                if self.mistake != "no-renorm":
                    pooled = F.normalize(pooled, p=2, dim=0)
                out.append([float(x) for x in pooled.tolist()])
        return out


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.standin.tiny_backend --model DIR [--port 0] [--mistake M] [--config JSON]``:
    the stand-in server with real tiny-model vectors, in its own process, until killed.

    Prints ``standin listening on HOST:PORT`` on stderr once bound (port 0 = any free port).
    """
    import argparse
    import json
    import sys

    from tests.standin.server import build_server, config_from_json

    p = argparse.ArgumentParser(
        prog="standin-tiny", description="stand-in SGLang server, tiny-model vectors"
    )
    p.add_argument(
        "--model", required=True, type=Path, help="a directory built by tests.numerics.tiny_model"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--mistake", choices=MISTAKES, default=None)
    p.add_argument(
        "--config",
        default="{}",
        help="StandinConfig as JSON (dim and model default to the model's)",
    )
    args = p.parse_args(argv)
    backend = TinyBackend(args.model, mistake=args.mistake)
    raw = json.loads(args.config)
    raw.setdefault("dim", backend.dim)
    raw.setdefault("model", str(args.model))
    server = build_server(
        config_from_json(json.dumps(raw)), backend, host=args.host, port=args.port
    )
    print(
        f"standin listening on {args.host}:{server.server_address[1]}", file=sys.stderr, flush=True
    )
    try:
        server.serve_forever(poll_interval=0.05)
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
