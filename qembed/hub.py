"""Before any model load: is the model here, or can it be fetched? Said in seconds, not minutes.

Offline, with a model that is not in the Hugging Face cache, ``transformers`` retries the Hub for
about 85 s and the engine then dies with the cause in its log only (issue 23: "a silent minute").
:func:`check_available` answers first, from the cache and one short request to the Hub:

* a local directory, or a snapshot with ``config.json`` in the HF cache: available;
* ``HF_HUB_OFFLINE`` set and not cached: refused at once;
* otherwise ``GET {HF_ENDPOINT}/api/models/{id}`` with a deadline (``HF_TOKEN`` sent when set):
  200 means it will be downloaded; 401/403/404 means gated, private or misspelt; no answer means
  the Hub is unreachable from here. Each refusal names the cause and the fix (``hf download``, or
  ``--model DIR``). A Hub that answers 5xx is not a verdict: the download goes on and says what it finds.

:func:`ensure_model` then fetches a model that must come from the Hub in qembed's own process,
before any engine starts (``huggingface_hub.hf_hub_download``, file by file, into the HF cache the
engine reads), and says its progress as :class:`Transfer` steps: the engine no longer downloads it
silently, with its progress in its log file only. Without ``huggingface_hub`` in qembed's
environment the engine downloads it, as before.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from qembed.errors import ConfigError, LaunchError, QembedError, StorageError

#: Deadline of the one request to the Hub (connect and read).
HUB_PROBE_TIMEOUT_S = 5.0
DEFAULT_ENDPOINT = "https://huggingface.co"

Source = Literal["local", "cached", "download", "unknown"]


@dataclass(frozen=True)
class Availability:
    source: Source
    detail: str  # the directory, or the Hub endpoint


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


#: how a model that names a local path starts (anything else is a Hugging Face id)
PATH_PREFIXES = ("/", "./", "../", "~")


def missing_model_dir(model: str) -> ConfigError:
    """The one error for a local model path with no model directory behind it."""
    return ConfigError(f"the model directory `{model}` does not exist",
                       hint="pass a local model directory (with config.json), or a Hugging Face id "
                            "such as `Qwen/Qwen3-Embedding-4B`")


def _fix(model: str) -> str:
    return (f"fetch it where the Hub is reachable: `hf download {model}` (then copy the HF cache here), "
            "or pass `--model DIR` with a local copy of the model")


def check_available(model: str, *, environ: Mapping[str, str] | None = None,
                    timeout: float = HUB_PROBE_TIMEOUT_S) -> Availability:
    """Where ``model`` will come from; refuse in seconds when it cannot come from anywhere.

    Args:
        model: a local directory or a Hub id (``Qwen/Qwen3-Embedding-0.6B``).
        environ: the environment the engine loads with (``HF_HOME``, ``HF_HUB_OFFLINE``,
            ``HF_ENDPOINT``, ``HF_TOKEN``); default this process's.
        timeout: the deadline of the Hub request, seconds.

    Raises:
        ConfigError: not cached and offline, not on a reachable Hub, or gated/private/misspelt.
    """
    from qembed.models import hf_hub_cache, model_dir

    env = dict(os.environ if environ is None else environ)
    local = os.path.expanduser(model)
    if os.path.isdir(local):
        return Availability("local", local)
    if model.startswith(PATH_PREFIXES):
        raise missing_model_dir(model)
    cached = model_dir(model, env)
    if cached is not None:
        return Availability("cached", str(cached))
    where = hf_hub_cache(env)
    if _truthy(env.get("HF_HUB_OFFLINE")) or _truthy(env.get("TRANSFORMERS_OFFLINE")):
        raise ConfigError(f"`{model}` is not in the Hugging Face cache ({where}) and HF_HUB_OFFLINE is set",
                          hint=_fix(model) + ", or unset HF_HUB_OFFLINE")
    endpoint = (env.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    import httpx

    headers = {"Authorization": f"Bearer {env['HF_TOKEN']}"} if env.get("HF_TOKEN") else {}
    try:
        with httpx.Client(timeout=httpx.Timeout(timeout), trust_env=True) as client:
            r = client.get(f"{endpoint}/api/models/{model}", headers=headers)
    except httpx.HTTPError as exc:
        raise ConfigError(
            f"`{model}` is not in the Hugging Face cache ({where}) and the Hub ({endpoint}) is not "
            f"reachable: {type(exc).__name__}: {str(exc) or 'no answer'} (within {timeout:.0f} s)",
            hint=_fix(model)) from exc
    if r.status_code in (401, 403, 404):
        token = "with HF_TOKEN" if headers else "anonymously"
        raise ConfigError(
            f"the Hub ({endpoint}) has no model `{model}` this machine can read {token} (HTTP {r.status_code})",
            hint="check the id (e.g. `Qwen/Qwen3-Embedding-4B`); for a gated or private model set HF_TOKEN "
                 "(`hf auth login`), or pass `--model DIR`")
    if r.status_code != 200:
        return Availability("unknown", endpoint)
    return Availability("download", endpoint)


# -- the download ---------------------------------------------------------------------------------

#: the files an embedding model needs: config and tokenizer JSON (sentence-transformers'
#: ``modules.json`` and ``1_Pooling/config.json`` too), BPE merges, weights. README, ONNX,
#: OpenVINO and GGUF exports stay on the Hub. ``*.bin`` weights only when there is no safetensors.
MODEL_FILES = ("*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken")
#: seconds between two ``progress`` steps of one file
PROGRESS_INTERVAL_S = 0.5

TransferState = Literal["begin", "start", "progress", "file", "done", "failed"]


def size_text(n: float | None) -> str:
    """``512 B``, ``1.2 kB``, ``4.9 GB`` (powers of 1000, as the Hub shows sizes)."""
    if n is None:
        return "? B"
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Transfer:
    """One step of a download. ``state``: ``begin`` (the file list is known; ``total`` is the
    sum), ``start`` / ``progress`` / ``file`` (one file begins, moves on, is complete),
    ``done`` (all files; ``file`` is ``""``), ``failed`` (the error follows)."""

    model: str
    state: TransferState
    file: str
    done: int  #: bytes received (of this file; of all files for begin/done/failed)
    total: int | None  #: bytes expected, when the Hub said
    seconds: float  #: since this file (or the download) began
    index: int  #: 1-based position of the file (0 for begin/done/failed)
    count: int  #: files in the download
    cache: str  #: the HF cache the files go to

    @property
    def rate(self) -> float:
        """Bytes per second so far."""
        return self.done / self.seconds if self.seconds > 0 else 0.0

    @property
    def message(self) -> str:
        """The step as one line of text."""
        of = f"[{self.index}/{self.count}]"
        if self.state == "begin":
            return (f"downloading `{self.model}` from the Hub: {self.count} files, {size_text(self.total)}, "
                    f"into {self.cache}")
        if self.state == "done":
            return (f"downloaded `{self.model}`: {self.count} files, {size_text(self.done)} in {self.seconds:.1f} s"
                    f" ({size_text(self.rate)}/s)")
        if self.state == "failed":
            return f"download of `{self.model}` stopped after {size_text(self.done)}"
        if self.state == "file" and self.done == 0 and self.total:
            return f"{of} {self.file}: already in the cache"
        if self.state == "file":
            return f"{of} {self.file}: {size_text(self.done)} in {self.seconds:.1f} s ({size_text(self.rate)}/s)"
        return (f"{of} {self.file}: {size_text(self.done)} / {size_text(self.total)} "
                f"({size_text(self.rate)}/s)")

    def fields(self) -> dict[str, Any]:
        """The step for a JSON event."""
        return {"model": self.model, "state": self.state, "file": self.file, "done_bytes": self.done,
                "total_bytes": self.total, "seconds": round(self.seconds, 2), "bytes_per_s": round(self.rate),
                "index": self.index, "count": self.count, "cache": self.cache}


class _Meter:
    """Turns ``huggingface_hub``'s progress-bar calls for one file into :class:`Transfer` steps.

    ``hf_hub_download(tqdm_class=...)`` builds the bar with ``total``/``initial`` keywords, uses it
    as a context manager and calls ``update(n)``; anything else a version calls is a no-op."""

    def __init__(self, say: Callable[[Transfer], None], base: Transfer) -> None:
        self.say, self.base = say, base
        self.done, self.total = 0, base.total
        self.t0 = self.last = time.monotonic()
        self.started = False

    def step(self, state: TransferState) -> Transfer:
        return Transfer(self.base.model, state, self.base.file, self.done, self.total,
                        time.monotonic() - self.t0, self.base.index, self.base.count, self.base.cache)

    def bar(self) -> type:
        meter = self

        class _Bar:
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                meter.started = True
                meter.total = kwargs.get("total") or meter.total
                meter.done = int(kwargs.get("initial") or 0)

            def __enter__(self) -> _Bar:
                return self

            def __exit__(self, *exc: object) -> None:
                return None

            def update(self, n: float | None = 1) -> None:
                meter.done += int(n or 0)
                now = time.monotonic()
                if now - meter.last >= PROGRESS_INTERVAL_S:
                    meter.last = now
                    meter.say(meter.step("progress"))

            def __getattr__(self, name: str) -> Callable[..., None]:  # close, refresh, set_postfix_str ...
                return lambda *a, **k: None

        return _Bar


def _wanted(siblings: list[Any]) -> list[tuple[str, int | None]]:
    """The files of :data:`MODEL_FILES` with their sizes, ``config.json`` last: it is what marks
    a snapshot as present (:func:`qembed.models.hf_snapshot_dir`), so an interrupted download is
    never taken for a complete one."""
    from fnmatch import fnmatch

    sizes: dict[str, int | None] = {}
    for s in siblings:
        lfs = getattr(s, "lfs", None)
        sizes[s.rfilename] = getattr(s, "size", None) or (getattr(lfs, "size", None) if lfs else None)
    weights = "*.safetensors" if any(fnmatch(n, "*.safetensors") for n in sizes) else "*.bin"
    names = sorted(n for n in sizes if any(fnmatch(n, p) for p in (*MODEL_FILES, weights)))
    names.sort(key=lambda n: n == "config.json")
    return [(n, sizes[n]) for n in names]


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def _download_error(model: str, file: str, endpoint: str, cache: str, exc: Exception) -> QembedError:
    """A failed download as an error with its fix: 401/403/404 exit 2, anything else exit 1."""
    import errno

    chain = _chain(exc)
    status = next((int(code) for e in chain
                   if isinstance(code := getattr(getattr(e, "response", None), "status_code", None), int)), None)
    what = f"`{file}` of `{model}`" if file else f"the file list of `{model}`"
    if status in (401, 403, 404):
        return ConfigError(f"the Hub ({endpoint}) refused {what} (HTTP {status})",
                           hint="check the id (e.g. `Qwen/Qwen3-Embedding-4B`); for a gated or private model set "
                                "HF_TOKEN (`hf auth login`), or pass `--model DIR`")
    disk = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EFBIG}
    full = next((e for e in chain if isinstance(e, OSError) and e.errno in disk), None)
    if full is not None:
        return StorageError(f"could not write {what} into the Hugging Face cache ({cache}): {full.strerror}",
                            hint="free space there, or point HF_HOME (or HF_HUB_CACHE) at a disk with room")
    root = chain[-1]
    cause = f"HTTP {status}" if status else f"{type(root).__name__}: {(str(root) or 'no answer').splitlines()[0]}"
    return LaunchError(f"downloading {what} from the Hub ({endpoint}) failed: {cause}",
                       hint="run it again (the download resumes where it stopped), or " + _fix(model))


def download(model: str, *, environ: Mapping[str, str] | None = None,
             on_progress: Callable[[Transfer], None] | None = None) -> str:
    """Fetch the files of :data:`MODEL_FILES` of Hub model ``model`` into the HF cache, one by
    one, saying each step to ``on_progress``. Returns the snapshot directory.

    Args:
        model: a Hub id.
        environ: the environment the engine loads with (``HF_HOME``/``HF_HUB_CACHE`` choose the
            cache, ``HF_ENDPOINT`` the Hub, ``HF_TOKEN`` the token); default this process's.
        on_progress: receives each :class:`Transfer` (a ``failed`` one before an error).

    Raises:
        ConfigError: the Hub refused the model or one of its files (401/403/404; exit 2).
        StorageError: the cache could not be written (disk full, read-only; exit 1).
        LaunchError: any other failure (a 5xx, a lost connection; exit 1).
        MissingDependency: ``huggingface_hub`` is not installed.
    """
    from qembed.models import hf_hub_cache

    env = dict(os.environ if environ is None else environ)
    endpoint = (env.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    cache = str(hf_hub_cache(env))
    token = env.get("HF_TOKEN") or None
    say = on_progress or (lambda t: None)
    try:
        from huggingface_hub import HfApi, hf_hub_download
    except ImportError as exc:
        from qembed.errors import MissingDependency

        raise MissingDependency("downloading a model needs huggingface_hub, which is not installed",
                                hint="`pip install huggingface_hub`, or `hf download` it elsewhere") from exc
    t0 = time.monotonic()
    got, files, file = 0, [], ""
    path = ""
    try:
        info = HfApi(endpoint=endpoint, token=token).model_info(model, files_metadata=True)
        files = _wanted(list(info.siblings or []))
        total = sum(s or 0 for _, s in files)
        say(Transfer(model, "begin", "", 0, total, 0.0, 0, len(files), cache))
        for i, (file, size) in enumerate(files, 1):
            meter = _Meter(say, Transfer(model, "start", file, 0, size, 0.0, i, len(files), cache))
            say(meter.step("start"))
            local = hf_hub_download(model, file, cache_dir=cache, endpoint=endpoint, token=token,
                                    tqdm_class=meter.bar())
            got += meter.done
            say(meter.step("file"))
            path = local[: len(local) - len(file)].rstrip("/" + os.sep)  # the snapshot directory
    except Exception as exc:
        say(Transfer(model, "failed", file, got, None, time.monotonic() - t0, 0, len(files), cache))
        raise _download_error(model, file, endpoint, cache, exc) from exc
    except BaseException:  # Ctrl-C: the display stops; the next run resumes the file
        say(Transfer(model, "failed", file, got, None, time.monotonic() - t0, 0, len(files), cache))
        raise
    say(Transfer(model, "done", "", got, got, time.monotonic() - t0, 0, len(files), cache))
    return path


def ensure_model(model: str, *, environ: Mapping[str, str] | None = None,
                 on_progress: Callable[[Transfer], None] | None = None,
                 timeout: float = HUB_PROBE_TIMEOUT_S) -> Availability:
    """:func:`check_available`, then :func:`download` a model that must come from the Hub, so
    that the engine finds it in the cache. Without ``huggingface_hub`` here the engine downloads
    it (``source`` stays ``download``).

    Raises:
        ConfigError, StorageError, LaunchError: as :func:`check_available` and :func:`download`.
    """
    import importlib.util

    found = check_available(model, environ=environ, timeout=timeout)
    if found.source in ("local", "cached") or importlib.util.find_spec("huggingface_hub") is None:
        return found
    return Availability("cached", download(model, environ=environ, on_progress=on_progress))


__all__ = ["DEFAULT_ENDPOINT", "HUB_PROBE_TIMEOUT_S", "MODEL_FILES", "PATH_PREFIXES", "Availability", "Transfer",
           "TransferState", "check_available", "download", "ensure_model", "missing_model_dir", "size_text"]
