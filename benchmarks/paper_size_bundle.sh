#!/usr/bin/env bash
# Latency of the paper-size network (width 1.0, 299 px) on every backend. Untrained weights: latency only.
set -euo pipefail
out=${1:-/tmp/bundle-paper299}
python -c "
import torch; torch.manual_seed(0)
from models.inception import create_model; from models.checkpoint import save_weights
save_weights('/tmp/paper299.pt', create_model('paper-299'), {'data': 'untrained (random init): latency only'})"
edge-export --checkpoint /tmp/paper299.pt --out "$out" --calibration-data ../shared/data/rsna-boneage/train-512 \
            --calibration-size 64
edge-bench --bundle "$out" --checkpoint /tmp/paper299.pt --batch 1,8 --rounds 40 \
           --plot benchmarks/results/latency-paper299.png | tee benchmarks/results/bench-paper299.txt
