#!/usr/bin/env bash
# Rebuild edge/default_bundle from a trained checkpoint and re-measure it: INT8 PTQ through the retention gate,
# export, the fits the runtime reads from bundle.json (conformal intervals and P(male) calibration on validation,
# the input check's layout model on training ids), test-split verification, self-test, agreement plots, latency,
# model card.
# Usage: benchmarks/rebuild_default_bundle.sh [CHECKPOINT] [DATA]   (DATA: the folder the checkpoint read)
set -euo pipefail
CK=${1:-models/checkpoints/default.pt}
D=${2:-../shared/data/rsna-boneage/train-299}
B=edge/default_bundle
R=benchmarks/results
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

edge-quantize --checkpoint "$CK" --data "$D" --split-file models/splits/rsna-train-100px-seed0.json \
              --out "$WORK/int8" --int8 ptq --no-progress | tee "$R/quantize-default.txt"
# OpenVINO's own INT8 model: unsigned post-ReLU activations (it runs signed ones wrongly, docs/EXPERIMENTS.md)
edge-quantize --checkpoint "$CK" --data "$D" --split-file models/splits/rsna-train-100px-seed0.json \
              --out "$WORK/int8-openvino" --int8 ptq --activations unsigned --no-progress \
              | tee "$R/quantize-default-openvino.txt"
cp -r "$B/samples" "$WORK/samples"      # the sample radiographs and their source note outlive the rebuild
cp "$B/bundle.json" "$WORK/bundle-before.json"   # and so does the input check's fitted key (fitted on images alone)
rm -rf "$B"
edge-export --checkpoint "$CK" --compressed "$WORK/int8/compressed.pt" --version "${VERSION:-8.0.0}" \
            --compressed-openvino "$WORK/int8-openvino/compressed.pt" --out "$B" --data "$D" \
            --samples "$WORK"/samples/*.png
# What the runtime reads from bundle.json besides the network: fitted on the split's training/validation ids only
# The network outputs are kept (runs/ is not tracked) so a re-fit needs no second pass over the images
mkdir -p runs && rm -f runs/calibrate-default-outputs.npz   # never another model's outputs
python -m export.calibrate --bundle "$B" --data "$D" --cache runs/calibrate-default-outputs.npz \
    | tee "$R/calibrate-default.txt"
# The input check's model reads the images, not the network: kept as it was fitted (QUALITY=refit fits it again:
# `ood_suite.py fit`, then fit-laterality and fit-tilt; docs/QUALITY.md says what a refit changes)
if [ "${QUALITY:-keep}" = refit ]; then
  python benchmarks/ood_suite.py fit --bundle "$B" --data "$(dirname "$D")" | tee "$R/quality-fit-default.txt"
  python benchmarks/ood_suite.py fit-laterality --bundle "$B" --data "$(dirname "$D")" | tee -a "$R/quality-fit-default.txt"
  python benchmarks/ood_suite.py fit-tilt --bundle "$B" --data "$(dirname "$D")" | tee -a "$R/quality-fit-default.txt"
else
  python -c "import json, sys; from pathlib import Path; sys.path.insert(0, 'benchmarks'); from ood_suite import store
store(Path(sys.argv[1]), 'quality', json.load(open(sys.argv[2]))['quality'])" "$B" "$WORK/bundle-before.json"
fi
# A backend that fails (OpenVINO INT8 on a CPU without VNNI, see docs/EXPERIMENTS.md) is a result to report,
# not a reason to stop the rebuild.
edge-verify --bundle "$B" --data "$D" --json > "$R/verify-default-test.json" || echo "edge-verify: a backend failed (see the report)"
python -c "import json, sys; from edge.verify import format_report
print(format_report(json.load(open(sys.argv[1])), 'test'))" "$R/verify-default-test.json" > "$R/verify-default-test.txt"
edge-verify --bundle "$B" > "$R/selftest-default.txt" || true
cat "$R/selftest-default.txt"
python benchmarks/plot_agreement.py --bundle "$B" --data "$D" --out "$R/agreement-default-test.png"
python benchmarks/plot_agreement.py --bundle "$B" --data "$D" --sex-given --out "$R/agreement-default-test-sex-given.png"
ROUNDS=${ROUNDS:-60} BATCHES=1,8
edge-bench --bundle "$B" --checkpoint "$CK" --rounds $ROUNDS --batch $BATCHES --json \
           --plot "$R/latency-default.png" > "$R/bench-default.json"
python -c "import json, sys; from edge.cli.bench import format_table
print(format_table(json.load(open(sys.argv[1])), $ROUNDS, [$BATCHES]))" "$R/bench-default.json" > "$R/bench-default.txt"
python benchmarks/update_model_card.py --bundle "$B" --verify "$R/verify-default-test.json" --bench "$R/bench-default.json" > /dev/null
du -sh "$B"
