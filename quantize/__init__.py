"""Compression stage: pruning (NNCF unstructured, torch-pruning structured), INT8 (NNCF PTQ/QAT) and the
accuracy-retention gate against the FP32 parent.

    edge-quantize --checkpoint runs/x/best.pt --data DATA --out runs/x-int8 --prune-structured 0.3 --int8 ptq

One method per file (structured.py, unstructured.py, ptq.py, qat.py), one fine-tune loop (finetune.py),
one gate (gate.py, around edge.retention) and one handoff format to the export stage (compressed.py:
OUT/compressed.pt, read back by `load_compressed`).
"""
