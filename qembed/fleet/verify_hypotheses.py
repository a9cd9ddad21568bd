"""``qembed verify``'s comparison and diagnosis: the per-text and per-size results
(:class:`DimResult`), and the known serving mistakes (:data:`HYPOTHESES`, :data:`NORM_HYPOTHESES`)
each reproduced on the reference to name the one that explains the server's vectors
(:func:`diagnose`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from qembed.fleet.verify_texts import Kind, Text, prompt_for
from qembed.vectors import Tolerance

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from qembed.reference.engine import Pooling, Precision, ReferenceEngine


TOP_K = 5


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
    Hypothesis("first-token-pooling", "first-token (CLS) pooling instead of last-token pooling",
               "pool the last token (TEI `--pooling last-token`, not `cls`; vLLM: no `--pooler-config` "
               "override; sentence-transformers pooling_mode_lasttoken)"),
    Hypothesis("bos-added", "a BOS token is put before the text",
               "add no BOS: Qwen3 has none (tokenizer_config.json `bos_token: null`); GGUF conversions "
               "with `add_bos_token` (llama.cpp, Ollama) put `<|endoftext|>` first: turn it off in the "
               "model's metadata or use the Hugging Face model"),
    Hypothesis("whitespace-stripped", "leading and trailing whitespace is stripped from every input",
               "send the text unchanged; Infinity 0.0.78 strips every input (its pydantic input type has "
               "`strip_whitespace`, and a whitespace-only input becomes \"\" and is embedded without an "
               "error) with no setting to turn it off: serve with SGLang or vLLM, or strip the texts "
               "yourself for every server"),
    Hypothesis("token-limit", "long inputs are cut silently at a token limit below the context length",
               "raise the runtime's input limit to the model's context length (sentence-transformers "
               "`max_seq_length`, TEI `--max-input-length` and no `--auto-truncate`, vLLM "
               "`--max-model-len`), or split long texts into passages yourself"),
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


#: `dimensions` fix: what qembed's client does when a server gets it wrong (docs/client.md)
_CLIENT_TRUNCATES = ("leave `dimensions` to qembed's client: it sees the wrong reply, says so once and truncates "
                     "and renormalises itself (`dimensions=`, `qembed embed --dimensions`)")


NORM_HYPOTHESES: tuple[Hypothesis, ...] = (
    Hypothesis("not-renormalised", "the server truncates to `dimensions` without renormalising",
               f"{_CLIENT_TRUNCATES}; or make the server renormalise after truncating (SGLang "
               "`--json-model-override-args '{\"is_matryoshka\": true}'`, qembed profile key "
               "`matryoshka: true`; Infinity 0.0.78 cannot)"),
    Hypothesis("not-normalised", "the vectors are not L2-normalised",
               "normalise the pooled vector (sentence-transformers Normalize module; vLLM/TEI "
               "normalise by default)"),
    Hypothesis("wrong-length", "the server answers `dimensions` with vectors of another length",
               _CLIENT_TRUNCATES),
    Hypothesis("wrong-truncation", "the vectors at `dimensions` are not the server's own full vectors truncated",
               _CLIENT_TRUNCATES),
)


#: token limits runtimes cut at silently (sentence-transformers / TEI / Infinity defaults, and the
#: usual powers of two); the one that reproduces the server is named
TOKEN_LIMITS = (512, 1024, 2048, 4096, 8192)


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
    note: str = ""  #: e.g. "not supported (the client truncates): ..." when the server refused `dimensions`

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
    """One hypothesis, tried on its own at every size.

    ``consistent``: every text it changes matches the server under it (at full size; at each
    Matryoshka size whose truncation is the server's own full vectors truncated). ``explains``:
    the failures it accounts for (``id@dims``, `` (norm)`` for a length). ``reproduces``: it is
    the cause, alone, or together with the other reproducing ones when each explains its part.
    """

    name: str
    title: str
    fix: str
    reproduces: bool
    min_cos: float  # server vs the reference under this mistake, over all texts (full size)
    median_cos: float
    changed: int  # texts whose input this mistake changes
    consistent: bool = False
    explains: list[str] = field(default_factory=list)


def cos_norm(server: npt.NDArray[np.float32], ref: npt.NDArray[np.float32]) -> tuple[list[float], list[float]]:
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

    from qembed.vectors import l2_normalize

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


def compare(texts: Sequence[Text], tokens: Sequence[int], server: npt.NDArray[np.float32],
             ref: npt.NDArray[np.float32], tol: Tolerance, *, dimensions: int,
             truncation: Literal["none", "server", "client"]) -> DimResult:
    import numpy as np

    result = DimResult(dimensions=dimensions, truncation=truncation)
    if server.shape != ref.shape:
        result.problems.append(
            f"the server sends {server.shape[1]} values per vector for `dimensions: {dimensions}`"
            if truncation == "server" else
            f"the server's vectors have {server.shape[1]} values, the reference's {ref.shape[1]}: "
            "is the server serving another model?")
        return result
    if not np.all(np.isfinite(server)):
        bad = sorted({texts[i].id for i in np.argwhere(~np.isfinite(server))[:, 0]})
        result.problems.append(f"non-finite values (NaN/inf) in {', '.join(bad)}")
    cos, norms = cos_norm(server, ref)
    for t, n, c, nv in zip(texts, tokens, cos, norms, strict=True):
        ok = math.isfinite(c) and c >= 1.0 - tol.cos and abs(nv - 1.0) <= tol.norm
        result.texts.append(TextResult(t.id, t.kind, t.task, n, c, nv, ok))
    result.top1, result.topk = _retrieval_agreement(texts, server, ref)
    return result


#: one failure: (text id or "*" for a whole size, dimensions, "direction" | "norm" | "size")
_Key = tuple[str, int, str]


_Mistake = tuple[list[int], "Pooling", "Precision"]


def _key_text(key: _Key) -> str:
    tid, dims, aspect = key
    return f"{tid}@{dims}" + {"direction": "", "norm": " (norm)", "size": " (the whole size)"}[aspect]


def _failures(result: DimResult, tol: Tolerance) -> set[_Key]:
    if not result.texts:
        return {("*", result.dimensions, "size")} if result.problems else set()
    out: set[_Key] = set()
    for t in result.texts:
        if not (math.isfinite(t.cos) and t.cos >= 1.0 - tol.cos):
            out.add((t.id, result.dimensions, "direction"))
        if not abs(t.norm - 1.0) <= tol.norm:
            out.add((t.id, result.dimensions, "norm"))
    return out


def _bos_id(engine: ReferenceEngine) -> int:
    """The BOS a runtime would add: the tokenizer's own, else the token its post-processor
    appends (`<|endoftext|>`, what GGUF conversions of Qwen use as BOS)."""
    bos = getattr(engine.tokenizer, "bos_token_id", None)
    if isinstance(bos, int):
        return bos
    tail = engine.token_ids("")
    return tail[-1] if tail else int(engine.tokenizer.eos_token_id)


def _hypothesis_input(name: str, engine: ReferenceEngine, t: Text, limit: int | None = None) -> _Mistake | None:
    """What a server making mistake ``name`` would run for ``t``: token ids, pooling, precision;
    ``None`` when the mistake does not change this text."""
    prompt = prompt_for(engine, t)
    right = prompt + t.text
    text: str | None = None
    if name == "no-instruction" and t.kind == "query":
        text = t.text
    elif name == "space-after-query" and t.kind == "query" and prompt.endswith("Query:"):
        text = prompt + " " + t.text
    elif name == "space-before-query" and t.kind == "query" and prompt.endswith("\nQuery:"):
        text = prompt[: -len("\nQuery:")] + " Query:" + t.text
    elif name == "instruction-on-documents" and t.kind == "document":
        text = prompt_for(engine, Text(t.id, "query", "", "retrieval")) + t.text
    elif name == "newlines-replaced" and "\n" in right:
        text = right.replace("\n", " ")
    elif name == "whitespace-stripped" and right.strip() != right:
        text = right.strip()  # what Infinity embeds: the string the client sent, stripped
    if text is not None:
        return engine.token_ids(text), "last", "float32"
    if name == "no-eos":
        return engine.token_ids(right, add_special_tokens=False), "last", "float32"
    if name == "bos-added":
        return [_bos_id(engine), *engine.token_ids(right)], "last", "float32"
    if name == "token-limit" and limit is not None:
        ids = engine.token_ids(right)
        # tokenizers truncate before the post-processor: the first limit-1 tokens, then the EOS
        return ([*ids[: limit - 1], ids[-1]], "last", "float32") if len(ids) > limit else None
    if name in ("mean-pooling", "first-token-pooling"):
        return engine.token_ids(right), "mean" if name == "mean-pooling" else "first", "float32"
    if name == "float16":
        return engine.token_ids(right), "last", "float16"
    return None


@dataclass
class _Tried:
    diagnosis: Diagnosis
    explains: set[_Key]


def _text_hypotheses(engine: ReferenceEngine, texts: Sequence[Text], server: dict[int, npt.NDArray[np.float32]],
                     ref_full: npt.NDArray[np.float32], tol: Tolerance, failing: set[_Key],
                     broken: set[int]) -> list[_Tried]:
    """Each text-level mistake, recomputed with the reference engine, judged on its own at every
    size the server answered (``broken``: sizes whose truncation is not the server's own full
    vectors truncated, where no text mistake can be judged)."""
    import numpy as np

    from qembed.vectors import truncate

    full = int(ref_full.shape[1])
    tried: list[_Tried] = []
    for h in HYPOTHESES:
        limits: Sequence[int | None] = ([n for n in TOKEN_LIMITS if n < engine.context_length]
                                        if h.name == "token-limit" else [None])
        best: _Tried | None = None
        for limit in limits:
            rows = ref_full.copy()
            changed: list[int] = []
            for i, t in enumerate(texts):
                mistake = _hypothesis_input(h.name, engine, t, limit)
                if mistake is None:
                    continue
                ids, pooling, precision = mistake
                rows[i] = engine.embed_ids(ids, pooling=pooling, precision=precision)
                changed.append(i)
            if not changed:
                continue
            consistent, explains = True, set()
            cos_full: list[float] = []
            for d, vecs in server.items():
                if d in broken:
                    continue
                expected = rows if d == full else truncate(rows, d)
                reference = ref_full if d == full else truncate(ref_full, d)
                cos, _ = cos_norm(vecs, expected)
                distinct, _ = cos_norm(expected, reference)
                if d == full:
                    cos_full = cos
                if not all(cos[i] >= 1.0 - tol.cos for i in changed):
                    consistent = False
                    break
                explains |= {(texts[i].id, d, "direction") for i in changed if distinct[i] < 1.0 - tol.cos}
            explains &= failing
            title = h.title if limit is None else f"long inputs are cut silently at {limit} tokens (below the context length)"
            cos_all = cos_full or [float("nan")]
            d_ = Diagnosis(h.name, title, h.fix, False, float(np.min(cos_all)), statistics.median(cos_all),
                           len(changed), consistent, [])
            one = _Tried(d_, explains if consistent else set())
            if best is None or (len(one.explains), one.diagnosis.min_cos) > (len(best.explains), best.diagnosis.min_cos):
                best = one
        if best is not None:
            tried.append(best)
    return tried


def _size_hypotheses(results: Sequence[DimResult], server: dict[int, npt.NDArray[np.float32]],
                     ref_full: npt.NDArray[np.float32], tol: Tolerance, failing: set[_Key]) -> tuple[list[_Tried], set[int]]:
    """The vector lengths and the server's own `dimensions`: not normalised at full size; at each
    size the server truncated, a wrong length, a truncation that is not its own full vectors cut,
    or no renormalisation (norm = ||its full vector[:d]||). Also returns the broken sizes."""
    import numpy as np

    full = int(ref_full.shape[1])
    own = server.get(full)
    tried: list[_Tried] = []
    broken: set[int] = set()
    h_renorm, h_norm, h_length, h_cut = NORM_HYPOTHESES
    for r in results:
        d = r.dimensions
        if r.truncation == "server" and r.problems and not r.texts:
            tried.append(_Tried(Diagnosis(f"{h_length.name}@{d}", h_length.title, h_length.fix, False, float("nan"),
                                          float("nan"), 0, True, []), {("*", d, "size")} & failing))
            continue
        if not r.texts:
            continue
        norm_failing = {(t.id, d, "norm") for t in r.texts} & failing
        if r.truncation == "none":
            if norm_failing:
                off = all(abs(t.norm - 1.0) > tol.norm for t in r.texts)
                tried.append(_Tried(Diagnosis(h_norm.name, h_norm.title, h_norm.fix, False, r.min_cos, r.median_cos,
                                              len(r.texts), off, []), norm_failing if off else set()))
            continue
        if r.truncation != "server" or d not in server:
            continue
        base = own if own is not None else ref_full
        if own is not None:
            cos, _ = cos_norm(server[d], own[:, :d])
            off_cut = [i for i, c in enumerate(cos) if not c >= 1.0 - tol.cos]
            if off_cut:
                broken.add(d)
                ids = {r.texts[i].id for i in off_cut}
                explains = {k for k in failing if k[1] == d and k[0] in ids and k[2] == "direction"}
                tried.append(_Tried(Diagnosis(f"{h_cut.name}@{d}", h_cut.title, h_cut.fix, False, min(cos),
                                              statistics.median(cos), len(off_cut), True, []), explains))
        if norm_failing:
            expected = np.linalg.norm(base[:, :d].astype(np.float64), axis=1)
            got = np.array([t.norm for t in r.texts])
            err = np.abs(got - expected) / np.maximum(expected, 1e-12)
            ok = bool(float(np.max(err)) <= max(tol.norm, 1e-3) and float(np.max(np.abs(expected - 1.0))) > tol.norm)
            tried.append(_Tried(Diagnosis(f"{h_renorm.name}@{d}", h_renorm.title, h_renorm.fix, False, r.min_cos,
                                          r.median_cos, len(r.texts), ok, []), norm_failing if ok else set()))
    return tried, broken


_SCRIPTS = (("Chinese/Japanese kanji", "[\u4e00-\u9fff]"), ("Japanese kana", "[\u3040-\u30ff]"),
            ("Korean", "[\uac00-\ud7af]"), ("Arabic", "[\u0600-\u06ff]"), ("Cyrillic", "[\u0400-\u04ff]"))


def _traits(t: Text, tokens: int) -> list[str]:
    import re

    out = []
    if t.text != t.text.strip():
        out.append("whitespace at the ends")
    if "\n" in t.text or "\r" in t.text:
        out.append("newlines")
    if "\t" in t.text:
        out.append("tabs")
    if tokens > TOKEN_LIMITS[0]:
        out.append(f"longer than {TOKEN_LIMITS[0]} tokens")
    elif tokens <= 16:
        out.append("16 tokens or fewer")
    out.extend(f"{name} script" for name, pattern in _SCRIPTS if re.search(pattern, t.text))
    out.append("ASCII only" if t.text.isascii() else "non-ASCII characters")
    out.append("queries" if t.kind == "query" else "documents")
    return out


def describe(texts: Sequence[Text], tokens: Sequence[int], ids: set[str]) -> list[str]:
    """What the texts ``ids`` have in common (whitespace at the ends, length, script, newlines,
    kind), each with how common it is in the whole set; the most common traits when nothing is
    shared by all."""
    idx = [i for i, t in enumerate(texts) if t.id in ids]
    if not idx:
        return []
    traits = [_traits(t, n) for t, n in zip(texts, tokens, strict=True)]
    counts: dict[str, int] = {}
    for i in idx:
        for tr in traits[i]:
            counts[tr] = counts.get(tr, 0) + 1
    total = {tr: sum(tr in ts for ts in traits) for tr in counts}
    shared = [tr for tr, c in counts.items() if c == len(idx)]
    # a trait every text has says nothing
    telling = [tr for tr in shared if total[tr] < len(texts)]
    if telling:
        return [f"{tr}: all {len(idx)} of them ({total[tr]} of the {len(texts)} texts have it)" for tr in telling]
    common = sorted(counts.items(), key=lambda kv: (-kv[1] / max(total[kv[0]], 1), -kv[1]))[:3]
    return ["nothing shared by all of them; most telling: "
            + "; ".join(f"{tr} ({c} of them, {total[tr]} of the {len(texts)} texts)" for tr, c in common)]


def diagnose(engine: ReferenceEngine, texts: Sequence[Text], tokens: Sequence[int], results: Sequence[DimResult],
             server: dict[int, npt.NDArray[np.float32]], ref_full: npt.NDArray[np.float32],
             tol: Tolerance) -> tuple[list[Diagnosis], list[str], list[str]]:
    """Judge every known mistake on its own at every size; which ones explain the failures?

    ``server`` maps each size whose vectors can be compared (right shape, finite) to them.
    Text mistakes are recomputed with the reference engine (:data:`HYPOTHESES`); lengths and
    the server's own truncation are judged from the server's vectors (:data:`NORM_HYPOTHESES`).
    A mistake *explains* a failing text at a size when the text is within the tolerance of the
    reference computed with that mistake, the mistake moves that text outside the tolerance of
    the correct vector (else it cannot be told apart: float16 on a small model), and it is
    *consistent* (every text it changes matches the server under it). One that explains every
    failure alone reproduces the server; else those that together explain them all do.

    Returns the diagnoses (reproducing first), the failures none explains, and what the texts
    of those have in common (:func:`describe`).
    """
    failing: set[_Key] = set().union(*(_failures(r, tol) for r in results))
    sizes, broken = _size_hypotheses(results, server, ref_full, tol, failing)
    # text mistakes move directions: with none failing, recomputing them would only cost time
    directions = any(k[2] == "direction" for k in failing)
    texts_tried = _text_hypotheses(engine, texts, server, ref_full, tol, failing, broken) if directions else []
    tried = [*texts_tried, *sizes]
    alone = [t for t in tried if t.explains and t.explains >= failing]
    covered: set[_Key] = set().union(*(t.explains for t in tried))
    chosen = alone or ([t for t in tried if t.explains] if covered >= failing else [])
    for t in tried:
        t.diagnosis.explains = sorted(_key_text(k) for k in t.explains)
        t.diagnosis.reproduces = any(t is c for c in chosen)
    left = failing - covered
    out = [t.diagnosis for t in tried]
    out.sort(key=lambda d: (not d.reproduces, -len(d.explains), -(d.min_cos if d.min_cos == d.min_cos else -1)))
    ids = {k[0] for k in left if k[0] != "*"}
    return out, sorted(_key_text(k) for k in left), describe(texts, tokens, ids)


__all__ = ["HYPOTHESES", "NORM_HYPOTHESES", "TOKEN_LIMITS", "TOP_K", "Diagnosis", "DimResult", "Hypothesis", "TextResult", "compare", "cos_norm", "describe", "diagnose"]
