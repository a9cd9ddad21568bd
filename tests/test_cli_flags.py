"""Short flags mean one thing across every qembed command (issue 11, "Consistency").

Walks the real Typer app: every command and sub-command, every option. A short flag (``-x``)
that stands for two different long options anywhere in the CLI fails the test.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
import typer

from qembed.cli import app


def _commands(cmd: Any, path: str = "qembed") -> list[tuple[str, Any]]:
    out = [(path, cmd)]
    for name, sub in (getattr(cmd, "commands", None) or {}).items():
        out.extend(_commands(sub, f"{path} {name}"))
    return out


def short_flag_meanings() -> dict[str, dict[str, list[str]]]:
    """``{"-d": {"--detach": ["qembed serve"]}, ...}``: what each short flag means, and where."""
    meanings: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path, cmd in _commands(typer.main.get_command(app)):
        for param in cmd.params:
            opts = [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]
            longs = sorted(o for o in opts if o.startswith("--"))
            for short in (o for o in opts if len(o) == 2 and o.startswith("-")):
                meanings[short][longs[0] if longs else short].append(path)
    return meanings


def test_every_short_flag_means_one_long_option() -> None:
    meanings = short_flag_meanings()
    clashes = {s: dict(m) for s, m in meanings.items() if len(m) > 1}
    assert clashes == {}, f"short flags with two meanings: {clashes}"


def test_the_walk_sees_the_cli() -> None:
    # The test above can fail: it sees the commands and their short flags.
    meanings = short_flag_meanings()
    assert "qembed serve" in meanings["-d"]["--detach"]
    assert "qembed logs" in meanings["-f"]["--follow"]
    assert "qembed serve" in meanings["-p"]["--profile"] and "qembed doctor" in meanings["-p"]["--profile"]


@pytest.mark.parametrize("columns", [80, 120])
def test_top_level_help_shows_each_commands_whole_first_sentence(columns: int) -> None:
    """Issue 23 item 9: `qembed --help` cut the summaries at about 45 characters ("across...")."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "COLUMNS": str(columns)}
    out = subprocess.run([sys.executable, "-m", "qembed", "--help"], capture_output=True, text=True, env=env,
                         timeout=60).stdout
    listing = " ".join(out.split("Commands:", 1)[1].split())
    assert "..." not in listing
    group = typer.main.get_command(app)
    for name, cmd in group.commands.items():  # type: ignore[attr-defined]
        first = " ".join((cmd.help or "").split("\n\n")[0].split())
        first = first[: first.index(". ") + 1] if ". " in first else first
        assert f"{name} {first}" in listing, name
    assert max(map(len, out.splitlines())) <= max(80, columns)
