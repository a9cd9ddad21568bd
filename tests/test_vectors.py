from __future__ import annotations

import base64
import json
import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qembed.errors import BadReply, InputError, QembedError
from qembed.vectors import (
    UNIT_NORM_TOLERANCE,
    check_dimensions,
    l2_normalize,
    parse_models,
    parse_reply,
    truncate,
)

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


@pytest.mark.parametrize("fmt", ["base64", "float"])
def test_a_good_reply_is_little_endian_float32_in_index_order(fmt: str) -> None:
    items = good(3, 8, fmt=fmt)
    items.reverse()  # the server may send them in any order; `index` decides the row
    r = parse_reply(body(items), 3, width=None, source=SRC)
    assert r.vectors.dtype == np.float32 and r.vectors.shape == (3, 8)
    for i in range(3):
        np.testing.assert_allclose(r.vectors[i], unit(8, i), rtol=1e-6)
    assert r.prompt_tokens == 7 and r.model == "m"


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


@pytest.mark.parametrize("name", list(BAD_REPLIES))
def test_every_bad_reply_is_refused_with_the_source_and_the_reason(name: str) -> None:
    content, n, width, what = BAD_REPLIES[name]
    with pytest.raises(BadReply) as info:
        parse_reply(content, n, width=width, source=SRC)
    assert SRC in info.value.message and what in info.value.message, info.value.message
    assert info.value.exit_code == 1 and info.value.hint


def test_the_unit_check_has_a_stated_tolerance_and_can_be_off() -> None:
    near = [x * (1 + UNIT_NORM_TOLERANCE / 2) for x in unit(8, 0)]
    parse_reply(body([{"index": 0, "embedding": b64(near)}]), 1, width=8, source=SRC)
    far = [x * (1 + 2 * UNIT_NORM_TOLERANCE) for x in unit(8, 0)]
    with pytest.raises(BadReply, match="not unit"):
        parse_reply(body([{"index": 0, "embedding": b64(far)}]), 1, width=8, source=SRC)
    r = parse_reply(body([{"index": 0, "embedding": b64(far)}]), 1, width=8, source=SRC, expect_unit=False)
    assert r.vectors.shape == (1, 8)
    with pytest.raises(BadReply, match="NaN"):  # finite is checked either way
        parse_reply(body([{"index": 0, "embedding": b64([float("nan")] * 8)}]), 1, width=8, source=SRC,
                    expect_unit=False)


@pytest.mark.parametrize(("content", "what"), [
    (b"<html>", "HTML page"), (b"[]", "no `data` list"), (b'{"data": [{"id": 3}]}', "not a string"),
    (b'{"data": [{"id": "m", "max_model_len": "32k"}]}', "not a positive integer"),
    (b'{"data": [{"id": "m", "max_model_len": true}]}', "not a positive integer"),
])
def test_bad_models_replies_are_refused(content: bytes, what: str) -> None:
    with pytest.raises(BadReply, match=what):
        parse_models(content, source="http://test/v1/models")
    assert parse_models(b'{"data": [{"id": "m", "max_model_len": 512}]}', source="x") == ("m", 512)


# -- fuzzing: an invalid reply never becomes a vector ------------------------------------------

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


def is_valid(content: bytes, n: int, d: int) -> bool:
    """An independent, slow statement of what a valid reply is."""
    try:
        data = json.loads(content)["data"]
    except Exception:
        return False
    if not isinstance(data, list) or len(data) != n:
        return False
    if sorted(repr(x.get("index")) if isinstance(x, dict) else "?" for x in data) != sorted(repr(i) for i in range(n)):
        return False
    kinds = {type(x.get("embedding")) for x in data}
    if kinds not in ({str}, {list}):
        return False
    for x in data:
        e = x.get("embedding")
        if isinstance(e, list):
            if len(e) != d or not all(type(v) in (int, float) for v in e):
                return False
            v = np.array(e, dtype=np.float64).astype(np.float32).astype(np.float64)
        else:
            try:
                raw = base64.b64decode(e, validate=True)
            except Exception:
                return False
            if len(raw) != 4 * d:
                return False
            v = np.frombuffer(raw, "<f4").astype(np.float64)
        if not np.isfinite(v).all() or abs(np.linalg.norm(v) - 1) > UNIT_NORM_TOLERANCE:
            return False
    return True


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(replies())
def test_fuzzed_replies_never_become_wrong_vectors(reply: tuple[bytes, int, int]) -> None:
    content, n, d = reply
    try:
        r = parse_reply(content, n, width=d, source=SRC)
    except QembedError as exc:  # never TypeError, IndexError, binascii.Error, KeyError, ...
        assert isinstance(exc, BadReply)
        assert not is_valid(content, n, d)
        return
    assert is_valid(content, n, d), content[:200]
    assert r.vectors.shape == (n, d) and np.isfinite(r.vectors).all()
    data = json.loads(content)["data"]
    for x in data:  # each row is what its item said, at its index
        e = x["embedding"]
        want = np.frombuffer(base64.b64decode(e), "<f4") if isinstance(e, str) else np.array(e, dtype=np.float32)
        np.testing.assert_array_equal(r.vectors[x["index"]], want)


def test_truncate_then_renormalise() -> None:
    a = np.array([[3.0, 4.0, 12.0], [1.0, 0.0, 0.0]], dtype=np.float32)
    t = truncate(a, 2)
    assert t.dtype == np.float32
    np.testing.assert_allclose(t, [[0.6, 0.8], [1.0, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(l2_normalize(a), axis=1), [1, 1], rtol=1e-6)


@pytest.mark.parametrize("bad", [31, 0, 2561, -1])
def test_dimensions_out_of_range_name_the_range(bad: int) -> None:
    with pytest.raises(InputError, match=r"between 32 and 2560"):
        check_dimensions(bad, 2560)
    check_dimensions(32, 2560)
    check_dimensions(2560, 2560)


def test_dimensions_lower_bound_without_a_known_maximum() -> None:
    with pytest.raises(InputError, match=r"between 32 and the model's full size"):
        check_dimensions(16, None)
    check_dimensions(100_000, None)  # the upper bound waits until the size is known
