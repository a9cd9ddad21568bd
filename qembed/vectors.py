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
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

MIN_DIMENSIONS = 32  # the Qwen3-Embedding model cards give 32 .. hidden size
#: |norm - 1| allowed for a normalised vector. SGLang normalises in the model dtype (BF16 by
#: default, 8 significant bits: a norm error of at most ~0.4 %), then sends float32.
UNIT_NORM_TOLERANCE = 1e-2


# -- tolerances (verify's verdict, bulk's resume check; docs/verify.md) ----------------------

PrecisionName = Literal["fp32", "bf16"]


@dataclass(frozen=True)
class Tolerance:
    """Per text: cos >= 1 - ``cos`` and | ||v|| - 1 | <= ``norm``."""

    name: PrecisionName
    cos: float
    norm: float
    source: str


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(
        "fp32", 1e-5, 1e-4,
        "fp32 server vs fp32 reference: noise <= 1.2e-7, the subtlest known mistake (EOS twice) "
        "3.5e-4 (docs/verify.md)"),
    "bf16": Tolerance(
        "bf16", 1e-3, 2e-3,
        "ESTIMATE, not measured on a GPU: bf16 alone costs 1.2e-4 on the 2-layer test model and "
        "up to 1.5e-4 on a random-weight 0.6B-shape model on CPU; vLLM's check_embeddings_close "
        "uses 1e-3. Measure it with scripts/bf16_tolerance.py on a GPU (docs/verify.md)"),
}


@dataclass(frozen=True)
class Reply:
    """A checked embeddings reply: ``vectors`` is float32 ``(n, width)`` in input order."""

    vectors: npt.NDArray[np.float32]
    model: str | None
    prompt_tokens: int


def _bad(source: str, what: str, *, status: int = 200, body: Any = None) -> Exception:
    from qembed.errors import BadReply

    return BadReply(
        f"the reply from {source} is invalid: {what}",
        status=status,
        body=body,
        hint="no vector from it was used; is this an OpenAI-compatible embedding server? check it with "
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


def _check_indices(indices: list[Any], n: int, source: str) -> list[int] | None:
    """``None`` if the ``index`` fields are ``0..n-1`` in order; else the order that puts the
    rows in input order, if they are exactly a permutation of ``0..n-1``. (Pure Python: both
    the numpy and the plain decoder use it, and a request has at most a few hundred items.)"""
    if any(type(i) is not int for i in indices):  # bool, float, str, None are all wrong
        pos = next(p for p, i in enumerate(indices) if type(i) is not int)
        raise _bad(source, f"item {pos} has index {indices[pos]!r}, not an integer")
    if indices == list(range(n)):
        return None
    counts = [0] * n
    for i in indices:
        if 0 <= i < n:
            counts[i] += 1
    out_of_range = [i for i in indices if not 0 <= i < n]
    if not out_of_range and all(c == 1 for c in counts):
        return indices
    problems: list[str] = []
    if out_of_range:
        problems.append(f"out of range 0..{n - 1}: {_few(out_of_range)}")
    if any(c > 1 for c in counts):
        problems.append(f"repeated: {_few(v for v, c in enumerate(counts) if c > 1)}")
    if any(c == 0 for c in counts):
        problems.append(f"missing: {_few(v for v, c in enumerate(counts) if c == 0)}")
    raise _bad(source, "the indices are not 0.." + f"{n - 1} once each ({'; '.join(problems)})")


def _base64_rows(embs: list[str], width: int | None, source: str) -> tuple[list[bytes], int]:
    """Each item's bytes and the values per vector, once every item decodes to ``width``
    little-endian float32 values (``None``: as many as item 0)."""
    import binascii

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
    return raws, nbytes // 4


def _decode_base64(embs: list[str], width: int | None, source: str) -> npt.NDArray[np.float32]:
    import numpy as np

    raws, w = _base64_rows(embs, width, source)
    return np.frombuffer(b"".join(raws), dtype="<f4").reshape(len(raws), w)


def _check_float_lists(embs: list[Any], width: int | None, source: str) -> None:
    for pos, e in enumerate(embs):
        if len(e) != (width if width is not None else len(embs[0])):
            raise _bad(source, f"item {pos} has {len(e)} values, expected {width or len(embs[0])}")
    # the fallback path (a server that cannot send base64): a per-value type check is affordable
    for pos, e in enumerate(embs):
        if not all(type(x) is float or type(x) is int for x in e):
            raise _bad(source, f"item {pos}'s float list holds values that are not numbers")
    if not embs[0]:
        raise _bad(source, "item 0's float list is empty")


def _decode_floats(embs: list[Any], width: int | None, source: str) -> npt.NDArray[np.float32]:
    import numpy as np

    _check_float_lists(embs, width, source)
    with np.errstate(over="ignore"):  # too large for float32 becomes inf, refused below
        return np.array(embs, dtype=np.float64).astype(np.float32)


_UNIT_SQ = ((1 - UNIT_NORM_TOLERANCE) ** 2, (1 + UNIT_NORM_TOLERANCE) ** 2)  #: squared-norm range


def _refuse_values(sq: list[float] | None, finite: list[bool], source: str) -> None:
    """The value rules, once for both decoders: every value finite; with ``sq`` (the rows'
    squared norms, when the server normalises) every norm 1 within the tolerance."""
    import math

    if not all(finite):
        raise _bad(source, f"item(s) {_few(i for i, f in enumerate(finite) if not f)} have NaN or infinite values")
    if sq is None:
        return
    lo, hi = _UNIT_SQ
    bad = [i for i, x in enumerate(sq) if not lo <= x <= hi]
    if bad:
        norms = (math.sqrt(sq[i]) for i in bad)
        raise _bad(source, f"item(s) {_few(bad)} are not unit vectors (norm {_few(f'{x:.4g}' for x in norms)}; "
                           f"tolerance {UNIT_NORM_TOLERANCE:g}), but the server normalises")


def _check_values(vectors: npt.NDArray[np.float32], *, expect_unit: bool, source: str) -> None:
    import numpy as np

    if expect_unit:
        # One pass: a NaN or inf anywhere makes the row's squared norm NaN or inf, which fails
        # the range check as well; the rules are applied (and explained) only then.
        with np.errstate(over="ignore", invalid="ignore"):
            sq = np.einsum("ij,ij->i", vectors, vectors)
            ok = (sq >= _UNIT_SQ[0]) & (sq <= _UNIT_SQ[1])
        if bool(ok.all()):
            return
        finite_rows: list[bool] = np.isfinite(vectors).all(axis=1).tolist()  # type: ignore[assignment]
        # the message's norms in float64, as the plain-rows path computes them (float32 squares
        # of tiny values underflow to 0)
        v64 = vectors.astype(np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            sq64 = np.einsum("ij,ij->i", v64, v64)
        _refuse_values(sq64.tolist(), finite_rows, source)
        return
    finite = np.isfinite(vectors).all(axis=1)
    if not bool(finite.all()):
        finite_rows = finite.tolist()  # type: ignore[assignment]
        _refuse_values(None, finite_rows, source)


def _check_rows(rows: list[list[float]], *, expect_unit: bool, source: str) -> None:
    """:func:`_check_values` for plain rows (the same rules, :func:`_refuse_values`)."""
    import math

    finite = [all(map(math.isfinite, r)) for r in rows]
    sq = [math.fsum(x * x for x in r) if f else math.nan for r, f in zip(rows, finite, strict=True)]
    _refuse_values(sq if expect_unit else None, finite, source)


def _items(content: bytes, n: int, *, source: str, status: int) -> tuple[dict[str, Any], list[Any], list[int] | None]:
    """The reply's JSON, its ``n`` embeddings and their order (see :func:`_check_indices`)."""

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
    order = _check_indices(indices, n, source)
    if n and not (all(type(e) is str for e in embs) or all(type(e) is list for e in embs)):
        pos = next(p for p, e in enumerate(embs) if type(e) is not type(embs[0]) or type(e) not in (str, list))
        raise _bad(source, f"item {pos}'s embedding is a {type(embs[pos]).__name__}, not base64 text or a float list")
    return obj, embs, order


def _usage(obj: dict[str, Any]) -> tuple[str | None, int]:
    usage = obj.get("usage")
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    model = obj.get("model")
    return (model if isinstance(model, str) else None), (tokens if type(tokens) is int and tokens >= 0 else 0)


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

    obj, embs, order = _items(content, n, source=source, status=status)
    if n == 0:
        vectors = np.zeros((0, width or 0), dtype=np.float32)
    elif type(embs[0]) is str:
        vectors = _decode_base64(embs, width, source)
    else:
        vectors = _decode_floats(embs, width, source)
    _check_values(vectors, expect_unit=expect_unit, source=source)
    if order is not None:
        ordered = np.empty_like(vectors)
        ordered[np.array(order, dtype=np.intp)] = vectors
        vectors = ordered
    model, tokens = _usage(obj)
    return Reply(vectors=vectors, model=model, prompt_tokens=tokens)


@dataclass(frozen=True)
class RowsReply:
    """:class:`Reply` without numpy: ``rows`` are lists of the float32 values (as floats)."""

    rows: list[list[float]]
    model: str | None
    prompt_tokens: int


def parse_reply_rows(content: bytes, n: int, *, width: int | None, source: str, expect_unit: bool = True,
                     status: int = 200) -> RowsReply:
    """:func:`parse_reply` without numpy, under the same checks: for small replies where
    importing numpy would cost more than the work (a one-shot ``qembed embed``). Each value is
    the float32 the server sent, as a Python float, exactly as ``parse_reply(...).vectors.tolist()``.
    """
    import array
    import sys

    obj, embs, order = _items(content, n, source=source, status=status)
    rows: list[list[float]]
    if n == 0:
        rows = []
    elif type(embs[0]) is str:
        raws, _ = _base64_rows(embs, width, source)
        rows = []
        for raw in raws:
            a = array.array("f", raw)
            if sys.byteorder != "little":
                a.byteswap()
            rows.append(a.tolist())
    else:
        _check_float_lists(embs, width, source)
        rows = [array.array("f", e).tolist() for e in embs]  # float32, as parse_reply; too large: inf
    _check_rows(rows, expect_unit=expect_unit, source=source)
    if order is not None:
        ordered: list[list[float]] = [[] for _ in rows]
        for row, i in zip(rows, order, strict=True):
            ordered[i] = row
        rows = ordered
    model, tokens = _usage(obj)
    return RowsReply(rows=rows, model=model, prompt_tokens=tokens)


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


def truncation_fault(vectors: Any, dimensions: int) -> str | None:
    """Why a reply to a request with ``dimensions`` is not a right Matryoshka truncation, or
    ``None``: each vector must have ``dimensions`` values and norm 1 within
    :data:`UNIT_NORM_TOLERANCE` (truncated, then renormalised). Infinity 0.0.78 slices after
    normalising and never renormalises (norms 0.38-0.40 at 32 of 64 dims); a server may also
    ignore the field and send full vectors. ``vectors``: float32 ``(n, w)``, or plain rows."""
    import math

    norms: list[float]
    if isinstance(vectors, list):
        width = len(vectors[0]) if vectors else dimensions
        norms = [math.sqrt(math.fsum(x * x for x in r)) for r in vectors]
    else:
        import numpy as np

        width = int(vectors.shape[1]) if vectors.shape[0] else dimensions
        norms = np.linalg.norm(np.asarray(vectors, dtype=np.float64), axis=1).tolist()
    if width != dimensions:
        return f"it sends {width} values per vector for `dimensions: {dimensions}`"
    off = [x for x in norms if abs(x - 1.0) > UNIT_NORM_TOLERANCE]
    if off:
        spread = f"{min(off):.3g}" if f"{min(off):.3g}" == f"{max(off):.3g}" else f"{min(off):.3g}-{max(off):.3g}"
        return f"its vectors at `dimensions: {dimensions}` have norm {spread}, not 1 (truncated without renormalising)"
    return None


def check_dimensions(dimensions: int, full: int | None) -> None:
    """Raise InputError unless ``MIN_DIMENSIONS <= dimensions <= full`` (``full`` ``None``:
    not known yet, so only the lower bound and the type are checked)."""
    from qembed.errors import InputError

    if (isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < MIN_DIMENSIONS
            or (full is not None and dimensions > full)):
        if full is None:  # the model is not known yet: only the lower bound was checked
            raise InputError(
                f"`dimensions` must be between {MIN_DIMENSIONS} and the model's full size, got {dimensions}",
                hint=f"pick a value from {MIN_DIMENSIONS} up to the model's vector size (0.6B: 1024, "
                     "4B: 2560, 8B: 4096), or leave it out for the full-size vector",
            )
        raise InputError(
            f"`dimensions` must be between {MIN_DIMENSIONS} and {full} for this model, got {dimensions}",
            hint=f"pick a value in {MIN_DIMENSIONS}..{full}, or leave it out for the full-size vector",
        )
