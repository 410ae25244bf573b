#!/usr/bin/env bash
# The compression variants of the issue-3 table, each an edge-quantize run gated against the same FP32
# parent on the same validation images. Then: python benchmarks/compression_table.py
# Usage: benchmarks/compression_runs.sh CHECKPOINT [DATA] [OUTROOT] [VARIANT...]   (THREADS=1 to share the CPU)
# VARIANT names pick a subset (default: all). At 299 px a fine-tune epoch costs 12-20 minutes of a 2-core CPU, so the
# v8 table ran `... train-299 runs/compression-v8 unstructured-0.5 unstructured-0.3 int8-ptq-openvino structured-0.2-bn
# structured-0.4-bn` (the "-bn" variants: batch-norm adaptation only, for their size and latency).
# CHECKPOINT is one network: the table's parent is `git show a0a9372:models/checkpoints/w050-100.pt`. The default
# checkpoint was a mean of two networks in v7 (2026-11-29), which edge-quantize takes for PTQ only.
set -u
CK=${1:?usage: benchmarks/compression_runs.sh CHECKPOINT [DATA] [OUTROOT] (one network, not a mean of networks)}
DATA=${2:-../shared/data/rsna-boneage/train-100px}
ROOT=${3:-runs/compression}
ONLY=" ${*:4} "
SPLIT=models/splits/rsna-train-100px-seed0.json
COMMON=(--checkpoint "$CK" --data "$DATA" --split-file "$SPLIT" --threads "${THREADS:-0}" --keep-rejected --no-progress)
run() {  # name, then edge-quantize's method flags; a failed gate is a result, not an error
  local name=$1; shift
  [ "$ONLY" = "  " ] || [[ "$ONLY" == *" $name "* ]] || return 0
  [ -f "$ROOT/$name/retention.json" ] && { echo "skip $name (done)"; return; }
  echo "=== $name: $*"
  edge-quantize "${COMMON[@]}" --out "$ROOT/$name" "$@" || echo "($name did not pass the gate)"
}
run unstructured-0.5 --prune-unstructured 0.5
run unstructured-0.3 --prune-unstructured 0.3
run int8-ptq --int8 ptq
run int8-ptq-openvino --int8 ptq --activations unsigned   # what the bundle ships for OpenVINO
run structured-0.2 --prune-structured 0.2 --finetune-epochs 2
run structured-0.4 --prune-structured 0.4 --finetune-epochs 3
run structured-0.2-bn --prune-structured 0.2 --finetune-epochs 0
run structured-0.4-bn --prune-structured 0.4 --finetune-epochs 0
run int8-qat --int8 qat --finetune-epochs 1
run structured-0.2+int8-ptq --prune-structured 0.2 --finetune-epochs 2 --int8 ptq
run unstructured-0.5+finetune-1 --prune-unstructured 0.5 --finetune-epochs 1
