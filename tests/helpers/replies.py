"""Embedding replies for the reply-parser tests: good ones, every known bad one (with what the
refusal must say), and a hypothesis strategy that mixes faults into a reply."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import numpy as np
from hypothesis import strategies as st

from qembed.vectors import UNIT_NORM_TOLERANCE

SRC = "http://test/v1/embeddings"


def unit(d: int, seed: int) -> list[float]:
    v = np.random.default_rng(seed).standard_normal(d).astype(np.float32)
    return (v / np.linalg.norm(v)).tolist()  # type: ignore[no-any-return]


def b64(vals: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vals)}f", *vals)).decode()


def body(items: list[dict[str, Any]], **extra: Any) -> bytes:
    return json.dumps({"data": items, "model": "m", "usage": {"prompt_tokens": 7}, **extra}).encode()


def good(n: int = 3, d: int = 8, *, fmt: str = "base64") -> list[dict[str, Any]]:
    return [{"index": i, "embedding": b64(unit(d, i)) if fmt == "base64" else unit(d, i), "object": "embedding"}
            for i in range(n)]


BAD_REPLIES: dict[str, tuple[bytes, int, int | None, str]] = {
    # name: (body, n sent, width, what the message must say)
    "repeated index": (body([{**good()[0]}, {**good()[1], "index": 0}, good()[2]]), 3, 8, "repeated: 0"),
    "negative index": (body([good()[0], good()[1], {**good()[2], "index": -1}]), 3, 8, "out of range"),
    "index out of range": (body([good()[0], good()[1], {**good()[2], "index": 3}]), 3, 8, "missing: 2"),
    "missing index": (body([good()[0], {"embedding": good()[1]["embedding"]}, good()[2]]), 3, 8, "item 1 has no `index`"),
    "float index": (body([good()[0], {**good()[1], "index": 1.0}, good()[2]]), 3, 8, "not an integer"),
    "bool index": (body([good()[0], {**good()[1], "index": True}, good()[2]]), 3, 8, "not an integer"),
    "too few": (body(good(2)), 3, 8, "3 inputs were sent, the reply has 2"),
    "too many": (body(good(4)), 3, 8, "3 inputs were sent, the reply has 4"),
    "short base64": (body([good()[0], {**good()[1], "embedding": b64(unit(7, 1))}, good()[2]]), 3, 8,
                     "item 1 has 7 float32 values, expected 8"),
    "long base64": (body([good()[0], {**good()[1], "embedding": b64(unit(9, 1))}, good()[2]]), 3, None,
                    "item 1 has 9 float32 values, expected 8"),
    "ragged bytes": (body([{**good()[0], "embedding": base64.b64encode(b"\0" * 30).decode()}]), 1, 8,
                     "7.5 float32 values"),
    "not base64": (body([{**good()[0], "embedding": "!!!!not*base64"}]), 1, 8, "does not decode"),
    "short float list": (body([good(fmt="float")[0], {**good(fmt="float")[1], "embedding": unit(7, 1)}]), 2, 8,
                         "item 1 has 7 values, expected 8"),
    "strings in float list": (body([{"index": 0, "embedding": ["a"] * 8}]), 1, 8, "not numbers"),
    "nested float list": (body([{"index": 0, "embedding": [[0.1]] * 8}]), 1, 8, "not numbers"),
    "bools in float list": (body([{"index": 0, "embedding": [True] + [False] * 7}]), 1, 8, "not numbers"),
    "mixed encodings": (body([good()[0], good(fmt="float")[1]]), 2, 8, "item 1's embedding is a list"),
    "null embedding": (body([{"index": 0, "embedding": None}]), 1, 8, "item 0's embedding is a NoneType"),
    "NaN": (body([{"index": 0, "embedding": b64([float("nan"), *unit(7, 0)])}]), 1, 8, "NaN or infinite"),
    "inf": (body([{"index": 0, "embedding": b64([float("inf")] + [0.0] * 7)}]), 1, 8, "NaN or infinite"),
    "huge float": (body([{"index": 0, "embedding": [1e300] + [0.0] * 7}]), 1, 8, "NaN or infinite"),
    "not unit": (body([{"index": 0, "embedding": b64([2 * x for x in unit(8, 0)])}]), 1, 8, "not unit vectors (norm 2"),
    "zero vector": (body([{"index": 0, "embedding": b64([0.0] * 8)}]), 1, 8, "not unit vectors (norm 0"),
    "empty vector": (body([{"index": 0, "embedding": ""}]), 1, None, "0 bytes"),
    "not JSON": (b'{"data": [', 1, 8, "not JSON"),
    "HTML page": (b"<html><title>502 Bad Gateway</title></html>", 1, 8, "an HTML page"),
    "no data": (b'{"object": "list"}', 1, 8, "no `data` list"),
    "data not a list": (b'{"data": {"0": 1}}', 1, 8, "no `data` list"),
    "a JSON list": (b"[1, 2]", 1, 8, "no `data` list"),
    "item not an object": (body(["abc"]), 1, 8, "item 0 has no `index`"),  # type: ignore[list-item]
}


_JSON = st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False) | st.text(max_size=8),
                     lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
                     max_leaves=12)


@st.composite
def replies(draw: st.DrawFn) -> tuple[bytes, int, int]:
    """A reply for n inputs of width d: valid, or with one or more faults mixed in."""
    n, d = draw(st.integers(1, 4)), draw(st.sampled_from([4, 8]))
    items: list[Any] = [{"index": i, "embedding": b64(unit(d, i))} for i in range(n)]
    fault = draw(st.sampled_from(["none", "index", "drop", "extra", "width", "value", "scale", "junk", "type", "bytes"]))
    k = draw(st.integers(0, n - 1))
    if fault == "index":
        items[k]["index"] = draw(st.one_of(st.integers(-3, n + 2), st.none(), st.text(max_size=2), st.floats()))
    elif fault == "drop":
        items.pop(k)
    elif fault == "extra":
        items.append(dict(items[k]))
    elif fault == "width":
        items[k]["embedding"] = b64(unit(draw(st.sampled_from([1, d - 1, d + 1, 2 * d])), k))
    elif fault == "value":
        vals = unit(d, k)
        vals[draw(st.integers(0, d - 1))] = draw(st.sampled_from([float("nan"), float("inf"), -float("inf")]))
        items[k]["embedding"] = b64(vals)
    elif fault == "scale":
        s = draw(st.floats(0, 100).filter(lambda x: abs(x - 1) > 2.5 * UNIT_NORM_TOLERANCE))
        items[k]["embedding"] = b64([x * s for x in unit(d, k)])
    elif fault == "junk":
        items[k] = draw(_JSON)
    elif fault == "type":
        items[k]["embedding"] = draw(_JSON)
    elif fault == "bytes":
        return draw(st.binary(max_size=64)), n, d
    return body(items), n, d
