"""The only module that prints.

stdout carries data (vectors, tables, JSON); everything else (status, warnings, errors, hints,
progress) goes to stderr. Colour and live progress appear only when stderr is a terminal, and
``NO_COLOR`` is honoured. rich is imported lazily so ``qembed --help`` stays fast.
"""

from __future__ import annotations

import json
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


def _write_err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def status(message: str) -> None:
    """A progress/status line on stderr (no prefix)."""
    _write_err(message)


def warn(message: str, hint: str | None = None) -> None:
    """``warning: ...`` on stderr, with an optional hint paragraph."""
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
    _write_err(format_error(exc))


def interrupted(kept: Sequence[tuple[str, str | None]]) -> None:
    """After Ctrl-C: ``interrupted``, then what each part of the command kept and how to go on."""
    lines = ["", "interrupted"]
    for what, hint in kept:
        lines.append(f"  {what}")
        if hint:
            lines.extend(["", f"hint: {hint}"])
    _write_err("\n".join(lines))


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
