"""Model shapes and the memory-fit arithmetic, checked against hand-computed figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qembed import models
from qembed.models import GiB, MiB

S06 = models.KNOWN_SHAPES["Qwen/Qwen3-Embedding-0.6B"]
S4 = models.KNOWN_SHAPES["Qwen/Qwen3-Embedding-4B"]
S8 = models.KNOWN_SHAPES["Qwen/Qwen3-Embedding-8B"]


def test_param_counts_match_published_sizes() -> None:
    # 4B per layer: q 2560*4096 + k,v 2*2560*1024 + o 4096*2560 + q/k norm 2*128 = 26,214,656
    #               MLP 3*2560*9728 = 74,711,040 ; norms 2*2560 = 5,120 -> 100,930,816
    # 36 layers = 3,633,509,376 ; table 151,665*2560 = 388,262,400 ; final norm 2560
    assert S4.params == 3_633_509_376 + 388_262_400 + 2560 == 4_021_774_336  # "4.02B" (mteb)
    # 0.6B: per layer 1024*2048*2 + 2*1024*1024 + 256 + 3*1024*3072 + 2048 = 15,730,944
    # 28 layers = 440,466,432 ; table 151,669*1024 = 155,309,056 ; + 1024
    assert S06.params == 595_776_512  # "595.8M" (mteb)
    # 8B: table 151,665*4096 = 621,219,840 ; per layer 192,946,432 ; x36 = 6,946,071,552 ; + 4096
    assert S8.params == 7_567_295_488  # "7.57B" (mteb)
    # the 8B config is untied: SGLang also allocates a 151,665 x 4096 LM head
    assert S8.loaded_params == 7_567_295_488 + 621_219_840
    assert S4.loaded_params == S4.params


def test_kv_bytes_per_token() -> None:
    assert S4.kv_bytes_per_token(2) == 36 * 8 * 128 * 2 * 2 == 147_456  # 144 KiB
    assert S06.kv_bytes_per_token(2) == 28 * 8 * 128 * 2 * 2 == 114_688
    assert S4.kv_bytes_per_token(1) == 73_728  # fp8 KV cache
    assert S4.kv_bytes_per_token(2, tp_size=2) == 36 * 4 * 128 * 2 * 2


# (shape, GiB, pool bytes, tokens, full 32K requests) at gpu_memory_fraction 0.85:
#   pool = int(GiB * 2**30 * 0.85 - params * 2) ; tokens = pool // kv ; full = tokens // 32768
HAND = [
    # 0.6B: weights 595,776,512*2 = 1,191,553,024 B; kv 114,688 B/token
    (S06, 16, 13_411_335_782, 116_937, 3),  # 14,602,888,806.4 - 1,191,553,024
    (S06, 24, 20_712_780_185, 180_601, 5),  # 21,904,333,209.6 - 1,191,553,024
    (S06, 40, 35_315_668_992, 307_928, 9),  # 36,507,222,016 - 1,191,553,024
    (S06, 80, 71_822_891_008, 626_245, 19),  # 73,014,444,032 - 1,191,553,024
    # 4B: weights 8,043,548,672 B (7.49 GiB); kv 147,456 B/token (performance.md §2.4 table)
    (S4, 16, 6_559_340_134, 44_483, 1),  # 44.5k tokens
    (S4, 24, 13_860_784_537, 93_999, 2),  # 94.0k
    (S4, 40, 28_463_673_344, 193_031, 5),  # 193.0k
    (S4, 80, 64_970_895_360, 440_612, 13),  # 440.6k
    # 8B: weights (7,567,295,488 + 621,219,840 LM head) * 2 = 16,377,030,656 B; kv 147,456
    (S8, 24, 5_527_302_553, 37_484, 1),
    (S8, 40, 20_130_191_360, 136_516, 4),
    (S8, 80, 56_637_413_376, 384_097, 11),
]


@pytest.mark.parametrize(("shape", "gib", "pool", "tokens", "full"), HAND,
                         ids=[f"{s.name.split('-')[-1]}-{g}G" for s, g, *_ in HAND])
def test_fit_hand_computed(shape: models.ModelShape, gib: int, pool: int, tokens: int, full: int) -> None:
    fit = models.estimate_fit(shape, dtype_bytes=2, gpu_total_bytes=gib * GiB, mem_fraction=0.85,
                              context_length=None)
    assert fit.pool_bytes == pool
    assert fit.pool_tokens == tokens
    assert fit.full_context_requests == full
    assert fit.fits is True
    assert fit.suggestions == ()


def test_8b_on_16g_does_not_fit_and_says_why() -> None:
    # 16 GiB * 0.85 = 14,602,888,806.4 B < 16,377,030,656 B of weights -> pool -1,774,141,849
    fit = models.estimate_fit(S8, dtype_bytes=2, gpu_total_bytes=16 * GiB, mem_fraction=0.85,
                              context_length=None)
    assert fit.pool_bytes == -1_774_141_849
    assert fit.pool_tokens == 0 and fit.fits is False
    assert "no room for the KV cache" in fit.note
    # (16,377,030,656 + 32768*147,456) / 17,179,869,184 = 1.2345 -> nothing <= 0.95 helps
    assert any("weights alone" in s for s in fit.suggestions)


def test_pool_smaller_than_context_suggests_fraction_and_context() -> None:
    # 4B on 16 GiB at 0.55: 9,448,928,051.2 - 8,043,548,672 = 1,405,379,379 B -> 9,530 tokens
    fit = models.estimate_fit(S4, dtype_bytes=2, gpu_total_bytes=16 * GiB, mem_fraction=0.55,
                              context_length=32768)
    assert fit.pool_tokens == 9_530 and fit.fits is False
    # need (8,043,548,672 + 32768*147,456) / 17,179,869,184 = 0.7494 -> 0.75
    assert "set `gpu_memory_fraction: 0.75` (now 0.550)" in fit.suggestions
    assert "set `context_length: 9216` (the pool holds 9,530 tokens; now 32,768)" in fit.suggestions


def test_free_memory_shrinks_the_pool() -> None:
    # another process holds 30 GB of an 80 GiB card: base 85,899,345,920 - 30e9 = 55,899,345,920
    # pool = int(55,899,345,920 * 0.85 - 8,043,548,672) = 39,470,895,360 -> /147,456 = 267,679.4 tokens
    fit = models.estimate_fit(S4, dtype_bytes=2, gpu_total_bytes=80 * GiB,
                              gpu_free_bytes=80 * GiB - 30 * 10**9, mem_fraction=0.85,
                              context_length=None)
    assert fit.pool_bytes == 39_470_895_360
    assert fit.pool_tokens == 267_679


# SGLang's auto fraction (memory_hook.py:281-343), reserved MiB by hand:
#   512 + 1.5*max(chunk,2048) + tp/8*1024 + decode max_bs*2 + 8*len(prefill capture sizes)
@pytest.mark.parametrize(("total_mib", "reserved", "fraction"), [
    # A100-80GB 81920 MiB: chunk 8192, max_bs 256, 58 prefill sizes: 512+12288+128+512+464 = 13904
    (81920, 13904, 0.830),  # (81920-13904)/81920 = 0.83027
    # H100 81559 MiB: same reserve -> 0.82952
    (81559, 13904, 0.830),
    # A100-40GB 40960 MiB: chunk 4096, max_bs 32, 50 sizes: 512+6144+128+64+400 = 7248 -> 0.82305
    (40960, 7248, 0.823),
    # L4 23034 MiB: chunk 4096, max_bs 48, 50 sizes: 512+6144+128+96+400 = 7280 -> 0.68394
    (23034, 7280, 0.684),
    # T4 15360 MiB: chunk 2048, max_bs 8, 42 sizes: 512+3072+128+16+336 = 4064 -> 0.73542
    (15360, 4064, 0.735),
])
def test_auto_fraction(total_mib: int, reserved: int, fraction: float) -> None:
    assert models.auto_reserved_mib(total_mib) == reserved
    assert models.auto_mem_fraction(total_mib * MiB) == fraction


def test_auto_fraction_floor_on_big_gpus() -> None:
    # 81920 MiB with chunk 2048: 512+3072+128+512+336 = 4560 < 10 GiB floor -> 10240
    assert models.auto_reserved_mib(81920, chunked_prefill_size=2048) == 10240


def test_auto_fraction_used_when_profile_leaves_it_unset() -> None:
    fit = models.estimate_fit(S4, dtype_bytes=2, gpu_total_bytes=81920 * MiB, mem_fraction=None,
                              context_length=8192)
    assert fit.mem_fraction == 0.830 and fit.mem_fraction_is_auto
    assert fit.chunked_prefill_size == 8192
    # int(85,899,345,920 * 0.83 - 8,043,548,672) = 63,252,908,441 -> 428,961 tokens -> 52 x 8192
    assert fit.pool_bytes == 63_252_908_441
    assert fit.full_context_requests == 52


def test_find_model_config_local_dir(tmp_path: Path) -> None:
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"hidden_size": 64, "num_attention_heads": 4,
                                               "num_hidden_layers": 2, "intermediate_size": 128,
                                               "vocab_size": 1000, "num_key_value_heads": 2}))
    assert models.find_model_config(str(d))["hidden_size"] == 64
    shape = models.model_shape(str(d))
    assert shape is not None and shape.head_dim == 16 and shape.num_kv_heads == 2
    assert models.find_model_config(str(tmp_path / "missing")) is None


def test_find_model_config_hf_cache_newest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    snaps = tmp_path / "hub" / "models--Qwen--Qwen3-Embedding-4B" / "snapshots"
    for i, rev in enumerate(("aaa", "bbb")):
        (snaps / rev).mkdir(parents=True)
        cfg = snaps / rev / "config.json"
        cfg.write_text(json.dumps({"rev": rev}))
        os.utime(cfg, (1_000_000 + i, 1_000_000 + i))
    assert models.find_model_config("Qwen/Qwen3-Embedding-4B") == {"rev": "bbb"}
    # HF_HOME/hub is used when HF_HUB_CACHE is unset
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert models.find_model_config("Qwen/Qwen3-Embedding-4B") == {"rev": "bbb"}
    # no config anywhere: the known table answers
    assert models.model_shape("Qwen/Qwen3-Embedding-8B") == S8


def test_known_shapes_are_the_published_ones() -> None:
    assert (S06.num_layers, S06.hidden_size, S06.num_heads, S06.num_kv_heads) == (28, 1024, 16, 8)
    assert (S4.num_layers, S4.hidden_size, S4.num_heads, S4.num_kv_heads, S4.intermediate_size) == (36, 2560, 32, 8, 9728)
    assert (S8.num_layers, S8.hidden_size, S8.intermediate_size) == (36, 4096, 12288)
    assert models.known_shape("/models/Qwen3-Embedding-4B") == S4
