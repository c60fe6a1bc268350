#!/usr/bin/env bash
# The TensorRT half of docs/walkthrough-encoder.md, on the small encoder, in one go:
#   1. build an engine with profiles A (T=592) and B (T=584), and one with the unified profile C;
#   2. run the gate on each: functional on 50 chunks, closed loop on 300, latency, memory, throughput
#      (the first chunk runs under one profile, every later chunk under the other);
#   3. build the two buggy exports and check that the gate fails them.
# Needs an NVIDIA GPU, TensorRT 10.x and cuda-python, and this package installed
# (pip install -e ".[tensorrt,test]").
#
#   bash references/encoder_streaming/tensorrt_walkthrough.sh [OUT_DIR]
#
# Artifacts (engines, build reports, summary.json, report.md, plots, logs) go to OUT_DIR, else $OUT,
# else trtparity-artifacts/encoder-tensorrt. Exit status 1 when any step did not go as it must.
set -uo pipefail
cd "$(dirname "$0")/../.."

OUT_DIR="${1:-${OUT:-trtparity-artifacts/encoder-tensorrt}}"
mkdir -p "$OUT_DIR"
ONNX_DIR=references/encoder_streaming
CONTRACT=contracts/encoder_streaming_small.contract.json
REF_50=references/encoder_streaming_small_50.jsonl
REF_300=references/encoder_streaming_small_300.jsonl
status=0

build() {  # build NAME ONNX PROFILE...
  local name=$1 onnx=$2
  shift 2
  local args=()
  for p in "$@"; do args+=(--profile "$p"); done
  echo "== build $name (profiles: $*)"
  python -m pytest_trtparity.cli build --onnx "$onnx" --contract "$CONTRACT" -o "$OUT_DIR/$name.plan" "${args[@]}" \
    2>&1 | tee "$OUT_DIR/$name.build.log"
  return "${PIPESTATUS[0]}"
}

gate() {  # gate NAME MODE REF
  echo "== gate $1: $2 on $(basename "$3")"
  python -m pytest suites -q -p no:cacheprovider --trt-engine "$OUT_DIR/$1.plan" \
    --trt-contract "$CONTRACT" --trt-ref "$3" --trt-mode "$2" \
    --trt-artifacts "$OUT_DIR/$1-$2" 2>&1 | tee "$OUT_DIR/$1-$2.log"
  return "${PIPESTATUS[0]}"
}

nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
python -c "import tensorrt; print('tensorrt', tensorrt.__version__)" || exit 1

build encoder_ab "$ONNX_DIR/encoder_streaming_small.onnx" A B || exit 1
build encoder_c "$ONNX_DIR/encoder_streaming_small.onnx" C || exit 1
for engine in encoder_ab encoder_c; do
  gate "$engine" functional "$REF_50" || status=1
  gate "$engine" closed_loop "$REF_300" || status=1
done

for bug in buggy_cache_len buggy_time_shift; do
  build "$bug" "$ONNX_DIR/$bug.onnx" A B || { status=1; continue; }
  if gate "$bug" both "$REF_300"; then
    echo "ERROR: the gate passed $bug, which it must fail"
    status=1
  fi
done

echo "== done: status $status, artifacts in $OUT_DIR"
exit "$status"
