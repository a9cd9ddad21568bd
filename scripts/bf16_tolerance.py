"""Measure what bf16 alone does to Qwen3-Embedding vectors: the basis of `qembed verify`'s bf16 tolerance.

A randomly initialised Qwen3 model of the real 0.6B / 4B / 8B *shape* (layers, hidden size, heads,
MLP; the vocabulary is the tiny test tokenizer's, which does not change the per-token compute) runs
the built-in `qembed verify` texts one sequence at a time in float32 and in bfloat16 on the same
device; the script prints 1 - cos and the norm error per text, and the min / median / max.

    python scripts/bf16_tolerance.py --shape 0.6b --device cuda          # on a GPU (the real question)
    python scripts/bf16_tolerance.py --shape 0.6b --device cpu --max-tokens 200   # what this box can do

Random weights are not trained weights: treat the result as an order of magnitude, and confirm a
tolerance on the real checkpoint with `qembed verify --precision bf16` against a bf16 server.
Needs torch, transformers, tokenizers (the test venv); no network.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

SHAPES = {  # Qwen3-Embedding config.json values (docs/performance.md, the model cards)
    "0.6b": {"hidden_size": 1024, "num_hidden_layers": 28, "num_attention_heads": 16,
             "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 3072},
    "4b": {"hidden_size": 2560, "num_hidden_layers": 36, "num_attention_heads": 32,
           "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 9728},
    "8b": {"hidden_size": 4096, "num_hidden_layers": 36, "num_attention_heads": 32,
           "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 12288},
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="0.6b")
    p.add_argument("--device", default="cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-tokens", type=int, default=None, help="skip texts longer than this")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    import torch
    import torch.nn.functional as F
    from transformers import AutoTokenizer, Qwen3Config, Qwen3Model

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from qembed.fleet.verify_texts import TEXTS
    from qembed.instructions import get_task
    from tests.numerics.tiny_model import build_tiny_model

    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tiny = build_tiny_model(Path(tmp))
        tok = AutoTokenizer.from_pretrained(str(tiny.path))
    cfg = Qwen3Config(vocab_size=tiny.vocab_size, max_position_embeddings=32768, rms_norm_eps=1e-6,
                      tie_word_embeddings=True, **SHAPES[args.shape])
    model32 = Qwen3Model(cfg).to(args.device, torch.float32).eval()
    model16 = Qwen3Model(cfg).eval()
    model16.load_state_dict(model32.state_dict())
    model16 = model16.to(args.device, torch.bfloat16)

    rows = []
    started = time.monotonic()
    for t in TEXTS:
        text = t.text if t.kind == "document" else f"Instruct: {get_task(t.task or 'retrieval').instruction}\nQuery:{t.text}"
        ids = tok(text)["input_ids"]
        if args.max_tokens and len(ids) > args.max_tokens:
            continue
        x = torch.tensor([ids], device=args.device)
        with torch.inference_mode():
            a = F.normalize(model32(input_ids=x).last_hidden_state[0, -1].float(), dim=0)
            b = model16(input_ids=x).last_hidden_state[0, -1].float()
            b = F.normalize(b, dim=0)
        rows.append({"id": t.id, "tokens": len(ids), "one_minus_cos": float(1 - (a @ b).item())})
    gaps = [r["one_minus_cos"] for r in rows]
    summary = {"shape": args.shape, "device": args.device, "texts": len(rows), "seed": args.seed,
               "torch": torch.__version__, "seconds": round(time.monotonic() - started, 1),
               "max_1_minus_cos": max(gaps), "median_1_minus_cos": statistics.median(gaps),
               "min_1_minus_cos": min(gaps)}
    if args.json:
        print(json.dumps({"summary": summary, "rows": rows}))
    else:
        for r in rows:
            print(f"{r['id']:<12} {r['tokens']:>6} tokens  1-cos {r['one_minus_cos']:.2e}")
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
