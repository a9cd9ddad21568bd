"""What a sweep measures: its cells, one result per cell, the report, and the percentile.

This module never prints: ``qembed.output`` renders a :class:`BenchReport` (table, JSON, CSV).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


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


@dataclass(frozen=True)
class Cell:
    """One point of the sweep."""

    concurrency: int
    batch: int  # inputs per request
    tokens: int  # target input length


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
