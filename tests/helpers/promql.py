"""Metric names out of PromQL: what tests/engine checks against real scrapes."""

from __future__ import annotations

import re

from qembed import metrics

_PROMQL_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                              "and", "or", "unless", "offset", "atan2", "inf", "nan"})


def _name_from_matcher(op: str, value: str) -> str:
    """``__name__=~"sglang[:_]x"`` -> ``sglang:x`` (0.5.23's spelling); anything else regex-like
    is an error, so a new query shape fails here instead of being skipped."""
    if op == "=~":
        value = value.replace("[:_]", metrics.SGLANG_PREFIXES[0][-1])
    if not re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", value):
        raise ValueError(f"cannot read a metric name out of __name__{op}{value!r}")
    return value


def promql_names(expr: str) -> set[str]:
    """Every metric name a PromQL expression selects: ``__name__`` matchers and bare names
    (label matchers, ranges, grouping labels, functions and keywords are not names)."""
    names = {_name_from_matcher(op, v) for op, v in re.findall(r'__name__\s*(=~|=)\s*"([^"]*)"', expr)}
    rest = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values) first: they may hold } or [
    rest = re.sub(r"\{[^}]*\}", " ", rest)
    rest = re.sub(r"\[[^\]]*\]", " ", rest)
    rest = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", rest)
    for m in re.finditer(r"(?<![0-9.])[a-zA-Z_:][a-zA-Z0-9_:]*", rest):
        tok = m.group(0)
        if tok.lower() in _PROMQL_KEYWORDS or re.match(r"\s*\(", rest[m.end():]):
            continue  # a keyword or a function call
        names.add(tok)
    return names
