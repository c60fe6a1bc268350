#!/usr/bin/env bash
# Fetch the TensorRT Python bindings of every supported version (no GPU, no TensorRT library needed)
# and build stub libnvinfer*.so.N so they import. tests/test_trt_api_surface.py then checks every
# TensorRT attribute pytest_trtparity/trt/api.py uses against each version; the stubs are never
# called. Also fetches cuda-bindings, whose no-driver behaviour tests/test_trt_cuda.py checks.
#
# Usage: ci/fetch-trt-bindings.sh [DIR]   (default: $TRT_BINDINGS_DIR or ~/.cache/trtparity/trt-bindings)
# About 17 MB of wheels for the running Python; idempotent: an existing DIR/<name>/ is kept.
#
# TensorRT-RTX is not fetched here: its library loads without a GPU, so .ci/run pip-installs the real
# wheels (tensorrt-rtx-cu13-libs and -bindings 1.7.1.116) and the same API-surface test checks them.
set -euo pipefail

DIR="${1:-${TRT_BINDINGS_DIR:-$HOME/.cache/trtparity/trt-bindings}}"
PY="${PYTHON:-python3}"
mkdir -p "$DIR/wheels"

# name==version  ->  folder name; the major version picks the stub set.
PACKAGES=(
  "tensorrt-cu12-bindings==10.0.1"        # oldest supported 10.x (no v2 memory API yet)
  "tensorrt-cu12-bindings==10.16.1.11"    # newest 10.x
  "tensorrt-cu13-bindings==11.4.0.106"    # 11.x: strongly typed only
  "tensorrt-lean-cu13-bindings==11.4.0.106"
  "cuda-bindings==13.0.3"
  "cuda-pathfinder==1.9.0"
)

for spec in "${PACKAGES[@]}"; do
  name="${spec%%==*}"; version="${spec##*==}"
  target="$DIR/$name-$version"
  [ -f "$target/.complete" ] && continue
  rm -rf "$target"
  "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$DIR/wheels" "$spec"
  wheel=$(ls "$DIR"/wheels/"${name//-/_}"-"$version"-*.whl | head -n 1)
  mkdir -p "$target"
  "$PY" -m zipfile -e "$wheel" "$target"
  touch "$target/.complete"
done

# Stubs: the bindings link against these libraries and resolve nine C entry points at import.
STUB_C="$DIR/stub.c"
cat > "$STUB_C" <<'C'
#include <stddef.h>
void* createInferBuilder_INTERNAL(void* a, int b) { return NULL; }
void* createInferRuntime_INTERNAL(void* a, int b) { return NULL; }
void* createInferRefitter_INTERNAL(void* a, void* b, int c) { return NULL; }
void* createNvOnnxParser_INTERNAL(void* a, void* b, int c) { return NULL; }
void* createNvOnnxParserRefitter_INTERNAL(void* a, void* b, int c) { return NULL; }
int getNvOnnxParserVersion(void) { return 0; }
void* getPluginRegistry(void) { return NULL; }
void* getBuilderPluginRegistry(int a) { return NULL; }
int initLibNvInferPlugins(void* a, const char* b) { return 0; }
C
CC="${CC:-cc}"
for major in 10 11; do
  out="$DIR/stubs$major"
  mkdir -p "$out"
  for lib in libnvinfer libnvonnxparser libnvinfer_plugin libnvinfer_lean; do
    [ -f "$out/$lib.so.$major" ] || "$CC" -shared -fPIC -o "$out/$lib.so.$major" "$STUB_C"
  done
done
rm -rf "$DIR/wheels"
echo "TensorRT bindings ready in $DIR"
