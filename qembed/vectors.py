"""Vector helpers: base64 float32 decoding and Matryoshka truncation with L2 renormalisation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

MIN_DIMENSIONS = 32  # the Qwen3-Embedding model cards give 32 .. hidden size


def decode_base64_into(text: str | bytes, out: npt.NDArray[np.float32]) -> None:
    """Decode one base64 little-endian float32 vector straight into ``out`` (a row view)."""
    import numpy as np
    import pybase64

    raw = pybase64.b64decode(text, validate=False)
    vec = np.frombuffer(raw, dtype="<f4")
    if vec.shape[0] != out.shape[-1]:
        raise ValueError(f"vector has {vec.shape[0]} values, expected {out.shape[-1]}")
    out[...] = vec


def decode_base64(text: str | bytes) -> npt.NDArray[np.float32]:
    """Decode one base64 little-endian float32 vector (a new float32 array)."""
    import numpy as np
    import pybase64

    return np.frombuffer(pybase64.b64decode(text, validate=False), dtype="<f4").astype(np.float32)


def l2_normalize(a: npt.NDArray[Any], *, out: npt.NDArray[np.float32] | None = None) -> npt.NDArray[np.float32]:
    """Unit-normalise rows (a zero row stays zero)."""
    import numpy as np

    a = np.asarray(a, dtype=np.float32)
    norms = np.linalg.norm(a, axis=-1, keepdims=True)
    np.maximum(norms, np.float32(1e-12), out=norms)
    if out is not None:
        np.divide(a, norms, out=out)
        return out
    result: npt.NDArray[np.float32] = (a / norms).astype(np.float32)
    return result


def truncate(a: npt.NDArray[Any], dimensions: int) -> npt.NDArray[np.float32]:
    """Matryoshka: keep the first ``dimensions`` values, then L2-renormalise (SGLang's order)."""
    import numpy as np

    return l2_normalize(np.ascontiguousarray(np.asarray(a)[..., :dimensions]))


def check_dimensions(dimensions: int, full: int) -> None:
    """Raise InputError unless ``MIN_DIMENSIONS <= dimensions <= full``."""
    from .errors import InputError

    if isinstance(dimensions, bool) or not isinstance(dimensions, int) or not MIN_DIMENSIONS <= dimensions <= full:
        raise InputError(
            f"`dimensions` must be between {MIN_DIMENSIONS} and {full} for this model, got {dimensions}",
            hint=f"pick a value in {MIN_DIMENSIONS}..{full}, or leave it out for the full {full}-d vector",
        )
