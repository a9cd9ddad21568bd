"""`parse_reply_rows` (no numpy) holds replies to exactly the rules of `parse_reply`: the same
refusals with the same messages, and the same values (each float32 as a Python float)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from qembed.errors import BadReply, QembedError
from qembed.vectors import parse_reply, parse_reply_rows
from tests.helpers.replies import BAD_REPLIES, SRC, b64, body, good, replies, unit


@pytest.mark.parametrize("name", list(BAD_REPLIES))
def test_every_bad_reply_is_refused_with_the_same_message(name: str) -> None:
    content, n, width, _ = BAD_REPLIES[name]
    with pytest.raises(BadReply) as full:
        parse_reply(content, n, width=width, source=SRC)
    with pytest.raises(BadReply) as plain:
        parse_reply_rows(content, n, width=width, source=SRC)
    assert plain.value.message == full.value.message
    assert plain.value.hint == full.value.hint


@pytest.mark.parametrize("fmt", ["base64", "float"])
def test_good_replies_give_the_same_values_in_index_order(fmt: str) -> None:
    items = good(5, 8, fmt=fmt)
    items[1], items[3] = items[3], items[1]  # `index` decides the row
    full = parse_reply(body(items), 5, width=None, source=SRC)
    plain = parse_reply_rows(body(items), 5, width=None, source=SRC)
    assert plain.rows == full.vectors.tolist()
    assert all(type(x) is float for row in plain.rows for x in row)
    assert (plain.model, plain.prompt_tokens) == (full.model, full.prompt_tokens)


def test_the_unit_tolerance_and_its_switch_are_the_same() -> None:
    for scale, unit_ok in ((1.004, True), (1.02, False)):
        content = body([{"index": 0, "embedding": b64([x * scale for x in unit(8, 0)])}])
        for parse in (parse_reply, parse_reply_rows):
            if unit_ok:
                parse(content, 1, width=8, source=SRC)
            else:
                with pytest.raises(BadReply, match="not unit"):
                    parse(content, 1, width=8, source=SRC)
            parse(content, 1, width=8, source=SRC, expect_unit=False)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(replies())
def test_fuzzed_replies_get_the_same_verdict(reply: tuple[bytes, int, int]) -> None:
    content, n, d = reply
    try:
        full = parse_reply(content, n, width=d, source=SRC)
    except QembedError as exc:
        with pytest.raises(QembedError) as plain_exc:
            parse_reply_rows(content, n, width=d, source=SRC)
        assert plain_exc.value.message == exc.message
        return
    assert parse_reply_rows(content, n, width=d, source=SRC).rows == full.vectors.tolist()
