"""``qembed verify``: does a server return the model card's vectors?

A built-in set of 40 texts (:data:`TEXTS`) is embedded twice: through the server with qembed's
:class:`~qembed.client.Client`, and in this process with the reference engine
(:class:`~qembed.reference.ReferenceEngine`: sentence-transformers, the model's own prompts,
last-token pooling, normalisation, truncate then renormalise). Per text and overall it reports
the cosine to the reference, the norm, and top-k retrieval agreement, at full size and at a few
Matryoshka sizes. The verdict uses a documented tolerance (:data:`TOLERANCES`, docs/verify.md).

When texts fail, the reference is recomputed under each known mistake (:data:`HYPOTHESES`: no
EOS, mean pooling, no or wrong instruction format, newlines replaced, float16, truncation without
renormalisation, no normalisation) and the report says which one reproduces the server's vectors,
with the fix.

It works against any OpenAI-compatible embedding server (SGLang, vLLM, TEI, Infinity, a
gateway): where ``dimensions`` is refused, the client truncates and renormalises itself and the
report says so (the server's own truncation then cannot be checked).
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .errors import ConfigError, QembedError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from .client import Client
    from .reference import ReferenceEngine

logger = logging.getLogger(__name__)

Kind = Literal["query", "document"]
PrecisionName = Literal["fp32", "bf16"]

# -- the text set ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    """One text of the set: ``kind`` query (sent with the ``task`` instruction) or document."""

    id: str
    kind: Kind
    text: str
    task: str | None = None  # a preset of qembed.instructions (queries only)


_LONG_SENTENCES = (
    "Embedding models map a passage of text to a single vector, and similar passages end up close together.",
    "The last token of the sequence is the end-of-text marker, and its hidden state is the sentence vector.",
    "A search system stores one vector per document and compares it with the vector of each query.",
    "Matryoshka training makes the first dimensions of a vector carry most of the information.",
    "When a runtime forgets the end-of-text token, the pooled state belongs to the last word instead.",
    "Engineers compare cosine similarities, norms and retrieval rankings before trusting a new server.",
    "Long documents are split into passages, but a single passage may still hold a few thousand tokens.",
    "The instruction tells the model which task the query belongs to, such as retrieval or similarity.",
    "Documents are embedded without an instruction, so that one index serves many kinds of queries.",
    "Numerical precision matters: bfloat16 keeps the range of float32 with fewer bits of mantissa.",
)


def _long_document() -> str:
    """About 12,000 characters of English prose in numbered paragraphs: more than 2,000 tokens with
    Qwen's 151k-token BPE (about 4 characters per token for English), ~5,000 on the tiny test
    tokenizer."""
    paragraphs = []
    for p in range(24):
        body = " ".join(_LONG_SENTENCES[(p * 3 + i) % len(_LONG_SENTENCES)] for i in range(5))
        paragraphs.append(f"Section {p + 1}. {body}")
    return "\n\n".join(paragraphs)


TEXTS: tuple[Text, ...] = (
    # queries, retrieval (the model's own `prompts["query"]`)
    Text("q-en", "query", "what is the capital of France?", "retrieval"),
    Text("q-zh", "query", "北京有哪些著名的景点？", "retrieval"),
    Text("q-es", "query", "¿Cuál es la capital de España?", "retrieval"),
    Text("q-ar", "query", "ما هي عاصمة مصر؟", "retrieval"),
    Text("q-ja", "query", "東京の桜はいつ咲きますか", "retrieval"),
    Text("q-ko", "query", "서울의 유명한 관광지는 어디인가요?", "retrieval"),
    Text("q-emb", "query", "how do text embeddings work", "retrieval"),
    Text("q-short", "query", "x", "retrieval"),
    # queries under other tasks
    Text("q-code", "query", "python function that pools the last token with an attention mask", "code"),
    Text("q-code-zh", "query", "如何在 Python 中反转一个列表", "code"),
    Text("sts-en", "query", "A man is playing a guitar on the stage.", "sts"),
    Text("sts-es", "query", "Un hombre toca la guitarra en el escenario.", "sts"),
    Text("bitext-ko", "query", "나는 매일 아침 커피를 마신다.", "bitext"),
    Text("clf-en", "query", "Stocks rallied after the central bank held interest rates steady.", "classification"),
    # documents
    Text("d-en", "document", "Paris is the capital and most populous city of France."),
    Text("d-en-2", "document", "Embeddings map text to points in a vector space; the cosine measures similarity."),
    Text("d-zh", "document", "故宫、长城和天坛是北京最著名的景点。"),
    Text("d-zh-2", "document", "机器学习模型把文本变成向量，相似的文本在向量空间中彼此靠近。"),
    Text("d-es", "document", "Madrid es la capital de España y su ciudad más poblada."),
    Text("d-es-2", "document", "El motor de búsqueda devuelve los pasajes más relevantes para la consulta."),
    Text("d-ar", "document", "القاهرة هي عاصمة مصر، وهي مدينة كبيرة على ضفاف نهر النيل."),
    Text("d-ar-2", "document", "التعلم الآلي يحول النصوص إلى متجهات رقمية يمكن مقارنتها بسهولة."),
    Text("d-ja", "document", "東京の桜は例年三月下旬から四月上旬に咲きます。"),
    Text("d-ja-2", "document", "東京は日本の首都です。桜の季節には多くの人が公園で花見を楽しみます。"),
    Text("d-ko", "document", "경복궁과 남산타워는 서울에서 가장 유명한 관광지입니다."),
    Text("d-ko-2", "document", "서울은 대한민국의 수도이며 가장 큰 도시입니다."),
    Text("d-code-py", "document",
         "def last_token_pool(h, mask):\n    n = mask.sum(dim=1) - 1\n    return h[torch.arange(h.shape[0]), n]\n"),
    Text("d-code-rev", "document", "def reverse(xs):\n\treturn xs[::-1]\n\n# 反转列表: reverse([1, 2, 3]) == [3, 2, 1]\n"),
    Text("d-code-js", "document", "const add = (a, b) => a + b;\nconsole.log(add(2, 3)); // 5\n"),
    Text("d-sql", "document", "SELECT name, COUNT(*)\nFROM orders\nWHERE status = 'paid'\nGROUP BY name;"),
    Text("d-tabs", "document", "name\tcity\tcountry\nAna\tMadrid\tSpain\nKenji\tTokyo\tJapan\n"),
    Text("d-lines", "document", "Shopping list:\n- apples\n- bread\n\n\nNotes:\r\n  call the bank\ttomorrow"),
    Text("d-md", "document", "# Install\n\n```sh\npip install qembed\n```\n\n| key | value |\n|-----|-------|\n| port | 30000 |"),
    Text("d-mixed", "document", "Mixed: Paris 巴黎 París باريس パリ 파리 Париж 2024! 🚀"),
    Text("d-guitar", "document", "Someone is performing music with a guitar in front of an audience."),
    Text("d-rates", "document", "The central bank left interest rates unchanged, and share prices climbed."),
    Text("d-bio", "document", "Photosynthesis converts light energy into chemical energy stored in glucose."),
    Text("d-a", "document", "a"),
    Text("d-spaces", "document", "  leading and trailing spaces  "),
    Text("d-long", "document", _long_document()),
)

# -- tolerances --------------------------------------------------------------------------------


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

REFERENCE_OWNER = "qembed-reference"  # `owned_by` in /v1/models of `qembed serve --profile cpu`
DEFAULT_DIMENSIONS = (32, 128, 512)
TOP_K = 5

# -- hypotheses --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hypothesis:
    name: str
    title: str
    fix: str


HYPOTHESES: tuple[Hypothesis, ...] = (
    Hypothesis("no-eos", "the EOS token `<|endoftext|>` is not appended",
               "use the model's current tokenizer.json (its post-processor appends <|endoftext|>, "
               "id 151643 on Qwen3); when sending token ids, append 151643 yourself; never load the "
               "tokenizer with add_eos_token=/add_bos_token= (transformers 5 then drops the EOS)"),
    Hypothesis("mean-pooling", "mean pooling instead of last-token pooling",
               "pool the last token: sentence-transformers `1_Pooling/config.json` "
               "pooling_mode_lasttoken; vLLM: no `--pooler-config` override (its embed default is LAST "
               "+ normalise); TEI `--pooling last-token`; SGLang pools the last token for Qwen3-Embedding"),
    Hypothesis("no-instruction", "queries are sent without the instruction",
               "send queries as `Instruct: {task}\\nQuery:{text}`: qembed's `embed_queries` / "
               "`qembed embed --query`, or `qembed.format_query(text)`"),
    Hypothesis("space-after-query", "a space after `Query:` in the instruction",
               "no space: `Instruct: {task}\\nQuery:{text}` (qembed.format_query)"),
    Hypothesis("space-before-query", "a space instead of the newline before `Query:`",
               "a newline: `Instruct: {task}\\nQuery:{text}` (qembed.format_query)"),
    Hypothesis("instruction-on-documents", "documents are sent with the query instruction",
               "send retrieval documents as they are (`embed_documents`)"),
    Hypothesis("newlines-replaced", "newlines are replaced with spaces before tokenizing",
               "send the text unchanged (LlamaIndex OpenAIEmbedding and HuggingFaceEmbeddings replace "
               "\\n with a space: use qembed's client or adapter)"),
    Hypothesis("float16", "the model runs in float16",
               "run in bfloat16 or float32 (profile key `dtype`; SGLang `--dtype`); pre-Ampere "
               "GPUs (sm < 80) have no bfloat16 and fall back to float16"),
)
NORM_HYPOTHESES: tuple[Hypothesis, ...] = (
    Hypothesis("not-renormalised", "Matryoshka truncation without renormalisation",
               "L2-normalise after truncating (SGLang does with `--json-model-override-args "
               "'{\"is_matryoshka\": true}'`, qembed profile key `matryoshka: true`); or leave "
               "`dimensions` to qembed's client, which truncates then renormalises"),
    Hypothesis("not-normalised", "the vectors are not L2-normalised",
               "normalise the pooled vector (sentence-transformers Normalize module; vLLM/TEI "
               "normalise by default)"),
)

# -- the report --------------------------------------------------------------------------------


@dataclass
class TextResult:
    id: str
    kind: Kind
    task: str | None
    tokens: int
    cos: float
    norm: float
    ok: bool


@dataclass
class DimResult:
    """All texts at one vector size (``dimensions`` None = full size)."""

    dimensions: int
    truncation: Literal["none", "server", "client"]
    texts: list[TextResult] = field(default_factory=list)
    top1: float = float("nan")  # share of retrieval queries whose best document is the same
    topk: float = float("nan")  # mean overlap of the top-k documents
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(t.ok for t in self.texts)

    @property
    def min_cos(self) -> float:
        return min((t.cos for t in self.texts), default=float("nan"))

    @property
    def median_cos(self) -> float:
        return statistics.median([t.cos for t in self.texts]) if self.texts else float("nan")

    @property
    def max_norm_err(self) -> float:
        return max((abs(t.norm - 1.0) for t in self.texts), default=float("nan"))

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok, "min_cos": self.min_cos, "median_cos": self.median_cos,
                "max_norm_err": self.max_norm_err}


@dataclass
class Diagnosis:
    """One hypothesis, tried: ``reproduces`` when the reference under it equals the server."""

    name: str
    title: str
    fix: str
    reproduces: bool
    min_cos: float  # server vs the reference under this mistake, over all texts
    median_cos: float
    changed: int  # texts whose input this mistake changes


@dataclass
class VerifyReport:
    url: str
    model: str  # the reference model
    served_model: str | None
    tolerance: Tolerance
    results: list[DimResult]
    diagnosis: list[Diagnosis] = field(default_factory=list)
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
                "diagnosis": [asdict(d) for d in self.diagnosis]}


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
    import httpx

    from .net import auth_headers

    headers = auth_headers(api_key)
    try:
        r = httpx.get(f"{url.rstrip('/')}/v1/models", headers=headers, timeout=timeout, trust_env=False)
        data = r.json().get("data") if r.status_code == 200 else None
        entry = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else {}
        return dict(entry)
    except (httpx.HTTPError, ValueError, AttributeError):
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


def _prompt(engine: ReferenceEngine, t: Text) -> str:
    from .instructions import get_task

    if t.kind == "query":
        return engine.query_prompt(get_task(t.task or "retrieval").instruction)
    return engine.document_prompt()


def _reference_vectors(engine: ReferenceEngine, texts: Sequence[Text]) -> npt.NDArray[np.float32]:
    """The model card's vectors, full size. One sequence at a time (a server never pads)."""
    import numpy as np

    out: list[Any] = [None] * len(texts)
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(texts):
        groups.setdefault(_prompt(engine, t), []).append(i)
    for prompt, idx in groups.items():
        vecs = engine.encode([texts[i].text for i in idx], prompt=prompt, batch_size=1)
        for j, i in enumerate(idx):
            out[i] = vecs[j]
    return np.stack(out).astype(np.float32)


def _cos_norm(server: npt.NDArray[np.float32], ref: npt.NDArray[np.float32]) -> tuple[list[float], list[float]]:
    import numpy as np

    a = server.astype(np.float64)
    e = ref.astype(np.float64)
    na = np.linalg.norm(a, axis=1)
    ne = np.linalg.norm(e, axis=1)
    cos = np.sum(a * e, axis=1) / np.maximum(na * ne, 1e-300)
    return [float(c) for c in cos], [float(n) for n in na]


def _retrieval_agreement(texts: Sequence[Text], server: npt.NDArray[np.float32],
                         ref: npt.NDArray[np.float32], k: int = TOP_K) -> tuple[float, float]:
    """Retrieval queries against every document: same best document, and top-k overlap."""
    import numpy as np

    from .vectors import l2_normalize

    q = [i for i, t in enumerate(texts) if t.kind == "query" and t.task in ("retrieval", "code")]
    d = [i for i, t in enumerate(texts) if t.kind == "document"]
    if not q or not d:
        return float("nan"), float("nan")
    k = min(k, len(d))
    s, r = l2_normalize(server), l2_normalize(ref)
    ss = s[q] @ s[d].T
    rs = r[q] @ r[d].T
    top1 = float(np.mean(np.argmax(ss, axis=1) == np.argmax(rs, axis=1)))
    overlap = [len(set(np.argsort(-ss[j])[:k]) & set(np.argsort(-rs[j])[:k])) / k for j in range(len(q))]
    return top1, float(np.mean(overlap))


def _compare(texts: Sequence[Text], tokens: Sequence[int], server: npt.NDArray[np.float32],
             ref: npt.NDArray[np.float32], tol: Tolerance, *, dimensions: int,
             truncation: Literal["none", "server", "client"]) -> DimResult:
    import numpy as np

    result = DimResult(dimensions=dimensions, truncation=truncation)
    if server.shape != ref.shape:
        result.problems.append(
            f"the server's vectors have {server.shape[1]} values, the reference's {ref.shape[1]}: "
            "is the server serving another model?")
        return result
    if not np.all(np.isfinite(server)):
        bad = sorted({texts[i].id for i in np.argwhere(~np.isfinite(server))[:, 0]})
        result.problems.append(f"non-finite values (NaN/inf) in {', '.join(bad)}")
    cos, norms = _cos_norm(server, ref)
    for t, n, c, nv in zip(texts, tokens, cos, norms, strict=True):
        ok = math.isfinite(c) and c >= 1.0 - tol.cos and abs(nv - 1.0) <= tol.norm
        result.texts.append(TextResult(t.id, t.kind, t.task, n, c, nv, ok))
    result.top1, result.topk = _retrieval_agreement(texts, server, ref)
    return result


# -- diagnosis ---------------------------------------------------------------------------------


def _hypothesis_input(name: str, engine: ReferenceEngine, t: Text) -> tuple[str, bool]:
    """The text a server making mistake ``name`` would tokenize, and whether that differs."""
    prompt = _prompt(engine, t)
    right = prompt + t.text
    if name == "no-instruction":
        return (t.text, True) if t.kind == "query" else (right, False)
    if name == "space-after-query":
        if t.kind == "query" and prompt.endswith("Query:"):
            return prompt + " " + t.text, True
        return right, False
    if name == "space-before-query":
        if t.kind == "query" and prompt.endswith("\nQuery:"):
            return prompt[: -len("\nQuery:")] + " Query:" + t.text, True
        return right, False
    if name == "instruction-on-documents":
        if t.kind == "document":
            return _prompt(engine, Text(t.id, "query", "", "retrieval")) + t.text, True
        return right, False
    if name == "newlines-replaced":
        return right.replace("\n", " "), "\n" in right
    return right, name in ("no-eos", "mean-pooling", "float16")


def diagnose(engine: ReferenceEngine, texts: Sequence[Text], server: npt.NDArray[np.float32],
             ref: npt.NDArray[np.float32], tol: Tolerance) -> list[Diagnosis]:
    """Recompute the reference under each known mistake; which one gives the server's vectors?

    A hypothesis *reproduces* the server when every text is within the tolerance of the
    reference computed with that mistake, and the mistake itself is outside the tolerance of
    the correct vectors (else it cannot be told apart: float16 on a small model).
    """
    import numpy as np

    from .reference import Pooling, Precision

    out: list[Diagnosis] = []
    if server.shape != ref.shape or not np.all(np.isfinite(server)):
        return out
    for h in HYPOTHESES:
        rows = []
        changed = 0
        for i, t in enumerate(texts):
            text, differs = _hypothesis_input(h.name, engine, t)
            if not differs:
                rows.append(ref[i])
                continue
            changed += 1
            ids = engine.token_ids(text, add_special_tokens=h.name != "no-eos")
            pooling: Pooling = "mean" if h.name == "mean-pooling" else "last"
            precision: Precision = "float16" if h.name == "float16" else "float32"
            rows.append(engine.embed_ids(ids, pooling=pooling, precision=precision))
        if not changed:
            continue
        expected = np.stack(rows).astype(np.float32)
        cos, _ = _cos_norm(server, expected)
        distinct, _ = _cos_norm(expected, ref)
        reproduces = min(cos) >= 1.0 - tol.cos and min(distinct) < 1.0 - tol.cos
        out.append(Diagnosis(h.name, h.title, h.fix, reproduces, min(cos), statistics.median(cos), changed))
    out.sort(key=lambda d: (not d.reproduces, -d.min_cos))
    return out


def _diagnose_truncated(full_ref: npt.NDArray[np.float32], result: DimResult, tol: Tolerance) -> list[Diagnosis]:
    """At ``dimensions`` d: do the norms equal ||ref[:d]|| (truncated, not renormalised)?"""
    import numpy as np

    d = result.dimensions
    expected = np.linalg.norm(full_ref[:, :d].astype(np.float64), axis=1)
    got = np.array([t.norm for t in result.texts])
    cos_fine = all(t.cos >= 1.0 - tol.cos for t in result.texts)
    err = np.abs(got - expected) / np.maximum(expected, 1e-12)
    reproduces = bool(cos_fine and float(np.max(err)) <= max(tol.norm, 1e-3)
                      and float(np.max(np.abs(expected - 1.0))) > tol.norm)
    h = NORM_HYPOTHESES[0]
    return [Diagnosis(f"{h.name}@{d}", h.title, h.fix, reproduces, result.min_cos, result.median_cos,
                      len(result.texts))]


def _full_norm_diagnosis(result: DimResult, tol: Tolerance) -> list[Diagnosis]:
    cos_fine = all(t.cos >= 1.0 - tol.cos for t in result.texts)
    norm_off = result.max_norm_err > tol.norm
    h = NORM_HYPOTHESES[1]
    return [Diagnosis(h.name, h.title, h.fix, cos_fine and norm_off, result.min_cos, result.median_cos,
                      len(result.texts))]


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
            :data:`DEFAULT_DIMENSIONS` below the full size; ``[]`` = full size only.
        precision: the tolerance (:data:`TOLERANCES`); ``auto`` = fp32 for qembed's reference
            server, bf16 for anything else (a GPU server).
        api_key: default ``QEMBED_API_KEY``.
        device: where the reference runs (``cpu``, ``cuda``).
        engine: an already loaded reference engine (tests, ``serve --verify``).
        texts: the text set (default :data:`TEXTS`).

    Raises:
        ServerUnreachable, ServerError, MissingDependency, ConfigError.
    """
    import time

    from .client import Client
    from .reference import ReferenceEngine
    from .vectors import check_dimensions, truncate

    say = progress or (lambda _msg: None)
    texts = TEXTS if texts is None else texts
    started = time.monotonic()
    # expect_unit=False: a server that does not normalise is one of the mistakes verify names
    with Client(url, api_key=api_key, max_retries=2, expect_unit=False) as client:
        info = client.server_info()
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
        server_cut = {d: _server_vectors(client, texts, d) for d in dims}
        server_side = client.server_info().supports_dimensions is not False
    say(f"embedding {len(texts)} texts with the reference (sentence-transformers, {device}) ...")
    tokens = [len(engine.token_ids(_prompt(engine, t) + t.text)) for t in texts]
    ref_full = _reference_vectors(engine, texts)
    results = [_compare(texts, tokens, server_full, ref_full, tol, dimensions=full, truncation="none")]
    for d in dims:
        results.append(_compare(texts, tokens, server_cut[d], truncate(ref_full, d), tol, dimensions=d,
                                truncation="server" if server_side else "client"))
    report = VerifyReport(url=client.base_url, model=str(ref_model), served_model=served, tolerance=tol,
                          results=results)
    if not report.ok:
        say("some texts differ: recomputing the reference under each known mistake ...")
        first = results[0]
        if first.texts and not all(t.ok for t in first.texts):
            if first.min_cos >= 1.0 - tol.cos:  # right directions, wrong lengths
                report.diagnosis = _full_norm_diagnosis(first, tol)
            else:
                report.diagnosis = diagnose(engine, texts, server_full, ref_full, tol)
        for r in results[1:]:
            if r.texts and not r.ok and first.ok:
                report.diagnosis.extend(_diagnose_truncated(ref_full, r, tol))
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
            hint=(f"{found[0].title}: {found[0].fix}" if found
                  else f"run `qembed verify --url {report.url}` for the per-text report"),
            details=[*problems, *(f"{d.name}: {d.title} (reproduces the server)" for d in found)],
        )
    return report


__all__ = [
    "DEFAULT_DIMENSIONS",
    "HYPOTHESES",
    "NORM_HYPOTHESES",
    "TEXTS",
    "TOLERANCES",
    "Diagnosis",
    "DimResult",
    "Text",
    "TextResult",
    "Tolerance",
    "VerifyFailed",
    "VerifyReport",
    "diagnose",
    "parse_dimensions",
    "verify",
    "verify_or_raise",
]
