"""Bulk inputs: the records of a ``.txt`` (one text a line), ``.jsonl`` / ``.csv``
(``text_field``; ``id_field``, found as ``id`` when present) or ``.parquet`` (pyarrow) file, as
``(id, text)`` in file order, with errors that name the line or record. Used by
:mod:`qembed.client.bulk`; ``qembed embed`` strips the same byte-order mark from stdin.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from qembed.client import vector_io
from qembed.errors import ConfigError, InputError

__all__ = ["BOM", "INPUT_FORMATS", "check_input", "count_rows", "detect_id_field", "read_records", "suffix"]

INPUT_FORMATS = (".txt", ".jsonl", ".csv", ".parquet")
BOM = b"\xef\xbb\xbf"  # UTF-8 byte-order mark: dropped at the start of every text input (stdin too)


def suffix(path: Path) -> str:
    """The file's format, as its lower-case extension (``.jsonl``)."""
    return path.suffix.lower()


def count_rows(path: Path) -> int | None:
    """Rows in the input, for the progress bar (cheap: a newline count or parquet metadata)."""
    ext = suffix(path)
    if ext == ".parquet":
        pq = vector_io.pyarrow_parquet()
        return int(pq.ParquetFile(path).metadata.num_rows)
    n = 0
    last = b"\n"
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            n += block.count(b"\n")
            last = block[-1:]
    if last != b"\n":
        n += 1
    if ext == ".csv":
        n -= 1  # header (quoted newlines make this an estimate)
    return max(n, 0)


def check_input(path: Path) -> None:
    """Refuse an input that cannot be read, before any work: a directory, missing, unreadable."""
    if path.is_dir():
        raise ConfigError(f"`{path}` is a directory; `--input` needs a file",
                          hint=f"give one file ({', '.join(INPUT_FORMATS)})")
    ext = suffix(path)
    if ext not in INPUT_FORMATS:
        raise ConfigError(f"cannot read `{path}`: unknown input format `{ext or '(none)'}`",
                          hint=f"use one of {', '.join(INPUT_FORMATS)}")
    if not path.exists():
        where = "" if path.is_absolute() else f" (relative paths start in `{Path.cwd()}`)"
        raise ConfigError(f"input file `{path}` does not exist",
                          hint=f"check the file name and its folder{where}")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot read `{path}`: {exc.strerror or exc}",
                          hint=f"check that you may read it: ls -l {path}") from exc


def _not_utf8(path: Path, line_no: int, exc: UnicodeDecodeError, index: int | None) -> InputError:
    return InputError(f"`{path}` line {line_no} is not UTF-8 (byte {exc.start + 1}: {exc.reason})", index=index,
                      hint="convert the file to UTF-8, e.g. `iconv -f latin1 -t utf-8`")


def _utf8_lines(f: Any, path: Path) -> Iterator[str]:
    for line_no, raw in enumerate(f, start=1):
        try:
            text: str = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _not_utf8(path, line_no, exc, None) from exc
        yield text.removeprefix("\ufeff") if line_no == 1 else text


def detect_id_field(path: str | Path, text_field: str = "text") -> str | None:
    """``"id"`` when the records carry an ``id`` field / column (as ``text`` is found), else None."""
    path = Path(path)
    ext = suffix(path)
    try:
        if ext == ".jsonl":
            import orjson

            with open(path, "rb") as f:
                for line_no, line in enumerate(f, start=1):
                    if line_no == 1:
                        line = line.removeprefix(BOM)
                    if line.strip():
                        obj = orjson.loads(line)
                        return "id" if isinstance(obj, dict) and "id" in obj and text_field != "id" else None
        elif ext == ".csv":
            with open(path, "rb") as f:
                header = next(csv.reader(_utf8_lines(f, path)), [])
            return "id" if "id" in header and text_field != "id" else None
        elif ext == ".parquet":
            names = vector_io.pyarrow_parquet().ParquetFile(path).schema_arrow.names
            return "id" if "id" in names and text_field != "id" else None
    except (ValueError, OSError, InputError):  # the reader reports a bad file with its line
        return None
    return None


def read_records(path: str | Path, *, text_field: str = "text", id_field: str | None = None) -> Iterator[tuple[Any, str]]:
    """Yield ``(id, text)`` in file order. Without ``id_field`` the id is the 0-based row number.

    Errors name the 1-based line (``.txt``, ``.jsonl``, ``.csv``) or record (``.parquet``).
    """
    path = Path(path)
    check_input(path)
    ext = suffix(path)
    if ext == ".txt":
        with open(path, "rb") as f:  # binary lines split on b"\n" only, like count_rows
            for i, raw in enumerate(f):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise _not_utf8(path, i + 1, exc, i) from exc
                if i == 0:
                    text = text.removeprefix("\ufeff")  # a byte-order mark is not text (CSV and JSONL drop it too)
                yield i, text.removesuffix("\n").removesuffix("\r")
    elif ext == ".jsonl":
        yield from _read_jsonl(path, text_field, id_field)
    elif ext == ".csv":
        with open(path, "rb") as f:
            reader = csv.DictReader(_utf8_lines(f, path))
            found = ", ".join(f"`{c}`" for c in reader.fieldnames or []) or "none"
            if reader.fieldnames is None or text_field not in reader.fieldnames:
                raise InputError(f"`{path}` has no column `{text_field}`; columns found: {found}",
                                 hint="pass `--text-field` with one of them")
            if id_field is not None and id_field not in reader.fieldnames:
                raise InputError(f"`{path}` has no column `{id_field}`; columns found: {found}",
                                 hint="pass `--id-field` with one of them")
            for i, row in enumerate(reader):
                yield (row[id_field] if id_field else i), row[text_field] or ""
    else:
        yield from _read_parquet(path, text_field, id_field)


def _read_jsonl(path: Path, text_field: str, id_field: str | None) -> Iterator[tuple[Any, str]]:
    import orjson

    i = 0
    with open(path, "rb") as f:
        for line_no, line in enumerate(f, start=1):
            if line_no == 1:
                line = line.removeprefix(BOM)
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as uexc:
                    raise _not_utf8(path, line_no, uexc, i) from exc
                raise InputError(f"`{path}` line {line_no} is not JSON: {exc}", index=i) from exc
            if not isinstance(obj, dict):
                raise InputError(f"`{path}` line {line_no} is a JSON {type(obj).__name__}, not an object "
                                 f"with a `{text_field}` field", index=i)
            for name, flag in ((text_field, "--text-field"), (id_field, "--id-field")):
                if name is not None and name not in obj:
                    found = ", ".join(f"`{k}`" for k in obj) or "none"
                    raise InputError(f"`{path}` line {line_no} has no field `{name}`; fields found: {found}",
                                     index=i, hint=f"pass `{flag}` with one of them")
            text = obj[text_field]
            if not isinstance(text, str):
                raise InputError(f"`{path}` line {line_no}: `{text_field}` is a {type(text).__name__}, not a string",
                                 index=i)
            yield (obj[id_field] if id_field else i), text
            i += 1


def _read_parquet(path: Path, text_field: str, id_field: str | None) -> Iterator[tuple[Any, str]]:
    pq = vector_io.pyarrow_parquet()
    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    for name, flag in ((text_field, "--text-field"), (id_field, "--id-field")):
        if name is not None and name not in names:
            raise InputError(f"`{path}` has no column `{name}`; columns found: {', '.join(f'`{n}`' for n in names)}",
                             hint=f"pass `{flag}` with one of them")
    cols = [text_field] + ([id_field] if id_field and id_field != text_field else [])
    i = 0
    for batch in pf.iter_batches(batch_size=4096, columns=cols):
        texts = batch.column(text_field).to_pylist()
        ids = batch.column(id_field).to_pylist() if id_field else None
        for j, text in enumerate(texts):
            if text is not None and not isinstance(text, str):
                raise InputError(f"`{path}` record {i + 1}: `{text_field}` is a {type(text).__name__}, not a string",
                                 index=i)
            yield (ids[j] if ids is not None else i), text if text is not None else ""
            i += 1
