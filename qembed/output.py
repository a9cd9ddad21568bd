"""The only module that prints.

stdout carries data (vectors, tables, JSON); everything else (status, warnings, errors, hints,
progress) goes to stderr. Colour and live progress appear only when stderr is a terminal, and
``NO_COLOR`` is honoured. rich is imported lazily so ``qembed --help`` stays fast.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from .errors import QembedError

_consoles: dict[str, Console] = {}


def _console(stderr: bool) -> Console:
    key = "err" if stderr else "out"
    stream = sys.stderr if stderr else sys.stdout
    cached = _consoles.get(key)
    # Tests swap sys.stdout/sys.stderr (CliRunner); follow the current stream.
    if cached is None or cached.file is not stream:
        from rich.console import Console

        # Piped output is data: do not squeeze wide tables into 80 columns.
        width = None if stream.isatty() else int(os.environ.get("COLUMNS") or 0) or 200
        cached = Console(
            file=stream,
            stderr=stderr,
            width=width,
            no_color=bool(os.environ.get("NO_COLOR")),
            highlight=False,
            soft_wrap=True,
        )
        _consoles[key] = cached
    return cached


def err_console() -> Console:
    """The stderr console (for progress bars and status lines)."""
    return _console(stderr=True)


def out_console() -> Console:
    """The stdout console (for human-readable data such as tables)."""
    return _console(stderr=False)


def stderr_is_tty() -> bool:
    return sys.stderr.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


# -- stderr: messages -------------------------------------------------------------------------

#: ``text`` (default) or ``json``: with ``json`` every message on stderr is one JSON object per
#: line (``qembed serve --log-format json``, for log shippers).
_log_format = "text"
LOG_FORMATS = ("text", "json")


def set_log_format(fmt: str) -> None:
    """Switch stderr messages (status, warnings, errors, events, qembed's own ``logging``)
    between plain text and JSON lines."""
    global _log_format
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {LOG_FORMATS}, not {fmt!r}")
    _log_format = fmt
    for handler in logging.getLogger().handlers:
        handler.setFormatter(_JsonLogFormatter() if fmt == "json" else logging.Formatter(
            "%(levelname)s %(name)s: %(message)s"))


def log_format() -> str:
    return _log_format


def _json_line(event: str, message: str, level: str, fields: dict[str, Any]) -> str:
    from datetime import UTC, datetime

    record = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds"), "level": level,
              "event": event, "message": message}
    record.update({k: v for k, v in fields.items() if k not in record})
    return json.dumps(record, default=str, ensure_ascii=False)


class _JsonLogFormatter(logging.Formatter):
    """A ``logging`` formatter writing the same JSON lines as :func:`event`."""

    def format(self, record: logging.LogRecord) -> str:
        return _json_line("log", record.getMessage(), record.levelname.lower(), {"logger": record.name})


def _write_err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def event(kind: str, message: str, /, *, level: str = "info", **fields: Any) -> None:
    """One qembed event on stderr: ``message`` as text, or with ``--log-format json`` a JSON
    line ``{"ts", "level", "event": kind, "message", **fields}``."""
    if _log_format == "json":
        _write_err(_json_line(kind, message, level, fields))
    else:
        _write_err(message)


def status(message: str) -> None:
    """A progress/status line on stderr (no prefix)."""
    event("status", message)


def warn(message: str, hint: str | None = None) -> None:
    """``warning: ...`` on stderr, with an optional hint paragraph."""
    if _log_format == "json":
        _write_err(_json_line("warning", message, "warning", {"hint": hint}))
        return
    _write_err(f"warning: {message}" + (f"\n\nhint: {hint}" if hint else ""))


def format_error(exc: QembedError | BaseException) -> str:
    """Render an error as text: ``error: message``, detail lines, blank line, ``hint: ...``.

    Readable without colour (uv's STYLE.md shape).
    """
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    lines = [f"error: {message}"]
    for detail in getattr(exc, "details", None) or []:
        lines.append(f"  {detail}")
    hint = getattr(exc, "hint", None)
    if hint:
        lines.extend(["", f"hint: {hint}"])
    return "\n".join(lines)


def error(exc: QembedError | BaseException) -> None:
    if _log_format == "json":
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        _write_err(_json_line("error", message, "error", {
            "error": type(exc).__name__, "exit_code": int(getattr(exc, "exit_code", 1)),
            "details": list(getattr(exc, "details", None) or []), "hint": getattr(exc, "hint", None),
            "diagnoses": list(getattr(exc, "diagnoses", None) or [])}))
        return
    _write_err(format_error(exc))


# -- stdout: data ----------------------------------------------------------------------------


def data(text: str) -> None:
    """Plain data on stdout."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def data_bytes(payload: bytes) -> None:
    """Binary data (e.g. a .npy file) on stdout."""
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:  # a text-only stream (some test runners): nothing binary can go there
        raise OSError("stdout does not accept binary data; use `--output FILE`")
    buffer.write(payload)
    buffer.flush()


def print_json(obj: Any) -> None:
    """JSON on stdout (pretty when stdout is a terminal, one line otherwise)."""
    indent = 2 if sys.stdout.isatty() else None
    data(json.dumps(obj, indent=indent, default=str, ensure_ascii=False))


def table(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    title: str | None = None,
    stderr: bool = False,
) -> None:
    """A rich table (stdout by default: tables are the human form of data)."""
    from rich.table import Table

    t = Table(title=title, show_lines=False)
    for col in columns:
        t.add_column(col)
    for row in rows:
        t.add_row(*("" if v is None else str(v) for v in row))
    (_console(stderr)).print(t)
