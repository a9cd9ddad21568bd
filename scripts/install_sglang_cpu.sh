#!/usr/bin/env bash
# Install SGLang's CPU build into a virtual environment, for `qembed serve --profile xeon`.
#
# PyPI has no CPU build of SGLang's kernels (sgl-kernel / sglang-kernel ship CUDA builds only),
# so this follows SGLang's own CPU guide (docs.sglang.io, "CPU Servers", "Install From Source";
# the same steps as its docker/xeon.Dockerfile):
#   1. a uv venv (Python 3.12) whose uv config takes torch, torchvision, torchaudio and triton
#      from the PyTorch CPU index;
#   2. SGLang's source at the release tag, installed with its CPU pyproject (`pyproject_cpu.toml`);
#   3. sgl-kernel built from source with its CPU pyproject (about 50 C++ files, -march=native):
#      this is what `--device cpu` needs, and what gives the AMX kernels on 4th-generation and
#      newer Xeons;
#   4. a check that the CPU op resolves, then a byte-compile of SGLang (the first start is much
#      slower without it).
# Nothing here touches the environment qembed itself runs in: point qembed at the new interpreter
# (`QEMBED_SGLANG_PYTHON`, `--python` or the profile's `python` key).
#
# NOT TESTED BY qembed's CI: the machines it runs on cannot reach GitHub, where SGLang's source
# lives. Each step checks its result and stops with a message; read it before running it.
#
# Usage: scripts/install_sglang_cpu.sh [--venv DIR] [--version X.Y.Z] [--src DIR] [--python VER]
#   --venv DIR      the environment to create (default ~/.venvs/sglang-cpu); must not exist yet
#   --version X     the SGLang release (default 0.5.23, the one qembed is built against)
#   --src DIR       where to clone SGLang (default: a temporary folder, removed at the end)
#   --python VER    the Python uv installs for the venv (default 3.12, as SGLang's guide uses)
# Needs: Linux x86-64, git, gcc/g++ (SGLang recommends 13), make, uv, and libnuma headers
# (`apt-get install libnuma-dev`); tcmalloc and libtbb are optional (see the end).
set -euo pipefail

VENV="${HOME}/.venvs/sglang-cpu"
VERSION="0.5.23"
SRC=""
PYVER="3.12"
REPO_URL="https://github.com/sgl-project/sglang.git"

die() { printf 'error: %s\n' "$1" >&2; [ $# -gt 1 ] && printf '\nhint: %s\n' "$2" >&2; exit 1; }
log() { printf '==> %s\n' "$*" >&2; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --venv) VENV="${2:?--venv needs a folder}"; shift 2 ;;
    --version) VERSION="${2:?--version needs X.Y.Z}"; shift 2 ;;
    --src) SRC="${2:?--src needs a folder}"; shift 2 ;;
    --python) PYVER="${2:?--python needs a version}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage; die "unknown option \`$1\`" "run \`$0 --help\`" ;;
  esac
done

# -- checks before anything is written -------------------------------------------------------
[ "$(uname -s)" = "Linux" ] || die "SGLang's CPU backend runs on Linux only (this is $(uname -s))"
[ "$(uname -m)" = "x86_64" ] || die "this script builds the x86-64 CPU kernels (this is $(uname -m))" \
  "SGLang's guide covers Intel Xeon; other architectures are not covered here"
[[ "$VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "\`--version $VERSION\` is not X.Y.Z"
[ -e "$VENV" ] && die "\`$VENV\` already exists" "choose another \`--venv\`, or remove it first"
# every missing prerequisite in one run, each with its fix (not one per run)
missing=()
apt=()
for tool in git gcc g++ make; do
  command -v "$tool" >/dev/null 2>&1 || { missing+=("\`$tool\`"); apt+=("$tool"); }
done
[ -e /usr/include/numa.h ] || { missing+=("the libnuma headers (/usr/include/numa.h)"); apt+=(libnuma-dev numactl); }
command -v uv >/dev/null 2>&1 || missing+=("uv")
if [ ${#missing[@]} -gt 0 ]; then
  hint=""
  [ ${#apt[@]} -gt 0 ] && hint="\`sudo apt-get install ${apt[*]}\` (as SGLang's xeon.Dockerfile does)"
  if ! command -v uv >/dev/null 2>&1; then
    [ -n "$hint" ] && hint="$hint; "
    hint="${hint}uv: \`pip install uv\` or https://docs.astral.sh/uv/"
  fi
  die "missing: $(IFS=,; echo "${missing[*]}" | sed 's/,/, /g')" "$hint"
fi
if command -v gcc >/dev/null 2>&1; then
  gcc_major="$(gcc -dumpversion | cut -d. -f1)"
  if [ "$gcc_major" -lt 11 ]; then
    die "gcc $gcc_major is too old to build sgl-kernel's CPU sources" "install gcc-13/g++-13 (what SGLang's image uses)"
  elif [ "$gcc_major" -lt 13 ]; then
    log "note: gcc $gcc_major; SGLang verifies its CPU build with gcc 13 (upgrade if the build fails)"
  fi
fi
flags="$(grep -m1 '^flags' /proc/cpuinfo || true)"
for f in avx512f amx_tile amx_bf16; do
  case " $flags " in *" $f "*) ;; *) log "note: this CPU lacks \`$f\`: SGLang will not take its AMX path here (see \`qembed doctor -p xeon\`)" ;; esac
done

cleanup_src=0
if [ -z "$SRC" ]; then
  SRC="$(mktemp -d -t sglang-src.XXXXXX)"
  cleanup_src=1
fi
cleanup() { [ "$cleanup_src" = 1 ] && rm -rf -- "$SRC"; }
trap cleanup EXIT

# -- 1. the venv, with torch from the PyTorch CPU index --------------------------------------
log "creating $VENV (Python $PYVER)"
uv venv --python "$PYVER" "$VENV"
cat > "$VENV/uv.toml" <<'EOF'
[[index]]
name = "torch"
url = "https://download.pytorch.org/whl/cpu"

[[index]]
name = "torchvision"
url = "https://download.pytorch.org/whl/cpu"

[[index]]
name = "torchaudio"
url = "https://download.pytorch.org/whl/cpu"

[[index]]
name = "triton"
url = "https://download.pytorch.org/whl/cpu"
EOF
export UV_CONFIG_FILE="$VENV/uv.toml"
export VIRTUAL_ENV="$VENV"
PY="$VENV/bin/python"

# -- 2. SGLang at the release tag, with its CPU pyproject -------------------------------------
checkout="$SRC/sglang"
if [ -d "$checkout/.git" ]; then
  log "using the clone in $checkout"
  git -C "$checkout" fetch --depth 1 origin "refs/tags/v$VERSION:refs/tags/v$VERSION"
else
  log "cloning SGLang v$VERSION into $checkout"
  git clone --depth 1 --branch "v$VERSION" "$REPO_URL" "$checkout" \
    || die "cannot clone $REPO_URL at tag v$VERSION" "check the version and your network (GitHub must be reachable)"
fi
git -C "$checkout" checkout --quiet "v$VERSION"
[ -f "$checkout/python/pyproject_cpu.toml" ] || die "SGLang v$VERSION has no python/pyproject_cpu.toml" \
  "follow SGLang's CPU guide for that release by hand"
log "installing SGLang $VERSION (CPU pyproject)"
cp "$checkout/python/pyproject_cpu.toml" "$checkout/python/pyproject.toml"
uv pip install --python "$PY" --upgrade pip setuptools
uv pip install --python "$PY" "$checkout/python"

# -- 3. sgl-kernel's CPU build (the location moved between releases) --------------------------
kernel_dir=""
for d in "$checkout/sgl-kernel" "$checkout/python/sglang/kernels/aot"; do
  if [ -f "$d/pyproject_cpu.toml" ]; then kernel_dir="$d"; break; fi
done
[ -n "$kernel_dir" ] || die "no pyproject_cpu.toml for sgl-kernel in SGLang v$VERSION" \
  "follow SGLang's CPU guide for that release by hand"
log "building sgl-kernel's CPU kernels in $kernel_dir (several minutes)"
cp "$kernel_dir/pyproject_cpu.toml" "$kernel_dir/pyproject.toml"
uv pip install --python "$PY" "$kernel_dir" \
  || die "the sgl-kernel CPU build failed" "check gcc/g++ (SGLang verifies gcc 13) and libnuma-dev, then rerun with a new --venv"

# -- 4. check, byte-compile -------------------------------------------------------------------
log "checking the CPU op and the AMX kernels"
SGLANG_USE_CPU_ENGINE=1 "$PY" - <<'EOF' || die "SGLang's CPU build does not load" "read the error above; \`qembed doctor -p xeon --python $PY\` says more"
import torch, sgl_kernel  # noqa: F401
torch.ops.sgl_kernel.assign_req_to_token_pool_cpu  # the op `--device cpu` needs
amx = torch.cpu._is_amx_tile_supported() and hasattr(torch.ops.sgl_kernel, "convert_weight_packed")
print(f"torch {torch.__version__} (CUDA: {torch.version.cuda}); AMX path: {'yes' if amx else 'no (torch-native)'}")
EOF
log "byte-compiling SGLang (the first start is much slower without it)"
"$PY" -m compileall -q -j 0 "$("$PY" -c 'import sglang, os; print(os.path.dirname(sglang.__file__))')" >/dev/null || true

cat >&2 <<EOF

SGLang $VERSION (CPU build) is installed in $VENV.
Next:
  export QEMBED_SGLANG_PYTHON=$PY
  qembed doctor --profile xeon          # CPU flags, AMX or torch-native path, dtype, RAM, KV pool
  qembed serve --profile xeon
Optional, as SGLang's guide recommends: preload tcmalloc and Intel OpenMP through the profile's
\`env\` key, e.g. LD_PRELOAD: "/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4:$VENV/lib/libiomp5.so"
(paths differ per system; \`apt-get install libgoogle-perftools-dev\` provides tcmalloc).
EOF
