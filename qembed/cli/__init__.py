"""The ``qembed`` command: a thin Typer layer over the library.

Each command module parses options, makes one library call and renders the result through
``qembed.output``. Known errors (``QembedError``) print as ``error: ... / hint: ...`` without a
traceback (``QEMBED_DEBUG=1`` adds one); unknown errors keep theirs.

Ctrl-C reaches one funnel too. Typer turns ``KeyboardInterrupt`` into a silent ``Exit(130)``,
so ``main`` notes the SIGINT itself; a command registers, with :func:`on_interrupt`, what it
has kept and how to continue, and the funnel prints that before exiting 130.

Only the standard library and typer are imported at module top level here and in every
``qembed/cli/*`` module, so ``qembed --help`` starts fast.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import NoReturn

import typer

from qembed import env as qenv
from qembed.cli._app import app as _root_app

__all__ = ["app", "main", "on_interrupt"]

# what the running command has kept so far: () -> (what was kept, how to continue)
_KEPT: list[Callable[[], tuple[str, str | None]]] = []
_SIGINT_SEEN = False


def on_interrupt(report: Callable[[], tuple[str, str | None]]) -> None:
    """Register what to tell the user if Ctrl-C stops the command: what was kept, how to go on."""
    _KEPT.append(report)


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    global _SIGINT_SEEN
    _SIGINT_SEEN = True
    raise KeyboardInterrupt


def _interrupted() -> NoReturn:
    from qembed import output
    from qembed.errors import ExitCode

    reports = []
    for report in _KEPT:
        try:
            reports.append(report())
        except Exception as exc:  # a report must never hide the interrupt
            reports.append((f"could not tell what was kept: {exc}", None))
    output.interrupted(reports)
    sys.exit(int(ExitCode.INTERRUPTED))


#: the module that registers each top-level command; `main` imports only the invoked one, so a
#: one-shot `qembed embed "text"` does not load (or build Click commands for) the other twelve
_COMMAND_MODULES = {
    "embed": "embed", "similarity": "embed", "serve": "serve", "ps": "serve", "stop": "serve",
    "logs": "serve", "bench": "bench", "doctor": "doctor", "gateway": "gateway", "verify": "verify",
    "top": "top",
}
_registered_all = False


def _register(only: str | None = None) -> None:
    """Import the command modules, which register their commands on the root app; add the
    `profiles` and `deploy` sub-apps. ``only``: just that command's module."""
    global _registered_all
    import importlib

    if only is not None:
        importlib.import_module(f".{_COMMAND_MODULES[only]}", __name__)
        return
    if _registered_all:
        return
    for module in sorted(set(_COMMAND_MODULES.values())):
        importlib.import_module(f".{module}", __name__)
    from qembed.cli.deploy import deploy_app
    from qembed.cli.profiles import profiles_app

    _root_app.add_typer(profiles_app, name="profiles")
    _root_app.add_typer(deploy_app, name="deploy")
    _registered_all = True


def __getattr__(name: str) -> object:
    # `from qembed.cli import app` (tests, embedding qembed's CLI): the app with every command
    if name == "app":
        _register()
        return _root_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _invoked_command(argv: list[str]) -> str | None:
    """The top-level command named on the command line, when it is one `main` can load alone."""
    for arg in argv:
        if arg in ("-h", "--help", "--version"):
            return None
        if not arg.startswith("-"):
            return arg if arg in _COMMAND_MODULES else None
    return None


def _usage_error(exc: Exception) -> NoReturn:
    """A typo'd flag or command, a missing argument: `error:` / `hint:` like every other error."""
    from qembed import output
    from qembed.errors import ConfigError

    ctx = getattr(exc, "ctx", None)
    command = getattr(ctx, "command_path", None) or "qembed"
    err = ConfigError(str(exc.format_message()),  # type: ignore[attr-defined]
                      hint=f"see `{command} --help` for the options and examples")
    output.error(err)
    sys.exit(int(exc.exit_code))  # type: ignore[attr-defined]


def main() -> None:
    """Console-script entry point: run the app through the error funnel."""
    from qembed.errors import ExitCode, QembedError
    from qembed.output import guard_pipes

    guard_pipes()  # a closed stdout/stderr (`| head`) must never stop qembed half-way (issue 23)
    _KEPT.clear()
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when SIGINT is ignored
        signal.signal(signal.SIGINT, _on_sigint)
    try:
        # With standalone_mode=False, `typer.Exit(n)` comes back as a return value; Typer turns
        # Ctrl-C into Exit(130), which is how an interrupt arrives here (serve handles its own).
        command = _invoked_command(sys.argv[1:])
        if command is not None:
            _register(only=command)
        else:
            _register()
        rc = _root_app(standalone_mode=False, prog_name="qembed")
        if rc == ExitCode.INTERRUPTED and _SIGINT_SEEN:
            _interrupted()
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except QembedError as exc:
        from qembed import output

        if qenv.debug_enabled():
            import traceback

            traceback.print_exc()
        output.error(exc)
        sys.exit(int(exc.exit_code))
    except KeyboardInterrupt:
        _interrupted()
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.stderr.write("aborted\n")
        sys.exit(int(ExitCode.INTERRUPTED))
    except SystemExit:
        raise
    except Exception as exc:
        # Click's usage errors come through here in standalone_mode=False. Typer vendors Click,
        # so there is no public class to name: they are known by what they carry.
        if not (hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int)):
            raise
        _usage_error(exc)
