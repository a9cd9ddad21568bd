"""``qembed bench``: a server benchmark (sweep) and a comparison with the plain openai SDK.

The sweep crosses concurrency x inputs per request x input length. Each cell sends a warm-up
(excluded), then a fixed number of requests or as many as fit in a duration, from an async load
generator (aiohttp when installed, else httpx), always with ``encoding_format: "base64"``. It
reports requests/s, texts/s, tokens/s (from the server's ``usage``), latency p50/p95/p99, errors,
and, when the GPU is known, MFU = tokens/s x FLOPs per token / the GPU's dense bf16 peak.

Inputs are seeded synthetic multilingual text (EN/ZH/ES/AR/JA/code word pools). They are sized
with the model's tokenizer when it is on disk (transformers, offline), else with the estimate
"4 UTF-8 bytes per token + 1 EOS" (:func:`estimate_tokens`). Every text starts with its own
index, so no two inputs share a prefix: SGLang's radix cache stays on for embeddings and would
otherwise serve repeated inputs from cache (a figure above 100 % MFU is that artefact).

FLOPs per token follow ``../shared/reference/performance.md`` section 2.1:
``2 x matmul params + 4 x layers x ctx x head_dim x heads`` with ctx = the input length (the PaLM
MFU convention; causal attention really does about half of the second term).

This module never prints. Numbers go back as dataclasses; ``qembed.output`` renders them.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import itertools
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

# the estimate when no tokenizer is on disk is the client's, so inputs are sized as requests are
from .client import BYTES_PER_TOKEN, estimate_tokens
from .errors import ConfigError, MissingDependency, ServerError, ServerUnreachable

if TYPE_CHECKING:
    from .models import ModelShape

logger = logging.getLogger(__name__)

DEFAULT_CONCURRENCY: tuple[int, ...] = (1, 4, 16, 64, 256)
DEFAULT_BATCH: tuple[int, ...] = (1, 32)
DEFAULT_LENGTHS: tuple[int, ...] = (64, 512, 2048)
#: client CPU (% of one core) above which a cell is flagged as possibly client-bound
CLIENT_BOUND_PCT = 85.0

# -- GPU peaks ----------------------------------------------------------------------------------

# Dense (no sparsity) bf16 tensor-core peaks in TFLOPS live with the GPU names in
# :data:`qembed.gpu.GPU_CLASSES` (one table for profiles and bench); T4 has no bf16, so its fp16
# figure (SGLang runs fp16 below sm80). Names without a known peak ("A10G", "L40", "H100 NVL")
# stay unknown rather than borrowing a neighbour's figure.


def gpu_peak(name: str) -> tuple[str, float] | None:
    """``(label, dense bf16 TFLOPS)`` for an NVML GPU name (or a label), ``None`` when unknown.

    Example:
        >>> gpu_peak("NVIDIA H100 80GB HBM3")
        ('H100 SXM', 989.0)
        >>> gpu_peak("NVIDIA A10G") is None
        True
    """
    from .gpu import match_gpu_name

    cls = match_gpu_name(name)
    if cls is None or cls.peak_label is None or cls.peak_tflops is None:
        return None
    return cls.peak_label, cls.peak_tflops


# -- FLOPs --------------------------------------------------------------------------------------


def matmul_params(shape: ModelShape) -> int:
    """Parameters that take part in a matmul per token (the embedding table is a lookup).

    Per layer: q ``h x heads*d``, k and v ``h x kv*d`` each, o ``heads*d x h``, SwiGLU MLP ``3 x h x mlp``.
    """
    h, d = shape.hidden_size, shape.head_dim
    q = shape.num_heads * d
    kv = shape.num_kv_heads * d
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * shape.intermediate_size
    return shape.num_layers * per_layer


def flops_per_token(shape: ModelShape, ctx: float) -> float:
    """``2 x matmul params + 4 x layers x ctx x head_dim x heads`` (performance.md section 2.1)."""
    attention = 4 * shape.num_layers * ctx * shape.head_dim * shape.num_heads
    return 2.0 * matmul_params(shape) + attention


def mfu(tokens_per_s: float, flops_per_tok: float, peak_tflops: float) -> float:
    """Model FLOPs utilisation as a fraction (0.5 = 50 %)."""
    return tokens_per_s * flops_per_tok / (peak_tflops * 1e12)


# -- statistics ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0..100) with linear interpolation between closest ranks.

    Same definition as numpy's default (``method="linear"``).

    Example:
        >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
        2.5
    """
    if not values:
        return math.nan
    if not 0 <= p <= 100:
        raise ValueError("p must be in [0, 100]")
    xs = sorted(values)
    pos = (len(xs) - 1) * p / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


# -- synthetic inputs ---------------------------------------------------------------------------

def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_EN = _words("the model reads every document and returns one vector per chunk so that search can rank "
             "passages by meaning rather than by shared words while the server batches requests on the "
             "graphics card and keeps latency low for short queries")
_ES = _words("el modelo lee cada documento y devuelve un vector por fragmento para que la búsqueda "
             "ordene los pasajes por significado y no por palabras compartidas mientras el servidor "
             "agrupa las peticiones")
_AR = _words("يقرأ النموذج كل مستند ويعيد متجها واحدا لكل مقطع حتى يرتب البحث المقاطع حسب المعنى "
             "وليس حسب الكلمات المشتركة بينما يجمع الخادم الطلبات")
_ZH = _words("模型 读取 每个 文档 并 为 每个 片段 返回 一个 向量 以便 搜索 按 含义 而 不是 共同 的 词语 "
             "对 段落 排序 同时 服务器 在 显卡 上 合并 请求")
_JA = _words("モデル は すべて の 文書 を 読み 各 断片 に 一つ の ベクトル を 返す ので 検索 は 共通 の 単語 "
             "では なく 意味 で 段落 を 並べ 替え られる")
_CODE = _words("def embed ( texts : list [ str ] ) -> np.ndarray : return client.embed ( texts , "
               "dimensions = 256 ) for i , row in enumerate ( rows ) : if not row . strip ( ) : "
               "continue yield i , row")

# language -> (word pool, joiner); CJK text has no spaces
WORD_POOLS: dict[str, tuple[tuple[str, ...], str]] = {
    "en": (_EN, " "),
    "zh": (_ZH, ""),
    "es": (_ES, " "),
    "ar": (_AR, " "),
    "ja": (_JA, ""),
    "code": (_CODE, " "),
}


TokenCounter = Callable[[str], int]


def load_tokenizer(model: str) -> tuple[TokenCounter, Callable[[str, int], str]] | None:
    """``(count, truncate)`` from the model's own tokenizer, offline; ``None`` if not on disk.

    ``count(text)`` includes the EOS SGLang's fast tokenizer appends; ``truncate(text, n)`` cuts
    ``text`` to ``n`` tokens (EOS included).
    """
    from .models import model_dir

    path = model_dir(model)
    if path is None or not ((path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file()):
        return None
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # optional: any failure falls back to the estimate
        logger.info("tokenizer for %s not usable (%s); using the estimate", model, exc)
        return None

    def count(text: str) -> int:
        return len(tok(text, add_special_tokens=True)["input_ids"])

    def truncate(text: str, n: int) -> str:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        return str(tok.decode(ids[: max(1, n - 1)]))

    return count, truncate


class TextSource:
    """Seeded synthetic inputs of about ``tokens`` tokens each; text ``i`` is always the same.

    A pool of ``pool`` base texts per length is built once; text ``i`` is ``"{i} "`` + base
    ``i % pool``, so every input is distinct from its first token on.
    """

    PREFIX_TOKENS = 3  # what "{i} " costs, roughly, for the indices a run reaches

    def __init__(self, *, seed: int = 0, pool: int = 256,
                 tokenizer: tuple[TokenCounter, Callable[[str, int], str]] | None = None) -> None:
        self.seed = seed
        self.pool = pool
        self.tokenizer = tokenizer
        self._bases: dict[int, list[str]] = {}

    @property
    def sizing(self) -> str:
        return "tokenizer" if self.tokenizer else f"estimate ({BYTES_PER_TOKEN} UTF-8 bytes/token + EOS)"

    def count(self, text: str) -> int:
        return self.tokenizer[0](text) if self.tokenizer else estimate_tokens(text)

    def _base(self, tokens: int, j: int) -> str:
        rng = random.Random(f"{self.seed}:{tokens}:{j}")
        lang = sorted(WORD_POOLS)[rng.randrange(len(WORD_POOLS))]
        words, joiner = WORD_POOLS[lang]
        target = max(1, tokens - self.PREFIX_TOKENS)
        parts: list[str] = []
        nbytes = 0
        goal = (target - 1) * BYTES_PER_TOKEN  # the estimate's budget, EOS excluded
        while nbytes < goal or not parts:
            w = words[rng.randrange(len(words))]
            parts.append(w)
            nbytes += len(w.encode("utf-8")) + len(joiner)
        text = joiner.join(parts)
        if self.tokenizer is not None:
            count, truncate = self.tokenizer
            while count(text) < target:
                text = text + joiner + joiner.join(parts[: max(1, len(parts) // 4)])
            text = truncate(text, target)
        else:
            raw = text.encode("utf-8")[:goal]
            text = raw.decode("utf-8", errors="ignore")
        return text.strip() or words[0]

    def texts(self, tokens: int, start: int, n: int) -> list[str]:
        bases = self._bases.get(tokens)
        if bases is None:
            bases = [self._base(tokens, j) for j in range(self.pool)]
            self._bases[tokens] = bases
        return [f"{i} {bases[i % self.pool]}" for i in range(start, start + n)]


# -- sweep --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    concurrency: int
    batch: int  # inputs per request
    tokens: int  # target input length


def sweep(concurrency: Sequence[int] = DEFAULT_CONCURRENCY, batch: Sequence[int] = DEFAULT_BATCH,
          lengths: Sequence[int] = DEFAULT_LENGTHS) -> list[Cell]:
    """All cells, length-major, then inputs per request, then concurrency (rising load).

    Raises:
        ConfigError: an axis is empty or holds a value below 1.
    """
    for name, axis in (("--concurrency", concurrency), ("--batch", batch), ("--length", lengths)):
        if not axis:
            raise ConfigError(f"`{name}` needs at least one value", hint=f"e.g. `{name} 1,4`")
        if any(int(v) < 1 for v in axis):
            raise ConfigError(f"`{name}` values must be at least 1 (got {list(axis)})")
    return [Cell(int(c), int(b), int(t)) for t, b, c in itertools.product(lengths, batch, concurrency)]


def parse_axis(text: str, name: str) -> list[int]:
    """``"1,4,16"`` -> ``[1, 4, 16]``; raises :class:`ConfigError` naming the option."""
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError as exc:
        raise ConfigError(f"`{name}` takes comma-separated integers, got {text!r}",
                          hint=f"e.g. `{name} 1,4,16`") from exc
    if not values:
        raise ConfigError(f"`{name}` needs at least one value", hint=f"e.g. `{name} 1,4`")
    return values


@dataclass
class CellResult:
    concurrency: int
    batch: int
    tokens_target: int
    requests: int
    errors: int
    texts: int
    tokens: int  # from usage.prompt_tokens
    seconds: float
    requests_per_s: float
    texts_per_s: float
    tokens_per_s: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    tokens_per_text: float
    client_cpu_pct: float  # client process CPU / wall: near 100 % means the client is the limit
    mfu: float | None = None
    first_error: str | None = None


@dataclass
class BenchReport:
    url: str
    model: str | None
    gpu: str | None
    gpu_peak_tflops: float | None
    loader: str  # "aiohttp" or "httpx"
    sizing: str  # how inputs were sized
    dimensions: int | None
    cells: list[CellResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    # short headers: a piped (non-TTY) rich table is 80 columns wide
    COLUMNS = ("conc", "batch", "len", "req/s", "texts/s", "tok/s", "p50", "p95", "p99", "err", "MFU")

    def rows(self) -> list[list[str]]:
        out = []
        for c in self.cells:
            out.append([
                str(c.concurrency), str(c.batch), str(c.tokens_target), f"{c.requests_per_s:,.1f}",
                f"{c.texts_per_s:,.0f}", _si(c.tokens_per_s), f"{c.latency_p50_ms:.1f}",
                f"{c.latency_p95_ms:.1f}", f"{c.latency_p99_ms:.1f}", str(c.errors),
                "" if c.mfu is None else f"{c.mfu * 100:.1f}%",
            ])
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_csv(self) -> str:
        """One header line, then one line per cell, with every :class:`CellResult` field."""
        names = [f for f in CellResult.__dataclass_fields__]
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(names)
        for c in self.cells:
            row = asdict(c)
            w.writerow(["" if row[n] is None else row[n] for n in names])
        return buf.getvalue()


def _si(x: float) -> str:
    """1234 -> '1234', 123456 -> '123k', 2345678 -> '2.35M' (fits a narrow column)."""
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e4:
        return f"{x / 1e3:.0f}k"
    return f"{x:.0f}"


# -- load generator -----------------------------------------------------------------------------


class _Loader:
    """POSTs raw JSON bodies; aiohttp when installed (cheaper per request, performance.md 3.2)."""

    name = "?"

    async def post(self, body: bytes) -> tuple[int, bytes]:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class _AiohttpLoader(_Loader):
    name = "aiohttp"

    def __init__(self, url: str, headers: dict[str, str], timeout: float) -> None:
        import aiohttp

        self._url = url
        self._session = aiohttp.ClientSession(
            headers=headers, connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=timeout))

    async def post(self, body: bytes) -> tuple[int, bytes]:
        async with self._session.post(self._url, data=body) as resp:
            return resp.status, await resp.read()

    async def close(self) -> None:
        await self._session.close()


class _HttpxLoader(_Loader):
    name = "httpx"

    def __init__(self, url: str, headers: dict[str, str], timeout: float) -> None:
        import httpx

        self._url = url
        self._client = httpx.AsyncClient(headers=headers, timeout=timeout,
                                         limits=httpx.Limits(max_connections=None, max_keepalive_connections=None))

    async def post(self, body: bytes) -> tuple[int, bytes]:
        resp = await self._client.post(self._url, content=body)
        return resp.status_code, resp.content

    async def close(self) -> None:
        await self._client.aclose()


def loader_name(prefer: str = "auto") -> str:
    """The load generator that will be used: ``aiohttp`` if importable (and wanted), else ``httpx``."""
    if prefer == "httpx":
        return "httpx"
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        if prefer == "aiohttp":
            raise MissingDependency("aiohttp is not installed",
                                    hint="pip install aiohttp") from None
        return "httpx"
    return "aiohttp"


def _make_loader(name: str, url: str, headers: dict[str, str], timeout: float) -> _Loader:
    return _AiohttpLoader(url, headers, timeout) if name == "aiohttp" else _HttpxLoader(url, headers, timeout)


@dataclass
class _Tally:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    ok: int = 0
    texts: int = 0
    tokens: int = 0
    first_error: str | None = None
    dim: int | None = None


def _check_reply(status: int, raw: bytes, n: int, tally: _Tally) -> None:
    import orjson

    if status != 200:
        tally.errors += 1
        if tally.first_error is None:
            tally.first_error = f"HTTP {status}: {raw[:200].decode('utf-8', 'replace')}"
        return
    body = orjson.loads(raw)
    data = body.get("data") or []
    if len(data) != n:
        tally.errors += 1
        if tally.first_error is None:
            tally.first_error = f"expected {n} vectors, got {len(data)}"
        return
    if tally.dim is None and data:
        emb = data[0].get("embedding")
        tally.dim = len(emb) * 3 // 16 if isinstance(emb, str) else len(emb or [])
    tally.ok += 1
    tally.texts += n
    tally.tokens += int((body.get("usage") or {}).get("prompt_tokens") or 0)


async def _run_cell(loader: _Loader, cell: Cell, source: TextSource, *, model: str | None,
                    dimensions: int | None, requests: int | None, duration: float | None,
                    warmup: int, start_index: int) -> tuple[_Tally, float, float, int]:
    import orjson

    next_index = start_index

    def body_for(n: int) -> bytes:
        nonlocal next_index
        texts = source.texts(cell.tokens, next_index, n)
        next_index += n
        req: dict[str, Any] = {"input": texts, "encoding_format": "base64"}
        if model:
            req["model"] = model
        if dimensions:
            req["dimensions"] = dimensions
        return orjson.dumps(req)

    async def one(tally: _Tally, body: bytes) -> None:
        t0 = time.perf_counter()
        try:
            status, raw = await loader.post(body)
        except Exception as exc:  # a failed request is a result, not a crash
            tally.errors += 1
            if tally.first_error is None:
                tally.first_error = f"{type(exc).__name__}: {exc}"
            return
        tally.latencies.append(time.perf_counter() - t0)
        _check_reply(status, raw, cell.batch, tally)

    # Warm-up: not counted (connections opened, server caches warm).
    warm = _Tally()
    await asyncio.gather(*(one(warm, body_for(cell.batch)) for _ in range(warmup)))
    if warm.errors == warmup and warmup > 0:
        raise ServerError(f"every warm-up request failed: {warm.first_error}", status=0,
                          hint="check `--url`, the API key, and `qembed doctor`")

    # Bodies are built before the clock starts, so input generation is not timed.
    total = requests if requests is not None else None
    bodies: list[bytes] = []
    if total is not None:
        bodies = [body_for(cell.batch) for _ in range(total)]
    tally = _Tally()
    issued = 0
    t_start = time.perf_counter()
    cpu_start = time.process_time()
    deadline = t_start + duration if duration is not None else math.inf

    async def worker() -> None:
        nonlocal issued
        while True:
            if total is not None:
                if issued >= total:
                    return
                body = bodies[issued]
            else:
                if time.perf_counter() >= deadline:
                    return
                body = body_for(cell.batch)
            issued += 1
            await one(tally, body)

    await asyncio.gather(*(worker() for _ in range(cell.concurrency)))
    seconds = time.perf_counter() - t_start
    cpu = time.process_time() - cpu_start
    return tally, seconds, cpu, next_index


async def _run_sweep(url: str, cells: Sequence[Cell], source: TextSource, *, headers: dict[str, str],
                     loader: str, model: str | None, dimensions: int | None, requests: int | None,
                     duration: float | None, warmup: int | None, timeout: float,
                     on_cell: Callable[[Cell, CellResult], None] | None,
                     finish: Callable[[CellResult], None]) -> list[CellResult]:
    out: list[CellResult] = []
    index = 0
    ld = _make_loader(loader, url.rstrip("/") + "/v1/embeddings", headers, timeout)
    try:
        for cell in cells:
            w = warmup if warmup is not None else min(cell.concurrency, 16)
            tally, seconds, cpu, index = await _run_cell(
                ld, cell, source, model=model, dimensions=dimensions, requests=requests,
                duration=duration, warmup=w, start_index=index)
            res = _result(cell, tally, seconds, cpu)
            finish(res)
            out.append(res)
            if on_cell is not None:
                on_cell(cell, res)
    finally:
        await ld.close()
    return out


def _result(cell: Cell, tally: _Tally, seconds: float, cpu: float) -> CellResult:
    lat_ms = [x * 1e3 for x in tally.latencies]  # every answered request, errors included
    seconds = max(seconds, 1e-9)
    return CellResult(
        concurrency=cell.concurrency, batch=cell.batch, tokens_target=cell.tokens,
        requests=tally.ok, errors=tally.errors, texts=tally.texts, tokens=tally.tokens,
        seconds=seconds,
        requests_per_s=tally.ok / seconds,
        texts_per_s=tally.texts / seconds, tokens_per_s=tally.tokens / seconds,
        latency_p50_ms=percentile(lat_ms, 50), latency_p95_ms=percentile(lat_ms, 95),
        latency_p99_ms=percentile(lat_ms, 99),
        tokens_per_text=tally.tokens / tally.texts if tally.texts else 0.0,
        client_cpu_pct=100.0 * cpu / seconds, first_error=tally.first_error,
    )


def _auth_headers(api_key: str | None) -> dict[str, str]:
    h = {"Content-Type": "application/json"}
    if api_key:
        h["Authorization"] = f"Bearer {api_key}"
    return h


def probe_model(url: str, *, api_key: str | None, timeout: float = 10.0) -> str | None:
    """The model path the server reports in ``/v1/models`` (``root``, else ``id``), after one
    probe embedding has passed the client's checks (:func:`qembed.probe.probe_server`).

    Raises:
        ServerUnreachable: nothing answers at ``url``.
        ServerError: the server rejected the API key (401).
        BadReply: the probe embedding is not a valid reply (wrong size, NaN, not unit length, ...):
            a sweep against this server would measure wrong vectors.
    """
    from .errors import BadReply
    from .probe import probe_server

    facts = probe_server(url, api_key, timeout=timeout, health=False)
    err = facts.embedding_error
    if isinstance(err, ServerUnreachable | BadReply) or (isinstance(err, ServerError) and err.status == 401):
        if isinstance(err, ServerError) and err.status == 401:
            err.hint = "pass `--api-key` or set QEMBED_API_KEY"
        raise err
    return facts.model_path


def local_gpu_name(url: str) -> str | None:
    """The first visible GPU's NVML name when ``url`` points at this machine, else ``None``."""
    from urllib.parse import urlparse

    from .net import is_this_machine

    if not is_this_machine(urlparse(url).hostname or ""):
        return None
    from .gpu import snapshot

    snap = snapshot()
    return snap.gpus[0].name if snap.gpus else None


@dataclass(frozen=True)
class BenchOptions:
    concurrency: Sequence[int] = DEFAULT_CONCURRENCY
    batch: Sequence[int] = DEFAULT_BATCH
    lengths: Sequence[int] = DEFAULT_LENGTHS
    requests: int | None = None  # per cell; wins over duration
    duration: float | None = 10.0  # seconds per cell
    warmup: int | None = None  # requests; default min(concurrency, 16)
    dimensions: int | None = None
    model: str | None = None  # request/shape model; default: the server's
    tokenizer: str | None = None  # local dir or HF id for sizing; default: the model
    gpu: str | None = None  # GPU name for MFU; default: NVML when the server is local
    seed: int = 0
    loader: str = "auto"  # auto | aiohttp | httpx
    timeout: float = 600.0


def run_bench(url: str, options: BenchOptions = BenchOptions(), *, api_key: str | None = None,
              on_cell: Callable[[Cell, CellResult], None] | None = None) -> BenchReport:
    """Run the sweep against a running server.

    Args:
        url: base URL, e.g. ``http://127.0.0.1:30000``.
        options: the axes and the per-cell budget (:class:`BenchOptions`).
        api_key: sent as ``Authorization: Bearer``.
        on_cell: called after each cell (progress).

    Returns:
        A :class:`BenchReport` with one :class:`CellResult` per cell.

    Raises:
        ConfigError: bad axes or budget. ServerUnreachable: nothing answers at ``url``.
        ServerError: every warm-up request of a cell failed.

    Example:
        >>> report = run_bench("http://127.0.0.1:30000", BenchOptions(concurrency=[4], batch=[32],
        ...                    lengths=[512], requests=50))   # doctest: +SKIP
    """
    cells = sweep(options.concurrency, options.batch, options.lengths)
    if options.requests is None and options.duration is None:
        raise ConfigError("give `--requests` or `--duration`")
    if options.requests is not None and options.requests < 1:
        raise ConfigError("`--requests` must be at least 1")
    if options.requests is None and options.duration is not None and options.duration <= 0:
        raise ConfigError("`--duration` must be positive")
    notes: list[str] = []
    server_model = probe_model(url, api_key=api_key)
    model = options.model or server_model
    tok_ref = options.tokenizer or model
    tokenizer = load_tokenizer(tok_ref) if tok_ref else None
    if options.tokenizer and tokenizer is None:
        notes.append(f"tokenizer {options.tokenizer!r} not found on disk; inputs sized by the estimate")
    source = TextSource(seed=options.seed, tokenizer=tokenizer)

    gpu_label: str | None = options.gpu
    peak: float | None = None
    if gpu_label is None:
        gpu_label = local_gpu_name(url)
    if gpu_label:
        found = gpu_peak(gpu_label)
        if found is None:
            notes.append(f"no bf16 peak known for GPU {gpu_label!r}: MFU left out")
        else:
            peak = found[1]
    else:
        notes.append("GPU unknown (remote server, or NVML found none): pass `--gpu NAME` for MFU")

    shape = None
    if model:
        from .models import model_shape

        shape = model_shape(model)
    if shape is None and peak is not None:
        notes.append(f"model shape unknown for {model!r}: MFU left out")

    def finish(res: CellResult) -> None:
        if peak is not None and shape is not None and res.tokens_per_text > 0:
            res.mfu = mfu(res.tokens_per_s, flops_per_token(shape, res.tokens_per_text), peak)

    ld = loader_name(options.loader)
    if ld == "httpx" and options.loader == "auto":
        notes.append("aiohttp not installed: the load generator uses httpx, which costs more CPU "
                     "per request at high concurrency (pip install aiohttp)")
    cells_out = asyncio.run(_run_sweep(
        url, cells, source, headers=_auth_headers(api_key), loader=ld,
        model=options.model or server_model, dimensions=options.dimensions,
        requests=options.requests, duration=None if options.requests is not None else options.duration,
        warmup=options.warmup, timeout=options.timeout, on_cell=on_cell, finish=finish))
    over = [c for c in cells_out if c.mfu is not None and c.mfu > 1.0]
    if over:
        notes.append(f"MFU above 100 % in {len(over)} cell(s): no GPU does that work; suspect cached "
                     "inputs, a stand-in server, or the wrong `--gpu`")
    busy = [c for c in cells_out if c.client_cpu_pct >= CLIENT_BOUND_PCT]
    if busy:
        worst = max(busy, key=lambda c: c.client_cpu_pct)
        notes.append(f"the load generator used {worst.client_cpu_pct:.0f} % of a CPU in {len(busy)} cell(s) "
                     f"(worst: c={worst.concurrency} batch={worst.batch} len={worst.tokens_target}): "
                     "those figures may be limited by this client, not the server")
    return BenchReport(url=url, model=model, gpu=gpu_label, gpu_peak_tflops=peak, loader=ld,
                       sizing=source.sizing, dimensions=options.dimensions, cells=cells_out, notes=notes)


# -- what a bare `qembed bench` runs -------------------------------------------------------------

#: A bare ``qembed bench``: concurrency 1, 16, 64 x 1 and 32 inputs per request x 512 tokens =
#: 6 cells of 8 s, about a minute with warm-ups. ``--full`` runs the whole default sweep
#: (:data:`DEFAULT_CONCURRENCY` x :data:`DEFAULT_BATCH` x :data:`DEFAULT_LENGTHS`, 10 s each).
QUICK_CONCURRENCY: tuple[int, ...] = (1, 16, 64)
QUICK_BATCH: tuple[int, ...] = (1, 32)
QUICK_LENGTHS: tuple[int, ...] = (512,)
QUICK_DURATION = 8.0
FULL_DURATION = 10.0


def sweep_options(*, full: bool = False, concurrency: Sequence[int] | None = None,
                  batch: Sequence[int] | None = None, lengths: Sequence[int] | None = None,
                  duration: float | None = None, **rest: Any) -> BenchOptions:
    """The quick sweep (default) or the full one (``full=True``); an axis or a duration given
    explicitly wins over the preset's. ``rest`` goes to :class:`BenchOptions` unchanged."""
    return BenchOptions(
        concurrency=tuple(concurrency or (DEFAULT_CONCURRENCY if full else QUICK_CONCURRENCY)),
        batch=tuple(batch or (DEFAULT_BATCH if full else QUICK_BATCH)),
        lengths=tuple(lengths or (DEFAULT_LENGTHS if full else QUICK_LENGTHS)),
        duration=duration if duration is not None else (FULL_DURATION if full else QUICK_DURATION),
        **rest,
    )


def planned_seconds(options: BenchOptions) -> float | None:
    """Measured seconds the sweep will take (cells x duration, warm-ups not counted), or
    ``None`` when cells run a fixed number of requests."""
    if options.requests is not None or options.duration is None:
        return None
    return len(options.concurrency) * len(options.batch) * len(options.lengths) * options.duration


# -- launching a server for the run -------------------------------------------------------------


@contextlib.contextmanager
def launched(profile_name: str, *, api_key: str | None = None,
             on_phase: Callable[[str, float], None] | None = None) -> Iterator[tuple[str, str | None]]:
    """Launch a server from a profile, yield ``(url, api_key)``, stop it on exit (always)."""
    from .launcher import launch
    from .profiles import load_profile, resolve_api_key

    profile = load_profile(profile_name)
    key = api_key or resolve_api_key(profile)
    server = launch(profile, api_key=key)
    try:
        server.wait_ready(timeout=profile.ready_timeout, on_phase=on_phase)
        yield server.url, key
    finally:
        server.stop(timeout=profile.shutdown_timeout)


# -- --compare: the same texts through the patterns users write by hand -----------------------


@dataclass
class CompareRow:
    pattern: str
    texts: int
    seconds: float
    texts_per_s: float
    client_cpu_us_per_text: float
    speedup: float | None = None  # qembed texts/s divided by this row's (1.0 for qembed)
    #: qembed's client CPU per text divided by this row's (1.0 for qembed; below 1: qembed uses less)
    cpu_ratio: float | None = None


#: at most this many CPUs, a server on the same machine competes with the client for them
SMALL_MACHINE_CPUS = 8


def compare_caveat(url: str, *, cpus: int | None = None) -> str | None:
    """The caveat for ``--compare`` when client and server share a small machine, else ``None``.

    On a shared 2-core box, the server's own CPU work (tokenizing, a CPU stand-in's forward
    pass) runs on the cores the client needs, so wall-clock texts/s measure both; client CPU per
    text is what compares the clients.
    """
    import os
    from urllib.parse import urlparse

    from .launcher import is_loopback

    host = urlparse(url).hostname or ""
    n = cpus if cpus is not None else (os.cpu_count() or 1)
    if not is_loopback(host) or n > SMALL_MACHINE_CPUS:
        return None
    return (f"client and server share this {n}-CPU machine: wall-clock texts/s include the "
            "server's share of the CPUs, so compare the clients by client CPU per text")


def compare(url: str, *, api_key: str | None = None, texts: int = 256, tokens: int = 512,
            batch: int = 32, model: str | None = None, dimensions: int | None = None,
            seed: int = 0) -> list[CompareRow]:
    """Embed the same ``texts`` inputs with qembed and with the plain openai SDK; return the rates.

    Patterns: qembed ``Client.embed`` (its own batching and base64); openai, one text per call
    with ``encoding_format="float"`` (the naive loop); openai, ``batch`` texts per call with the
    SDK's defaults (it asks for base64 and decodes to lists).

    Raises:
        MissingDependency: openai is not installed.
    """
    try:
        import openai
    except ImportError as exc:
        raise MissingDependency("`--compare` needs the openai package",
                                hint="pip install openai") from exc
    model = model or probe_model(url, api_key=api_key) or "default"
    inputs = TextSource(seed=seed).texts(tokens, 0, texts)
    warm = TextSource(seed=seed + 1).texts(tokens, 0, 2)
    rows: list[CompareRow] = []
    kw: dict[str, Any] = {} if dimensions is None else {"dimensions": dimensions}

    def timed(name: str, run: Callable[[], int]) -> None:
        # set-up and one warm-up call happen before this; only `run` is on the clock
        t0, c0 = time.perf_counter(), time.process_time()
        n = run()
        t, c = time.perf_counter() - t0, time.process_time() - c0
        rows.append(CompareRow(name, n, t, n / t, c / n * 1e6))

    from .client import Client

    with Client(url, api_key=api_key, model=model) as client:
        client.embed(warm, **kw)  # connection, /v1/models, the vector size
        timed("qembed Client.embed", lambda: len(client.embed(inputs, **kw)))

    oa = openai.OpenAI(base_url=url.rstrip("/") + "/v1", api_key=api_key or "none", max_retries=0)
    try:
        oa.embeddings.create(model=model, input=warm[0], encoding_format="float", **kw)

        def run_naive() -> int:
            n = 0
            for t in inputs:
                n += len(oa.embeddings.create(model=model, input=t, encoding_format="float", **kw).data)
            return n

        timed("openai, 1 text/call, float", run_naive)

        def run_batched() -> int:
            n = 0
            for i in range(0, len(inputs), batch):
                n += len(oa.embeddings.create(model=model, input=inputs[i:i + batch], **kw).data)
            return n

        timed(f"openai, {batch} texts/call, SDK defaults", run_batched)
    finally:
        oa.close()
    base, base_cpu = rows[0].texts_per_s, rows[0].client_cpu_us_per_text
    for r in rows:
        r.speedup = base / r.texts_per_s if r.texts_per_s else None
        r.cpu_ratio = base_cpu / r.client_cpu_us_per_text if r.client_cpu_us_per_text else None
    return rows


__all__ = [
    "DEFAULT_BATCH",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_LENGTHS",
    "FULL_DURATION",
    "QUICK_BATCH",
    "QUICK_CONCURRENCY",
    "QUICK_DURATION",
    "QUICK_LENGTHS",
    "SMALL_MACHINE_CPUS",
    "WORD_POOLS",
    "BenchOptions",
    "BenchReport",
    "Cell",
    "CellResult",
    "CompareRow",
    "TextSource",
    "compare",
    "compare_caveat",
    "estimate_tokens",
    "flops_per_token",
    "gpu_peak",
    "launched",
    "load_tokenizer",
    "local_gpu_name",
    "matmul_params",
    "mfu",
    "parse_axis",
    "percentile",
    "planned_seconds",
    "probe_model",
    "run_bench",
    "sweep",
    "sweep_options",
]
