"""Which layers must stay FP32 for INT8 to pass the retention gate? PTQ variants of one checkpoint, gated.

    python benchmarks/int8_scope_trials.py --checkpoint models/checkpoints/default.pt \\
        --data ../shared/data/rsna-boneage/train-100px --split models/splits/rsna-train-100px-seed0.json

Every variant is quantize.ptq.quantize_ptq on the same 300 calibration images (training part of the split),
judged on the validation images against the FP32 checkpoint. Writes benchmarks/results/int8-scope-trials.json.
--only picks variants by a word of their name; --openvino-ms exports each to an OpenVINO IR and times them
all at batch 1, interleaved (edge.bench.latency_rounds), medians.
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
from quantize.ptq import FP32_SCOPE, OPENVINO_FP32_SCOPE, calibration_arrays, quantize_ptq

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
    "resize and stem FP32 (quantize.ptq.FP32_SCOPE, the ONNX artifact)": {"fp32_scope": FP32_SCOPE},
    "resize, stem and Mixed_5* FP32": {"fp32_scope": scope([r".*resize.*", r".*Conv2d.*", r".*Mixed_5.*"])},
    "unsigned, resize and stem FP32 (the OpenVINO artifact until v8.1)": {"fp32_scope": FP32_SCOPE, "signed": False},
    "unsigned, resize and Conv2d_1a FP32 (quantize.ptq.OPENVINO_FP32_SCOPE)": {"fp32_scope": OPENVINO_FP32_SCOPE,
                                                                              "signed": False},
    "unsigned, resize FP32 (the whole stem INT8)": {"fp32_scope": scope([r".*resize.*"], ["mean"]), "signed": False},
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "int8-scope-trials.json"))
    p.add_argument("--only", nargs="*", help="variants whose name has one of these words (default: all)")
    p.add_argument("--openvino-ms", type=int, metavar="ROUNDS", help="also time each variant in OpenVINO")
    args = p.parse_args(argv)
    variants = {k: v for k, v in VARIANTS.items() if not args.only or any(w in k for w in args.only)}
    parent, _ = load_model(args.checkpoint)
    labels = read_labels(args.data)
    val = labels.subset(read_split(args.split)["val"])
    gate = RetentionGate(parent, load_images(val.paths(), parent.cfg.input, progress=False), val, Thresholds())
    x_calib, _ = calibration_arrays(args.data, parent.cfg.input, 300, args.split, progress=False)
    rows, nets = {}, {}
    print("| INT8 variant | MAE | sex acc | AUC | gate |\n| --- | --- | --- | --- | --- |")
    for name, kwargs in variants.items():
        with torch.no_grad():
            nets[name] = quantize_ptq(parent, x_calib, **kwargs)
            r = gate(nets[name])
        rows[name] = r
        c = r["candidate"]
        verdict = "PASS" if r["passed"] else "FAIL (" + "; ".join(r["failures"]) + ")"
        print(f"| {name} | {c['mae']:.2f} | {c['accuracy']:.3f} | {c['auc']:.3f} | {verdict} |", flush=True)
    ref = next(iter(rows.values()))["reference"]
    print(f"\nFP32 parent: MAE {ref['mae']:.2f}, sex accuracy {ref['accuracy']:.3f}, AUC {ref['auc']:.3f} "
          f"on {ref['n']} validation images")
    if args.openvino_ms:
        for name, ms in openvino_ms(nets, parent, args.openvino_ms).items():
            rows[name]["openvino_ms"] = ms
            print(f"OpenVINO batch 1, median of {args.openvino_ms} interleaved calls: {ms:.2f} ms  {name}")
    Path(args.out).write_text(json.dumps({"checkpoint": args.checkpoint, "rows": rows}, indent=1))
    return 0


def openvino_ms(nets: dict, parent, rounds: int) -> dict[str, float]:
    """Each quantized network as an OpenVINO IR (the bundle's export path), timed at batch 1 in turn."""
    import tempfile

    import numpy as np
    import openvino as ov

    from edge.bench import latency_rounds
    from export.artifacts import write_model_files

    core, runners = ov.Core(), {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, (name, net) in enumerate(nets.items()):
            xml = write_model_files(net, parent.cfg, Path(tmp) / f"{k}.onnx", Path(tmp) / f"{k}.xml", "int8")
            request = core.compile_model(str(xml), "CPU", {"PERFORMANCE_HINT": "LATENCY"}).create_infer_request()
            runners[name] = lambda x, r=request: r.infer({0: x})
        spec = parent.cfg.input
        x1 = np.random.default_rng(0).random((1, spec.channels, spec.height, spec.width), np.float32)
        times = latency_rounds(runners, x1, rounds)
    return {name: float(np.median(t)) for name, t in times.items()}


if __name__ == "__main__":
    sys.exit(main())
