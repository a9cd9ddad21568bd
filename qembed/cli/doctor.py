"""`qembed doctor`: check the machine, the profile, a running server and the last failure."""

from __future__ import annotations

from typing import Annotated

import typer

from qembed import env as qenv
from qembed.cli._app import app

DOCTOR_HELP = """Check everything `qembed serve` needs, and explain the last failure.

Rows: system, profile, NVIDIA driver (vs the installed SGLang's CUDA build), each GPU,
torch/CUDA and SGLang in the target interpreter (probed in a subprocess), the model files,
the memory fit, port/proxy//dev/shm, a running server (/health, /v1/models, one embedding,
`dimensions`) and the newest log of the server being checked (or --log FILE). For `device: cpu` profiles
(`-p xeon`): the CPU (AVX-512, AMX), SGLang's CPU build and the path it takes, the dtype, RAM and
the KV pool instead of the driver and GPU rows.

Exit codes: 0 all checks pass, 1 at least one FAIL, 6 warnings only (no FAIL).

Examples:

\b
  qembed doctor
  qembed doctor --profile l4 --json
  qembed doctor --profile xeon      # no GPU: SGLang on CPU
  qembed doctor --model /data/qwen3-4b --port 31000 --set context_length=8192
  qembed doctor --url http://gpu-box:30000
  qembed doctor --log ~/.local/state/qembed/logs/default-20261120-100000.log
"""


@app.command("doctor", help=DOCTOR_HELP, epilog=qenv.env_help("QEMBED_PROFILE", "QEMBED_URL", "QEMBED_SGLANG_PYTHON", "QEMBED_STATE_DIR"))
def doctor(
    profile: Annotated[str, typer.Option("--profile", "-p", envvar=qenv.PROFILE.name,
                                         help="Profile to check: shipped name, YAML path or `auto` (as `qembed serve -p`).")] = "auto",
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model: HF id or local dir (as `qembed serve --model`).")] = None,
    port: Annotated[int | None, typer.Option("--port", help="HTTP port (as `qembed serve --port`).")] = None,
    host: Annotated[str | None, typer.Option("--host", help="Bind address (as `qembed serve --host`).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", metavar="KEY=VALUE", help="Override a profile key (repeatable), as `qembed serve --set`.")] = None,
    python: Annotated[str | None, typer.Option("--python", help="Interpreter with SGLang to probe (default: profile key `python`, else $QEMBED_SGLANG_PYTHON, else this one; as `qembed serve`).")] = None,
    url: Annotated[str | None, typer.Option("--url", envvar=qenv.URL.name,
                                            help="A running server to check (default: the one `qembed serve` recorded, else http://127.0.0.1:30000 if it answers).")] = None,
    log: Annotated[str | None, typer.Option("--log", help="An SGLang log file to diagnose (default: the newest log of the server being checked, by its name or the profile's).")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
) -> None:
    from qembed import output
    from qembed.fleet.doctor import run_checks
    from qembed.fleet.doctor_rows import exit_code, report_json, summary

    # the same options `qembed serve` takes: only --set values are parsed, the rest are typed
    checks = run_checks(profile=profile, url=url, python=python, log=log, overrides=list(set_ or []),
                        options={"model": model, "port": port, "host": host})
    code = exit_code(checks)
    if json_:
        output.print_json(report_json(checks))
    else:
        output.table(["Status", "Section", "Check", "Found", "Fix"],
                     [[c.status, c.section, c.name, c.found, c.fix or ""] for c in checks],
                     title="qembed doctor", markup=False, stack_key=3)
        counts = summary(checks)
        output.status(f"{counts['PASS']} passed, {output.plural(counts['WARN'], 'warning')}, {counts['FAIL']} failed, "
                      f"{counts['SKIP']} skipped")
    if code:
        # SystemExit, not typer.Exit: `qembed.cli.main` runs the app with standalone_mode=False,
        # where Click turns typer.Exit into a return value that the funnel does not pass on.
        raise SystemExit(code)
