"""`qembed verify`: compare a server's vectors with the model card's recipe, and diagnose."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

import typer

from qembed import env as qenv
from qembed.cli._app import app

if TYPE_CHECKING:
    from qembed.fleet.verify import VerifyReport

VERIFY_HELP = """Check that a server returns the model card's vectors.

Embeds 40 built-in texts (Chinese, English, Spanish, Arabic, Japanese, Korean, code, text with
newlines and tabs, one of more than 2,000 tokens; queries under several tasks, and documents)
through the server with qembed's client, and locally with the reference engine
(sentence-transformers: the model's prompts, last-token pooling, normalisation, truncate then
renormalise). Reports the cosine, the norm and top-5 retrieval agreement per text, at full size
and at a few Matryoshka sizes. When texts fail, it judges each known mistake on its own at every
size (no EOS, mean or first-token pooling, a BOS added, whitespace stripped, a silent token
limit, instruction format, newlines replaced, float16, no normalisation, truncation without
renormalisation, a wrong `dimensions` length) and names the one that reproduces the server, or
several that do together; otherwise it says which texts differ and what they share.

Works against any OpenAI-compatible server (SGLang, vLLM, TEI, Infinity, a gateway). The
server's own `dimensions` is judged: refused = "not supported (the client truncates)", no
failure; a wrong length or norm fails, named.

Tolerance per text: fp32 cos >= 1 - 1e-5 and |norm - 1| <= 1e-4; bf16 (an estimate, see
docs/verify.md) cos >= 1 - 1e-3 and |norm - 1| <= 2e-3. `auto` is fp32 for
`qembed serve --profile cpu`, bf16 otherwise. Needs `pip install 'qembed[verify]'`.

Exit codes: 0 pass, 1 vectors off the reference, 2 bad option or missing extra, 7 no server
at the URL, 8 the check could not complete (5xx or invalid reply, connection lost, timeout).

Examples:

\b
  qembed verify --url http://127.0.0.1:30000
  qembed verify --url http://gpu-box:8000/v1 \\
      --model Qwen/Qwen3-Embedding-4B --dimensions 256,1024
  qembed verify --url http://127.0.0.1:30000 \\
      --model ./Qwen3-Embedding-0.6B --precision fp32 --json
"""


def _fmt(x: float, places: int = 6) -> str:
    return "nan" if x != x else f"{x:.{places}f}"


def _render(report: VerifyReport) -> None:
    from qembed import output

    tol = report.tolerance
    full = report.results[0]
    rows = []
    cut = report.results[1:]
    for i, t in enumerate(full.texts):
        row = [t.id, t.kind if t.task is None else f"{t.kind}:{t.task}", t.tokens, _fmt(t.cos, 7),
               _fmt(t.norm, 5)]
        row += [_fmt(r.texts[i].cos, 6) + ("" if r.texts[i].ok else " !") for r in cut if r.texts]
        row.append("ok" if t.ok else "FAIL")
        rows.append(row)
    cols = ["text", "kind", "tokens", f"cos@{full.dimensions}", "norm",
            *[f"cos@{r.dimensions}" for r in cut if r.texts], "result"]
    if rows:
        output.table(cols, rows, title=f"qembed verify: {report.url} vs {report.model}")
    for r in report.results:
        where = {"none": "full size", "server": "server-side truncation",
                 "client": "`dimensions` not supported by the server (the client truncates)"}[r.truncation]
        line = (f"{r.dimensions:>5} dims ({where}): min cos {_fmt(r.min_cos, 7)}, median {_fmt(r.median_cos, 7)}, "
                f"max |norm-1| {r.max_norm_err:.1e}, top-1 agreement {_fmt(r.top1, 2)}, "
                f"top-5 overlap {_fmt(r.topk, 2)}: {'PASS' if r.ok else 'FAIL'}")
        output.data(line)
        for p in r.problems:
            output.data(f"      {p}")
        if r.note:
            output.data(f"      {r.note}")
    output.data(f"tolerance ({tol.name}): cos >= 1 - {tol.cos:g}, |norm - 1| <= {tol.norm:g}; {tol.source}")
    if report.diagnosis or report.unexplained:
        output.data("diagnosis (each known mistake judged on its own, at every size):")
        for d in report.diagnosis:
            mark = ("REPRODUCES the server" if d.reproduces else
                    f"explains {len(d.explains)}" if d.explains else "no")
            output.data(f"  {d.name:<26} min cos {_fmt(d.min_cos, 6):>9}  {mark}: {d.title}")
        found = report.explained_by
        if len(found) > 1:
            output.data(f"{len(found)} mistakes at once, each explaining its part of the texts:")
        for d in found:
            output.data(f"cause: {d.title} ({', '.join(d.explains[:6])}{', ...' if len(d.explains) > 6 else ''})"
                        f"\nfix:   {d.fix}")
        if report.unexplained:
            output.data(f"unexplained: {', '.join(report.unexplained[:12])}"
                        f"{', ...' if len(report.unexplained) > 12 else ''} (no known mistake reproduces "
                        "them: another model or revision, quantization, or mistakes on the same text)")
            for line in report.shared:
                output.data(f"  they share {line}")
    output.data(f"{'PASS' if report.ok else 'FAIL'} in {report.seconds:.1f} s")


@app.command("verify", help=VERIFY_HELP, epilog=qenv.env_help("QEMBED_URL", "QEMBED_API_KEY"))
def verify(
    url: Annotated[str | None, typer.Option("--url", envvar=qenv.URL.name,
                                            help="The server's base URL (default: the one `qembed serve` recorded).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Reference model: HF id or local directory (default: the server's model).")] = None,
    dimensions: Annotated[str | None, typer.Option("--dimensions", metavar="D,D,...", help="Matryoshka sizes to check besides the full size (default 32,128,512 below the full size; `none` = full only).")] = None,
    precision: Annotated[str, typer.Option("--precision", help="Tolerance: auto, fp32 or bf16 (auto: fp32 for `serve --profile cpu`, else bf16).")] = "auto",
    device: Annotated[str, typer.Option("--device", help="Where the reference runs: cpu, cuda, cuda:1 ...")] = "cpu",
    json_: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    from qembed import output
    from qembed.errors import ConfigError, ExitCode
    from qembed.fleet.verify import parse_dimensions
    from qembed.fleet.verify import verify as run_verify

    if precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"`--precision` must be auto, fp32 or bf16, got `{precision}`")
    prec: Literal["auto", "fp32", "bf16"] = precision  # type: ignore[assignment]
    report = run_verify(url, model=model, dimensions=parse_dimensions(dimensions),
                        precision=prec, device=device, progress=None if json_ else output.status)
    if json_:
        output.print_json(report.to_json())
    else:
        _render(report)
    if not report.ok:
        raise SystemExit(int(ExitCode.FAILURE))  # see cli/doctor.py: typer.Exit would be swallowed by the funnel


__all__ = ["verify"]
