"""The exception tree and the exit-code table.

Every error qembed raises on purpose is a :class:`QembedError`: it carries a message (what
happened), an optional ``hint`` (what to do next) and the process exit code the CLI uses.
Subclasses also inherit the builtin they resemble, so ``except ValueError`` still works.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """Exit codes of the ``qembed`` command (documented in the README)."""

    OK = 0
    FAILURE = 1  #: runtime failure (server error, bad response, doctor found a FAIL)
    USAGE = 2  #: bad input: profile, flag, file, argument (Typer uses 2 too)
    NO_GPU = 3  #: no usable GPU/driver, or the model does not fit
    NOT_READY = 4  #: the server did not become ready in time
    SERVER_EXITED = 5  #: SGLang exited before it was ready
    WARNINGS = 6  #: `qembed doctor`: no FAIL, but at least one WARN
    UNREACHABLE = 7  #: no server answers at the URL
    INCOMPLETE = 8  #: `qembed verify` could not complete the check (5xx, broken connection, timeout)
    INTERRUPTED = 130  #: Ctrl-C


class QembedError(Exception):
    """Base of every error qembed raises on purpose.

    Args:
        message: one sentence, lowercase start, no full stop: what happened.
        hint: what to do next (a command, a profile key, a flag), or ``None``.
        details: extra lines shown under the message (evidence, last log lines).
        diagnoses: recognised causes as JSON-able dicts (``key``, ``title``, ``cause``, ``fix``,
            ``evidence``...), for ``--log-format json``; the text form is in ``details``.
    """

    exit_code: int = ExitCode.FAILURE

    def __init__(
        self, message: str, *, hint: str | None = None, details: list[str] | None = None,
        diagnoses: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = list(details or [])
        self.diagnoses = list(diagnoses or [])


class ProfileError(QembedError, ValueError):
    """A profile file or override is invalid (unknown key, bad value, missing file)."""

    exit_code = ExitCode.USAGE


class ConfigError(QembedError, ValueError):
    """A command-line option or environment variable is invalid."""

    exit_code = ExitCode.USAGE


class MissingDependency(QembedError, ImportError):
    """An optional package is not installed; the hint names the install command."""

    exit_code = ExitCode.USAGE


class GPUError(QembedError):
    """No usable GPU: no driver, too old a driver, too old a GPU, or the model does not fit."""

    exit_code = ExitCode.NO_GPU


class LaunchError(QembedError):
    """SGLang could not be launched (busy port, rejected flags, missing interpreter)."""

    exit_code = ExitCode.FAILURE


class FlagsRejected(LaunchError):
    """SGLang's own argument parser rejected the command line qembed built."""

    exit_code = ExitCode.USAGE


class PortInUse(LaunchError):
    """The port is already bound; SGLang would only notice after loading the model."""

    exit_code = ExitCode.USAGE


class NameInUse(LaunchError):
    """A server with this name is running (or being started) already."""

    exit_code = ExitCode.USAGE


class StateDirError(QembedError):
    """The state directory (records, claims, logs) is missing and cannot be created, or is not
    writable. ``QEMBED_STATE_DIR`` chooses another one."""

    exit_code = ExitCode.USAGE


class ServerExited(LaunchError):
    """SGLang exited before it was ready. ``returncode`` is the child's exit status."""

    exit_code = ExitCode.SERVER_EXITED

    def __init__(self, message: str, *, returncode: int | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.returncode = returncode


class NotReady(LaunchError, TimeoutError):
    """SGLang did not become ready within ``--ready-timeout``."""

    exit_code = ExitCode.NOT_READY


class ServerUnreachable(QembedError, ConnectionError):
    """No server answers at the URL (refused, timed out, DNS).

    ``connect`` is False when a server was reached but the exchange broke: no complete answer
    within the deadline, or the connection lost mid-way.
    """

    exit_code = ExitCode.UNREACHABLE

    def __init__(self, message: str, *, connect: bool = True, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.connect = connect


class ServerError(QembedError):
    """The server answered with an error status.

    ``status`` is the HTTP status, ``body`` the decoded JSON body (or the raw text when it is
    not JSON).
    """

    exit_code = ExitCode.FAILURE

    def __init__(self, message: str, *, status: int, body: Any = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.status = status
        self.body = body


class BadReply(ServerError):
    """The server answered, but the reply is not a valid embeddings response: not JSON, a
    wrong count, indices that are not ``0..n-1`` once each, vectors of the wrong size,
    non-finite or (from a normalising server) non-unit vectors. Nothing from it is used.

    Exit code 1 (runtime failure), as for any other server error.
    """

    exit_code = ExitCode.FAILURE


class DimensionsRefused(ServerError):
    """A client made with ``dimensions_fallback=False`` (``qembed verify``) sent ``dimensions``
    and the server refused it with a 4xx. With the fallback on, the client truncates and
    renormalises itself instead and this is never raised."""


class CheckIncomplete(QembedError):
    """``qembed verify`` could not complete the check: the server answered 5xx or an invalid
    reply, the connection broke, or a request timed out. Nothing was judged: exit 8, not 1
    ("vectors off the reference"), so a CI job can tell a broken run from a wrong server."""

    exit_code = ExitCode.INCOMPLETE


class InputError(QembedError, ValueError):
    """An input the server would reject (blank, too long, bad dimensions).

    ``index`` is the position of the failing input, when there is one.
    """

    exit_code = ExitCode.USAGE

    def __init__(self, message: str, *, index: int | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.index = index


class StorageError(QembedError, OSError):
    """A file could not be written mid-job (disk full, file too large, I/O error).

    ``rows_committed`` is how many input rows are safely on disk (a bulk job continues from
    there with ``--resume``).
    """

    exit_code = ExitCode.FAILURE

    def __init__(self, message: str, *, rows_committed: int | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.rows_committed = rows_committed


__all__ = [
    "BadReply",
    "CheckIncomplete",
    "ConfigError",
    "DimensionsRefused",
    "ExitCode",
    "FlagsRejected",
    "GPUError",
    "InputError",
    "LaunchError",
    "MissingDependency",
    "NameInUse",
    "NotReady",
    "PortInUse",
    "ProfileError",
    "QembedError",
    "ServerError",
    "ServerExited",
    "ServerUnreachable",
    "StateDirError",
    "StorageError",
]
