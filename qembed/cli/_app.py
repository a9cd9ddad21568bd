"""The root Typer app and its callback (``--verbose``, ``--version``).

Command modules import ``app`` from here and register their commands on it; ``qembed.cli``
imports them (after this module) and holds the console-script entry point ``main``. Keeping
``app`` out of ``qembed/cli/__init__.py`` means no command module imports a half-initialised
package. Only the standard library and typer are imported at top level, so ``--help`` stays fast.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import typer
from typer.core import TyperGroup

from qembed import env as qenv
from qembed._version import __version__


class _Group(TyperGroup):
    """The root group: each command's summary in `qembed --help` is its whole first sentence,
    wrapped to the terminal, where Click would cut it at the column width with `...`."""

    # Any: typer carries its own copy of click (typer._click), whose classes are private
    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit=10_000)))  # the first sentence, uncut
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


app = typer.Typer(
    cls=_Group,
    name="qembed",
    help=(
        "Serve and use Qwen3-Embedding models on NVIDIA GPUs with SGLang.\n\n"
        "\b\n"
        "Start a server:  qembed serve     (profile `auto` picks settings for the GPU)\n"
        "No GPU:          qembed serve --profile xeon   (SGLang on CPU; production)\n"
        "                 qembed serve --profile cpu    (reference engine; dev, CI)\n"
        "Embed text:      qembed embed --query \"what is MRL?\"\n"
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
    logging.basicConfig(stream=sys.stderr, level=logging.getLevelNamesMapping().get(level, logging.WARNING),
                        format="%(levelname)s %(name)s: %(message)s")
