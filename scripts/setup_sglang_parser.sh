#!/usr/bin/env bash
# Build the SGLang 0.5.23 *parser* venv that tests/test_conformance.py runs argv through.
#
# It holds the real sglang wheel (--no-deps), CPU torch, and exactly the packages the import
# chain of `sglang.srt.server_args` needs (reference sglang-0.5.23.md section 1.1a). It cannot
# serve; it only parses. Idempotent: a stamp file records a finished build with these pins.
#
#   bash scripts/setup_sglang_parser.sh            # -> .venv-sglang (or $QEMBED_SGLANG_VENV)
#   QEMBED_SGLANG_PARSER_PYTHON=.venv-sglang/bin/python pytest -m conformance
#
# Env: QEMBED_SGLANG_VENV (venv dir), PYTHON (base interpreter, default python3; needs 3.11+),
#      QEMBED_TORCH_SPEC (default torch==2.13.0: pip takes the CPU wheel from its find-links
#      when one is there; without it, pip would pull a multi-GB CUDA build).
set -euo pipefail

VENV="${QEMBED_SGLANG_VENV:-.venv-sglang}"
BASE_PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${QEMBED_TORCH_SPEC:-torch==2.13.0}"
SGLANG_SPEC="sglang==0.5.23"
# The import chain of sglang.srt.server_args (checked by importing it in a fresh venv), plus
# pyyaml for `--config`. transformers is left out on purpose: it makes each parse ~2 s slower and
# checks nothing more. triton is ~1 GB but srt/utils/common.py imports it at module level.
PARSER_DEPS=(numpy orjson psutil pybase64 requests packaging pillow triton starlette msgspec
             pydantic pyzmq tqdm ipython aiohttp pyyaml)
STAMP_TEXT="$SGLANG_SPEC $TORCH_SPEC ${PARSER_DEPS[*]}"
STAMP="$VENV/.qembed-parser-stamp"

log() { printf 'setup_sglang_parser: %s\n' "$*" >&2; }

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$STAMP_TEXT" && -x "$VENV/bin/python" ]]; then
    log "up to date: $VENV (remove $STAMP to rebuild)"
    exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating venv $VENV with $BASE_PYTHON"
    "$BASE_PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
    || { log "sglang 0.5.23 needs Python 3.11+; set PYTHON=python3.11"; exit 1; }

PIP=("$PY" -m pip install --disable-pip-version-check --quiet)
# torch first: anything that depends on it must find it installed, or pip picks a CUDA build.
log "installing $TORCH_SPEC (CPU build when pip's find-links has one)"
"${PIP[@]}" "$TORCH_SPEC"
log "installing $SGLANG_SPEC --no-deps"
"${PIP[@]}" --no-deps "$SGLANG_SPEC"
log "installing the parser's import chain: ${PARSER_DEPS[*]}"
"${PIP[@]}" "${PARSER_DEPS[@]}" "$TORCH_SPEC"

log "checking: prepare_server_args in $PY -I"
"$PY" -I - <<'EOF'
import contextlib, io, sys
from sglang.srt.server_args import prepare_server_args

args = prepare_server_args(["--model-path", "Qwen/Qwen3-Embedding-4B", "--is-embedding"])
assert args.is_embedding, "parser did not set is_embedding"
try:
    with contextlib.redirect_stderr(io.StringIO()):  # argparse's usage text is long
        prepare_server_args(["--model-path", "x", "--max-model-len", "8192"])
except SystemExit as exc:
    assert exc.code == 2, exc.code
else:
    sys.exit("parser accepted --max-model-len; this is not sglang 0.5.23")
EOF

printf '%s' "$STAMP_TEXT" > "$STAMP"
log "done: $PY"
