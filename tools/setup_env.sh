#!/usr/bin/env bash
# Creates .venv/ at the repository root with the dependency stack this plugin is verified on
# (see README "Installation") and installs the plugin editable.  Idempotent: a second run on
# the same machine only checks a stamp and returns; the mmcv wheel (a ~10 minute build) is
# cached outside the repository so even a fresh clone does not rebuild it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3.11}"
CACHE="${MMSEG_INCNEXT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mmseg-incnext}"

TORCH_SPEC='torch===2.13.0'
TORCHVISION_SPEC='torchvision===0.28.0'
SETUPTOOLS_SPEC='setuptools>=77,<81'
MMCV_VERSION='2.1.0'

step() { printf '\n==> [setup] %s\n' "$*"; }
CURRENT_STEP='start'
trap 'echo "!!! [setup] FAILED during: $CURRENT_STEP (see the output above)" >&2' ERR

stamp_inputs() {
    cat "$ROOT/tools/setup_env.sh" "$ROOT/setup.py"
}
STAMP="$VENV/.mmseg-incnext-stamp"
want_stamp="$(stamp_inputs | sha256sum | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want_stamp" && -x "$VENV/bin/python" ]]; then
    echo "[setup] $VENV is up to date (delete it or $STAMP to rebuild)"
    exit 0
fi

CURRENT_STEP="create virtual environment $VENV"
step "$CURRENT_STEP"
command -v "$PYTHON" >/dev/null || { echo "!!! [setup] $PYTHON not found; set PYTHON=/path/to/python3.11" >&2; exit 1; }
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

CURRENT_STEP="install build tools ($SETUPTOOLS_SPEC, wheel, ninja)"
step "$CURRENT_STEP"
"${PIP[@]}" install -q --upgrade pip "$SETUPTOOLS_SPEC" wheel ninja

CURRENT_STEP="install $TORCH_SPEC $TORCHVISION_SPEC (first time: a large download)"
step "$CURRENT_STEP"
"${PIP[@]}" install --progress-bar on "$TORCH_SPEC" "$TORCHVISION_SPEC"

# mmcv 2.1.0 has no wheel for this torch: build it once with its CUDA/CPU ops and keep the
# wheel in a cache keyed by python and torch versions (the extension's ABI depends on both).
PY_TAG="$("$VENV/bin/python" -c 'import sys; print(f"cp{sys.version_info.major}{sys.version_info.minor}")')"
TORCH_TAG="$("$VENV/bin/python" -c 'import torch; print(torch.__version__.replace("+", "_"))')"
WHEEL_DIR="$CACHE/wheels/mmcv-$MMCV_VERSION-$PY_TAG-torch$TORCH_TAG"
mkdir -p "$WHEEL_DIR"
MMCV_WHEEL="$(ls "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n1 || true)"
if [[ -z "$MMCV_WHEEL" ]]; then
    CURRENT_STEP="build mmcv $MMCV_VERSION with ops from source (about 10 minutes on 2 cores, done once per machine)"
    step "$CURRENT_STEP"
    BUILD_TMP="$(mktemp -d)"
    BUILD_LOG="$BUILD_TMP/build.log"
    # --no-build-isolation: the extension must compile against the torch installed above.
    MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" "${PIP[@]}" wheel -v --no-build-isolation \
        --no-deps --no-binary mmcv -w "$BUILD_TMP" "mmcv==$MMCV_VERSION" >"$BUILD_LOG" 2>&1 &
    build_pid=$!
    while kill -0 "$build_pid" 2>/dev/null; do
        sleep 20
        progress="$(grep -oE '\[[0-9]+/[0-9]+\]' "$BUILD_LOG" | tail -n1 || true)"
        echo "  $(date +%T) building mmcv: ${progress:-preparing} (compiled/total)"
    done
    if ! wait "$build_pid"; then
        tail -n 60 "$BUILD_LOG" >&2
        echo "!!! [setup] mmcv build failed; full log: $BUILD_LOG" >&2
        false
    fi
    built="$(ls "$BUILD_TMP"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n1 || true)"
    [[ -n "$built" ]] || { echo "!!! [setup] mmcv build produced no wheel" >&2; false; }
    mv "$built" "$WHEEL_DIR/"
    rm -rf "$BUILD_TMP"
    MMCV_WHEEL="$(ls "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl | head -n1)"
else
    echo "[setup] using cached mmcv wheel $MMCV_WHEEL"
fi

CURRENT_STEP="install mmcv, mmengine, mmsegmentation, timm and the plugin (editable, with test extras)"
step "$CURRENT_STEP"
"${PIP[@]}" install -q "$MMCV_WHEEL" "$SETUPTOOLS_SPEC" -e "$ROOT[tests]"

CURRENT_STEP="check the stack imports"
step "$CURRENT_STEP"
"$VENV/bin/python" - <<'PY'
import mmcv, mmengine, mmseg, timm, torch, torchvision
from mmcv.ops import nms  # noqa: F401  (fails if mmcv was built without ops)
import mmseg.models  # noqa: F401
import mmseg_incnext  # noqa: F401
print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, mmcv {mmcv.__version__}, "
      f"mmengine {mmengine.__version__}, mmseg {mmseg.__version__}, timm {timm.__version__}")
PY

echo "$want_stamp" > "$STAMP"
echo "[setup] done: activate with 'source $VENV/bin/activate'"
