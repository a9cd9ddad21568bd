"""CLI start-up stays light: no heavy module is imported by `import qembed`, `import qembed.cli`
or `qembed --help` (each checked in a fresh interpreter). No timing asserts here: the wall-time
target (`qembed --help` <= 250 ms) lives in scripts/bench_client.py."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers.paths import REPO
from tests.helpers.startup import HEAVY, run_help, run_probe


def test_the_probe_sees_a_heavy_import() -> None:
    # guard: the check below must be able to fail
    _, loaded = run_probe("import json, orjson")
    assert loaded == ["orjson"]


def test_import_qembed_alone_is_light() -> None:
    proc, loaded = run_probe("import qembed; qembed.__version__")
    assert proc.returncode == 0, proc.stderr
    assert loaded == []


def test_import_qembed_integrations_is_light() -> None:
    """The adapters' package imports no framework; only its submodules do."""
    proc, loaded = run_probe("import qembed, qembed.integrations")
    assert proc.returncode == 0, proc.stderr
    assert loaded == []


def test_the_probe_sees_a_framework_import() -> None:
    # guard: importing an adapter does load its framework, so the checks above can fail
    _, loaded = run_probe("import qembed.integrations.langchain")
    assert "langchain_core" in loaded


def test_import_qembed_cli_is_light() -> None:
    proc, loaded = run_probe("import qembed.cli")
    assert proc.returncode == 0, proc.stderr
    assert loaded == []


def test_the_root_app_needs_no_cli_module() -> None:
    """qembed/cli/_app.py loads on its own (qembed.cli not imported), so a command module that
    imports `app` from it never meets a half-initialised `qembed.cli` package."""
    code = ("import sys, importlib.util, typer; "
            "spec = importlib.util.spec_from_file_location('_root_app', 'qembed/cli/_app.py'); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
            "assert isinstance(m.app, typer.Typer); "
            "assert not [n for n in sys.modules if n.startswith('qembed.cli')], sorted(sys.modules)")
    proc, loaded = run_probe(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert loaded == []


def test_top_level_help_is_light() -> None:
    _, loaded = run_help(["--help"])
    assert loaded == []


@pytest.mark.parametrize("command", ["bench", "embed", "serve", "doctor"])
def test_command_help_is_light(command: str) -> None:
    # Typer 0.29 itself imports pydantic when it builds the invoked command's parameters
    # (typer/_coercion.py build_runtime_param -> typer/_adapters.py, `from pydantic import ...`
    # at module top), so pydantic is the one exception for a subcommand.
    _, loaded = run_help([command, "--help"])
    assert [m for m in loaded if m != "pydantic"] == []


def test_python_m_qembed_help_importtime_lists_no_heavy_module() -> None:
    """The same check through `python -X importtime -m qembed --help`, as STYLE.md suggests."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "qembed", "--help"],
                          capture_output=True, text=True, cwd=str(REPO), env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = {line.rsplit("|", 1)[-1].strip().split(".")[0]
             for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "typer" in names  # the parse worked
    assert sorted(names & set(HEAVY)) == []


def test_one_shot_embed_loads_no_aiohttp_httpx_or_numpy() -> None:
    """`qembed embed "x"` (one small request, JSON out) goes over http.client and prints plain
    lists: no HTTP library, no asyncio, no numpy (docs/performance.md, "One-shot `qembed embed`")."""
    from tests.standin.server import StandinConfig, serve_in_thread

    with serve_in_thread(StandinConfig(dim=32)) as srv:
        code = (f"import sys, runpy; sys.argv = ['qembed', 'embed', '--url', {srv.url!r}, 'x']; import atexit; "
                "atexit.register(lambda: sys.stderr.write(f\"\\nASYNCIO={'asyncio' in sys.modules}\\n\"))\n"
                "runpy.run_module('qembed', run_name='__main__')")
        proc, loaded = run_probe(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '"embedding": [' in proc.stdout  # it did embed
    assert not {"aiohttp", "httpx", "numpy"} & set(loaded), loaded
    assert "ASYNCIO=False" in proc.stderr
