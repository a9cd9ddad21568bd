"""Vector files: one writer per format, picked by the file's suffix, for `qembed embed -o` and bulk.

Formats (the same for a one-shot ``write_vectors`` and a streamed bulk job):

* ``.npy``: float32 ``(rows, d)``. Ids that are not plain row numbers (an id field, or rows left
  out by ``on_error="skip"``) go to a sidecar ``<stem>.ids.jsonl``: line *k* is the JSON id of
  row *k*, so the rows stay traceable.
* ``.jsonl``: ``{"id": ..., "embedding": [...]}`` per line (the only JSONL schema qembed writes).
* ``.parquet``: columns ``id`` (int64 row numbers, or string ids) and ``embedding``
  (``fixed_size_list<float32>[d]``); needs pyarrow.

The streamed writers keep a durable commit point (``commit``) and can verify, before a resume,
that the file still holds what a journal says was committed (``verify``): a blake2b checksum per
chunk. ``check_destination`` refuses what would destroy a file: writing over the input, into a
directory, into a directory that does not exist, over an existing file without ``overwrite``, or
through a symbolic link (the output and every side file: lock, journal, ids, parts, temporary
files). Side files are also opened with ``O_NOFOLLOW``, so a link planted after the check is
refused too. Every writer, one-shot or bulk, holds :class:`OutputLock` while it writes.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import socket
import stat
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qembed.errors import ConfigError, InputError, MissingDependency

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

OUTPUT_FORMATS = (".npy", ".jsonl", ".parquet")
NPY_HEADER = 128  # bytes: magic + version + length + dict, padded; room for any shape


def digest() -> Any:
    """The checksum used in journals (blake2b, 16 bytes)."""
    return hashlib.blake2b(digest_size=16)


def suffix(path: Path) -> str:
    return path.suffix.lower()


def ids_path(output: Path) -> Path:
    """The ids sidecar of a ``.npy`` output: ``vectors.npy`` -> ``vectors.ids.jsonl``."""
    return output.with_name(output.stem + ".ids.jsonl")


def pyarrow_parquet() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise MissingDependency("reading or writing `.parquet` needs pyarrow",
                                hint="pip install 'qembed[parquet]'") from exc
    return pq


def _same_file(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def lock_path(output: Path) -> Path:
    """The lock every writer of ``output`` holds: ``<output>.lock``."""
    return output.with_name(output.name + ".lock")


def parts_path(output: Path) -> Path:
    """The folder of a streamed ``.parquet`` output's part files: ``<output>.parts``."""
    return output.with_name(output.name + ".parts")


def parquet_tmp_path(output: Path) -> Path:
    """Where a streamed ``.parquet`` output is merged before it is renamed into place."""
    return output.with_name(output.name + ".tmp")


def _link_refused(path: Path) -> ConfigError:
    try:
        target = f" (to `{os.readlink(path)}`)"
    except OSError:
        target = ""
    return ConfigError(f"`{path}` is a symbolic link{target}; qembed never writes through a link next to its output",
                       hint="remove the link (`rm` removes the link, not its target), or give the real path as "
                            "`--output`")


def refuse_link(path: Path) -> None:
    """Refuse ``path`` when it is a symbolic link (a dangling one included)."""
    if os.path.islink(path):
        raise _link_refused(path)


def open_nofollow(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that refuses a symbolic link, anything but a regular file, and a file with
    other hard links (writing it would change a file under another name)."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _link_refused(path) from exc
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
        os.close(fd)
        what = "not a regular file" if not stat.S_ISREG(st.st_mode) else f"has {st.st_nlink} hard links"
        raise ConfigError(f"`{path}` is {what}; qembed writes only files of its own next to its output",
                          hint="move it away, or choose another output")
    return fd


def open_binary(path: Path, mode: str) -> io.BufferedRandom:
    """``open(path, mode)`` for ``w+b``, ``r+b``, ``ab`` and ``wb``, through :func:`open_nofollow`."""
    flags = {"w+b": os.O_RDWR | os.O_CREAT | os.O_TRUNC, "wb": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
             "r+b": os.O_RDWR, "ab": os.O_WRONLY | os.O_CREAT | os.O_APPEND}[mode]
    fd = open_nofollow(path, flags)
    return open(fd, mode)  # type: ignore[return-value]


class OutputLock:
    """An exclusive ``flock`` on ``<output>.lock`` while a writer writes: one writer per output,
    a one-shot ``embed -o`` and a bulk job alike.

    The file names its holder (pid, host, start time), so a refused writer can say who has it.
    It is removed when the writer ends; a lock file left by a killed job is simply taken over
    (the kernel released the lock with the process).
    """

    def __init__(self, output: Path) -> None:
        self.output = output
        self.path = lock_path(output)
        self.fd: int | None = None

    def acquire(self) -> None:
        import fcntl

        while True:
            try:
                fd = open_nofollow(self.path, os.O_RDWR | os.O_CREAT)
            except OSError as exc:
                raise ConfigError(f"cannot create `{self.path}` next to the output: {exc.strerror or exc}",
                                  hint="choose an output in a directory you can write to") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
                os.close(fd)
                raise ConfigError(f"`{self.output}` is being written by another qembed job ({holder})",
                                  hint="wait for that job to finish, or write to another file") from None
            # a finishing job unlinks the file after we opened it: then lock the new one
            try:
                same = os.lstat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since "
                         f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
            self.fd = fd
            return

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still held: nobody else can hold this inode
        finally:
            os.close(self.fd)
            self.fd = None


def check_output_format(dest: Path) -> None:
    """A file name (not a directory) whose suffix names a format qembed writes."""
    if dest.is_dir():
        raise ConfigError(f"`{dest}` is a directory; `--output` needs a file name",
                          hint=f"for example `{dest / 'vectors.npy'}`")
    if suffix(dest) not in OUTPUT_FORMATS:
        raise ConfigError(f"cannot write `{dest}`: unknown output format `{suffix(dest) or '(none)'}`",
                          hint=f"name the file with one of {', '.join(OUTPUT_FORMATS)}")


def check_destination(dest: Path, *, sources: Sequence[Path] = (), extra: Sequence[Path] = (),
                      overwrite: bool = True) -> None:
    """Refuse, before anything is written, an output that would destroy a file or cannot be made.

    ``extra`` are the files written next to ``dest`` (sidecar, journal); each must not be a source.
    With ``overwrite=False`` an existing ``dest`` (or sidecar) is refused.
    """
    check_output_format(dest)
    parent = dest.parent
    if not parent.exists():
        raise ConfigError(f"the directory `{parent}` of the output does not exist",
                          hint=f"create it first: mkdir -p {parent}")
    if not parent.is_dir():
        raise ConfigError(f"`{parent}` is not a directory, so `{dest}` cannot be written")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write in `{parent}`: permission denied",
                          hint="choose an output in a directory you can write to")
    if dest.exists() and not os.access(dest, os.W_OK):
        raise ConfigError(f"cannot write `{dest}`: permission denied")
    for src in sources:
        for path in (dest, *extra):
            if _same_file(path, src):
                raise ConfigError(f"the output `{path}` is the input `{src}`; writing it would destroy the input",
                                  hint="choose another output file name")
    for path in (dest, lock_path(dest), *extra):
        refuse_link(path)
    if not overwrite:
        for path in (dest, *extra):
            if path.exists():
                raise ConfigError(f"`{path}` already exists",
                                  hint="pass `--overwrite` to replace it, or choose another output file name")


# -- encoders (one per format) -------------------------------------------------------------


def npy_header(rows: int, dim: int) -> bytes:
    d = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + f"{rows}, {dim}), }}"
    body_len = NPY_HEADER - 10
    text = d.ljust(body_len - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + body_len.to_bytes(2, "little") + text.encode("latin1")


def jsonl_bytes(ids: Sequence[Any], vectors: npt.NDArray[np.float32]) -> bytes:
    """``{"id": ..., "embedding": [...]}`` lines."""
    import orjson

    buf = io.BytesIO()
    for rid, vec in zip(ids, vectors, strict=True):
        buf.write(orjson.dumps({"id": rid, "embedding": vec}, option=orjson.OPT_SERIALIZE_NUMPY, default=str))
        buf.write(b"\n")
    return buf.getvalue()


def id_lines(ids: Sequence[Any]) -> bytes:
    """The ``.npy`` sidecar: one JSON id per line."""
    import orjson

    return b"".join(orjson.dumps(rid, default=str) + b"\n" for rid in ids)


# -- streamed writers ------------------------------------------------------------------------


class ChunkSums:
    """Checksums of what one chunk wrote (output bytes, sidecar bytes)."""

    def __init__(self, out: str, ids: str | None) -> None:
        self.out = out
        self.ids = ids


def _reopen(path: Path, keep: int) -> io.BufferedRandom:
    """``path`` open for appending after its first ``keep`` bytes (what the journal committed);
    a new, empty file when ``keep`` is 0 or the file is gone."""
    f = open_binary(path, "r+b") if keep and path.exists() else open_binary(path, "w+b")
    f.truncate(keep)
    f.seek(0, os.SEEK_END)
    return f


def _spans(entries: Sequence[dict[str, Any]], end_key: str, sha_key: str, *, base: int = 0,
           scale: int = 1) -> list[tuple[int, int, str | None]]:
    """The byte range and checksum of each committed chunk: chunk k ends at ``entries[k][end_key]``
    (in units of ``scale`` bytes, after ``base`` bytes of header)."""
    spans: list[tuple[int, int, str | None]] = []
    start = 0
    for e in entries:
        end = int(e.get(end_key, 0))
        spans.append((base + start * scale, base + end * scale, e.get(sha_key)))
        start = end
    return spans


class VectorWriter:
    """Append-only output with a durable commit point, truncate-on-resume and verification."""

    def __init__(self, path: Path, dim: int, *, ids_are_rows: bool, ids_file: Path | None = None) -> None:
        self.path = path
        self.dim = dim
        self.ids_are_rows = ids_are_rows
        self.ids_file = ids_file
        self.idf: io.BufferedRandom | None = None

    # the sidecar (npy only) --------------------------------------------------------------
    def _open_ids(self, committed_offset: int) -> None:
        if self.ids_file is None:
            return
        self.idf = _reopen(self.ids_file, committed_offset)

    def _write_ids(self, ids: Sequence[Any]) -> str | None:
        if self.idf is None:
            return None
        payload = id_lines(ids)
        self.idf.write(payload)
        h = digest()
        h.update(payload)
        return str(h.hexdigest())

    def _commit_ids(self) -> int:
        if self.idf is None:
            return 0
        self.idf.flush()
        os.fsync(self.idf.fileno())
        return int(self.idf.tell())

    # the interface -----------------------------------------------------------------------
    def open(self, *, committed_rows: int, committed_offset: int, committed_chunks: int, ids_offset: int = 0) -> None:
        raise NotImplementedError

    def write(self, chunk_index: int, ids: Sequence[Any], vectors: npt.NDArray[np.float32]) -> ChunkSums:
        raise NotImplementedError

    def commit(self) -> tuple[int, int]:
        """Make everything written so far durable; return (offset, sidecar offset) for the journal."""
        raise NotImplementedError

    def finalize(self) -> None:
        self.commit()

    def close(self) -> None:
        if self.idf is not None:
            self.idf.close()
            self.idf = None

    def verify(self, entries: Sequence[dict[str, Any]]) -> str | None:
        """Why the file on disk does not hold the committed chunks ``entries``, or None if it does."""
        raise NotImplementedError

    def replaced(self) -> bool:
        """Whether another program replaced or removed what this writer writes since it opened it."""
        return False

    def _verify_ranges(self, path: Path, ranges: list[tuple[int, int, str | None]], what: str) -> str | None:
        if not ranges:
            return None
        if not path.exists():
            return f"`{path}` is missing"
        size = path.stat().st_size
        if size < ranges[-1][1]:
            return f"`{path}` is {size} bytes, shorter than the {ranges[-1][1]} bytes committed"
        with open(path, "rb") as f:
            for k, (start, end, want) in enumerate(ranges):
                f.seek(start)
                h = digest()
                left = end - start
                while left > 0:
                    block = f.read(min(left, 1 << 20))
                    if not block:
                        break
                    h.update(block)
                    left -= len(block)
                if want is None or h.hexdigest() != want:
                    return f"{what} of chunk {k + 1} in `{path}` differ from what was committed"
        return None

    def _verify_ids(self, entries: Sequence[dict[str, Any]]) -> str | None:
        if self.ids_file is None:
            return None
        return self._verify_ranges(self.ids_file, _spans(entries, "ids_offset", "ids_sha"), "the ids")


class _FileWriter(VectorWriter):
    """A writer that appends to one open file, ``f`` (``.npy`` and ``.jsonl``)."""

    _f: io.BufferedRandom | None = None

    @property
    def f(self) -> io.BufferedRandom:
        if self._f is None:
            raise RuntimeError(f"the writer of `{self.path}` is not open")
        return self._f

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        super().close()

    def replaced(self) -> bool:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return True
        own = os.fstat(self.f.fileno())
        return (st.st_ino, st.st_dev) != (own.st_ino, own.st_dev)


class NpyWriter(_FileWriter):
    def open(self, *, committed_rows: int, committed_offset: int, committed_chunks: int, ids_offset: int = 0) -> None:
        fresh = not (committed_rows and self.path.exists())
        self._f = _reopen(self.path, NPY_HEADER + committed_rows * self.dim * 4 if committed_rows else 0)
        self.rows = committed_rows
        if fresh:  # a new file starts with its header
            self._f.seek(0)
            self._f.write(npy_header(0, self.dim))
            self._f.seek(0, os.SEEK_END)
        self._open_ids(ids_offset)

    def write(self, chunk_index: int, ids: Sequence[Any], vectors: npt.NDArray[np.float32]) -> ChunkSums:
        import numpy as np

        # memoryview: no extra copy of the chunk (about 1.5 µs per 2560-d vector saved)
        view = np.ascontiguousarray(vectors, dtype="<f4").reshape(-1).data.cast("B")  # 1-D: empty chunks too
        self.f.write(view)
        self.rows += len(vectors)
        h = digest()
        h.update(view)
        return ChunkSums(h.hexdigest(), self._write_ids(ids))

    def commit(self) -> tuple[int, int]:
        # keep the header true at every commit, so a killed job leaves a loadable prefix
        end = self.f.tell()
        self.f.seek(0)
        self.f.write(npy_header(self.rows, self.dim))
        self.f.seek(end)
        self.f.flush()
        os.fsync(self.f.fileno())
        return self.rows, self._commit_ids()

    def verify(self, entries: Sequence[dict[str, Any]]) -> str | None:
        if not entries:
            return None
        if not self.path.exists():
            return f"`{self.path}` is missing"
        with open(self.path, "rb") as f:
            head = f.read(NPY_HEADER)
        m = re.search(rb"'shape': \((\d+), (\d+)\)", head)
        rows = int(entries[-1]["offset"])
        if not head.startswith(b"\x93NUMPY") or b"'<f4'" not in head or m is None:
            return f"`{self.path}` is not the .npy file this job wrote"
        if int(m.group(2)) != self.dim or int(m.group(1)) < rows:
            return f"`{self.path}` holds {m.group(1).decode()} rows of {m.group(2).decode()} dims, not the {rows} rows committed"
        spans = _spans(entries, "offset", "out_sha", base=NPY_HEADER, scale=self.dim * 4)
        return self._verify_ranges(self.path, spans, "the vectors") or self._verify_ids(entries)


class JsonlWriter(_FileWriter):
    def open(self, *, committed_rows: int, committed_offset: int, committed_chunks: int, ids_offset: int = 0) -> None:
        self._f = _reopen(self.path, committed_offset)

    def write(self, chunk_index: int, ids: Sequence[Any], vectors: npt.NDArray[np.float32]) -> ChunkSums:
        payload = jsonl_bytes(ids, vectors)
        self.f.write(payload)
        h = digest()
        h.update(payload)
        return ChunkSums(h.hexdigest(), None)

    def commit(self) -> tuple[int, int]:
        self.f.flush()
        os.fsync(self.f.fileno())
        return int(self.f.tell()), 0

    def verify(self, entries: Sequence[dict[str, Any]]) -> str | None:
        return self._verify_ranges(self.path, _spans(entries, "offset", "out_sha"), "the lines")


_PART = re.compile(r"(part-(\d{8})\.parquet|\.part-\d{8}\.tmp)")
_INT64 = (-(2**63), 2**63)


def _id_kind(rid: Any) -> str | None:
    if type(rid) is int and _INT64[0] <= rid < _INT64[1]:  # not bool, which is an int to Python
        return "int64"
    return "string" if isinstance(rid, str) else None


def arrow_id_type(ids: Sequence[Any], want: str | None = None) -> str | None:
    """The ``.parquet`` ``id`` column type of ``ids``: ``int64`` when every id is an integer,
    ``string`` when every id is a string (``want``, when given, is what earlier ids made it).

    Raises:
        InputError: an id of another type (null, a float, an object, a bool, an integer past
            int64) or of a type other than the others; ``index`` is its position in ``ids``.
    """
    for j, rid in enumerate(ids):
        kind = _id_kind(rid)
        if kind is not None and want in (None, kind):
            want = kind
            continue
        plural = {"int64": "integers", "string": "strings"}
        what = (f"id {rid!r} is a {type(rid).__name__}" if kind is None else
                f"id {rid!r} is {'an integer' if kind == 'int64' else 'a string'} but the ids before it are "
                f"{plural[str(want)]}")
        raise InputError(f"{what}; a `.parquet` `id` column holds only integers or only strings", index=j,
                         hint="make every id an integer or every id a string, or write `.jsonl` or `.npy`, "
                              "which keep any JSON id")
    return want


class ParquetWriter(VectorWriter):
    """One part file per chunk (written to a temp name, then renamed), merged at the end.

    The ``id`` column is int64 when every id is an integer and string when every id is a string
    (:func:`arrow_id_type`); the first chunk with ids decides, and a later chunk must agree.
    """

    id_type: str | None = None

    @property
    def parts(self) -> Path:
        return parts_path(self.path)

    def part(self, chunk_index: int) -> Path:
        return self.parts / f"part-{chunk_index:08d}.parquet"

    def _schema(self, id_type: str | None) -> Any:
        pa = self.pa
        return pa.schema([("id", pa.int64() if (id_type or "int64") == "int64" else pa.string()),
                          ("embedding", pa.list_(pa.float32(), self.dim))])

    def _write_new(self, path: Path, write: Any) -> None:
        """Write a new file at ``path`` (a stale one is removed first; never through a link)."""
        refuse_link(path)
        path.unlink(missing_ok=True)
        with open(open_nofollow(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())

    def open(self, *, committed_rows: int, committed_offset: int, committed_chunks: int, ids_offset: int = 0) -> None:
        self.pq = pyarrow_parquet()
        import pyarrow as pa

        self.pa = pa
        refuse_link(self.parts)
        self.parts.mkdir(parents=True, exist_ok=True)
        refuse_link(self.parts)
        names = [p.name for p in self.parts.iterdir()]
        foreign = [n for n in names if not _PART.fullmatch(n)]
        if foreign:  # never delete what qembed did not write
            raise ConfigError(f"`{self.parts / foreign[0]}` was not written by qembed; `{self.parts}` holds only "
                              "qembed's part files, and it is emptied when the job ends",
                              hint=f"move {len(foreign)} such file(s) out of `{self.parts}`, or choose another output")
        for n in names:  # drop anything after the last committed chunk
            m = _PART.fullmatch(n)
            if m is None or m.group(2) is None or int(m.group(2)) >= committed_chunks:
                (self.parts / n).unlink()
        self.id_type = "int64" if self.ids_are_rows else None
        for k in range(committed_chunks):  # a resume keeps the id type the committed rows have
            if self.id_type is not None:
                break
            meta = self.pq.ParquetFile(self.part(k))
            if meta.metadata.num_rows:
                self.id_type = "int64" if meta.schema_arrow.field("id").type == pa.int64() else "string"
        self.count = committed_chunks
        self._parts_ino = os.lstat(self.parts).st_ino

    def write(self, chunk_index: int, ids: Sequence[Any], vectors: npt.NDArray[np.float32]) -> ChunkSums:
        import numpy as np

        pa = self.pa
        self.id_type = arrow_id_type(ids, self.id_type)
        schema = self._schema(self.id_type)
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), type=pa.float32())
        emb = pa.FixedSizeListArray.from_arrays(flat, self.dim)
        id_arr = pa.array(list(ids), type=schema.field("id").type)
        table = pa.Table.from_arrays([id_arr, emb], schema=schema)
        tmp = self.parts / f".part-{chunk_index:08d}.tmp"
        self._write_new(tmp, lambda f: self.pq.write_table(table, f))
        h = digest()
        with open(tmp, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        os.replace(tmp, self.part(chunk_index))
        self.count = chunk_index + 1
        return ChunkSums(h.hexdigest(), None)

    def commit(self) -> tuple[int, int]:
        fd = os.open(self.parts, os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return self.count, 0

    def replaced(self) -> bool:
        try:
            return os.lstat(self.parts).st_ino != self._parts_ino or os.path.islink(self.parts)
        except FileNotFoundError:
            return True

    def finalize(self) -> None:
        tmp = parquet_tmp_path(self.path)
        schema = self._schema(self.id_type)
        parts = sorted(self.parts.glob("part-*.parquet"))

        def merge(f: Any) -> None:
            with self.pq.ParquetWriter(f, schema) as w:
                for p in parts:  # a chunk with every row skipped may have been typed before any id was seen
                    w.write_table(self.pq.read_table(p).cast(schema))

        self._write_new(tmp, merge)
        os.replace(tmp, self.path)
        for p in self.parts.iterdir():
            if _PART.fullmatch(p.name):
                p.unlink()
        self.parts.rmdir()

    def verify(self, entries: Sequence[dict[str, Any]]) -> str | None:
        for k, e in enumerate(entries):
            part = self.part(k)
            why = self._verify_ranges(part, [(0, part.stat().st_size if part.exists() else 1, e.get("out_sha"))],
                                      "the rows")
            if why:
                return why
        return None


WRITERS: dict[str, type[VectorWriter]] = {".npy": NpyWriter, ".jsonl": JsonlWriter, ".parquet": ParquetWriter}


def writer_for(path: Path, dim: int, *, ids_are_rows: bool, ids_file: Path | None = None) -> VectorWriter:
    """The streamed writer for ``path``'s suffix."""
    check_output_format(path)
    return WRITERS[suffix(path)](path, dim, ids_are_rows=ids_are_rows, ids_file=ids_file)


def write_vectors(dest: str | Path, ids: Sequence[Any], vectors: npt.NDArray[np.float32]) -> list[Path]:
    """Write ``vectors`` (``(n, d)`` float32) with their ``ids`` to ``dest``; the suffix picks the format.

    Ids that are not ``0..n-1`` are kept: in the file (``.jsonl``, ``.parquet``) or in the
    ``.npy``'s sidecar ``<stem>.ids.jsonl``. The file appears whole or not at all (written to a
    temporary name, then renamed). Returns the paths written.
    """
    import numpy as np

    dest = Path(dest)
    check_output_format(dest)
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] != len(ids):
        raise ValueError(f"vectors of shape {arr.shape} do not match {len(ids)} ids")
    ids_are_rows = all(_id_kind(x) == "int64" for x in ids)
    plain = list(ids) == list(range(len(ids)))
    tag = f".{os.getpid()}.tmp"
    tmp = dest.with_name(f".{dest.stem}{tag}{dest.suffix}")  # the suffix still names the format
    sidecar = ids_path(dest) if suffix(dest) == ".npy" and not plain else None
    tmp_ids = sidecar.with_name(f".{sidecar.name}{tag}") if sidecar else None
    writer = writer_for(tmp, int(arr.shape[1]), ids_are_rows=ids_are_rows, ids_file=tmp_ids)
    lock = OutputLock(dest)  # the same lock a bulk job holds on `dest`: never replace its file mid-job
    lock.acquire()
    try:
        writer.open(committed_rows=0, committed_offset=0, committed_chunks=0)
        writer.write(0, ids, arr)
        writer.finalize()
        writer.close()
        if sidecar is not None and tmp_ids is not None:
            os.replace(tmp_ids, sidecar)
        elif suffix(dest) == ".npy":  # a replaced .npy keeps no stale ids
            ids_path(dest).unlink(missing_ok=True)
        os.replace(tmp, dest)
    except BaseException:
        for p in (tmp, tmp_ids):
            if p is not None:
                p.unlink(missing_ok=True)
        raise
    finally:
        lock.release()
    return [dest] + ([sidecar] if sidecar else [])
