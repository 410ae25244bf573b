"""Which layers must stay FP32 for INT8 to pass the retention gate? PTQ variants of one checkpoint, gated.

    python benchmarks/int8_scope_trials.py --checkpoint models/checkpoints/default.pt \\
        --data ../shared/data/rsna-boneage/train-100px --split models/splits/rsna-train-100px-seed0.json

Every variant is quantize.ptq.quantize_ptq on the same 300 calibration images (training part of the split),
judged on the validation images against the FP32 checkpoint. Writes benchmarks/results/int8-scope-trials.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nncf
import torch

from edge.retention import Thresholds
from models.checkpoint import load_model
from models.data import load_images, read_labels, read_split
from quantize.gate import RetentionGate
from quantize.ptq import FP32_SCOPE, calibration_arrays, quantize_ptq

STEM = [r".*resize.*", r".*Conv2d_1a.*", r".*Conv2d_2a.*", r".*Conv2d_2b.*"]
TAIL = [r".*Mixed_7.*", r".*se.*", r".*head.*"]


def scope(patterns=None, types=None) -> nncf.IgnoredScope:
    return nncf.IgnoredScope(patterns=patterns or [], types=types or [], validate=False)


# name -> quantize_ptq keyword arguments
VARIANTS = {
    "all layers INT8, signed activations (the v1 recipe)": {"fp32_scope": None},
    "all layers INT8, unsigned post-ReLU activations (not TensorRT-compatible)": {"fp32_scope": None, "signed": False},
    "heads' Linear layers FP32": {"fp32_scope": scope(types=["linear"])},
    "Mixed_7*, SE and heads FP32": {"fp32_scope": scope(TAIL)},
    "resize and stem FP32 (quantize.ptq.FP32_SCOPE, shipped)": {"fp32_scope": FP32_SCOPE},
    "resize, stem and Mixed_5* FP32": {"fp32_scope": scope([r".*resize.*", r".*Conv2d.*", r".*Mixed_5.*"])},
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "int8-scope-trials.json"))
    args = p.parse_args(argv)
    parent, _ = load_model(args.checkpoint)
    labels = read_labels(args.data)
    val = labels.subset(read_split(args.split)["val"])
    gate = RetentionGate(parent, load_images(val.paths(), parent.cfg.input, progress=False), val, Thresholds())
    x_calib, _ = calibration_arrays(args.data, parent.cfg.input, 300, args.split, progress=False)
    rows = {}
    print("| INT8 variant | MAE | sex acc | AUC | gate |\n| --- | --- | --- | --- | --- |")
    for name, kwargs in VARIANTS.items():
        with torch.no_grad():
            r = gate(quantize_ptq(parent, x_calib, **kwargs))
        rows[name] = r
        c = r["candidate"]
        verdict = "PASS" if r["passed"] else "FAIL (" + "; ".join(r["failures"]) + ")"
        print(f"| {name} | {c['mae']:.2f} | {c['accuracy']:.3f} | {c['auc']:.3f} | {verdict} |", flush=True)
    ref = next(iter(rows.values()))["reference"]
    print(f"\nFP32 parent: MAE {ref['mae']:.2f}, sex accuracy {ref['accuracy']:.3f}, AUC {ref['auc']:.3f} "
          f"on {ref['n']} validation images")
    Path(args.out).write_text(json.dumps({"checkpoint": args.checkpoint, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
