#!/usr/bin/env bash
# Creates a virtual environment with one of the dependency stacks CI tests (README "Install")
# and installs the plugin editable into it.
#
#   bash tools/setup_env.sh                   # current stack -> .venv/
#   bash tools/setup_env.sh --stack legacy    # torch 2.1 + numpy 1.26 stack -> .venv-legacy/
#   bash tools/setup_env.sh --stack mmdeploy  # legacy + mmdeploy 1.3.1 -> .venv-mmdeploy/
#
# Idempotent: a second run only checks a stamp. mmcv 2.1.0 is built from source with its ops
# once per machine (10-20 minutes on 2 cores) and the wheel cached outside the repository,
# keyed by Python and torch version, since the extension's ABI depends on both.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK=current
while [[ $# -gt 0 ]]; do
    case "$1" in
        --stack) STACK="${2:?--stack needs a value: current, legacy or mmdeploy}"; shift 2 ;;
        --stack=*) STACK="${1#--stack=}"; shift ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "!!! [setup] unknown argument $1 (usage: $0 [--stack current|legacy|mmdeploy])" >&2; exit 2 ;;
    esac
done

# Each stack: the Python version, the packages pinned by the user's environment (torch and
# its companions, given as pip constraints files so that nothing installed later moves them),
# and the plugin's extras installed with the test ones.
EXTRAS='tests,mask2former'
case "$STACK" in
    current)
        PYTHON_VERSION=3.12
        DEFAULT_VENV="$ROOT/.venv"
        TORCH_SPECS=('torch==2.15.0' 'torchvision==0.29.2')
        ;;
    legacy)
        PYTHON_VERSION=3.10
        DEFAULT_VENV="$ROOT/.venv-legacy"
        TORCH_SPECS=('torch==2.1.2' 'torchvision==0.16.2')
        ;;
    mmdeploy)
        # mmdeploy 1.3.1 supports the legacy stack only; its mmcv wheel is legacy's.
        PYTHON_VERSION=3.10
        DEFAULT_VENV="$ROOT/.venv-mmdeploy"
        TORCH_SPECS=('torch==2.1.2' 'torchvision==0.16.2')
        CONSTRAINT_FILES=("$ROOT/tools/stacks/legacy.txt" "$ROOT/tools/stacks/mmdeploy.txt")
        EXTRAS='tests,mask2former,mmdeploy'
        ;;
    *) echo "!!! [setup] unknown stack '$STACK' (choose current, legacy or mmdeploy)" >&2; exit 2 ;;
esac
[[ -v CONSTRAINT_FILES ]] || CONSTRAINT_FILES=("$ROOT/tools/stacks/$STACK.txt")
CONSTRAINTS=()
for file in "${CONSTRAINT_FILES[@]}"; do CONSTRAINTS+=(-c "$file"); done
VENV="${VENV:-$DEFAULT_VENV}"
CACHE="${MMSEG_INCNEXT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mmseg-incnext}"
MMCV_VERSION='2.1.0'

step() { printf '\n==> [setup %s] %s\n' "$STACK" "$*"; }
CURRENT_STEP='start'
trap 'echo "!!! [setup $STACK] FAILED during: $CURRENT_STEP (see the output above)" >&2' ERR

STAMP="$VENV/.mmseg-incnext-stamp"
want_stamp="$(cat "$ROOT/tools/setup_env.sh" "${CONSTRAINT_FILES[@]}" "$ROOT/setup.py" | sha256sum | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want_stamp" && -x "$VENV/bin/python" ]]; then
    echo "[setup $STACK] $VENV is up to date (delete it or $STAMP to rebuild)"
    exit 0
fi

# A python that runs: pyenv shims exist for every installed version but answer "command not
# found" unless that version is selected, so `command -v` alone is not enough.
OVERRIDE_VAR="PYTHON_${STACK^^}"  # PYTHON_CURRENT / PYTHON_LEGACY: the interpreter to use
find_python() {
    local version="$1" candidate found
    if [[ -n "${!OVERRIDE_VAR:-}" ]]; then
        echo "${!OVERRIDE_VAR}"; return
    fi
    for candidate in "python$version" "/usr/bin/python$version" "/usr/local/bin/python$version"; do
        if "$candidate" -c 'import sys' >/dev/null 2>&1; then echo "$candidate"; return; fi
    done
    if command -v pyenv >/dev/null 2>&1; then
        found="$(pyenv versions --bare 2>/dev/null | grep -E "^${version//./\\.}(\.[0-9]+)?$" | sort -V | tail -n1 || true)"
        candidate="$(pyenv root)/versions/$found/bin/python$version"
        if [[ -n "$found" ]] && "$candidate" -c 'import sys' >/dev/null 2>&1; then
            echo "$candidate"; return
        fi
    fi
    return 1
}

CURRENT_STEP="find Python $PYTHON_VERSION"
step "$CURRENT_STEP"
if ! PY_BIN="$(find_python "$PYTHON_VERSION")"; then
    echo "!!! [setup $STACK] Python $PYTHON_VERSION not found (tried python$PYTHON_VERSION on PATH and pyenv)." >&2
    echo "    Install it (e.g. 'pyenv install $PYTHON_VERSION') or set $OVERRIDE_VAR=/path/to/python$PYTHON_VERSION." >&2
    exit 1
fi
py_version() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])'; }
got="$(py_version "$PY_BIN")" || { echo "!!! [setup $STACK] $PY_BIN does not run" >&2; exit 1; }
if [[ "$got" != "$PYTHON_VERSION" ]]; then
    echo "[setup $STACK] WARNING: $PY_BIN is Python $got; CI tests the $STACK stack with" \
         "$PYTHON_VERSION (README \"Install\"). Continuing." >&2
fi
echo "[setup $STACK] using $PY_BIN"

CURRENT_STEP="create virtual environment $VENV"
step "$CURRENT_STEP"
if [[ -x "$VENV/bin/python" && "$(py_version "$VENV/bin/python" 2>/dev/null)" != "$got" ]]; then
    echo "[setup $STACK] $VENV has another Python version; recreating it"
    rm -rf "$VENV"
fi
[[ -x "$VENV/bin/python" ]] || "$PY_BIN" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

CURRENT_STEP="install build tools and ${TORCH_SPECS[*]} (first time: a large download)"
step "$CURRENT_STEP"
"${PIP[@]}" install -q --upgrade pip
"${PIP[@]}" install --progress-bar on "${CONSTRAINTS[@]}" setuptools wheel ninja "${TORCH_SPECS[@]}"

PY_TAG="$("$VENV/bin/python" -c 'import sys; print(f"cp{sys.version_info.major}{sys.version_info.minor}")')"
TORCH_TAG="$("$VENV/bin/python" -c 'import torch; print(torch.__version__.replace("+", "_"))')"
WHEEL_DIR="$CACHE/wheels/mmcv-$MMCV_VERSION-$PY_TAG-torch$TORCH_TAG"
mkdir -p "$WHEEL_DIR"
# The legacy and mmdeploy stacks share this wheel and `make test` sets them up side by side:
# one builds it, the other waits for it.
exec 9>"$WHEEL_DIR/.build.lock"
flock 9
MMCV_WHEEL="$(ls "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n1 || true)"
if [[ -z "$MMCV_WHEEL" ]]; then
    CURRENT_STEP="build mmcv $MMCV_VERSION with ops for $PY_TAG + torch $TORCH_TAG (10-20 minutes on 2 cores, once per machine)"
    step "$CURRENT_STEP"
    BUILD_TMP="$(mktemp -d)"
    BUILD_LOG="$BUILD_TMP/build.log"
    # --no-build-isolation: compile against the torch installed above. --no-cache-dir: pip's
    # wheel cache is keyed by the sdist alone and would hand back a wheel built for another torch.
    "${PIP[@]}" download -q --no-deps --no-build-isolation --no-binary :all: -d "$BUILD_TMP" \
        "mmcv==$MMCV_VERSION"
    tar -xzf "$BUILD_TMP"/mmcv-"$MMCV_VERSION".tar.gz -C "$BUILD_TMP"
    MMCV_SRC="$BUILD_TMP/mmcv-$MMCV_VERSION"
    # mmcv's setup.py passes -std=c++14/17; torch >= 2.14's headers need the newer standard
    # that torch's own extension builder passes, so compile mmcv with that one.
    TORCH_CXX_STD="$("$VENV/bin/python" -c 'import inspect, re, torch.utils.cpp_extension as e
print(max(map(int, re.findall(r"-std=c\+\+(\d+)", inspect.getsource(e))), default=17))')"
    if (( TORCH_CXX_STD > 17 )); then
        echo "[setup $STACK] torch's headers need C++$TORCH_CXX_STD: building mmcv with -std=c++$TORCH_CXX_STD"
        sed -i -E "s/-std=c\+\+1[47]/-std=c++$TORCH_CXX_STD/g" "$MMCV_SRC/setup.py"
    fi
    MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" "${PIP[@]}" wheel -v --no-build-isolation \
        --no-cache-dir --no-deps -w "$BUILD_TMP" "$MMCV_SRC" \
        >"$BUILD_LOG" 2>&1 &
    build_pid=$!
    while kill -0 "$build_pid" 2>/dev/null; do
        sleep 30
        progress="$(grep -oE '\[[0-9]+/[0-9]+\]' "$BUILD_LOG" | tail -n1 || true)"
        echo "  $(date +%T) building mmcv: ${progress:-preparing} (compiled/total)"
    done
    if ! wait "$build_pid"; then
        tail -n 60 "$BUILD_LOG" >&2
        echo "!!! [setup $STACK] mmcv build failed; full log: $BUILD_LOG" >&2
        false
    fi
    built="$(ls "$BUILD_TMP"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n1 || true)"
    [[ -n "$built" ]] || { echo "!!! [setup $STACK] mmcv build produced no wheel" >&2; false; }
    mv "$built" "$WHEEL_DIR/"
    rm -rf "$BUILD_TMP"
    MMCV_WHEEL="$(ls "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl | head -n1)"
else
    echo "[setup $STACK] using cached mmcv wheel $MMCV_WHEEL"
fi
flock -u 9

CURRENT_STEP="install mmcv, mmengine and mmsegmentation (the user's OpenMMLab environment)"
step "$CURRENT_STEP"
"${PIP[@]}" install -q "${CONSTRAINTS[@]}" "$MMCV_WHEEL" mmengine==0.10.7 mmsegmentation==1.2.2 \
    ftfy regex

# What a user does in their own environment: a plain install of the plugin must leave the
# core packages as they are.
CURRENT_STEP="install the plugin (pip install -e .) and check it moves no core package"
step "$CURRENT_STEP"
core_versions() {
    local installed
    installed="$("$VENV/bin/python" -m pip list --format=freeze)"
    grep -iE '^(torch|torchvision|numpy|mmcv|mmengine|mmsegmentation|opencv-python)==' \
        <<<"$installed"
}
before="$(core_versions)"
"${PIP[@]}" install -q -e "$ROOT"
after="$(core_versions)"
if [[ "$before" != "$after" ]]; then
    echo "!!! [setup $STACK] installing the plugin changed core packages:" >&2
    diff <(echo "$before") <(echo "$after") >&2 || true
    false
fi

CURRENT_STEP="install the extras $EXTRAS (timm, pytest, mmpretrain, onnx, onnxruntime, mmdet, ...)"
step "$CURRENT_STEP"
"${PIP[@]}" install -q "${CONSTRAINTS[@]}" -e "$ROOT[$EXTRAS]"

CURRENT_STEP="check the stack imports"
step "$CURRENT_STEP"
"$VENV/bin/python" - "$STACK" <<'PY'
import mmcv, mmdet, mmengine, mmseg, numpy, onnxruntime, timm, torch, torchvision
from mmcv.ops import nms  # noqa: F401  (fails if mmcv was built without ops)
import mmseg.models  # noqa: F401
import mmseg_incnext  # noqa: F401
import sys
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, torchvision "
      f"{torchvision.__version__}, numpy {numpy.__version__}, mmcv {mmcv.__version__}, "
      f"mmengine {mmengine.__version__}, mmseg {mmseg.__version__}, mmdet {mmdet.__version__}, "
      f"timm {timm.__version__}")
if sys.argv[1] == 'mmdeploy':
    import mmdeploy, mmdeploy_runtime  # noqa: F401
    from mmdeploy.backend.onnxruntime import is_available
    assert is_available(), "mmdeploy's ONNX Runtime backend is not available"
    print(f"mmdeploy {mmdeploy.__version__}, onnxruntime {onnxruntime.__version__}")
PY

echo "$want_stamp" > "$STAMP"
echo "[setup $STACK] done: activate with 'source $VENV/bin/activate'"
