"""`qembed embed` and `qembed similarity`: turn text into vectors from the command line.

Thin layer: options -> one :mod:`qembed.client.drivers` / :mod:`qembed.client.bulk` call -> :mod:`qembed.output`.
Only the standard library and typer are imported at module level.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from qembed import env as qenv
from qembed.cli._app import app

if TYPE_CHECKING:
    from qembed.client.bulk import BulkResult
    from qembed.client.drivers import Client

EMBED_EXAMPLES = """\
Examples:

\b
  # Instruct: <retrieval task>\\nQuery:what is MRL?
  qembed embed --query "what is MRL?"
  # a document: no instruction
  qembed embed "Paris is the capital of France."
  # symmetric task: instruction on every text
  qembed embed --task sts "a cat sat" --format table
  qembed embed --query "NPE in parser" \\
      --instruction "Given a bug report, retrieve the fixing commit"
  qembed embed --dimensions 256 --format npy "text" > v.npy
  # piped stdin: one text a line
  cat queries.txt | qembed embed --query --format jsonl
  # the file's suffix picks the format
  qembed embed "text" -o v.npy
  # keeps the records' `id`
  qembed embed --input docs.jsonl --output vectors.parquet
  # continue after a crash
  qembed embed --input docs.txt --output vectors.npy --resume

Formats: json (default when piped), jsonl, npy (binary; to a pipe or --output), table (default
on a terminal: size, norm and first values). --json is --format json. With --output the suffix
(.npy, .jsonl, .parquet) picks the format; an existing file needs --overwrite.

""" + qenv.env_help("QEMBED_URL", "QEMBED_API_KEY", "QEMBED_MODEL")

SIMILARITY_EXAMPLES = """\
Examples:

\b
  qembed similarity "a cat sat on the mat" "a feline rested" "stocks fell"
  # JSON is also the default when piped
  qembed similarity --json "a" "b"
  # one text a line from stdin
  printf 'a cat\na feline\n' | qembed similarity

Both sides get the semantic-similarity instruction ("Retrieve semantically similar text").

""" + qenv.env_help("QEMBED_URL", "QEMBED_API_KEY", "QEMBED_MODEL")


class Format(StrEnum):
    json = "json"
    jsonl = "jsonl"
    npy = "npy"
    table = "table"


class OnError(StrEnum):
    raise_ = "raise"
    skip = "skip"


UrlOpt = Annotated[str | None, typer.Option("--url", envvar=qenv.URL.name,
                                            help="Server URL (default: the server from `qembed serve --detach`, else http://127.0.0.1:30000).")]
ApiKeyOpt = Annotated[str | None, typer.Option("--api-key", envvar=qenv.API_KEY.name, show_default=False,
                                               help="API key for the server.")]
ModelOpt = Annotated[str | None, typer.Option("--model", envvar=qenv.MODEL.name, help="Model name to send (default: the server's).")]


def _client(url: str | None, api_key: str | None, model: str | None, **kw: Any) -> Client:
    from qembed.client.drivers import Client

    # an option left unset (None) means the client's own default
    return Client(url, api_key=api_key, model=model, **{k: v for k, v in kw.items() if v is not None})


def _stdin_piped() -> bool:
    """stdin is a pipe or a file (not a terminal, not closed): read it as llm and Ollama do."""
    stream = sys.stdin
    try:
        return stream is not None and not stream.isatty() and stream.readable()
    except (ValueError, OSError):
        return False


def _stdin_line(raw: bytes, n: int) -> str:
    """Line ``n`` (1-based) of stdin as text: UTF-8, without its ``\r``, and (line 1) without a BOM."""
    from qembed.client.readers import BOM
    from qembed.errors import InputError

    if n == 1:
        raw = raw.removeprefix(BOM)
    try:
        return raw.decode("utf-8").removesuffix("\r")
    except UnicodeDecodeError as exc:
        raise InputError(f"line {n} of stdin is not UTF-8 (byte {exc.start + 1}: {exc.reason})",
                         hint="convert it to UTF-8 first, e.g. `iconv -f latin1 -t utf-8 FILE | qembed embed`") from exc


def _stdin_raw_lines(size: int) -> Iterator[list[bytes]]:
    """stdin's lines, ``size`` at a time, or fewer when the producer pauses (``tail -f``, a slow
    generator): each line is embedded without waiting for a full chunk or for EOF."""
    import os
    import select

    from qembed.errors import ConfigError

    try:
        fd: int | None = sys.stdin.buffer.fileno() if hasattr(sys.stdin, "buffer") else sys.stdin.fileno()
    except (OSError, ValueError, AttributeError):  # not a real file (a test runner's stream)
        fd = None
    # split on newlines only: str.splitlines() would also split inside a text on
    # \u2028, \x0c, ... and change what the model sees
    lines: list[bytes] = []
    tail = b""
    try:
        if fd is None:
            raw = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode("utf-8", "surrogateescape")
            lines, tail = raw.split(b"\n"), b""
            if lines[-1] == b"":
                lines.pop()
        else:
            while True:
                if lines and (len(lines) >= size or not select.select([fd], [], [], 0)[0]):
                    yield lines[:size]
                    del lines[:size]
                    continue
                block = os.read(fd, 1 << 16)
                if not block:
                    break
                parts = (tail + block).split(b"\n")
                tail = parts.pop()
                lines.extend(parts)
    except OSError as exc:
        raise ConfigError(f"cannot read stdin: {exc}") from exc
    if tail:
        lines.append(tail)
    while lines:
        yield lines[:size]
        del lines[:size]


def _stdin_chunks(size: int) -> Iterator[list[str]]:
    """stdin as text, chunk by chunk (see :func:`_stdin_raw_lines`)."""
    n = 0
    for raw in _stdin_raw_lines(size):
        chunk = []
        for line in raw:
            n += 1
            chunk.append(_stdin_line(line, n))
        yield chunk


def _stdin_lines() -> list[str]:
    return [t for chunk in _stdin_chunks(1 << 16) for t in chunk]


def _check_utf8(value: str, what: str) -> None:
    """argv arrives surrogate-escaped when it is not UTF-8: say so instead of failing in the encoder."""
    from qembed.errors import InputError

    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = value[exc.start]
        byte = f" (the byte 0x{ord(bad) - 0xDC00:02x})" if 0xDC80 <= ord(bad) <= 0xDCFF else ""
        raise InputError(f"{what} is not UTF-8{byte}",
                         hint="pass UTF-8 text; convert a file first, e.g. `iconv -f latin1 -t utf-8 FILE | qembed embed`") from exc


def _read_texts(texts: list[str], *, auto_stdin: bool = False) -> tuple[list[str], list[str]]:
    """The texts and, for each, how to name it in a message (1-based, as editors count)."""
    out: list[str] = []
    labels: list[str] = []
    if not texts and auto_stdin and _stdin_piped():
        texts = ["-"]
    for t in texts:
        if t == "-":
            lines = _stdin_lines()
            labels.extend(f"line {n} of stdin" for n in range(1, len(lines) + 1))
            out.extend(lines)
        else:
            labels.append(f"text {len(out) + 1}")
            _check_utf8(t, labels[-1])
            out.append(t)
    return out, labels


def _continue_command() -> str:
    """The exact command to continue an interrupted bulk job."""
    import shlex

    args = [a for a in sys.argv[1:] if a != "--overwrite"]
    if "--resume" not in args:
        args.append("--resume")
    return shlex.join(["qembed", *args])


def _bulk_kept(output_path: Path) -> tuple[str, str | None]:
    """What an interrupted bulk job kept, and how to continue (for the interrupt funnel)."""
    from qembed.client import bulk

    done = bulk.committed(output_path)
    if done is None:
        return f"nothing was written to `{output_path}` yet", "run the same command again"
    rows_in, rows_out = done
    from qembed.client import vector_io

    # a streamed `.parquet` exists only once `--resume` finishes; until then its rows are parts
    parts = vector_io.parts_path(output_path)
    where = (f"the part files of `{parts}` (`{output_path.name}` is written when the job finishes)"
             if not output_path.exists() and parts.is_dir() else f"`{output_path}`")
    return (f"{rows_in} input rows are saved in {where} ({rows_out} vectors); "
            f"`{bulk.journal_path(output_path)}` keeps the place",
            f"continue with: {_continue_command()}")


def _write_binary(payload: bytes) -> None:
    from qembed import output

    output.data_bytes(payload)


def _npy_bytes(arr: Any) -> bytes:
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.asarray(arr, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


@app.command("embed", epilog=EMBED_EXAMPLES)
def embed(
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to embed; `-` (or no text, with stdin piped) reads one text per line from stdin.", show_default=False)] = None,
    query: Annotated[bool | None, typer.Option("--query/--document", help="Query (with instruction) or document (none). Default: document, or query if --task/--instruction is given.", show_default=False)] = None,
    task: Annotated[str | None, typer.Option("--task", help="Instruction preset: retrieval, sts, bitext, code, classification, clustering.")] = None,
    instruction: Annotated[str | None, typer.Option("--instruction", help="Custom instruction, sent as `Instruct: ...\\nQuery:<text>`.")] = None,
    prefix: Annotated[str | None, typer.Option("--prefix", help="Raw prefix prepended to every text (not the trained format).")] = None,
    dimensions: Annotated[int | None, typer.Option("--dimensions", help="Matryoshka size, 32 .. the model's full size.")] = None,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    model: ModelOpt = None,
    fmt: Annotated[Format | None, typer.Option("--format", help="Output format.", show_default=False)] = None,
    json_: Annotated[bool, typer.Option("--json", help="Same as --format json; in bulk mode, the summary as JSON.")] = False,
    output_path: Annotated[Path | None, typer.Option("--output", "-o", help="Write here (.npy, .jsonl, .parquet) instead of stdout.")] = None,
    input_path: Annotated[Path | None, typer.Option("--input", "-i", help="Bulk: read texts from .txt, .jsonl, .csv or .parquet.")] = None,
    text_field: Annotated[str, typer.Option("--text-field", help="Bulk: the text column/field.")] = "text",
    id_field: Annotated[str | None, typer.Option("--id-field", help="Bulk: the id column/field (default: `id` if the records have it, else the row number).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Bulk: continue an interrupted job from its journal.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --output file (default: refuse).")] = False,
    on_error: Annotated[OnError, typer.Option("--on-error", help="raise: stop at a blank/too long input; skip: leave it out and report it.")] = OnError.raise_,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Requests in flight.", min=1)] = 8,
    # both defaults are the client's (DEFAULT_CONCURRENCY, DEFAULT_BATCH_SIZE), written out so --help imports no
    # client; tests/test_embed_cli.py holds them equal
    batch_size: Annotated[int, typer.Option("--batch-size", help="Texts per request.", min=1)] = 128,
    chunk_rows: Annotated[int, typer.Option("--chunk-rows", help="Bulk: rows per chunk (unit of progress and resume).", min=1)] = 1024,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Seconds one request may take in total, every byte of the answer included (default: 300).", min=0.001, show_default=False)] = None,
) -> None:
    """Embed text with the Qwen3 instruction format; or embed a whole file (--input/--output)."""
    from qembed.errors import ConfigError, ServerError, ServerUnreachable, StorageError

    for value, what in ((instruction, "`--instruction`"), (prefix, "`--prefix`")):
        if value is not None:
            _check_utf8(value, what)
    kind = "query" if (query or (query is None and (task or instruction))) else "document"
    if prefix is not None and (task or instruction or query):
        raise ConfigError("`--prefix` replaces the Qwen3 instruction; do not combine it with `--query`, `--task` or `--instruction`")
    if query is False and instruction:
        raise ConfigError("`--instruction` applies to queries; drop `--document` or `--instruction`")
    if prefix is not None:
        kind = "raw"
    mode = on_error.value
    if input_path is not None:
        if texts:
            raise ConfigError("give texts as arguments or with `--input`, not both")
        if output_path is None:
            raise ConfigError("`--input` needs `--output` (.npy, .jsonl or .parquet)")
        from qembed.cli import on_interrupt

        on_interrupt(lambda: _bulk_kept(output_path))
        with _client(url, api_key, model, concurrency=concurrency, batch_size=batch_size, timeout=timeout) as client:
            try:
                result = _run_bulk(client, input_path, output_path, kind=kind, task=task, instruction=instruction,
                                   prefix=prefix, dimensions=dimensions, text_field=text_field, id_field=id_field,
                                   chunk_rows=chunk_rows, resume=resume, overwrite=overwrite, on_error=mode)
            except (StorageError, ServerUnreachable, ServerError) as exc:
                # the job stopped with rows committed: name the exact command that continues it
                if isinstance(exc, StorageError) or "with `--resume`" in (exc.hint or ""):
                    exc.hint = f"{exc.hint}: {_continue_command()}" if exc.hint else _continue_command()
                raise
        _render_summary(result, as_json=json_ or fmt == Format.json)
        return
    if resume:
        raise ConfigError("`--resume` applies to `--input` jobs")
    if output_path is not None:
        _check_output(output_path, fmt, json_, overwrite)
    chosen = Format.json if json_ else (fmt or (Format.table if sys.stdout.isatty() else Format.json))
    job: dict[str, Any] = {"kind": kind, "task": task, "instruction": instruction, "prefix": prefix,
                           "dimensions": dimensions}
    stdin_only = list(texts or []) == ["-"] or (not texts and _stdin_piped())
    if stdin_only and output_path is None and (chosen == Format.jsonl or (chosen == Format.json
                                                                           and not sys.stdout.isatty())):
        with _client(url, api_key, model, concurrency=concurrency, batch_size=batch_size, on_error=mode,
                     timeout=timeout) as client:
            _stream_stdin(client, chosen, job)
        return
    items, labels = _read_texts(list(texts or []), auto_stdin=True)
    if not items:
        raise ConfigError("nothing to embed", hint='pass texts, pipe lines into stdin, or `--input FILE`; e.g. `qembed embed --query "what is MRL?"`')
    if chosen == Format.npy and output_path is None and sys.stdout.isatty():
        raise ConfigError("`--format npy` is binary and stdout is a terminal",
                          hint="redirect it (`> vectors.npy`), or pass `--output vectors.npy`")
    with _client(url, api_key, model, concurrency=concurrency, batch_size=batch_size, on_error=mode,
                 timeout=timeout) as client:
        # printed from plain lists: a one-shot run never imports numpy
        emb = _embed_items(client, items, labels, job, plain=chosen == Format.json and output_path is None)
    if output_path is not None:
        _write_file(emb, len(items), labels, output_path)
    else:
        _render(emb, items, labels, chosen)


_SKIP_PY = '`on_error="skip"`'  # how the client's hints name skipping (Python); the CLI says `--on-error skip`


def _embed_items(client: Client, items: list[str], labels: list[str], job: dict[str, Any], *, plain: bool) -> Any:
    """Embed ``items`` as ``job`` says (kind, task, instruction, prefix, dimensions); an input
    error names the text as the user knows it (``labels``). ``plain``: lists, not numpy."""
    from qembed.errors import InputError

    try:
        embed = client.embed_lists if plain else client.embed_texts
        return embed(items, kind=job["kind"], task=job["task"], instruction=job["instruction"], prefix=job["prefix"],
                     dimensions=job["dimensions"])
    except InputError as exc:
        if exc.index is not None and 0 <= exc.index < len(labels) and exc.message.startswith(f"input {exc.index}"):
            exc.message = labels[exc.index] + exc.message[len(f"input {exc.index}"):]
            exc.args = (exc.message,)
            # the library's spelling (`on_error="skip"`) said as this command line's
            hint = (exc.hint or "").replace(_SKIP_PY, "`--on-error skip`")
            skip = "or pass `--on-error skip` to leave it out (and be told which)"
            exc.hint = hint if "--on-error skip" in hint else (f"{hint}; {skip}" if hint else skip.removeprefix("or "))
        raise


def _stream_stdin(client: Client, fmt: Format, job: dict[str, Any]) -> None:
    """Piped stdin, chunk by chunk, in input order: each chunk's vectors are printed (and flushed)
    before the next chunk is read, so memory stays flat and a long producer sees results as it goes.
    ``--format json`` streams the same document: ``data`` grows, ``prompt_tokens`` and ``failures``
    close it."""
    import json

    from qembed import output
    from qembed.client import vector_io
    from qembed.client.bulk import DEFAULT_CHUNK_ROWS
    from qembed.errors import ConfigError

    base = tokens = 0
    failures: list[dict[str, Any]] = []
    opened = False
    for chunk in _stdin_chunks(DEFAULT_CHUNK_ROWS):
        labels = [f"line {base + i + 1} of stdin" for i in range(len(chunk))]
        emb = _embed_items(client, chunk, labels, job, plain=fmt == Format.json)
        rows = [base + i for i in _rows(emb, len(chunk))]
        for f in emb.failures:
            output.warn(f"{labels[f.index]} skipped: {f.reason}")
            failures.append({"index": base + f.index, "reason": f.reason})
        if fmt == Format.jsonl:
            if rows:
                import numpy as np

                output.data(vector_io.jsonl_bytes(rows, np.asarray(emb, dtype=np.float32)).decode())
        else:
            body = ", ".join(json.dumps({"index": i, "embedding": v}) for i, v in zip(rows, emb.vectors, strict=True))
            if not opened:
                head = json.dumps({"model": emb.model, "dimensions": emb.dimensions}, ensure_ascii=False)
                output.data_part(head[:-1] + ', "data": [' + body)
                opened = True
            elif body:
                output.data_part(", " + body)
        tokens += int(emb.prompt_tokens)
        base += len(chunk)
    if base == 0:
        raise ConfigError("nothing to embed", hint='pass texts, pipe lines into stdin, or `--input FILE`; e.g. `qembed embed --query "what is MRL?"`')
    if fmt == Format.json:
        output.data(f'], "prompt_tokens": {tokens}, "failures": {json.dumps(failures, ensure_ascii=False)}}}')


def _check_output(output_path: Path, fmt: Format | None, json_: bool, overwrite: bool) -> None:
    """`--output` picks the format from its suffix; a --format that says otherwise is a mistake."""
    from qembed.client import vector_io
    from qembed.errors import ConfigError

    suffix = output_path.suffix.lower()
    wanted = Format.json if json_ else fmt
    if wanted in (Format.table, Format.json):
        raise ConfigError(f"`--format {wanted.value}` prints to stdout; `--output` writes "
                          ".npy, .jsonl or .parquet, chosen by the file's suffix",
                          hint=f"drop `--format {wanted.value}`" + (" / `--json`" if json_ else "")
                          + ", or drop `--output`")
    if wanted is not None and suffix != f".{wanted.value}":
        raise ConfigError(f"`--format {wanted.value}` does not match the output `{output_path}`",
                          hint=f"name the file `{output_path.with_suffix('.' + wanted.value)}`, or drop `--format`")
    vector_io.check_destination(output_path, overwrite=overwrite,
                                extra=[vector_io.ids_path(output_path)] if suffix == ".npy" else [])


def _write_file(emb: Any, n: int, labels: list[str], output_path: Path) -> None:
    import numpy as np

    from qembed import output
    from qembed.client import vector_io

    for f in emb.failures:
        output.warn(f"{labels[f.index]} skipped: {f.reason}")
    vectors = np.asarray(emb, dtype=np.float32)
    try:
        written = vector_io.write_vectors(output_path, _rows(emb, n), vectors)
    except OSError as exc:
        from qembed.errors import StorageError

        raise StorageError(f"writing `{output_path}` failed: {exc.strerror or exc}",
                           hint="nothing was written; free space or choose another output") from exc
    ids = f" (ids in {written[1]})" if len(written) > 1 else ""
    dims = int(vectors.shape[1]) if vectors.ndim == 2 else 0
    output.status(f"wrote {output.plural(len(vectors), 'vector')} of {dims} dims to {output_path}{ids}")


def _rows(emb: Any, n: int) -> list[int]:
    return list(range(n)) if emb.indices is None else [int(i) for i in emb.indices]


def _render(emb: Any, items: list[str], labels: list[str], fmt: Format) -> None:
    from qembed import output
    from qembed.client.results import EmbeddingLists

    rows = _rows(emb, len(items))
    for f in emb.failures:
        output.warn(f"{labels[f.index]} skipped: {f.reason}")
    if isinstance(emb, EmbeddingLists):  # plain lists (--format json): no numpy
        _render_json(emb, rows, emb.vectors, emb.dimensions)
        return
    import numpy as np

    from qembed.client import vector_io

    vectors = np.asarray(emb, dtype=np.float32)
    if fmt == Format.npy:
        _write_binary(_npy_bytes(vectors))
        return
    if fmt == Format.jsonl:  # the same lines as a .jsonl file: {"id", "embedding"}
        output.data(vector_io.jsonl_bytes(rows, vectors).decode())
        return
    if fmt == Format.json:
        _render_json(emb, rows, vectors.tolist(), int(vectors.shape[1]) if vectors.ndim == 2 else None)
        return
    table_rows = []
    for i, v in zip(rows, vectors, strict=True):
        text = items[i] if len(items[i]) <= 40 else items[i][:37] + "..."
        head = ", ".join(f"{x:+.4f}" for x in v[:4])
        # 1-based, as errors and warnings name inputs (`text 2: ...`); JSON `index` stays 0-based
        table_rows.append([i + 1, text, v.shape[0], f"{float(np.linalg.norm(v)):.4f}", f"[{head}, ...]"])
    output.table(["#", "text", "dims", "norm", "first values"], table_rows,
                 title=f"{emb.model or 'embeddings'} · {int(emb.prompt_tokens)} tokens")


def _render_json(emb: Any, rows: list[int], vectors: list[list[float]], dimensions: int | None) -> None:
    from qembed import output

    doc = {
        "model": emb.model,
        "dimensions": dimensions,
        "prompt_tokens": int(emb.prompt_tokens),
        "data": [{"index": i, "embedding": v} for i, v in zip(rows, vectors, strict=True)],
        "failures": [{"index": f.index, "reason": f.reason} for f in emb.failures],
    }
    output.print_json(doc)


def _run_bulk(client: Client, input_path: Path, output_path: Path, **kw: Any) -> BulkResult:
    from qembed import output
    from qembed.client import bulk

    if not output.stderr_is_tty():
        return bulk.embed_file(client, input_path, output_path, **kw)
    import time

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    start = time.perf_counter()
    with Progress(TextColumn("embedding"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                  console=output.err_console(), transient=True) as progress:
        task_id = progress.add_task("embed", total=None, rate="")
        first: list[tuple[int, int]] = []

        def on_progress(rows: int, total: int | None, tokens: int) -> None:
            if not first:
                first.append((rows, tokens))
            dt = max(time.perf_counter() - start, 1e-6)
            r0, t0 = first[0]
            rate = f"{(rows - r0) / dt:,.0f} texts/s · {(tokens - t0) / dt:,.0f} tokens/s"
            progress.update(task_id, completed=rows, total=total, rate=rate)

        return bulk.embed_file(client, input_path, output_path, on_progress=on_progress, **kw)


def _render_summary(result: BulkResult, *, as_json: bool) -> None:
    from qembed import output

    if as_json:
        output.print_json(result.as_dict())
        return
    resumed = f" ({result.chunks_resumed} chunks from before --resume)" if result.chunks_resumed else ""
    output.status(f"wrote {output.plural(result.rows_out, 'vector')} of {result.dimensions} dims to {result.output}{resumed}: "
                  f"{result.tokens} tokens in {result.seconds:.1f} s")
    if result.failures:
        # named as errors name them: the 1-based line (or record); the id only where it is not the position
        where = "line" if Path(result.input).suffix.lower() == ".txt" else "record"
        output.warn(f"{output.plural(len(result.failures), 'input')} skipped: " + ", ".join(
            f"{where} {f.index + 1}" + ("" if f.id == f.index else f" (id {f.id!r})") + f" ({f.reason})"
            for f in result.failures[:10]) + (" ..." if len(result.failures) > 10 else ""),
            hint="they are not in the output; `--json` lists them all")


@app.command("similarity", epilog=SIMILARITY_EXAMPLES)
def similarity(
    texts: Annotated[list[str] | None, typer.Argument(help="Two or more texts; piped stdin (or `-`) gives one text a line.", show_default=False)] = None,
    dimensions: Annotated[int | None, typer.Option("--dimensions", help="Matryoshka size.")] = None,
    instruction: Annotated[str | None, typer.Option("--instruction", help="Override the similarity instruction (both sides).")] = None,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    model: ModelOpt = None,
    json_: Annotated[bool, typer.Option("--json", help="The matrix as JSON (the default when stdout is not a terminal).")] = False,
) -> None:
    """Cosine similarity matrix of texts (the semantic-similarity instruction on every text)."""
    import numpy as np

    from qembed import output
    from qembed.errors import ConfigError
    from qembed.instructions import TASKS

    items, _ = _read_texts(list(texts or []), auto_stdin=True)
    if len(items) < 2:
        raise ConfigError("`qembed similarity` needs at least two texts",
                          hint='pass them as arguments, e.g. `qembed similarity "a cat" "a feline"`, '
                               "or pipe one text a line into stdin")
    with _client(url, api_key, model) as client:
        emb = client.embed(items, instruction=instruction or TASKS["sts"], dimensions=dimensions)
    matrix = np.asarray(emb) @ np.asarray(emb).T
    if json_ or not sys.stdout.isatty():
        output.print_json({"texts": items, "matrix": [[round(float(x), 6) for x in row] for row in matrix]})
        return
    labels = [t if len(t) <= 24 else t[:21] + "..." for t in items]
    output.table(["", *(f"[{i}]" for i in range(len(items)))],
                 [[f"[{i}] {labels[i]}", *(f"{x:.4f}" for x in row)] for i, row in enumerate(matrix)])
