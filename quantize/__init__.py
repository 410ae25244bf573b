"""Compression stage: pruning (NNCF unstructured, torch-pruning structured), INT8 (NNCF PTQ/QAT) and the
accuracy-retention gate against the FP32 parent.

    edge-quantize --checkpoint runs/x/best.pt --data DATA --out runs/x-int8 --prune-structured 0.3 --int8 ptq

One method per file (structured.py, unstructured.py, ptq.py, qat.py), one fine-tune loop (finetune.py),
one gate (gate.py, around edge.retention) and one handoff format to the export stage (compressed.py:
OUT/compressed.pt, read back by `load_compressed`).
"""
import os as _os

# Set before NNCF is first imported: NNCF reports telemetry unless NNCF_CI is set (nncf/telemetry/wrapper.py),
# and this project never sends anything over the network. NNCF compiles a C++ extension on first use;
# on a busy 2-core machine that can exceed its default 60 s limit, so wait for it instead.
_os.environ.setdefault("NNCF_CI", "1")
_os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "0")
