"""The sweep: concurrency x inputs per request x input length, run against one server.

:func:`run_bench` sizes the inputs (:mod:`.texts`), drives the load generator (:mod:`.load`)
and, when the GPU is known, works out MFU = tokens/s x FLOPs per token
(:func:`qembed.models.flops_per_token`) / the GPU's dense bf16 peak (:func:`qembed.serving.gpu.gpu_peak`).
It reports requests/s, texts/s, tokens/s (from the server's ``usage``), latency p50/p95/p99 and
errors per cell (:mod:`.report`). This module never prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qembed.errors import ConfigError
from qembed.fleet.bench.load import loader_name, run_cells
from qembed.fleet.bench.report import BenchReport, Cell, CellResult
from qembed.fleet.bench.shared import _auth_headers, local_gpu_name, probe_model
from qembed.fleet.bench.texts import TextSource, load_tokenizer
from qembed.models import ModelShape, flops_per_token, mfu, model_shape
from qembed.serving.gpu import gpu_peak

if TYPE_CHECKING:
    from qembed.serving.supervisor import Event

DEFAULT_CONCURRENCY: tuple[int, ...] = (1, 4, 16, 64, 256)
DEFAULT_BATCH: tuple[int, ...] = (1, 32)
DEFAULT_LENGTHS: tuple[int, ...] = (64, 512, 2048)
#: client CPU (% of one core) above which a cell is flagged as possibly client-bound
CLIENT_BOUND_PCT = 85.0


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

    shape: ModelShape | None = None
    if model:
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
    cells_out = asyncio.run(run_cells(
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
             on_phase: Callable[[str, float], None] | None = None,
             on_event: Callable[[Event], None] | None = None) -> Iterator[tuple[str, str | None]]:
    """Launch a server from a profile, yield ``(url, api_key)``, stop it on exit (always).

    It is a :class:`qembed.serving.supervisor.ServingSession` named ``bench-<profile>``: claimed, checked
    (GPU findings go to ``on_event``), recorded for ``qembed ps`` while it runs.
    """
    from qembed.host.state import valid_name
    from qembed.serving.profiles.resolve import load_profile, resolve_api_key
    from qembed.serving.supervisor import ServingSession

    profile = load_profile(profile_name)
    key = api_key or resolve_api_key(profile)
    name = f"bench-{profile.name}"
    with ServingSession(profile, name=name if valid_name(name) else "bench", api_key=key,
                        on_event=on_event) as session:
        session.start()
        info = session.wait_ready(on_phase=on_phase)
        yield info.url, key
