"""The ``qembed`` command: a thin Typer layer over the library.

Each command module parses options, makes one library call and renders the result through
``qembed.output``. Known errors (``QembedError``) print as ``error: ... / hint: ...`` without a
traceback (``QEMBED_DEBUG=1`` adds one); unknown errors keep theirs.

Only the standard library and typer are imported at module top level here and in every
``qembed/cli/*`` module, so ``qembed --help`` starts fast.
"""

from __future__ import annotations

import logging
import sys

import typer

from qembed import __version__
from qembed import env as qenv

app = typer.Typer(
    name="qembed",
    help=(
        "Serve and use Qwen3-Embedding models on NVIDIA GPUs with SGLang.\n\n"
        "Start a server:  qembed serve            (profile `auto` picks settings for your GPU)\n\n"
        "Embed text:      qembed embed --query \"what is MRL?\"\n\n"
        "Something wrong: qembed doctor"
    ),
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"qembed {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log qembed's own debug messages to stderr."),
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    level = "DEBUG" if verbose else (qenv.LOG_LEVEL.get() or "WARNING").upper()
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, level, logging.WARNING),
                        format="%(levelname)s %(name)s: %(message)s")


def _register() -> None:
    # Each module registers its commands on `app` (or adds a sub-app) when imported.
    from . import bench, doctor, embed, serve  # noqa: F401
    from . import verify as _verify  # noqa: F401
    from .profiles import profiles_app

    app.add_typer(profiles_app, name="profiles")


_register()


def main() -> None:
    """Console-script entry point: run the app through the error funnel."""
    from qembed.errors import ExitCode, QembedError

    try:
        # With standalone_mode=False, `typer.Exit(n)` comes back as a return value.
        rc = app(standalone_mode=False)
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
        sys.stderr.write("\ninterrupted\n")
        sys.exit(int(ExitCode.INTERRUPTED))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.stderr.write("aborted\n")
        sys.exit(int(ExitCode.INTERRUPTED))
    except SystemExit:
        raise
    except Exception as exc:  # click usage errors come through here in standalone_mode=False
        from qembed.errors import ExitCode as _EC

        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            sys.exit(int(getattr(exc, "exit_code", _EC.USAGE)))
        raise
