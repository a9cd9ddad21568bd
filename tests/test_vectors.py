from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from qembed.errors import BadReply, InputError, QembedError
from qembed.vectors import (
    UNIT_NORM_TOLERANCE,
    check_dimensions,
    l2_normalize,
    parse_models,
    parse_reply,
    truncate,
)
from tests.helpers.replies import BAD_REPLIES, SRC, b64, body, good, replies, unit


@pytest.mark.parametrize("fmt", ["base64", "float"])
def test_a_good_reply_is_little_endian_float32_in_index_order(fmt: str) -> None:
    items = good(3, 8, fmt=fmt)
    items.reverse()  # the server may send them in any order; `index` decides the row
    r = parse_reply(body(items), 3, width=None, source=SRC)
    assert r.vectors.dtype == np.float32 and r.vectors.shape == (3, 8)
    for i in range(3):
        np.testing.assert_allclose(r.vectors[i], unit(8, i), rtol=1e-6)
    assert r.prompt_tokens == 7 and r.model == "m"


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
