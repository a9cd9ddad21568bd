"""Build a tiny, randomly initialised Qwen3-Embedding look-alike on disk, offline, in ~0.1 s.

The recipe is ``../shared/reference/tiny-reference-model.md`` section 2, followed to the letter:

* ``tokenizer.json``: byte-level BPE trained on an inline multilingual corpus, with the
  normalizer / pre-tokenizer / decoder that transformers' ``Qwen2Tokenizer`` hard-codes (NFC,
  the Qwen split regex, ByteLevel), the three Qwen specials *after* the vocab, and a
  ``TemplateProcessing`` post-processor that appends ``<|endoftext|>`` (as the real snapshots do).
* ``tokenizer_config.json`` and ``config.json`` written by hand (not ``save_pretrained``): eos
  ``<|im_end|>`` / pad ``<|endoftext|>`` like the real tokenizer, legacy ``rope_theta`` keys.
* ``model.safetensors``: ``Qwen3Model`` keys without a ``model.`` prefix, filled in sorted-name
  order from ``numpy.random.default_rng(seed)`` (std 0.05; every norm ``1 + 0.1 * N``).
* the sentence-transformers files (prompts, last-token pooling, Normalize).

Only numpy, tokenizers and safetensors are needed: no torch, no transformers, no network.
The same seed gives bit-identical files.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tokenizers import Tokenizer

QWEN_SPLIT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
ENDOFTEXT = "<|endoftext|>"
SPECIALS = (ENDOFTEXT, "<|im_start|>", "<|im_end|>")
DEFAULT_QUERY_PROMPT = (
    "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:"
)

HIDDEN = 64
LAYERS = 2
HEADS = 4
KV_HEADS = 2
HEAD_DIM = 16  # vLLM's CPU attention needs 32 or more: build_tiny_model(head_dim=32) (tests/peers)
INTERMEDIATE = 128
INIT_STD = 0.05
NORM_STD = 0.1
DEFAULT_SEED = 0

# ~5 KB of inline text in several languages plus code, so BPE learns merges for all of them.
CORPUS = """\
The capital of France is Paris. Paris is known for the Eiffel Tower, museums and cafes.
Machine learning models turn text into vectors; similar texts get similar vectors.
A search engine retrieves relevant passages that answer the query of the user.
The quick brown fox jumps over the lazy dog while the cat sleeps in the sun.
Embeddings are normalised to unit length so that the dot product equals the cosine.
Large language models are trained on billions of tokens from books, code and the web.
Water boils at one hundred degrees Celsius at sea level, and freezes at zero degrees.
The history of the Roman Empire spans more than a thousand years of politics and war.
Photosynthesis converts light energy into chemical energy stored in glucose molecules.
Please send the quarterly report to the finance team before Friday afternoon.
北京是中国的首都，也是一座历史悠久的文化名城。机器学习模型把文本变成向量。
今天天气很好，我们去公园散步吧。搜索引擎会返回与查询最相关的段落。
长城是世界上最著名的建筑之一，每年吸引数百万游客前来参观。
La capital de España es Madrid. El aprendizaje automático convierte el texto en vectores.
Me gusta leer libros de historia y escuchar música clásica por la noche.
El motor de búsqueda devuelve los pasajes más relevantes para la consulta del usuario.
القاهرة هي عاصمة مصر، وهي مدينة كبيرة على ضفاف نهر النيل.
التعلم الآلي يحول النصوص إلى متجهات رقمية يمكن مقارنتها بسهولة.
東京は日本の首都です。機械学習はテキストをベクトルに変換します。
桜の季節には多くの人が公園で花見を楽しみます。検索エンジンは関連する文章を返します。
Berlin ist die Hauptstadt von Deutschland. Maschinelles Lernen verwandelt Text in Vektoren.
Москва является столицей России. Машинное обучение превращает текст в векторы.
def last_token_pool(hidden_states, attention_mask):
    left_padding = attention_mask[:, -1].sum() == attention_mask.shape[0]
    if left_padding:
        return hidden_states[:, -1]
    sequence_lengths = attention_mask.sum(dim=1) - 1
    return hidden_states[torch.arange(hidden_states.shape[0]), sequence_lengths]
for i in range(10):
    print(f"value {i}: {i * 2 + 1}")
SELECT id, name FROM users WHERE created_at > '2024-01-01' ORDER BY name;
{"input": ["hello world"], "model": "Qwen/Qwen3-Embedding-4B", "dimensions": 256}
Numbers like 3.14159, 2.71828, 1024, 4096 and 32768 appear in technical documents.
Instruct: Given a web search query, retrieve relevant passages that answer the query
Query: what is the capital of France?
"""


@dataclass(frozen=True)
class TinyModel:
    """A built fixture directory and the facts tests need about it."""

    path: Path
    vocab_size: int  # == len(tokenizer), as in the real checkpoints
    endoftext_id: int  # appended by the post-processor (the real 151643)
    im_end_id: int  # tokenizer.eos_token (the real 151645)
    hidden_size: int
    eos_post_processor: bool
    seed: int
    head_dim: int = HEAD_DIM


def build_tokenizer(*, eos_post_processor: bool = True) -> Tokenizer:
    """Train the fixture's byte-level BPE tokenizer (deterministic)."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(
        models.BPE(
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=4096,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator([CORPUS] * 4, trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    eot = tok.token_to_id(ENDOFTEXT)
    if eos_post_processor:
        tok.post_processor = processors.Sequence(
            [
                processors.ByteLevel(trim_offsets=False),
                processors.TemplateProcessing(
                    single=f"$A:0 {ENDOFTEXT}:0",
                    pair=f"$A:0 {ENDOFTEXT}:0 $B:1 {ENDOFTEXT}:1",
                    special_tokens=[(ENDOFTEXT, eot)],
                ),
            ]
        )
    else:  # an older snapshot: no EOS appended
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def param_shapes(vocab_size: int, head_dim: int = HEAD_DIM) -> dict[str, tuple[int, ...]]:
    """``Qwen3Model`` parameter names (no ``model.`` prefix, no lm_head) and shapes."""
    shapes: dict[str, tuple[int, ...]] = {
        "embed_tokens.weight": (vocab_size, HIDDEN),
        "norm.weight": (HIDDEN,),
    }
    for i in range(LAYERS):
        p = f"layers.{i}."
        shapes |= {
            p + "input_layernorm.weight": (HIDDEN,),
            p + "post_attention_layernorm.weight": (HIDDEN,),
            p + "self_attn.q_proj.weight": (HEADS * head_dim, HIDDEN),
            p + "self_attn.k_proj.weight": (KV_HEADS * head_dim, HIDDEN),
            p + "self_attn.v_proj.weight": (KV_HEADS * head_dim, HIDDEN),
            p + "self_attn.o_proj.weight": (HIDDEN, HEADS * head_dim),
            p + "self_attn.q_norm.weight": (head_dim,),
            p + "self_attn.k_norm.weight": (head_dim,),
            p + "mlp.gate_proj.weight": (INTERMEDIATE, HIDDEN),
            p + "mlp.up_proj.weight": (INTERMEDIATE, HIDDEN),
            p + "mlp.down_proj.weight": (HIDDEN, INTERMEDIATE),
        }
    return shapes


def make_weights(vocab_size: int, seed: int, head_dim: int = HEAD_DIM) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name, shape in sorted(param_shapes(vocab_size, head_dim).items()):
        if name.endswith("norm.weight"):  # not all-ones, so a missing/misplaced norm shows
            arr = 1.0 + NORM_STD * rng.standard_normal(shape)
        else:
            arr = INIT_STD * rng.standard_normal(shape)
        out[name] = np.ascontiguousarray(arr, dtype=np.float32)
    return out


def _write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def build_tiny_model(
    out: Path, *, seed: int = DEFAULT_SEED, eos_post_processor: bool = True,
    head_dim: int = HEAD_DIM,
) -> TinyModel:
    """Write the fixture into ``out`` (created if missing) and describe it.

    ``head_dim`` changes only the attention shapes (and so the weights drawn from the seed):
    vLLM's CPU attention rejects the default 16, so tests/peers serves it a 32 build."""
    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(eos_post_processor=eos_post_processor)
    tok.save(str(out / "tokenizer.json"))
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    found = {t: tok.token_to_id(t) for t in SPECIALS}
    ids = {t: i for t, i in found.items() if i is not None}
    if sorted(ids.values()) != list(range(vocab_size - 3, vocab_size)):
        raise AssertionError(
            f"specials must come after the vocab, got {ids} for vocab {vocab_size}"
        )

    _write_json(
        out / "tokenizer_config.json",
        {
            "add_prefix_space": False,
            "added_tokens_decoder": {
                str(ids[t]): {
                    "content": t,
                    "lstrip": False,
                    "normalized": False,
                    "rstrip": False,
                    "single_word": False,
                    "special": True,
                }
                for t in SPECIALS
            },
            "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
            "bos_token": None,
            "eos_token": "<|im_end|>",
            "pad_token": ENDOFTEXT,
            "unk_token": None,
            "clean_up_tokenization_spaces": False,
            "errors": "replace",
            "model_max_length": 32768,
            "padding_side": "left",
            "split_special_tokens": False,
            "tokenizer_class": "Qwen2Tokenizer",
        },
    )
    _write_json(
        out / "config.json",
        {
            "architectures": ["Qwen3ForCausalLM"],
            "model_type": "qwen3",
            "vocab_size": vocab_size,
            "hidden_size": HIDDEN,
            "intermediate_size": INTERMEDIATE,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": HEADS,
            "num_key_value_heads": KV_HEADS,
            "head_dim": head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-06,
            "rope_theta": 1000000,
            "rope_scaling": None,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "use_sliding_window": False,
            "sliding_window": None,
            "max_window_layers": LAYERS,
            "tie_word_embeddings": True,
            "initializer_range": INIT_STD,
            "bos_token_id": ids[ENDOFTEXT],
            "eos_token_id": ids[ENDOFTEXT],
            "torch_dtype": "float32",
            "use_cache": True,
        },
    )
    weights_path = out / "model.safetensors"
    save_file(make_weights(vocab_size, seed, head_dim), str(weights_path), metadata={"format": "pt"})
    os.chmod(weights_path, 0o644)  # save_file writes 0600 (pitfall 12)

    _write_json(
        out / "config_sentence_transformers.json",
        {
            "prompts": {"query": DEFAULT_QUERY_PROMPT, "document": ""},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
    )
    _write_json(
        out / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {
                "idx": 1,
                "name": "1",
                "path": "1_Pooling",
                "type": "sentence_transformers.models.Pooling",
            },
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            },
        ],
    )
    (out / "1_Pooling").mkdir(exist_ok=True)
    _write_json(
        out / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": HIDDEN,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": False,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": True,
            "include_prompt": True,
        },
    )
    (out / "2_Normalize").mkdir(exist_ok=True)
    _write_json(
        out / "sentence_bert_config.json", {"max_seq_length": 32768, "do_lower_case": False}
    )
    return TinyModel(
        path=out,
        vocab_size=vocab_size,
        endoftext_id=ids[ENDOFTEXT],
        im_end_id=ids["<|im_end|>"],
        hidden_size=HIDDEN,
        eos_post_processor=eos_post_processor,
        seed=seed,
        head_dim=head_dim,
    )


if __name__ == "__main__":  # python -m tests.numerics.tiny_model DIR
    import sys

    built = build_tiny_model(Path(sys.argv[1]))
    print(f"{built.path}: vocab {built.vocab_size}, <|endoftext|> = {built.endoftext_id}")
