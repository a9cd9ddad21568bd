"""TEST DOUBLE: the ``sglang`` console script (``sglang serve ...``), backed by ``_fake.py``."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "serve":
        print("usage: sglang serve [--model-path M] ...", file=sys.stderr)
        raise SystemExit(2)
    rest = args[1:]
    # `sglang serve` takes --model-type out before parsing (cli/serve.py:30-59).
    if "--model-type" in rest:
        i = rest.index("--model-type")
        del rest[i : i + 2]
    # A positional first argument becomes --model-path (cli/serve.py:62-66).
    if rest and not rest[0].startswith("-"):
        rest = ["--model-path", *rest]
    from sglang._fake import run

    run(rest)


if __name__ == "__main__":
    main()
