"""``qembed verify``: does a server return the model card's vectors?

A built-in set of 40 texts (:data:`qembed.fleet.verify_texts.TEXTS`) is embedded twice: through the server with qembed's
:class:`~qembed.client.drivers.Client`, and in this process with the reference engine
(:class:`~qembed.reference.engine.ReferenceEngine`: sentence-transformers, the model's own prompts,
last-token pooling, normalisation, truncate then renormalise). Per text and overall it reports
the cosine to the reference, the norm, and top-k retrieval agreement, at full size and at a few
Matryoshka sizes. The verdict uses a documented tolerance (:data:`TOLERANCES`, docs/verify.md).

When texts fail, every known mistake is judged on its own at every size (:func:`qembed.fleet.verify_hypotheses.diagnose`): text
mistakes (:data:`HYPOTHESES`: no EOS, mean or first-token pooling, a BOS added, whitespace
stripped, a silent token limit, no or wrong instruction format, newlines replaced, float16) by
recomputing the reference under them; lengths and the server's own truncation
(:data:`NORM_HYPOTHESES`) from its vectors. The report names the one that reproduces the server,
or several that together do, each explaining its part of the texts, with the fix; otherwise it
says which texts differ and what they share.

It works against any OpenAI-compatible embedding server (SGLang, vLLM, TEI, Infinity, a
gateway). The server's own ``dimensions`` is judged with the client's fallback off: a refusal is
reported "not supported (the client truncates)" and does not fail; a wrong length or norm fails
and is named. A check that cannot complete (5xx, broken connection, timeout) raises
:class:`~qembed.errors.CheckIncomplete` (exit 8), not a verdict.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from qembed.errors import (
    CheckIncomplete,
    ConfigError,
    DimensionsRefused,
    QembedError,
    ServerError,
    ServerUnreachable,
)
from qembed.fleet.verify_hypotheses import Diagnosis, DimResult, compare, diagnose
from qembed.fleet.verify_texts import TEXTS, Text, prompt_for
from qembed.vectors import TOLERANCES, Tolerance

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from qembed.client.drivers import Client
    from qembed.reference.engine import ReferenceEngine

logger = logging.getLogger(__name__)

# -- tolerances --------------------------------------------------------------------------------


REFERENCE_OWNER = "qembed-reference"  # `owned_by` in /v1/models of `qembed serve --profile cpu`
DEFAULT_DIMENSIONS = (32, 128, 512)

# -- the report --------------------------------------------------------------------------------


@dataclass
class VerifyReport:
    url: str
    model: str  # the reference model
    served_model: str | None
    tolerance: Tolerance
    results: list[DimResult]
    diagnosis: list[Diagnosis] = field(default_factory=list)
    unexplained: list[str] = field(default_factory=list)  #: failures no known mistake explains (``id@dims``)
    shared: list[str] = field(default_factory=list)  #: what the unexplained texts have in common
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def explained_by(self) -> list[Diagnosis]:
        return [d for d in self.diagnosis if d.reproduces]

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "url": self.url, "model": self.model, "served_model": self.served_model,
                "tolerance": asdict(self.tolerance), "seconds": round(self.seconds, 2),
                "results": [r.to_json() for r in self.results],
                "diagnosis": [asdict(d) for d in self.diagnosis],
                "unexplained": self.unexplained, "shared": self.shared}


# -- running it --------------------------------------------------------------------------------


def parse_dimensions(value: str | Sequence[int] | None) -> list[int] | None:
    """``"32,128"`` -> [32, 128]; ``"none"`` -> [] (full size only); None -> the default set."""
    if value is None:
        return None
    if not isinstance(value, str):
        return [int(v) for v in value]
    text = value.strip().lower()
    if text in ("", "none", "0"):
        return []
    out: list[int] = []
    for part in text.split(","):
        try:
            out.append(int(part.strip()))
        except ValueError:
            raise ConfigError(f"`--dimensions` takes integers separated by commas, got `{value}`",
                              hint="e.g. `--dimensions 32,128,512`, or `--dimensions none` for full size only") from None
    return out


def _server_details(url: str, api_key: str | None, timeout: float = 10.0) -> dict[str, Any]:
    """The first ``/v1/models`` entry (best effort: ``{}`` when there is none)."""
    import orjson

    from qembed.probe import get
    from qembed.transport import TransportFailure

    try:
        r = get(url.rstrip("/"), "/v1/models", api_key=api_key, timeout=timeout)
        data = orjson.loads(r.content).get("data") if r.status == 200 else None
        entry = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else {}
        return dict(entry)
    except (TransportFailure, ValueError, AttributeError):
        return {}


def _server_vectors(client: Client, texts: Sequence[Text], dimensions: int | None) -> npt.NDArray[np.float32]:
    """The server's vectors for ``texts``, in order, as qembed's client sends them."""
    import numpy as np

    out: list[Any] = [None] * len(texts)
    groups: dict[tuple[str, str | None], list[int]] = {}
    for i, t in enumerate(texts):
        groups.setdefault((t.kind, t.task), []).append(i)
    for (kind, task), idx in groups.items():
        batch = [texts[i].text for i in idx]
        if kind == "query":
            vecs = client.embed_queries(batch, task=task, dimensions=dimensions)
        else:
            vecs = client.embed_documents(batch, dimensions=dimensions)
        arr = np.asarray(vecs, dtype=np.float32)
        if arr.shape[0] != len(idx):
            raise QembedError(f"asked for {len(idx)} embeddings, got {arr.shape[0]}")
        for j, i in enumerate(idx):
            out[i] = arr[j]
    widths = {int(v.shape[0]) for v in out}
    if len(widths) != 1:
        raise QembedError(f"the server returned vectors of different sizes: {sorted(widths)}")
    return np.stack(out).astype(np.float32)


def _reference_vectors(engine: ReferenceEngine, texts: Sequence[Text]) -> npt.NDArray[np.float32]:
    """The model card's vectors, full size. One sequence at a time (a server never pads)."""
    import numpy as np

    out: list[Any] = [None] * len(texts)
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(texts):
        groups.setdefault(prompt_for(engine, t), []).append(i)
    for prompt, idx in groups.items():
        vecs = engine.encode([texts[i].text for i in idx], prompt=prompt, batch_size=1)
        for j, i in enumerate(idx):
            out[i] = vecs[j]
    return np.stack(out).astype(np.float32)


def _incomplete(exc: QembedError) -> CheckIncomplete:
    return CheckIncomplete(f"could not complete the check: {exc.message}",
                           hint=exc.hint or "see the server's log, and run `qembed verify` again",
                           details=exc.details)


def _compare_sizes(texts: Sequence[Text], tokens: Sequence[int], server_full: npt.NDArray[np.float32],
                   server_cut: dict[int, npt.NDArray[np.float32]], refused: dict[int, str],
                   ref_full: npt.NDArray[np.float32], tol: Tolerance,
                   full: int, dims: Sequence[int]) -> tuple[list[DimResult], dict[int, npt.NDArray[np.float32]]]:
    """One :class:`DimResult` per size (full first), and the server's vectors at each size that
    can be compared (what the diagnosis judges)."""
    import numpy as np

    from qembed.vectors import truncate

    results = [compare(texts, tokens, server_full, ref_full, tol, dimensions=full, truncation="none")]
    comparable: dict[int, npt.NDArray[np.float32]] = {}
    full_ok = server_full.shape == ref_full.shape and bool(np.isfinite(server_full).all())
    if full_ok:
        comparable[full] = server_full
    for d in dims:
        if d in refused:  # what the client's fallback gives: the same function (qembed.vectors.truncate)
            if not full_ok:
                continue
            cut = truncate(server_full, d)
            r = compare(texts, tokens, cut, truncate(ref_full, d), tol, dimensions=d, truncation="client")
            r.note = f"not supported (the client truncates): {refused[d]}"
        else:
            cut = server_cut[d]
            r = compare(texts, tokens, cut, truncate(ref_full, d), tol, dimensions=d, truncation="server")
        if r.texts and bool(np.isfinite(cut).all()):
            comparable[d] = cut
        results.append(r)
    return results, comparable


def verify(
    url: str | None,
    *,
    model: str | None = None,
    dimensions: Sequence[int] | None = None,
    precision: Literal["auto", "fp32", "bf16"] = "auto",
    api_key: str | None = None,
    device: str = "cpu",
    engine: ReferenceEngine | None = None,
    texts: Sequence[Text] | None = None,
    progress: Callable[[str], None] | None = None,
) -> VerifyReport:
    """Compare the server at ``url`` with the reference engine on ``texts``.

    Args:
        url: the server's base URL (``/v1`` optional); None = ``QEMBED_URL``, then the server
            recorded by ``qembed serve``, then ``http://127.0.0.1:30000``.
        model: the reference model (HF id or directory); default: what the server reports in
            ``/v1/models`` (its model path or id).
        dimensions: Matryoshka sizes to check besides the full size; default
            :data:`DEFAULT_DIMENSIONS` below the full size; ``[]`` = full size only. The
            server's own ``dimensions`` is judged (the client's fallback is off): a refusal is
            reported "not supported (the client truncates)" and does not fail; a wrong length
            or norm fails and is named.
        precision: the tolerance (:data:`TOLERANCES`); ``auto`` = fp32 for qembed's reference
            server, bf16 for anything else (a GPU server).
        api_key: default ``QEMBED_API_KEY``.
        device: where the reference runs (``cpu``, ``cuda``).
        engine: an already loaded reference engine (tests, ``serve --verify``).
        texts: the text set (default :data:`TEXTS`).

    Raises:
        ServerUnreachable: nothing answers at the URL (exit 7).
        CheckIncomplete: the check could not complete: a 5xx or invalid reply, a connection lost,
            a timeout (exit 8).
        MissingDependency, ConfigError.
    """
    import time

    from qembed.client.drivers import Client
    from qembed.reference.engine import ReferenceEngine
    from qembed.vectors import check_dimensions

    say = progress or (lambda _msg: None)
    texts = TEXTS if texts is None else texts
    started = time.monotonic()
    answered = False
    refused: dict[int, str] = {}
    # expect_unit=False: a server that does not normalise is one of the mistakes verify names;
    # dimensions_fallback=False: the server's own `dimensions` is what is judged
    try:
        with Client(url, api_key=api_key, max_retries=2, expect_unit=False, dimensions_fallback=False) as client:
            info = client.server_info()
            answered = True
            details = _server_details(client.base_url, client.api_key)
            served = info.model
            if precision == "auto":
                precision = "fp32" if details.get("owned_by") == REFERENCE_OWNER else "bf16"
            tol = TOLERANCES[precision]
            ref_model = model or (engine.model_name if engine else None) or details.get("root") or served
            if not ref_model:
                raise ConfigError("the server does not say which model it serves",
                                  hint="pass the model with `--model` (HF id or local directory)")
            if engine is None:
                say(f"loading the reference model {ref_model} ({device}, float32) ...")
                engine = ReferenceEngine(str(ref_model), device=device)
            full = engine.dim
            dims = [d for d in DEFAULT_DIMENSIONS if d < full] if dimensions is None else list(dimensions)
            for d in dims:
                check_dimensions(d, full)
            say(f"embedding {len(texts)} texts through {client.base_url} ...")
            server_full = _server_vectors(client, texts, None)
            server_cut: dict[int, npt.NDArray[np.float32]] = {}
            for d in dims:
                try:
                    server_cut[d] = _server_vectors(client, texts, d)
                except DimensionsRefused as exc:
                    refused[d] = exc.message
    except ServerUnreachable as exc:
        if exc.connect and not answered:
            raise  # nothing listening: exit 7
        raise _incomplete(exc) from exc
    except ServerError as exc:
        raise _incomplete(exc) from exc
    say(f"embedding {len(texts)} texts with the reference (sentence-transformers, {device}) ...")
    tokens = [len(engine.token_ids(prompt_for(engine, t) + t.text)) for t in texts]
    ref_full = _reference_vectors(engine, texts)
    results, comparable = _compare_sizes(texts, tokens, server_full, server_cut, refused, ref_full, tol,
                                         full, dims)
    report = VerifyReport(url=client.base_url, model=str(ref_model), served_model=served, tolerance=tol,
                          results=results)
    if not report.ok:
        say("some texts differ: judging each known mistake on its own, at every size ...")
        report.diagnosis, report.unexplained, report.shared = diagnose(
            engine, texts, tokens, results, comparable, ref_full, tol)
    report.seconds = time.monotonic() - started
    return report


class VerifyFailed(QembedError):
    """``qembed serve --verify``: the server's vectors are not the reference's."""


def verify_or_raise(url: str, *, model: str, precision: Literal["auto", "fp32", "bf16"],
                    api_key: str | None, progress: Callable[[str], None] | None = None,
                    **kwargs: Any) -> VerifyReport:
    """Run :func:`verify` once (``kwargs`` go to it); raise :class:`VerifyFailed` (exit 1) with
    the diagnosis if it fails."""
    report = verify(url, model=model, precision=precision, api_key=api_key, progress=progress, **kwargs)
    if not report.ok:
        failing = [r for r in report.results if not r.ok]
        problems = [f"{r.dimensions} dims: {p}" for r in failing for p in r.problems]
        scored = [r for r in failing if r.texts]
        what = (problems[0] if problems and not scored else
                f"min cos {min(r.min_cos for r in scored):.6f}, max |norm-1| "
                f"{max(r.max_norm_err for r in scored):.1e}")
        found = report.explained_by
        raise VerifyFailed(
            f"the server's vectors differ from the reference ({what}; {report.tolerance.name} "
            f"tolerance: cos >= 1 - {report.tolerance.cos:g}, |norm - 1| <= {report.tolerance.norm:g})",
            hint=("; ".join(f"{d.title}: {d.fix}" for d in found) if found
                  else f"run `qembed verify --url {report.url}` for the per-text report"),
            details=[*problems, *(f"{d.name}: {d.title} (reproduces the server)" for d in found),
                     *([f"no known mistake explains {', '.join(report.unexplained[:8])}"] if report.unexplained else []),
                     *(f"they share {s}" for s in report.shared)],
        )
    return report


__all__ = [
    "DEFAULT_DIMENSIONS",
    "VerifyFailed",
    "VerifyReport",
    "parse_dimensions",
    "verify",
    "verify_or_raise",
]
