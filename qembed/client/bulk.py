"""Bulk files: stream records in, embed them chunk by chunk, write vectors out, resume after a crash.

Inputs are read by :mod:`qembed.client.readers`: ``.txt`` (one text a line), ``.jsonl`` / ``.csv``
(``text_field``; ``id_field``, found as ``id`` when present), ``.parquet`` (pyarrow). Outputs are written by :mod:`qembed.client.vector_io`:
``.npy`` (float32 rows, plus an ids sidecar when ids are not row numbers), ``.jsonl``
(``{"id", "embedding"}``), ``.parquet`` (``id`` + ``embedding``). Rows keep the input order;
skipped inputs are left out of the output and listed in the result's ``failures`` (with their
ids), never written as zero vectors.

Nothing is destroyed: an output that is the input, an existing output (without ``overwrite``) and
an output another job is writing (an exclusive ``flock`` on ``<output>.lock``) are refused before
anything is written.

Memory stays flat: at most two chunks are held at once. Resume works with a journal next to the
output (``<output>.journal``): one JSON line per chunk, appended only after that chunk's output
has been flushed and fsync'ed, with a checksum of the chunk's records and of the bytes it wrote.
``resume=True`` checks that the output still holds every committed chunk and that the input still
holds the same records, truncates any output written after the last journal line, skips the
chunks already done, and carries on; the journal is deleted when the job finishes.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from qembed.client import vector_io
from qembed.client.flow import Kind, kind_args
from qembed.client.readers import (
    check_input,
    count_rows,
    detect_id_field,
    read_records,
    suffix,
)
from qembed.client.vector_io import OutputLock, VectorWriter, lock_path
from qembed.errors import (
    ConfigError,
    InputError,
    QembedError,
    ServerError,
    ServerUnreachable,
    StorageError,
)

if TYPE_CHECKING:
    from qembed.client.drivers import Client

DEFAULT_CHUNK_ROWS = 1024
JOURNAL_VERSION = 3  # 3: the served model; the first embedded record's vector (the probe); `on_error`
# header keys that must match for a resume, and the option that sets each (the input's size and
# mtime are informational: the records themselves are checked, chunk by chunk)
_RESUME_KEYS = {"input": "--input", "output_format": "--output", "chunk_rows": "--chunk-rows",
                "kind": "--query/--document/--prefix", "task": "--task", "instruction": "--instruction",
                "prefix": "--prefix", "dimensions": "--dimensions", "text_field": "--text-field",
                "id_field": "--id-field", "on_error": "--on-error"}

ProgressFn = Callable[[int, "int | None", int], None]  # rows done, rows total, tokens done


@dataclass
class BulkFailure:
    id: Any
    index: int
    reason: str


@dataclass
class BulkResult:
    """The summary of a bulk job."""

    input: str
    output: str
    rows_in: int = 0
    rows_out: int = 0
    tokens: int = 0
    dimensions: int | None = None
    chunks: int = 0
    chunks_resumed: int = 0
    seconds: float = 0.0
    failures: list[BulkFailure] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "input": self.input, "output": self.output, "rows": self.rows_out, "rows_in": self.rows_in,
            "tokens": self.tokens, "dimensions": self.dimensions, "chunks": self.chunks,
            "chunks_resumed": self.chunks_resumed, "seconds": round(self.seconds, 3),
            "failures": [{"id": f.id, "index": f.index, "reason": f.reason} for f in self.failures],
        }


# -- journal ---------------------------------------------------------------------------------


def journal_path(output: Path) -> Path:
    return output.with_name(output.name + ".journal")


def _read_journal(path: Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Header and chunk lines; a torn last line (no newline, bad JSON) is ignored."""
    if not path.exists():
        return None, []
    header: dict[str, Any] | None = None
    chunks: list[dict[str, Any]] = []
    with open(path, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError:
                break
            if header is None:
                header = obj
            elif obj.get("chunk") == len(chunks):
                chunks.append(obj)
    return header, chunks


def committed(output: str | Path) -> tuple[int, int] | None:
    """``(input rows done, vectors written)`` that the journal of ``output`` records, or None."""
    header, done = _read_journal(journal_path(Path(output)))
    if header is None:
        return None
    return sum(int(d["rows_in"]) for d in done), sum(int(d["rows_out"]) for d in done)


class _Journal:
    def __init__(self, path: Path, header: dict[str, Any], *, append: bool) -> None:
        self.path = path
        if not append:
            with vector_io.open_binary(path, "wb") as f:
                f.write(json.dumps(header).encode() + b"\n")
                f.flush()
                os.fsync(f.fileno())
        self.f = vector_io.open_binary(path, "ab")

    def commit(self, entry: dict[str, Any]) -> None:
        self.f.write(json.dumps(entry, default=str).encode() + b"\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()


# -- the job ---------------------------------------------------------------------------------


def _chunks(records: Iterator[tuple[Any, str]], size: int) -> Iterator[list[tuple[Any, str]]]:
    buf: list[tuple[Any, str]] = []
    for rec in records:
        buf.append(rec)
        if len(buf) >= size:
            yield buf
            buf = []
    if buf:
        yield buf


def _records_sum(chunk: list[tuple[Any, str]]) -> str:
    """The content identity of a chunk of input records (ids and texts)."""
    h = vector_io.digest()
    for rid, text in chunk:
        h.update(repr((rid, text)).encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return str(h.hexdigest())


def _storage_error(exc: OSError, out: Path, result: BulkResult) -> StorageError:
    import errno

    full = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    what = ("the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT)
            else "the file size limit was reached" if exc.errno == errno.EFBIG
            else exc.strerror or str(exc))
    return StorageError(
        f"writing `{out}` failed: {what}; {result.rows_in} input rows ({result.rows_out} vectors) are committed",
        rows_committed=result.rows_in,
        hint=("free some space, then rerun the same command with `--resume` to continue from there" if full
              else "fix the cause, then rerun the same command with `--resume` to continue from there"))


def embed_file(
    client: Client,
    input_path: str | Path,
    output_path: str | Path,
    *,
    kind: Kind = "document",
    task: str | None = None,
    instruction: str | None = None,
    prefix: str | None = None,
    dimensions: int | None = None,
    text_field: str = "text",
    id_field: str | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    resume: bool = False,
    overwrite: bool = False,
    on_error: Literal["raise", "skip"] = "raise",
    on_progress: ProgressFn | None = None,
) -> BulkResult:
    """Embed every record of ``input_path`` into ``output_path``.

    Args:
        client: a :class:`qembed.Client` (its ``concurrency`` and ``batch_size`` apply).
        kind: ``"document"`` (no instruction unless a symmetric ``task``), ``"query"``
            (Qwen3 query format with ``task`` / ``instruction``), or ``"raw"`` (``instruction``
            or ``prefix`` applied as given): :meth:`qembed.Client.embed_texts`.
        id_field: the records' id field; default: ``id`` when the records have one, else the
            0-based row number.
        chunk_rows: rows per chunk: the unit of progress, memory and resume.
        resume: continue an interrupted job from its journal.
        overwrite: replace an existing output (and any journal) instead of refusing.
        on_error: ``"skip"`` leaves blank / too long inputs out and lists them in ``failures``.

    Returns:
        :class:`BulkResult` (rows, tokens, failures with ids, seconds).

    Raises:
        ConfigError: unknown format, a directory, a missing directory, the output is the input,
            an existing output without ``overwrite``, another job holds the output, or an
            unfinished journal without ``resume``.
        InputError: a bad record (with ``on_error="raise"``), or a resume that does not match
            (options, input records, or the output on disk).
        StorageError: the output could not be written mid-job (disk full); says what is committed.
        MissingDependency: parquet without pyarrow.

    Example:
        >>> with qembed.Client() as c:                                   # doctest: +SKIP
        ...     embed_file(c, "docs.jsonl", "vectors.npy", resume=True)
    """
    started = time.perf_counter()
    inp, out = Path(input_path), Path(output_path)
    check_input(inp)
    vector_io.check_output_format(out)
    if resume and overwrite:
        raise ConfigError("`--resume` continues the output and `--overwrite` replaces it; pass one of them")
    if chunk_rows < 1:
        raise ConfigError("`chunk_rows` must be at least 1")
    kind_args(kind, task, instruction, prefix)  # a bad kind or combination fails before any file is touched
    if suffix(out) in (".parquet",) or suffix(inp) == ".parquet":
        vector_io.pyarrow_parquet()
    if id_field is None:
        id_field = detect_id_field(inp, text_field)
    jpath = journal_path(out)
    sidecar = vector_io.ids_path(out) if suffix(out) == ".npy" and (id_field is not None or on_error == "skip") else None
    npy_ids = vector_io.ids_path(out) if suffix(out) == ".npy" else None  # used or not, it belongs to `out`
    extra = [p for p in (npy_ids, jpath, lock_path(out), vector_io.parts_path(out), vector_io.parquet_tmp_path(out))
             if p is not None]
    vector_io.check_destination(out, sources=[inp], extra=extra)
    lock = OutputLock(out)
    lock.acquire()
    try:
        return _run(client, inp, out, jpath, sidecar, kind=kind, task=task, instruction=instruction, prefix=prefix,
                    dimensions=dimensions, text_field=text_field, id_field=id_field, chunk_rows=chunk_rows,
                    resume=resume, overwrite=overwrite, on_error=on_error, on_progress=on_progress, started=started)
    finally:
        lock.release()


def _journal_check(jpath: Path, out: Path, header: dict[str, Any], sidecar: Path | None, id_field: str | None, *,
                   resume: bool, overwrite: bool) -> list[dict[str, Any]]:
    """The chunks already committed (none for a new job); refuses an unfinished job without
    ``resume``, an existing output, and a resume that does not match ``header`` or the output on
    disk. A resume takes the old header's ``dim`` and ``model`` into ``header``."""
    parts = vector_io.parts_path(out)
    old_header, done = _read_journal(jpath)
    if overwrite:
        old_header, done = None, []  # the old journal is rewritten with the first chunk
    elif old_header is not None and not resume:
        raise ConfigError(f"an unfinished job left `{jpath}`",
                          hint="pass `--resume` to continue it, or `--overwrite` to start again")
    elif old_header is None:
        npy_ids = vector_io.ids_path(out) if suffix(out) == ".npy" else None
        leftovers = [p for p in (out, npy_ids, parts) if p is not None and p.exists()]
        if leftovers and resume:
            raise ConfigError(f"nothing to resume: `{leftovers[0]}` exists but has no journal `{jpath}` "
                              "(the job finished, or was not started by qembed)",
                              hint="pass `--overwrite` instead of `--resume` to embed it again")
        if leftovers:
            raise ConfigError(f"`{leftovers[0]}` already exists",
                              hint="pass `--overwrite` to replace it, `--resume` to continue an interrupted job, "
                                   "or choose another output")
        done = []
    else:
        if old_header.get("qembed_journal") != JOURNAL_VERSION:
            raise ConfigError(f"`{jpath}` was written by another qembed version and cannot be resumed",
                              hint="pass `--overwrite` instead of `--resume` to start again")
        mismatched = [k for k in _RESUME_KEYS if old_header.get(k) != header[k]]
        if mismatched:
            was = ", ".join(_option_was(k, old_header.get(k)) for k in mismatched)
            raise InputError(f"cannot resume: the options differ from the interrupted run's, which had {was}",
                             hint=f"rerun with {was}, or pass `--overwrite` instead of `--resume` to start again")
        for key in ("dim", "model"):
            header[key] = old_header.get(key)
        if done:
            if header["dim"] is None:
                raise InputError(f"cannot resume: `{jpath}` lists chunks but no vector size",
                                 hint="pass `--overwrite` instead of `--resume` to start again")
            on_disk = vector_io.writer_for(out, int(header["dim"]), ids_are_rows=id_field is None, ids_file=sidecar)
            why = on_disk.verify(done)
            if why:
                rows = sum(int(d["rows_out"]) for d in done)
                raise InputError(f"cannot resume: {why}; the journal `{jpath}` says {rows} vectors were saved",
                                 hint="the output was changed after the interruption; pass `--overwrite` "
                                      "instead of `--resume` to start again")
    return done


def _resumed(inp: Path, out: Path, done: list[dict[str, Any]]) -> BulkResult:
    """The result so far: what the committed chunks hold."""
    result = BulkResult(input=str(inp), output=str(out), chunks_resumed=len(done))
    for entry in done:
        result.rows_in += entry["rows_in"]
        result.rows_out += entry["rows_out"]
        result.tokens += entry["tokens"]
        result.failures.extend(BulkFailure(*f) for f in entry.get("failures", []))
    result.chunks = len(done)
    return result


def _read_past_done(chunks: Iterator[list[tuple[Any, str]]], done: list[dict[str, Any]],
                    inp: Path) -> tuple[str, list[float]] | None:
    """Read past the committed chunks, checking they are the same records; returns a committed
    record's text and the vector written for it (the probe), if the journal kept one."""
    row = 0
    probe: tuple[str, list[float]] | None = None  # a committed record's text and the vector written for it
    for k, entry in enumerate(done):  # already written: read past them (checking they are the same records)
        chunk = next(chunks, None)
        if chunk is None or _records_sum(chunk) != entry.get("in_sum"):
            last = row + (len(chunk) if chunk else 0)
            raise InputError(f"cannot resume: the input `{inp}` changed since the interrupted run "
                             f"(records {row + 1}..{max(last, row + 1)}, chunk {k + 1}, differ)",
                             hint="resume with the same input, or pass `--overwrite` instead of `--resume` to start again")
        if probe is None and entry.get("probe"):
            probe = chunk[int(entry["probe"]["row"]) - row][1], entry["probe"]["vector"]
        row += len(chunk)
    return probe


def _run(client: Client, inp: Path, out: Path, jpath: Path, sidecar: Path | None, *, kind: Kind, task: str | None,
         instruction: str | None, prefix: str | None, dimensions: int | None, text_field: str, id_field: str | None,
         chunk_rows: int, resume: bool, overwrite: bool, on_error: Literal["raise", "skip"],
         on_progress: ProgressFn | None, started: float) -> BulkResult:
    st = inp.stat()
    header: dict[str, Any] = {
        "qembed_journal": JOURNAL_VERSION, "input": str(inp.resolve()), "input_size": st.st_size,
        "input_mtime_ns": st.st_mtime_ns, "output_format": suffix(out), "chunk_rows": chunk_rows,
        "kind": kind, "task": task, "instruction": instruction, "prefix": prefix,
        "dimensions": dimensions, "text_field": text_field, "id_field": id_field,
        "on_error": on_error, "ids_file": str(sidecar) if sidecar else None,
        "dim": None, "model": None,  # set when the first chunk opens the output
    }
    done = _journal_check(jpath, out, header, sidecar, id_field, resume=resume, overwrite=overwrite)
    result = _resumed(inp, out, done)
    total = count_rows(inp)

    def embed_chunk(texts: list[str]) -> Any:
        return client.embed_texts(texts, kind=kind, task=task, instruction=instruction, prefix=prefix,
                                  dimensions=dimensions, on_error=on_error)

    records = read_records(inp, text_field=text_field, id_field=id_field)
    chunks = _chunks(records, chunk_rows)
    probe = _read_past_done(chunks, done, inp)
    if probe is not None:  # the server must still be the one that wrote the committed rows: one probe, before any write
        why = _other_server(header, embed_chunk([probe[0]]), probe[1])
        if why:
            rows = sum(int(d["rows_out"]) for d in done)
            raise InputError(f"cannot resume: {why}; the {rows} vectors already in `{out}` came from "
                             f"`{header['model']}` ({header['dim']} dims)",
                             hint="resume against the server that started the job (`--url`), or pass `--overwrite` "
                                  "instead of `--resume` to embed everything with this one")
    if on_progress:
        on_progress(result.rows_in, total, result.tokens)

    def fallback_dim() -> int:  # when no chunk has given a vector yet (empty input, every row skipped)
        return int(dimensions or client.server_info().dimensions or 0)

    ctx = _Ctx(inp, out, jpath, sidecar, header, done, id_field, result, fallback_dim,
               probed=any(d.get("probe") for d in done))
    if header["dim"] is not None:
        ctx.open(append=bool(done))
    from concurrent.futures import ThreadPoolExecutor

    index_base = result.rows_in
    pending: deque[tuple[int, int, list[tuple[Any, str]], Any]] = deque()
    # two chunks in flight: the next one is being embedded while this one is written
    with ThreadPoolExecutor(2, thread_name_prefix="qembed-bulk") as pool:
        try:
            chunk_no = len(done)
            for chunk in chunks:
                pending.append((chunk_no, index_base, chunk, pool.submit(embed_chunk, [t for _, t in chunk])))
                chunk_no += 1
                index_base += len(chunk)
                if len(pending) >= 2:
                    ctx.write_one(pending.popleft())
                    if on_progress:
                        on_progress(result.rows_in, total, result.tokens)
            while pending:
                ctx.write_one(pending.popleft())
                if on_progress:
                    on_progress(result.rows_in, total, result.tokens)
            if ctx.writer is None:  # empty input (or nothing embedded): still leave a valid, empty output
                header["dim"] = fallback_dim()
                ctx.open(append=False)
            assert ctx.writer is not None
            ctx.check_own()
            try:
                ctx.writer.finalize()
            except OSError as exc:
                raise _storage_error(exc, out, result) from exc
        except (ServerUnreachable, ServerError) as exc:  # the server died or broke mid-job: what is kept?
            for *_, fut in pending:
                fut.cancel()
            exc.message = (f"{exc.message}; {result.rows_in} input rows ({result.rows_out} vectors) are committed "
                           f"in `{out}`")
            exc.args = (exc.message,)
            exc.hint = ("start the server again (or point `--url` at one serving the same model), then rerun the "
                        "same command with `--resume` to continue from there")
            raise
        except BaseException:
            for *_, fut in pending:
                fut.cancel()
            raise
        finally:
            # after a failed write the buffer still holds bytes that cannot land: closing must not
            # raise over the real error (on success, finalize has already flushed and fsync'ed)
            with contextlib.suppress(OSError):
                if ctx.writer is not None:
                    ctx.writer.close()
            with contextlib.suppress(OSError):
                if ctx.journal is not None:
                    ctx.journal.close()
    if sidecar is None and suffix(out) == ".npy":  # a replaced output keeps no stale ids
        vector_io.ids_path(out).unlink(missing_ok=True)
    jpath.unlink(missing_ok=True)
    result.dimensions = int(header["dim"]) if header["dim"] is not None else None
    result.seconds = time.perf_counter() - started
    return result


@dataclass
class _Ctx:
    """What writing one chunk needs: where, the journal header, what is done, the running result."""

    inp: Path
    out: Path
    jpath: Path
    sidecar: Path | None
    header: dict[str, Any]
    done: list[dict[str, Any]]
    id_field: str | None
    result: BulkResult
    fallback_dim: Callable[[], int]
    probed: bool  # a committed chunk records the probe: the first record's vector
    writer: VectorWriter | None = None  # open once the vector size is known; closed by the job
    journal: _Journal | None = None

    def open(self, *, append: bool) -> None:
        writer = vector_io.writer_for(self.out, int(self.header["dim"]), ids_are_rows=self.id_field is None,
                                      ids_file=self.sidecar)
        last = self.done[-1] if self.done else None
        journal: _Journal | None = None
        try:
            journal = _Journal(self.jpath, self.header, append=append)  # the journal first: a crash after
            writer.open(committed_rows=sum(d["rows_out"] for d in self.done),  # it leaves nothing unverified
                        committed_offset=int(last["offset"]) if last else 0, committed_chunks=len(self.done),
                        ids_offset=int(last.get("ids_offset", 0)) if last else 0)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                writer.close()
            if journal is not None:
                journal.close()
                if not append:  # it lists no chunk: leave nothing that asks for a --resume
                    self.jpath.unlink(missing_ok=True)
            if isinstance(exc, OSError) and not isinstance(exc, QembedError):
                raise _storage_error(exc, self.out, self.result) from exc
            raise
        self.writer, self.journal = writer, journal

    def write_one(self, item: tuple[int, int, list[tuple[Any, str]], Any]) -> None:
        chunk_no, base, chunk, fut = item
        try:
            emb = fut.result()
        except InputError as exc:
            if exc.index is not None:  # name the record (1-based, as editors count), not the position in the chunk
                rid = chunk[exc.index][0]
                n = base + exc.index + 1
                where = f"line {n}" if suffix(self.inp) == ".txt" else f"record {n}"
                named = f" (id {rid!r})" if self.id_field is not None else ""
                exc.message = f"`{self.inp}` {where}{named}: " + exc.message.split(": ", 1)[-1]
                exc.args = (exc.message,)
                exc.index = base + exc.index
                exc.hint = ("fix or remove it, or pass `--on-error skip` to leave such records out "
                            "(they are listed in the summary)")
            raise
        if self.writer is None or self.journal is None:
            # a chunk whose every row was skipped has no vector to tell the size
            self.header["dim"] = int(emb.shape[1]) if len(emb) else self.fallback_dim()
            self.header["model"] = emb.model  # which server makes this job's vectors
            self.open(append=False)
        writer, journal = self.writer, self.journal
        assert writer is not None and journal is not None
        rows = list(range(len(chunk))) if emb.indices is None else [int(i) for i in emb.indices]
        ids = [chunk[i][0] for i in rows]
        fails = [[chunk[f.index][0], base + f.index, f.reason] for f in emb.failures]
        import numpy as np

        if len(rows):  # every chunk from the same model and of the same size, or nothing is written
            why = _other_server(self.header, emb)
            if why:
                raise QembedError(
                    f"the server changed mid-job: {why}; {self.result.rows_in} input rows "
                    f"({self.result.rows_out} vectors) of `{self.header['model']}` are committed in `{self.out}`",
                    hint="point `--url` at a server of the job's model, then rerun the same command with `--resume`")
        self.check_own()
        try:
            vectors = emb.view(np.ndarray).reshape(len(rows), -1 if len(rows) else writer.dim)
            try:
                sums = writer.write(chunk_no, ids, vectors)
            except InputError as exc:  # an id the output cannot keep: name its record
                if exc.index is not None:
                    n = base + rows[exc.index] + 1
                    where = f"line {n}" if suffix(self.inp) == ".txt" else f"record {n}"
                    exc.message = f"`{self.inp}` {where}: {exc.message}"
                    exc.args = (exc.message,)
                raise
            offset, ids_offset = writer.commit()  # output durable first ...
            entry = {"chunk": chunk_no, "rows_in": len(chunk), "rows_out": len(rows),  # ... then the journal
                     "offset": offset, "ids_offset": ids_offset, "tokens": int(emb.prompt_tokens),
                     "failures": fails, "in_sum": _records_sum(chunk), "out_sha": sums.out, "ids_sha": sums.ids}
            if rows and not self.probed:  # the job's first vector: a resume embeds its text again
                entry["probe"] = {"row": base + rows[0], "vector": [float(x) for x in vectors[0]]}
            journal.commit(entry)
            self.probed = self.probed or bool(rows)
        except OSError as exc:
            if isinstance(exc, QembedError):
                raise
            raise _storage_error(exc, self.out, self.result) from exc
        r = self.result
        r.chunks += 1
        r.rows_in += len(chunk)
        r.rows_out += len(rows)
        r.tokens += int(emb.prompt_tokens)
        r.failures.extend(BulkFailure(*f) for f in fails)

    def check_own(self) -> None:
        """Stop when another program replaced the output this job writes (its rows would be lost)."""
        if self.writer is not None and self.writer.replaced():
            raise StorageError(f"`{self.out}` was replaced or removed by another program while this job wrote it; "
                               f"the {self.result.rows_out} vectors written so far are not in it",
                               rows_committed=self.result.rows_in,
                               hint="find what else writes that file, then pass `--overwrite` to embed it again")


def _option_was(key: str, value: Any) -> str:
    """How the interrupted run set the resume key ``key``, as the option a user types."""
    if key == "kind":
        return "`" + {"document": "--document", "query": "--query", "raw": "--prefix"}.get(str(value), str(value)) + "`"
    if value is None:
        return f"no `{_RESUME_KEYS[key]}`"
    return f"`{_RESUME_KEYS[key]} {value}`"


def _other_server(header: dict[str, Any], emb: Any, probe: list[float] | None = None) -> str | None:
    """Why ``emb`` (a chunk's embeddings, or the probe's) was not made by the server that wrote the
    committed rows: another served model, another vector size, or another vector than ``probe``
    for the same text. Exact equality is never asked: an honest server's last bits vary per request."""
    import numpy as np

    from qembed.vectors import TOLERANCES

    if header.get("model") and emb.model and emb.model != header["model"]:
        return f"the server now serves `{emb.model}`, not `{header['model']}`"
    dim = int(emb.shape[1]) if emb.ndim == 2 else 0
    if header.get("dim") is not None and dim != int(header["dim"]):
        return f"the server now gives vectors of {dim} dims, not the {header['dim']} of the rows already written"
    if probe is not None:
        want = np.asarray(probe, dtype=np.float64)
        got = np.asarray(emb, dtype=np.float64)[0]
        cos = float(want @ got / (np.linalg.norm(want) * np.linalg.norm(got) or 1.0))
        floor = 1 - TOLERANCES["bf16"].cos
        if cos < floor:
            return (f"the server gives another vector for the same text (cosine {cos:.4f} to the interrupted run's, "
                    f"below verify's bf16 tolerance {floor:g}): another model, or other weights under the same name")
    return None
