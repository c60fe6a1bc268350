#!/usr/bin/env bash
# Run the parity gate the way CI runs it, on this machine.
#
#   ci/run-gate.sh                                   # the repository's default model (Silero VAD)
#   TRT_ENGINE=model.plan TRT_CONTRACT=model.contract.json TRT_REF=ref.jsonl ci/run-gate.sh
#   ci/run-gate.sh --trt-mode=closed_loop -x         # extra arguments go to pytest
#
# Leaves summary.json, report.md, plots/ and junit.xml in $TRT_ARTIFACTS (default
# trtparity-artifacts), passing or failing, and exits with pytest's status (0 pass or warn, 1 fail).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python}
ENGINE=${TRT_ENGINE:-pkg:silero_vad/data/silero_vad.onnx}
CONTRACT=${TRT_CONTRACT:-contracts/silero_vad.contract.json}
REF=${TRT_REF:-references/silero_vad_300.jsonl}
OUT=${TRT_ARTIFACTS:-trtparity-artifacts}

mkdir -p "$OUT"
status=0
"$PYTHON" -m pytest suites -p no:cacheprovider \
    --trt-engine="$ENGINE" --trt-contract="$CONTRACT" --trt-ref="$REF" --trt-artifacts="$OUT" \
    --junitxml="$OUT/junit.xml" -o junit_family=xunit1 "$@" || status=$?

echo "trtparity: verdict in $OUT/summary.json, sign-off in $OUT/report.md (pytest exit status $status)"
exit "$status"
