"""What a command loads: run Python code (or `qembed ARGS`) in a fresh interpreter and list
the heavy top-level modules it imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers.paths import REPO

HEAVY = ("openai", "numpy", "httpx", "aiohttp", "pydantic", "yaml", "pynvml", "rich", "pyarrow",
         "orjson", "httpx2", "pybase64", "platformdirs", "torch", "transformers", "sglang",
         # the framework adapters' dependencies: only `import qembed.integrations.<framework>`
         "langchain_core", "langchain_openai", "llama_index", "sentence_transformers", "tiktoken")

# Prints the heavy top-level modules present in sys.modules when the interpreter exits, after
# running the given code. atexit runs after Typer's SystemExit, so --help is covered too.
PROBE = """
import atexit, json, sys
HEAVY = {heavy!r}
def _report():
    loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set(HEAVY))
    sys.stderr.write("\\nLOADED=" + json.dumps(loaded) + "\\n")
atexit.register(_report)
{code}
"""


def run_probe(code: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run ``code`` in a fresh interpreter: (the process, the heavy modules it had loaded)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["NO_COLOR"] = "1"
    proc = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY, code=code)],
                          capture_output=True, text=True, cwd=str(REPO), env=env, timeout=120)
    marker = [line for line in proc.stderr.splitlines() if line.startswith("LOADED=")]
    assert marker, f"probe did not report (rc={proc.returncode}):\n{proc.stderr[-2000:]}"
    return proc, json.loads(marker[-1].removeprefix("LOADED="))


def run_help(argv: list[str]) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """``qembed ARGV`` (a ``--help``) in a fresh interpreter: it must be a command and print usage."""
    code = f"import sys, runpy; sys.argv = ['qembed', *{argv!r}]; runpy.run_module('qembed', run_name='__main__')"
    proc, loaded = run_probe(code)
    if "No such command" in proc.stderr:
        pytest.fail(f"`qembed {' '.join(argv)}` is not a command: {proc.stderr[-500:]}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Usage" in proc.stdout
    return proc, loaded
