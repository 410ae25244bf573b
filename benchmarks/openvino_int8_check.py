"""Does OpenVINO run our INT8 model right on this CPU? Signed vs unsigned activations, against ONNX Runtime.

Quantizes a checkpoint twice with NNCF (64 calibration images; signed activations as shipped, and unsigned
post-ReLU activations), exports each, and prints the bone age of the bundled samples from ONNX Runtime
and OpenVINO (also with its low-precision transformations off). On the AVX2-only AMD EPYC measured on 2026-11-28 (v3),
OpenVINO 2026.4.1 was ~100 months off with signed activations and right with unsigned ones.

    python benchmarks/openvino_int8_check.py --checkpoint models/checkpoints/default.pt \\
        --data ../shared/data/rsna-boneage/train-100px --split models/splits/rsna-train-100px-seed0.json
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import openvino as ov

from edge.bundle import load_bundle
from edge.reference import reference_samples
from export.artifacts import write_model_files
from models.checkpoint import load_model
from models.data import load_images, read_labels, read_split
from quantize.ptq import quantize_ptq


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--bundle", default="edge/default_bundle", help="whose samples to run")
    args = p.parse_args(argv)
    model, _ = load_model(args.checkpoint)
    labels, split = read_labels(args.data), read_split(args.split)
    calib = load_images(labels.subset(split["train"][:64]).paths(), model.cfg.input, progress=False)
    x, stored = reference_samples(load_bundle(args.bundle))
    print(f"FP32 reference (stored in the bundle): {np.round(stored['bone_age_months'], 1)}")
    core = ov.Core()
    with tempfile.TemporaryDirectory() as tmp:
        for signed in (True, False):
            name = "signed" if signed else "unsigned"
            onnx_path, xml_path = Path(tmp) / f"{name}.onnx", Path(tmp) / f"{name}.xml"
            write_model_files(quantize_ptq(model, calib, signed=signed), model.cfg, onnx_path, xml_path, "int8", {})
            ort_age = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(
                None, {"image": x})[0]
            print(f"INT8, {name} activations: ONNX Runtime {np.round(ort_age, 1)}")
            # LP_TRANSFORMS_MODE=OFF runs the FakeQuantize ops in FP32: it tells a wrong INT8 kernel path
            # from a wrong model. (Not the runtime's OpenVINO backend on purpose: it takes no such option.)
            for label, config in (("OpenVINO", {}), ("OpenVINO, LP_TRANSFORMS_MODE=OFF", {"LP_TRANSFORMS_MODE": "OFF"})):
                ir = core.read_model(str(xml_path))
                ir.reshape({0: list(x.shape)})
                compiled = core.compile_model(ir, "CPU", config)
                ov_age = compiled(x)[compiled.outputs[0]]
                print(f"    {label}: {np.round(ov_age, 1)}  (max |d| from ONNX Runtime "
                      f"{np.max(np.abs(ov_age - ort_age)):.1f} months)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
