"""The stand-in's reply fault modes (tests/standin `BAD_MODES`) and what each must give the
client: the error class and a text its message must contain."""

from __future__ import annotations

from qembed.errors import BadReply, QembedError, ServerError, ServerUnreachable

# mode -> (error class, text the message must contain)
EXPECTED: dict[str, tuple[type[QembedError], str]] = {
    "repeated_index": (BadReply, "repeated: 0"),
    "negative_index": (BadReply, "out of range 0..2: -1"),
    "missing_index": (BadReply, "item 2 has no `index`"),
    "index_out_of_range": (BadReply, "out of range 0..2: 3"),
    "string_index": (BadReply, "item 2 has index '2', not an integer"),
    "short_base64": (BadReply, "item 2 has 15 float32 values, expected 16"),
    "long_base64": (BadReply, "item 2 has 17 float32 values, expected 16"),
    "invalid_base64": (BadReply, "item 2's base64 does not decode"),
    "nan": (BadReply, "item(s) 2 have NaN or infinite values"),
    "inf": (BadReply, "item(s) 2 have NaN or infinite values"),
    "not_unit": (BadReply, "item(s) 2 are not unit vectors (norm 2"),
    "zero_vector": (BadReply, "item(s) 2 are not unit vectors (norm 0"),
    "too_few": (BadReply, "3 inputs were sent, the reply has 2"),
    "too_many": (BadReply, "3 inputs were sent, the reply has 4"),
    "null_embedding": (BadReply, "item 2's embedding is a NoneType"),
    "non_json": (BadReply, "the body is not JSON: 'Internal error: CUDA error"),
    "html_200": (BadReply, "the body is an HTML page"),
    "empty_200": (BadReply, "the body is not JSON"),
    "no_data": (BadReply, "there is no `data` list"),
    "html_502": (ServerError, "the server answered 502: an HTML page (502 Bad Gateway)"),
    "truncated": (ServerUnreachable, "failed"),
}
FLOAT_EXPECTED: dict[str, tuple[type[QembedError], str]] = {
    "short_floats": (BadReply, "item 2 has 15 values, expected 16"),
    "long_floats": (BadReply, "item 2 has 17 values, expected 16"),
    "nan": (BadReply, "not JSON"),  # JSON has no NaN: a server that writes it sends invalid JSON
    "not_unit": (BadReply, "not unit vectors"),
}
