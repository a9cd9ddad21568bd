#!/usr/bin/env bash
# The one test command (README line 2; `.ci/run` calls exactly this).
#
# On a fresh machine it installs everything the suite needs, then runs ruff and pytest:
#   1. .venv          qembed[test] with CPU torch (installed FIRST: otherwise pip resolves the
#                     multi-GB CUDA build) for the tiny Qwen3 reference model
#   2. .venv-sglang   the real SGLang 0.5.23 argument parser (sglang --no-deps + what its parser
#                     imports + CPU torch), so every argv qembed builds is checked by SGLang itself
#   3. .venv-infinity real Infinity 0.0.78 on the CPU torch (scripts/setup_peers.sh infinity), the
#                     peer runtime tests/peers checks the client and `verify` against (docs/peers.md)
#   4. promtool (alert rules), ruff, mypy --strict, then pytest with QEMBED_REQUIRE_CONFORMANCE=1: a skipped conformance test fails the run
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${QEMBED_TORCH_SPEC:-torch==2.13.0}"

step() { printf '\n==> %s\n' "$*" >&2; }

if [ ! -x .venv/bin/python ]; then
  step "creating .venv"
  "$PYTHON" -m venv .venv
fi
step "installing $TORCH_SPEC (CPU build) and qembed[test] into .venv"
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check "$TORCH_SPEC"
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

step "building the SGLang venv (.venv-sglang: real SGLang on CPU, the parser and the engine)"
bash scripts/setup_sglang.sh

step "building the Infinity venv (.venv-infinity: a real peer runtime for tests/peers)"
bash scripts/setup_peers.sh infinity

step "promtool (Debian's prometheus package) for the alert-rule checks"
if ! command -v promtool >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } >&2
  fi
  command -v promtool >/dev/null 2>&1 || { echo "error: promtool could not be installed (apt-get install prometheus)" >&2; exit 1; }
fi

step "ruff"
.venv/bin/ruff check .

step "mypy --strict"
.venv/bin/mypy qembed

step "pytest"
export QEMBED_REQUIRE_CONFORMANCE=1
export QEMBED_SGLANG_PARSER_PYTHON="$PWD/.venv-sglang/bin/python"
export HF_HUB_OFFLINE=1
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "error: pytest collected no tests (exit 5); that is a failure here" >&2
  exit 1
fi
exit "$rc"
