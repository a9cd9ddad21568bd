"""The tiny model itself: if it does not load like a real Qwen3-Embedding snapshot, or does not
tokenize like one, every other numerics test proves nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from tests.numerics.reference import Reference, assert_matches, offline
from tests.numerics.texts import DOCUMENTS, QUERIES
from tests.numerics.tiny_model import ENDOFTEXT, TinyModel, build_tiny_model

PROBES = [
    *QUERIES,
    *DOCUMENTS,
    "hello world",
    "The Capital",
    " leading space",
    "tabs\tand\nnewlines\r\n",
    "émigré café (NFC: é)",
    "e\u0301migre\u0301 (NFD)",
    "x <|endoftext|> y",
    "🙂 emoji",
    "1234567890",
]


def _digests(path: Path) -> dict[str, str]:
    return {
        str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(path.rglob("*"))
        if f.is_file()
    }


def test_model_loads_cleanly_as_qwen3(reference: Reference, tiny_model: TinyModel) -> None:
    info = reference.loading_info
    assert {k: v for k, v in info.items() if v} == {}, f"loading info not empty: {info}"
    model = reference.model
    assert type(model).__name__ == "Qwen3Model"
    cfg = model.config
    assert (
        cfg.hidden_size,
        cfg.num_hidden_layers,
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.head_dim,
    ) == (64, 2, 4, 2, 16)
    assert cfg.vocab_size == tiny_model.vocab_size == len(reference.tokenizer)
    # Legacy rope_theta must be read (a silent fallback to 10000 costs cos 0.94).
    rope = getattr(cfg, "rope_parameters", None) or {}
    theta = rope.get("rope_theta", getattr(cfg, "rope_theta", None))
    assert theta == 1_000_000


def test_tokenizer_matches_raw_tokenizers_and_appends_endoftext(
    reference: Reference, tiny_model: TinyModel
) -> None:
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(tiny_model.path / "tokenizer.json"))
    tok = reference.tokenizer
    for text in PROBES:
        ids = tok(text)["input_ids"]
        assert ids == raw.encode(text).ids, text
        assert ids[-1] == tiny_model.endoftext_id, text
        assert tok.decode(ids, skip_special_tokens=True) == raw.decode(
            ids, skip_special_tokens=True
        )
        assert tok(text, add_special_tokens=False)["input_ids"] == ids[:-1], text
    assert tok.convert_ids_to_tokens(tiny_model.endoftext_id) == ENDOFTEXT
    # The real split: eos_token is <|im_end|>, pad is <|endoftext|>, and the post-processor
    # appends <|endoftext|> (QwenLM/Qwen3-Embedding#122).
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == tiny_model.im_end_id
    assert tok.pad_token == ENDOFTEXT and tok.pad_token_id == tiny_model.endoftext_id
    assert tok.padding_side == "left"
    assert (
        tok("x <|endoftext|> y")["input_ids"].count(tiny_model.endoftext_id) == 2
    )  # literal special is parsed


def test_build_is_reproducible(tiny_model: TinyModel, tmp_path: Path) -> None:
    again = build_tiny_model(tmp_path / "again")
    assert _digests(again.path) == _digests(tiny_model.path)
    other_seed = build_tiny_model(tmp_path / "seed1", seed=1)
    assert (
        _digests(other_seed.path)["model.safetensors"]
        != _digests(tiny_model.path)["model.safetensors"]
    )


def test_no_eos_variant_models_an_older_snapshot(
    tiny_model: TinyModel, tiny_model_no_eos: TinyModel
) -> None:
    from transformers import AutoTokenizer

    with offline():
        old = AutoTokenizer.from_pretrained(str(tiny_model_no_eos.path))
        new = AutoTokenizer.from_pretrained(str(tiny_model.path))
    for text in PROBES:
        assert old(text)["input_ids"] + [tiny_model.endoftext_id] == new(text)["input_ids"], text
    assert (tiny_model_no_eos.path / "model.safetensors").read_bytes() == (
        tiny_model.path / "model.safetensors"
    ).read_bytes()


def test_fixture_tells_different_texts_apart(reference: Reference) -> None:
    """With a weak fixture (std 0.02) every text looks alike and mistakes hide in the noise."""
    vecs = reference.encode_documents(DOCUMENTS)
    sims = vecs @ vecs.T
    off = sims[~np.eye(len(DOCUMENTS), dtype=bool)]
    assert float(np.median(off)) < 0.6
    assert float(off.max()) < 0.99  # only the two long docs from the same sentence pool come close


def test_reference_is_batch_invariant(reference: Reference) -> None:
    """The README's batched, left-padded recipe equals one sequence at a time without padding
    (what a server runs), within fp32 noise."""
    texts = [*DOCUMENTS, *QUERIES]
    one_by_one = reference.encode(texts, batch_size=1)
    batched = reference.encode(texts, batch_size=8)
    assert_matches(one_by_one, batched, label="reference one-by-one vs batched")
