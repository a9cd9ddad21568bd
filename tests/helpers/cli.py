"""Running the ``qembed`` command inside the test process, two ways:

- :func:`invoke`: through Typer's ``CliRunner`` (the app alone, no error funnel);
- :func:`run_main`: through ``qembed.cli.main``, the console-script entry point, so the
  ``error:`` / ``hint:`` funnel and the exit codes are what a user sees.
"""

from __future__ import annotations

import sys

import pytest
from click.testing import Result
from typer.testing import CliRunner

from qembed.cli import app, main


def invoke(args: list[str], stdin: str | None = None) -> Result:
    """``qembed ARGS`` through CliRunner, with ``stdin`` as standard input."""
    return CliRunner().invoke(app, args, input=stdin)


def run_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
             args: list[str]) -> tuple[int, str, str]:
    """``qembed ARGS`` through ``main()``: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["qembed", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err
