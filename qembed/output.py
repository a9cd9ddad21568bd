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
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from qembed.errors import QembedError

_consoles: dict[str, Console] = {}


# -- a closed pipe never kills the process ------------------------------------------------------
# `qembed serve --detach ... | head -3` closes stdout after three lines. Python then raises
# BrokenPipeError from the next write, wherever it happens: in the middle of a launch that left a
# child running, or inside the abort that was about to stop it (issue 23: an orphaned server with
# no record). A closed reader means nobody wants the text: the stream is pointed at /dev/null
# (its file descriptor too, so the interpreter's flush at exit is quiet) and the work goes on.


class _PipeSafe:
    """A text (or binary) stream whose writes to a closed pipe are dropped, not raised."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.broken = False

    def _drop(self) -> None:
        self.broken = True
        try:
            fd = self._stream.fileno()
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, fd)
            finally:
                os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass

    def write(self, data: Any) -> int:
        if self.broken:
            return len(data)
        try:
            return int(self._stream.write(data))
        except BrokenPipeError:
            self._drop()
            return len(data)

    def flush(self) -> None:
        if self.broken:
            return
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._drop()

    @property
    def buffer(self) -> _PipeSafe:
        return _PipeSafe(self._stream.buffer)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def guard_pipes() -> None:
    """Make ``sys.stdout`` and ``sys.stderr`` drop writes to a closed pipe (the CLI calls this
    first): losing a status line is fine, losing a child process or its record is not."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _PipeSafe):
            setattr(sys, name, _PipeSafe(stream))


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


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 warning``, ``2 warnings`` (``many``: an irregular plural). Every count in a message goes
    through here, so none says "1 warnings" or "input(s)"."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def status(message: str) -> None:
    """A progress/status line on stderr (no prefix)."""
    event("status", message)


def warn(message: str, hint: str | None = None) -> None:
    """``warning: ...`` on stderr, with an optional hint paragraph."""
    if _log_format == "json":
        _write_err(_json_line("warning", message, "warning", {"hint": hint}))
        return
    _write_err(f"warning: {message}" + (f"\n\nhint: {hint}" if hint else ""))


def format_error(exc: QembedError) -> str:
    """Render an error as text: ``error: message``, detail lines, blank line, ``hint: ...``.

    Readable without colour (uv's STYLE.md shape).
    """
    lines = [f"error: {exc.message or type(exc).__name__}"]
    lines.extend(f"  {detail}" for detail in exc.details)
    if exc.hint:
        lines.extend(["", f"hint: {exc.hint}"])
    return "\n".join(lines)


def error(exc: QembedError) -> None:
    if _log_format == "json":
        _write_err(_json_line("error", exc.message or type(exc).__name__, "error", {
            "error": type(exc).__name__, "exit_code": int(exc.exit_code), "details": list(exc.details),
            "hint": exc.hint, "diagnoses": list(exc.diagnoses)}))
        return
    _write_err(format_error(exc))


def interrupted(kept: Sequence[tuple[str, str | None]]) -> None:
    """After Ctrl-C: ``interrupted``, then what each part of the command kept and how to go on."""
    lines = ["", "interrupted"]
    for what, hint in kept:
        lines.append(f"  {what}")
        if hint:
            lines.extend(["", f"hint: {hint}"])
    _write_err("\n".join(lines))


class Transfers:
    """A download's steps (:class:`qembed.hub.Transfer` as ``message`` and ``fields``) on stderr,
    as ``ollama pull`` shows them: on a terminal a bar per file (bytes done / total, rate, time
    left); otherwise a line when a file is complete, and one every :attr:`LINE_INTERVAL_S`
    seconds while a long one downloads; with ``--log-format json`` those lines as ``download``
    events. Nothing when ``enabled`` is false. Never on stdout."""

    LINE_INTERVAL_S = 10.0

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bars: Any = None
        self.tasks: dict[str, Any] = {}
        self.last_line = 0.0

    def __call__(self, message: str, fields: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        import time

        state, file = fields.get("state"), str(fields.get("file") or "")
        if state in ("done", "failed"):
            self.close()
        if _log_format != "json" and stderr_is_tty() and state not in ("begin", "done", "failed"):
            self._bar(state, file, fields)
            return
        now = time.monotonic()
        if state == "start" or (state == "progress" and now - self.last_line < self.LINE_INTERVAL_S):
            return
        self.last_line = now
        event("download", message, **fields)

    def _bar(self, state: Any, file: str, fields: Mapping[str, Any]) -> None:
        if self.bars is None:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self.bars = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn(), console=err_console())
            self.bars.start()
        task = self.tasks.get(file)
        if task is None:
            task = self.tasks[file] = self.bars.add_task(file, total=fields.get("total_bytes"))
        done = int(fields.get("done_bytes") or 0)
        if state == "file":
            done = max(done, int(fields.get("total_bytes") or 0))
            self.bars.update(task, total=done or None)
        self.bars.update(task, completed=done)

    def close(self) -> None:
        """Stop the bars (idempotent); what they showed stays on screen."""
        if self.bars is not None:
            self.bars.stop()
            self.bars = None
            self.tasks.clear()


# -- stdout: data ----------------------------------------------------------------------------


def data(text: str) -> None:
    """Plain data on stdout."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def data_part(text: str) -> None:
    """Part of a document on stdout (no newline added), flushed: streamed output."""
    sys.stdout.write(text)
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
    markup: bool = True,
    stack_key: int = 0,
) -> None:
    """A rich table (stdout by default: tables are the human form of data).

    ``markup=False`` shows cells as plain text (``[Errno 98]`` stays as written).
    ``stack_key=N`` (N > 0): when the table does not fit the console at its natural width, each
    row is printed as a block instead: its first N cells on one heading line, then one
    ``column: value`` line per other non-empty cell, so nothing is cut to "…" and commands do not
    break across columns (``qembed doctor`` in an 80-column terminal).
    """
    from rich import box
    from rich.measure import Measurement
    from rich.table import Table
    from rich.text import Text

    console = _console(stderr)
    cells = [["" if v is None else str(v) for v in row] for row in rows]

    def build(compact: bool) -> Table:
        # compact: no vertical rules, one space between columns (about 2 columns a cell narrower)
        t = (Table(title=title, show_lines=False, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 0))
             if compact else Table(title=title, show_lines=False))
        for col in columns:
            t.add_column(col)
        for row in cells:
            t.add_row(*(row if markup else [Text(v) for v in row]))
        return t

    def natural(t: Table) -> int:
        return Measurement.get(console, console.options.update(width=100_000), t).maximum

    t = build(compact=False)
    if natural(t) <= console.width:
        console.print(t)
        return
    if stack_key > 0:
        _stacked(columns, cells, title=title, stderr=stderr, key=stack_key, width=console.width)
        return
    # too wide for the terminal: rather than cut numbers to "…", drop the box (bench, verify at 80 columns)
    console.print(build(compact=True))


def _stacked(columns: Sequence[str], rows: list[list[str]], *, title: str | None, stderr: bool,
             key: int, width: int) -> None:
    import textwrap

    write = _write_err if stderr else data
    lines: list[str] = [title, ""] if title else []
    label_width = max((len(c) for c in columns[key:]), default=0) + 2
    indent = " " * (4 + label_width)
    for row in rows:
        lines.append("  ".join(v for v in row[:key] if v))
        for col, value in zip(columns[key:], row[key:], strict=False):
            if not value:
                continue
            head = f"    {(col.lower() + ':'):<{label_width}}"
            if "`" in value:
                lines.append(head + value)  # commands stay whole: the terminal may wrap, never split them
                continue
            wrapped = textwrap.wrap(value, width=max(20, width - len(head)), break_long_words=False,
                                    break_on_hyphens=False)
            lines.append(head + wrapped[0] if wrapped else head)
            lines.extend(indent + w for w in wrapped[1:])
        lines.append("")
    write("\n".join(lines).rstrip("\n"))
