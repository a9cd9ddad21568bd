"""Vector helpers: the one decoder of embeddings replies (checked before anything becomes a
vector), Matryoshka truncation with L2 renormalisation, and the ``dimensions`` range.

:func:`parse_reply` is used by the client, ``qembed doctor``'s and ``qembed bench``'s server probe
(:mod:`qembed.probe`), so every reply is held to the same rules:

* the body is JSON with a ``data`` list of exactly as many items as inputs were sent;
* the ``index`` fields are exactly a permutation of ``0..n-1``;
* every base64 string decodes to exactly ``width`` little-endian float32 values, and every float
  list has ``width`` numbers;
* every value is finite, and with ``expect_unit`` every vector has L2 norm 1 within
  :data:`UNIT_NORM_TOLERANCE` (SGLang L2-normalises Qwen3-Embedding vectors, after any
  Matryoshka truncation).

Anything else raises :class:`~qembed.errors.BadReply` naming the source and what was wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

MIN_DIMENSIONS = 32  # the Qwen3-Embedding model cards give 32 .. hidden size
#: |norm - 1| allowed for a normalised vector. SGLang normalises in the model dtype (BF16 by
#: default, 8 significant bits: a norm error of at most ~0.4 %), then sends float32.
UNIT_NORM_TOLERANCE = 1e-2


@dataclass(frozen=True)
class Reply:
    """A checked embeddings reply: ``vectors`` is float32 ``(n, width)`` in input order."""

    vectors: npt.NDArray[np.float32]
    model: str | None
    prompt_tokens: int


def _bad(source: str, what: str, *, status: int = 200, body: Any = None) -> Exception:
    from .errors import BadReply

    return BadReply(
        f"the reply from {source} is invalid: {what}",
        status=status,
        body=body,
        hint="no vector from it was used; is this an SGLang embedding server? check it with "
        "`qembed doctor --url URL` and read its log (`qembed logs`)",
    )


def _json_body(content: bytes, source: str, *, status: int = 200) -> Any:
    """The parsed JSON of a reply body; a body that is not JSON (an HTML page, say) is a BadReply."""
    import orjson

    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        snippet = content[:200].decode("utf-8", "replace")
        kind = "an HTML page" if snippet.lstrip().startswith("<") else "not JSON"
        raise _bad(source, f"the body is {kind}: {snippet!r}", status=status, body=snippet) from None


def _few(values: Any, limit: int = 5) -> str:
    values = list(values)
    return ", ".join(str(v) for v in values[:limit]) + (", ..." if len(values) > limit else "")


def _check_indices(indices: list[Any], n: int, source: str) -> npt.NDArray[np.intp]:
    """The ``index`` fields as an array, if they are exactly a permutation of ``0..n-1``."""
    import numpy as np

    if any(type(i) is not int for i in indices):  # bool, float, str, None are all wrong
        pos = next(p for p, i in enumerate(indices) if type(i) is not int)
        raise _bad(source, f"item {pos} has index {indices[pos]!r}, not an integer")
    ix = np.array(indices, dtype=np.intp) if n else np.zeros(0, dtype=np.intp)
    if n == 0:
        return ix
    lo, hi = int(ix.min()), int(ix.max())
    if lo >= 0 and hi < n and bool((np.bincount(ix, minlength=n) == 1).all()):
        return ix
    problems: list[str] = []
    out_of_range = ix[(ix < 0) | (ix >= n)]
    if out_of_range.size:
        problems.append(f"out of range 0..{n - 1}: {_few(out_of_range)}")
    counts = np.bincount(ix[(ix >= 0) & (ix < n)], minlength=n)
    if (counts > 1).any():
        problems.append(f"repeated: {_few(np.flatnonzero(counts > 1))}")
    if (counts == 0).any():
        problems.append(f"missing: {_few(np.flatnonzero(counts == 0))}")
    raise _bad(source, "the indices are not 0.." + f"{n - 1} once each ({'; '.join(problems)})")


def _decode_base64(embs: list[str], width: int | None, source: str) -> npt.NDArray[np.float32]:
    import binascii

    import numpy as np
    from pybase64 import b64decode

    try:
        raws = [b64decode(e, validate=True) for e in embs]
    except (binascii.Error, ValueError) as exc:
        def decodes(e: str) -> bool:
            try:
                b64decode(e, validate=True)
            except (binascii.Error, ValueError):
                return False
            return True

        pos = next((p for p, e in enumerate(embs) if not decodes(e)), 0)  # only on this error path
        raise _bad(source, f"item {pos}'s base64 does not decode ({exc})") from None
    nbytes = 4 * width if width is not None else len(raws[0])
    if width is None and (nbytes == 0 or nbytes % 4):
        raise _bad(source, f"item 0 decodes to {nbytes} bytes, not a whole number of float32 values")
    for pos, raw in enumerate(raws):
        if len(raw) != nbytes:
            got = f"{len(raw) / 4:g}" if len(raw) % 4 else str(len(raw) // 4)
            raise _bad(source, f"item {pos} has {got} float32 values, expected {nbytes // 4}")
    return np.frombuffer(b"".join(raws), dtype="<f4").reshape(len(raws), nbytes // 4)


def _decode_floats(embs: list[Any], width: int | None, source: str) -> npt.NDArray[np.float32]:
    import numpy as np

    for pos, e in enumerate(embs):
        if len(e) != (width if width is not None else len(embs[0])):
            raise _bad(source, f"item {pos} has {len(e)} values, expected {width or len(embs[0])}")
    # the fallback path (a server that cannot send base64): a per-value type check is affordable
    for pos, e in enumerate(embs):
        if not all(type(x) is float or type(x) is int for x in e):
            raise _bad(source, f"item {pos}'s float list holds values that are not numbers")
    if not embs[0]:
        raise _bad(source, "item 0's float list is empty")
    with np.errstate(over="ignore"):  # too large for float32 becomes inf, refused below
        return np.array(embs, dtype=np.float64).astype(np.float32)


def _check_values(vectors: npt.NDArray[np.float32], *, expect_unit: bool, source: str) -> None:
    import numpy as np

    if expect_unit:
        # One pass: a NaN or inf anywhere makes the row's squared norm NaN or inf, which fails
        # the range check as well.
        with np.errstate(over="ignore", invalid="ignore"):
            sq = np.einsum("ij,ij->i", vectors, vectors)
            ok = (sq >= (1 - UNIT_NORM_TOLERANCE) ** 2) & (sq <= (1 + UNIT_NORM_TOLERANCE) ** 2)
        if bool(ok.all()):
            return
        finite = np.isfinite(vectors).all(axis=1)
        if not bool(finite.all()):
            raise _bad(source, f"item(s) {_few(np.flatnonzero(~finite))} have NaN or infinite values")
        bad = np.flatnonzero(~ok)
        norms = np.sqrt(sq[bad].astype(np.float64))
        raise _bad(source, f"item(s) {_few(bad)} are not unit vectors (norm {_few(f'{x:.4g}' for x in norms)}; "
                           f"tolerance {UNIT_NORM_TOLERANCE:g}), but the server normalises")
    finite = np.isfinite(vectors).all(axis=1)
    if not bool(finite.all()):
        raise _bad(source, f"item(s) {_few(np.flatnonzero(~finite))} have NaN or infinite values")


def parse_reply(content: bytes, n: int, *, width: int | None, source: str, expect_unit: bool = True,
                status: int = 200) -> Reply:
    """Check an embeddings reply for ``n`` inputs and return its vectors in input order.

    Args:
        content: the response body.
        n: how many inputs the request carried.
        width: values per vector; ``None`` learns it from the first item (all must agree).
        source: what to name in errors (the URL).
        expect_unit: the server L2-normalises, so every vector must have norm 1.
        status: the HTTP status, for the error.

    Raises:
        BadReply: anything in the reply is wrong; no vector is returned.
    """
    import numpy as np

    obj = _json_body(content, source, status=status)
    data = obj.get("data") if isinstance(obj, dict) else None
    if not isinstance(data, list):
        raise _bad(source, "there is no `data` list (not an embeddings response)", status=status,
                   body=content[:500].decode("utf-8", "replace"))
    if len(data) != n:
        raise _bad(source, f"{n} inputs were sent, the reply has {len(data)} embeddings", status=status)
    try:
        indices = [item["index"] for item in data]
        embs = [item["embedding"] for item in data]
    except (KeyError, TypeError):
        pos = next(p for p, item in enumerate(data)
                   if not isinstance(item, dict) or "index" not in item or "embedding" not in item)
        raise _bad(source, f"item {pos} has no `index` or no `embedding`: {str(data[pos])[:100]}") from None
    ix = _check_indices(indices, n, source)
    if n == 0:
        vectors = np.zeros((0, width or 0), dtype=np.float32)
    elif all(type(e) is str for e in embs):
        vectors = _decode_base64(embs, width, source)
    elif all(type(e) is list for e in embs):
        vectors = _decode_floats(embs, width, source)
    else:
        pos = next(p for p, e in enumerate(embs) if type(e) is not type(embs[0]) or type(e) not in (str, list))
        raise _bad(source, f"item {pos}'s embedding is a {type(embs[pos]).__name__}, not base64 text or a float list")
    _check_values(vectors, expect_unit=expect_unit, source=source)
    if not bool((ix == np.arange(n)).all()):
        ordered = np.empty_like(vectors)
        ordered[ix] = vectors
        vectors = ordered
    usage = obj.get("usage")
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    model = obj.get("model")
    return Reply(vectors=vectors, model=model if isinstance(model, str) else None,
                 prompt_tokens=tokens if type(tokens) is int and tokens >= 0 else 0)


def parse_models(content: bytes, *, source: str) -> tuple[str | None, int | None]:
    """``(served model id, max_model_len)`` from a 200 ``/v1/models`` body, checked.

    Raises:
        BadReply: not JSON, no ``data`` list, or fields of the wrong type.
    """

    obj = _json_body(content, source)
    data = obj.get("data") if isinstance(obj, dict) else None
    if not isinstance(data, list) or (data and not isinstance(data[0], dict)):
        raise _bad(source, "there is no `data` list of models")
    if not data:
        return None, None
    model, mml = data[0].get("id"), data[0].get("max_model_len")
    if model is not None and not isinstance(model, str):
        raise _bad(source, f"the model id is {model!r}, not a string")
    if mml is not None and (type(mml) is not int or mml < 1):
        raise _bad(source, f"`max_model_len` is {mml!r}, not a positive integer")
    return model, mml


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


def check_dimensions(dimensions: int, full: int | None) -> None:
    """Raise InputError unless ``MIN_DIMENSIONS <= dimensions <= full`` (``full`` ``None``:
    not known yet, so only the lower bound and the type are checked)."""
    from .errors import InputError

    top = full if full is not None else "the model's full size"
    if (isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < MIN_DIMENSIONS
            or (full is not None and dimensions > full)):
        raise InputError(
            f"`dimensions` must be between {MIN_DIMENSIONS} and {top} for this model, got {dimensions}",
            hint=f"pick a value in {MIN_DIMENSIONS}..{top}, or leave it out for the full-size vector",
        )
