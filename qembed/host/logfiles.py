"""Reading SGLang's log files: the one incremental reader (:class:`LogFollower`), the bounded
in-memory tail kept for diagnosis (:class:`LogTail`), the last lines of a file
(:func:`read_log_tail`), following a file (:func:`follow_log`), and the summary of SGLang's long
``server_args=`` line (:func:`summarize_server_args`).

Only the standard library is imported.
"""

from __future__ import annotations

import collections
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

from qembed.redact import redact

#: How much of the log a running server's :class:`LogTail` keeps in memory for diagnosis (Ollama
#: keeps 8 KiB); :data:`qembed.serving.diagnose.TAIL_BYTES` is what is read back from a log file.
LIVE_TAIL_BYTES = 8 * 1024


class LogTail:
    """The last lines of a log, bounded to ``max_bytes`` in total (oldest dropped first).

    Lines are stored redacted (:func:`redact`, plus ``secrets``): SGLang writes its API key
    into the log, and these lines end up in error messages.
    """

    def __init__(self, max_bytes: int = LIVE_TAIL_BYTES, *, secrets: Iterable[str] = ()) -> None:
        self.max_bytes = max_bytes
        self.secrets = tuple(s for s in secrets if s)
        self._lines: collections.deque[tuple[int, str]] = collections.deque()
        self._size = 0
        self.line_count = 0  # lines seen in total (line numbers are 1-based)

    def add(self, line: str) -> None:
        line = redact(line.rstrip("\r\n"), self.secrets)
        if len(line) > self.max_bytes:  # one huge line (a tensor dump): keep its end
            line = line[-self.max_bytes :]
        self.line_count += 1
        self._lines.append((self.line_count, line))
        self._size += len(line) + 1
        while self._size > self.max_bytes and len(self._lines) > 1:
            _, old = self._lines.popleft()
            self._size -= len(old) + 1

    def lines(self, last: int | None = None) -> list[str]:
        items = [text for _, text in self._lines]
        return items if last is None else items[-last:]

    def numbered(self) -> list[tuple[int, str]]:
        return list(self._lines)


#: The ``server_args`` fields a failure summary keeps (SGLang logs about 2 KB of them).
SERVER_ARGS_KEYS = ("model_path", "served_model_name", "host", "port", "is_embedding", "dtype",
                    "mem_fraction_static", "context_length", "tp_size", "dp_size")
_SERVER_ARGS = re.compile(r"server_args=(?:ServerArgs\(|\{)")
_ARG_VALUE = r"""('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^,)}\s]+)"""


def summarize_server_args(line: str) -> str:
    """SGLang's ``server_args=ServerArgs(...)`` (or ``server_args={...}``) line cut to
    :data:`SERVER_ARGS_KEYS`; any other line unchanged.

    >>> summarize_server_args("[t] server_args=ServerArgs(model_path='m', api_key='k', port=1, x=2)")
    "[t] server_args=ServerArgs(model_path='m', port=1, …) (2 of 4 fields shown)"
    """
    m = _SERVER_ARGS.search(line)
    if m is None:
        return line
    body = line[m.end():]
    total = len(re.findall(r"(?:^|,\s*)'?[A-Za-z_][A-Za-z0-9_]*'?\s*[=:]", body))
    kept: list[str] = []
    for key in SERVER_ARGS_KEYS:
        hit = re.search(rf"(?:^|[\s,(])'?{key}'?\s*[=:]\s*{_ARG_VALUE}", body)
        if hit:
            kept.append(f"{key}={hit.group(1)}")
    shown = f"{line[:m.start()]}server_args=ServerArgs({', '.join(kept)}, …)"
    return f"{shown} ({len(kept)} of {total} fields shown)" if total else shown


class LogFollower:
    """Reads a growing log file incrementally, feeding a :class:`LogTail` (the launcher's
    phases and diagnosis, ``qembed logs -f``). A rotation (the file truncated under it, see
    :mod:`qembed.host.logrotate`) is noticed and reading starts over at the top."""

    def __init__(self, path: Path, tail: LogTail | None = None) -> None:
        self.path = path
        self.tail = tail or LogTail()
        self._fh: IO[bytes] | None = None
        self._partial = b""

    def open(self, *, at_end: bool = False) -> None:
        """Open the file now (``FileNotFoundError`` if it is missing), at its end if asked."""
        self._fh = open(self.path, "rb")  # noqa: SIM115 (kept open across calls)
        if at_end:
            self._fh.seek(0, os.SEEK_END)

    def poll(self, *, limit: int | None = 10_000) -> list[str]:
        """New complete lines since the last call (the last ``limit`` of them)."""
        if self._fh is None:
            try:
                self.open()
            except FileNotFoundError:
                return []
        assert self._fh is not None
        out: list[str] = []
        if os.fstat(self._fh.fileno()).st_size < self._fh.tell():  # rotated (copytruncate)
            self._fh.seek(0)
            self._partial = b""
        # In chunks: a server that ran for hours may have written a lot since the last call.
        while chunk := self._fh.read(1 << 20):
            *complete, self._partial = (self._partial + chunk).split(b"\n")
            for raw in complete:
                line = raw.decode("utf-8", "replace")
                self.tail.add(line)
                out.append(line)
            if limit is not None and len(out) > limit:  # the launcher only needs recent lines
                del out[:-limit]
        return out

    def flush(self) -> list[str]:
        """Like :meth:`poll`, plus a last unterminated line."""
        out = self.poll(limit=None)
        if self._partial:
            line = self._partial.decode("utf-8", "replace")
            self._partial = b""
            self.tail.add(line)
            out.append(line)
        return out

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_log_tail(path: Path, lines: int = 50, *, max_bytes: int = 4 * 1024 * 1024) -> list[str]:
    """The last ``lines`` lines of a log file (reads at most ``max_bytes`` from its end)."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - max_bytes))
        data = fh.read()
    text = data.decode("utf-8", "replace").splitlines()
    if size > max_bytes and text:
        text = text[1:]  # the first line is probably cut
    return text[-lines:] if lines > 0 else []


def follow_log(path: Path, *, alive: Callable[[], bool], interval: float = 0.2) -> Iterator[str]:
    """Lines appended to ``path`` after this call, until ``alive()`` is False (what was
    written before that is still yielded). The file is opened now, at its current end."""
    follower = LogFollower(path, LogTail(max_bytes=1))
    follower.open(at_end=True)

    def lines() -> Iterator[str]:
        try:
            while True:
                running = alive()  # checked before reading, so the last lines are not lost
                new = follower.poll(limit=None)
                if new:
                    yield from new
                    continue
                if not running:
                    yield from follower.flush()
                    return
                time.sleep(interval)  # a file has no wait-for-data call; poll it
        finally:
            follower.close()

    return lines()


__all__ = ["LIVE_TAIL_BYTES", "LogFollower", "LogTail", "follow_log", "read_log_tail", "summarize_server_args"]
