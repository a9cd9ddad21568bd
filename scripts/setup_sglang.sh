#!/usr/bin/env bash
# Build the one SGLang venv the test suite uses: real SGLang 0.5.23 that SERVES on this machine's
# CPU (SGLang's CPU backend, torch-native path) and whose parser checks every argv qembed builds.
#
#   bash scripts/setup_sglang.sh                  # -> .venv-sglang (or $QEMBED_SGLANG_VENV)
#
# What it installs, from scripts/sglang-cpu-constraints.txt (-c, every time, so the set can't drift):
#   1. torch 2.14.1 + torchvision 0.29.1 (the versions sglang 0.5.23 pins; at import sglang needs a
#      torchvision that loads, and only these builds do beside each other here)
#   2. sglang's own requirements read from the wheel's METADATA, minus the CUDA-only packages
#   3. sglang 0.5.23 and sglang-kernel 0.4.10 with --no-deps (sglang imports sgl_kernel's Python
#      files in CPU mode; PyPI has no CPU build of its compiled kernels)
#   4. TEST SUPPORT, never shipped: tests/sglang_cpu/qembed_sgl_kernel_cpu_op.py, the one
#      sgl_kernel CPU op that SGLang's torch-native path calls, defined in Python and registered by
#      a .pth import hook right after `import sgl_kernel`. Users install SGLang's real CPU build
#      instead (scripts/install_sglang_cpu.sh, docs/serving.md "SGLang on CPU").
#   5. compileall (the first start is much slower without it)
# Idempotent: a stamp records a finished build of these inputs. About 5 min and 7 GB the first time.
#
# Env: QEMBED_SGLANG_VENV (venv dir), PYTHON (base interpreter, 3.11).
# Regenerate the constraints after changing the pins: QEMBED_SGLANG_RELOCK=1 bash scripts/setup_sglang.sh
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${QEMBED_SGLANG_VENV:-.venv-sglang}"
BASE_PYTHON="${PYTHON:-python3}"
SGLANG_SPEC="sglang==0.5.23"
KERNEL_SPEC="sglang-kernel==0.4.10"
TORCH_SPECS=(torch==2.14.1 torchvision==0.29.1)
CONSTRAINTS="scripts/sglang-cpu-constraints.txt"
SHIM="tests/sglang_cpu/qembed_sgl_kernel_cpu_op.py"
# CUDA-only requirements of sglang 0.5.23 (sglang-cpu-engine.md, Install 2); torchaudio and
# torchcodec have no build that loads beside torch 2.14.1 here and SGLang imports neither for text.
EXCLUDE_RE='^(cuda-python|flash-attn-4|flashinfer[-_]python|humming-kernels|nvidia-cutlass-dsl|nvidia-mathdx|nvshmem4py-cu13|quack-kernels|sgl-deep-ep|sgl-deep-gemm|sgl-flash-mla|sglang-kernel|tilelang|torch[-_]memory[-_]saver|torchaudio|torchcodec|torch|torchvision)$'
STAMP_TEXT="$SGLANG_SPEC $KERNEL_SPEC ${TORCH_SPECS[*]} $(sha256sum "$CONSTRAINTS" "$SHIM" "$0" | cut -c1-16 | tr '\n' ' ')"
STAMP="$VENV/.qembed-sglang-stamp"

log() { printf 'setup_sglang: %s\n' "$*" >&2; }

if [[ -z "${QEMBED_SGLANG_RELOCK:-}" && -f "$STAMP" && "$(cat "$STAMP")" == "$STAMP_TEXT" && -x "$VENV/bin/python" ]]; then
    log "up to date: $VENV (remove $STAMP to rebuild)"
    exit 0
fi
start=$SECONDS
if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating venv $VENV with $BASE_PYTHON"
    "$BASE_PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' \
    || { log "the pinned set is for Python 3.11; set PYTHON=python3.11"; exit 1; }

PIP=("$PY" -m pip install --disable-pip-version-check --quiet)
CONSTRAIN=()
[[ -z "${QEMBED_SGLANG_RELOCK:-}" ]] && CONSTRAIN=(-c "$CONSTRAINTS")

log "installing ${TORCH_SPECS[*]}"
"${PIP[@]}" "${CONSTRAIN[@]}" "${TORCH_SPECS[@]}"

wheels="$(mktemp -d)"
trap 'rm -rf "$wheels"' EXIT
"$PY" -m pip download --disable-pip-version-check --quiet --no-deps -d "$wheels" "$SGLANG_SPEC"
reqs="$wheels/requirements.txt"
# Requires-Dist lines without an extra, minus the excluded names; markers are kept for pip to judge.
"$PY" scripts/wheel_requires.py "$wheels" "sglang-*.whl" "$EXCLUDE_RE" > "$reqs"
log "installing sglang's requirements ($(wc -l < "$reqs") packages, CUDA-only ones left out)"
"${PIP[@]}" "${CONSTRAIN[@]}" -r "$reqs" "${TORCH_SPECS[@]}"
log "installing $SGLANG_SPEC and $KERNEL_SPEC --no-deps"
"${PIP[@]}" "${CONSTRAIN[@]}" --no-deps "$wheels"/sglang-*.whl "$KERNEL_SPEC"

site="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
log "test support: the sgl_kernel CPU op shim -> $site"
cp "$SHIM" "$site/"
echo "import qembed_sgl_kernel_cpu_op; qembed_sgl_kernel_cpu_op.install()" > "$site/qembed_sgl_kernel_cpu_op.pth"

log "byte-compiling sglang"
"$PY" -m compileall -q -j 0 "$site/sglang" "$site/sgl_kernel" >/dev/null || true

if [[ -n "${QEMBED_SGLANG_RELOCK:-}" ]]; then
    "$PY" -m pip freeze --exclude-editable | grep -Ev '^sglang(-kernel)? *(==|@)' > "$CONSTRAINTS"
    log "wrote $CONSTRAINTS ($(wc -l < "$CONSTRAINTS") pins)"
fi

log "checking: the parser, and the CPU op after import sgl_kernel"
"$PY" -I - <<'EOF2'
import contextlib, io, sys
from sglang.srt.server_args import prepare_server_args

args = prepare_server_args(["--model-path", "Qwen/Qwen3-Embedding-4B", "--is-embedding"])
assert args.is_embedding, "parser did not set is_embedding"
try:
    with contextlib.redirect_stderr(io.StringIO()):
        prepare_server_args(["--model-path", "x", "--max-model-len", "8192"])
except SystemExit as exc:
    assert exc.code == 2, exc.code
else:
    sys.exit("parser accepted --max-model-len; this is not sglang 0.5.23")
EOF2
"$PY" -c 'import sgl_kernel, torch; torch.ops.sgl_kernel.assign_req_to_token_pool_cpu'

STAMP_TEXT="$SGLANG_SPEC $KERNEL_SPEC ${TORCH_SPECS[*]} $(sha256sum "$CONSTRAINTS" "$SHIM" "$0" | cut -c1-16 | tr '\n' ' ')"
printf '%s' "$STAMP_TEXT" > "$STAMP"
log "done in $((SECONDS - start)) s: $PY ($(du -sh "$VENV" | cut -f1))"
