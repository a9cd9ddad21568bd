#!/usr/bin/env bash
# The one test command (README line 2; `.ci/run` calls exactly this).
#
# On a fresh machine it installs everything the suite needs, then runs ruff and pytest. It has
# venvs of its own and NEVER installs into `.venv`, the serving venv of README line 1 (the test set
# pins a CPU torch that SGLang's `[serve]` set does not accept; issue 23):
#   1. .venv-test     qembed[test] with CPU torch (installed FIRST: otherwise pip resolves the
#                     multi-GB CUDA build) for the tiny Qwen3 reference model ($QEMBED_TEST_VENV)
#   2. .venv-sglang   real SGLang 0.5.23 on CPU: the argument parser and the engine
#   3. .venv-infinity real Infinity 0.0.78 on the CPU torch (scripts/setup_peers.sh infinity), the
#                     peer runtime tests/peers checks the client and `verify` against (docs/peers.md)
#   4. promtool (alert rules), ruff, mypy --strict, lint-imports (the layers), then pytest with QEMBED_REQUIRE_CONFORMANCE=1: a skipped conformance test fails the run
# QEMBED_TEST_PLAN=1 prints what it would run (one `plan:` line per step) and changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${QEMBED_TORCH_SPEC:-torch==2.13.0}"
VENV="${QEMBED_TEST_VENV:-.venv-test}"
PLAN="${QEMBED_TEST_PLAN:-}"

if [ "${VENV%/}" = ".venv" ]; then
  echo "error: the test venv must not be .venv: that is the serving venv (README line 1)" >&2
  echo "hint: unset QEMBED_TEST_VENV (default .venv-test)" >&2
  exit 2
fi

# Disk: the three venvs take about 2.2 GB (.venv-test), 8.2 GB (.venv-sglang) and 1.5 GB
# (.venv-infinity) here, plus pip's cache and the wheels being unpacked. Say so up front rather than
# as pip's "[Errno 28] No space left on device" minutes in (a CI run died that way).
need_gb=0
[ -x "$VENV/bin/python" ] || need_gb=$((need_gb + 3))
[ -x .venv-sglang/bin/python ] || need_gb=$((need_gb + 10))
[ -x .venv-infinity/bin/python ] || need_gb=$((need_gb + 2))
free_gb=$(df -Pk . | awk 'NR==2 {print int($4 / 1048576)}')
if [ -z "$PLAN" ] && [ "$need_gb" -gt 0 ] && [ -n "$free_gb" ] && [ "$free_gb" -lt "$need_gb" ]; then
  echo "error: ${free_gb} GB free on the disk of $PWD; building the missing test venvs needs about ${need_gb} GB" >&2
  echo "hint: free space (pip cache purge; remove old checkouts and their .venv-* folders), then run this again" >&2
  exit 1
fi

step() { printf '\n==> %s\n' "$*" >&2; }
# run CMD...: run it, or with QEMBED_TEST_PLAN=1 only say it
run() { if [ -n "$PLAN" ]; then printf 'plan: %s\n' "$*"; else "$@"; fi; }

if [ ! -x "$VENV/bin/python" ]; then
  step "creating $VENV"
  run "$PYTHON" -m venv "$VENV"
fi
step "installing $TORCH_SPEC (CPU build) and qembed[test] into $VENV"
run "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
run "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$TORCH_SPEC"
run "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'

step "building the SGLang venv (.venv-sglang: real SGLang on CPU, the parser and the engine)"
run bash scripts/setup_sglang.sh

step "building the Infinity venv (.venv-infinity: a real peer runtime for tests/peers)"
run bash scripts/setup_peers.sh infinity

step "promtool (Debian's prometheus package) for the alert-rule checks"
if [ -n "$PLAN" ]; then
  run apt-get install prometheus  # only when promtool is missing
elif ! command -v promtool >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } >&2
  fi
  command -v promtool >/dev/null 2>&1 || { echo "error: promtool could not be installed (apt-get install prometheus)" >&2; exit 1; }
fi

step "ruff"
run "$VENV/bin/ruff" check .

step "mypy --strict"
run "$VENV/bin/mypy" qembed

step "import-linter: the layer and no-cycle contracts (pyproject [tool.importlinter], CONTRIBUTING.md)"
run "$VENV/bin/lint-imports"

step "pytest"
export QEMBED_REQUIRE_CONFORMANCE=1
export QEMBED_SGLANG_PARSER_PYTHON="$PWD/.venv-sglang/bin/python"
export HF_HUB_OFFLINE=1
if [ -n "$PLAN" ]; then
  run "$VENV/bin/python" -m pytest "$@"
  exit 0
fi
set +e
"$VENV/bin/python" -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "error: pytest collected no tests (exit 5); that is a failure here" >&2
  exit 1
fi
exit "$rc"
