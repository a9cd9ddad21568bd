from __future__ import annotations

import base64
import struct

import numpy as np
import pytest

from qembed.errors import InputError
from qembed.vectors import (
    check_dimensions,
    decode_base64,
    decode_base64_into,
    l2_normalize,
    truncate,
)


def test_base64_is_little_endian_float32_decoded_into_the_row() -> None:
    vals = [0.5, -0.25, 1.0, 3.0e-8]
    b64 = base64.b64encode(struct.pack("<4f", *vals)).decode()
    out = np.zeros((2, 4), dtype=np.float32)
    decode_base64_into(b64, out[1])
    assert out[1].tolist() == pytest.approx(vals)
    assert out[0].tolist() == [0, 0, 0, 0]
    assert decode_base64(b64).dtype == np.float32
    with pytest.raises(ValueError, match="3 values, expected 4"):
        decode_base64_into(base64.b64encode(struct.pack("<3f", 1, 2, 3)), out[0])


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
