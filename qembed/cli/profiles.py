"""`qembed profiles list` and `qembed profiles show`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

profiles_app = typer.Typer(
    name="profiles",
    help="List and inspect deployment profiles (settings for one SGLang server).",
    no_args_is_help=True,
    rich_markup_mode=None,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

SHOW_EXAMPLES = """Examples:

\b
  qembed profiles show              # what `auto` picks here, and why
  qembed profiles show a100 --set port=31000 --set env.HF_HOME=/data/hf
  qembed profiles show ./my-profile.yaml --json
"""


@profiles_app.command("list")
def list_cmd(json_: JsonOpt = False) -> None:
    """List the shipped profiles and the GPU each one is sized for."""
    from qembed import output
    from qembed.serving.profiles.display import list_profiles

    rows = list_profiles()
    if json_:
        output.print_json([
            {"name": r.name, "description": r.description, "gpu": r.gpu,
             "aliases": list(r.aliases), "path": str(r.path)}
            for r in rows
        ])
        return
    output.table(
        ["name", "gpu", "description"],
        [(r.name + (f" ({', '.join(r.aliases)})" if r.aliases else ""), r.gpu, r.description) for r in rows],
    )


@profiles_app.command("show", epilog=SHOW_EXAMPLES)
def show_cmd(
    name: Annotated[str, typer.Argument(help="Shipped profile name, alias, `auto`, or a YAML file path.")] = "auto",
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a key, e.g. `--set port=31000` (repeatable)."),
    ] = None,
    python: Annotated[
        str | None,
        typer.Option("--python",
                     help="Interpreter with SGLang installed (used in the command shown; default: "
                     "profile key `python`, else $QEMBED_SGLANG_PYTHON, else this interpreter, as `serve`)."),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Show a profile's resolved values, where each came from, and the SGLang command."""
    from qembed import output
    from qembed.errors import ProfileError
    from qembed.serving.profiles.display import display_value, redacted_values
    from qembed.serving.profiles.model import FIELDS
    from qembed.serving.profiles.resolve import resolve_api_key, resolve_profile
    from qembed.serving.sglang_args import build_command, profile_warnings, sglang_python

    resolved = resolve_profile(name, overrides=list(set_ or []), options={"python": python})
    profile = resolved.profile
    warnings = profile_warnings(profile)
    try:
        api_key = resolve_api_key(profile)
    except ProfileError as exc:
        api_key = None
        warnings.append(exc.message)
    cmd = build_command(profile, api_key=api_key, python=sglang_python(profile))
    values: dict[str, Any] = redacted_values(profile)

    if json_:
        output.print_json({
            "name": profile.name,
            "requested": resolved.requested,
            "auto_reason": resolved.auto_reason,
            "chain": resolved.chain,
            "values": values,
            "sources": resolved.sources,
            "api_key": "set" if api_key else None,
            "command": {"argv": cmd.redacted_argv(), "env": cmd.redacted_env(), "display": cmd.display()},
            "warnings": warnings,
        })
        return

    if resolved.auto_reason:
        output.status(f"auto: {resolved.auto_reason}")
    title = f"profile {profile.name}" + (f" (extends {' -> '.join(resolved.chain[1:])})" if len(resolved.chain) > 1 else "")
    output.table(
        ["key", "value", "from"],
        [(k, display_value(k, values[k]), resolved.sources.get(k, "")) for k in FIELDS if k not in {"name", "extends"}],
        title=title,
    )
    output.data("SGLang command:")
    output.data("  " + cmd.display())
    if profile.device == "cpu":  # qembed.serving.cpu fills these in at launch, from this machine
        output.status("`device: cpu`: `qembed serve` adds `--dtype` and `--max-total-tokens` chosen from this "
                      f"CPU and its free RAM; `qembed serve -p {profile.name or 'FILE'} --dry-run` shows them")
    for w in warnings:
        output.warn(w)
