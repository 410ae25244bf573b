"""A real bundle in a second: a few-node ONNX graph written with onnx.helper (no torch, no training), run by the
real ONNX Runtime and OpenVINO. Fast tests of the runtime, edge-verify and edge-infer use it; what needs a trained
network uses the phantom bundle (conftest.py, slow).

The graph reads two fixed weighted means of the preprocessed image:
    s1 = mean(x * rows), s2 = mean(x * cols)            (rows, cols: fixed gradients over the image)
    bone_age_months = AGE0 + AGE_GAIN * s1,  p_male = sigmoid(SEX_GAIN * s2)
    bone_age_months_by_sex = [age - SEX_SHIFT, age + SEX_SHIFT]
Its INT8 artifact is a real Q/DQ model: the input is quantized to int8 and both gradients are int8 weights.
`damage` adds that many months to every INT8 age, as a wrong zero point on the age offset would.

A labelled folder (RSNA layout) whose ages are the FP32 model's own ages plus known noise makes the reference's
MAE known exactly (mean |noise|), so edge-verify's numbers can be checked by hand.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

AGE0, AGE_GAIN, SEX_GAIN, SEX_SHIFT = 40.0, 600.0, 100.0, 6.0
X_SCALE = 1 / 20  # int8 input scale: z-scored pixels within +-6.35 (the phantoms reach 5.6)
SPEC = {"channels": 1, "height": 80, "width": 80, "resize": "squash", "interpolation": "bilinear",
        "normalize": "image", "mean": 0.5, "std": 0.25}


def weights(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    rows = np.repeat(np.linspace(-1, 1, h, dtype=np.float32)[:, None], w, axis=1)
    cols = np.repeat(np.linspace(-1, 1, w, dtype=np.float32)[None, :], h, axis=0)
    return rows, cols


def reference_outputs(x: np.ndarray) -> dict[str, np.ndarray]:
    """The FP32 graph's outputs computed in numpy (float64): (N, C, H, W) preprocessed inputs."""
    rows, cols = weights(*x.shape[-2:])
    s1 = (x.astype(np.float64) * rows).mean(axis=(1, 2, 3))
    s2 = (x.astype(np.float64) * cols).mean(axis=(1, 2, 3))
    age = AGE0 + AGE_GAIN * s1
    return {"bone_age_months": age, "p_male": 1 / (1 + np.exp(-SEX_GAIN * s2)),
            "bone_age_months_by_sex": np.c_[age - SEX_SHIFT, age + SEX_SHIFT]}


def write_onnx(path: Path, int8: bool = False, damage: float = 0.0) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    h, w = SPEC["height"], SPEC["width"]
    rows, cols = weights(h, w)
    init, nodes = [], []

    def const(name, value, dtype=np.float32):
        init.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    x = "image"
    if int8:  # activations and weights through int8, as an NNCF export writes them (symmetric, zero point 0)
        const("x_scale", X_SCALE), const("zp", 0, np.int8)
        nodes += [helper.make_node("QuantizeLinear", [x, "x_scale", "zp"], ["x_q"]),
                  helper.make_node("DequantizeLinear", ["x_q", "x_scale", "zp"], ["x_dq"])]
        x = "x_dq"
        for name, wt in (("rows", rows), ("cols", cols)):
            const(f"{name}_q", np.round(wt * 127), np.int8), const(f"{name}_scale", 1 / 127)
            nodes.append(helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_scale", "zp"], [name]))
    else:
        const("rows", rows), const("cols", cols)
    const("age0", AGE0 + damage), const("age_gain", AGE_GAIN), const("sex_gain", SEX_GAIN)
    const("shift", [[-SEX_SHIFT, SEX_SHIFT]])
    nodes += [
        helper.make_node("Mul", [x, "rows"], ["xr"]), helper.make_node("ReduceMean", ["xr"], ["s1"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Mul", [x, "cols"], ["xc"]), helper.make_node("ReduceMean", ["xc"], ["s2"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["s1", "age_gain"], ["a1"]), helper.make_node("Add", ["a1", "age0"], ["bone_age_months"]),
        helper.make_node("Mul", ["s2", "sex_gain"], ["z"]), helper.make_node("Sigmoid", ["z"], ["p_male"]),
        helper.make_node("Unsqueeze", ["bone_age_months", "axis1"], ["a2"]),
        helper.make_node("Add", ["a2", "shift"], ["bone_age_months_by_sex"]),
    ]
    const("axis1", [1], np.int64)
    graph = helper.make_graph(
        nodes, "tiny-boneage", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, h, w])],
        [helper.make_tensor_value_info("bone_age_months", TensorProto.FLOAT, ["N"]),
         helper.make_tensor_value_info("p_male", TensorProto.FLOAT, ["N"]),
         helper.make_tensor_value_info("bone_age_months_by_sex", TensorProto.FLOAT, ["N", 2])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_tiny_bundle(root: Path, samples: list[Path], split: dict | None = None, damage: float = 0.0) -> Path:
    """A bundle (FP32 + INT8 ONNX, both backends) whose stored sample outputs are the FP32 graph's."""
    from edge.bundle import artifact_entry, write_bundle_json
    from edge.config import InputSpec, ModelConfig
    from edge.preprocess import preprocess

    root = Path(root)
    (root / "samples").mkdir(parents=True, exist_ok=True)
    write_onnx(root / "model-fp32.onnx")
    write_onnx(root / "model-int8.onnx", int8=True, damage=damage)
    cfg = ModelConfig(name="tiny-test-graph", sex_heads=True, input=InputSpec(**SPEC))
    stored = []
    for src in samples:
        rel = f"samples/{Path(src).name}"
        (root / rel).write_bytes(Path(src).read_bytes())
        out = reference_outputs(preprocess(root / rel, cfg.input)[None])
        stored.append({"file": rel, **{k: v[0].tolist() for k, v in out.items()}})
    if split is not None:
        (root / "split.json").write_text(json.dumps(split))
    artifacts = [artifact_entry(root, f"model-{p}.onnx", "onnxruntime", p) for p in ("fp32", "int8")]
    write_bundle_json(root, {"model": {"name": cfg.name, "version": "0.0.0"}, "config": cfg.to_dict(),
                             "artifacts": artifacts, "samples": stored})
    return root


def write_labelled(out: Path, images: list[Path], noise: np.ndarray) -> Path:
    """RSNA layout (labels.csv + images/): each image's age is the FP32 graph's own age plus `noise`, its sex
    the graph's reading; so the FP32 reference's MAE is mean |noise| and its sex accuracy 1."""
    from edge.config import InputSpec
    from edge.preprocess import preprocess

    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for k, (src, e) in enumerate(zip(images, noise)):
        ref = reference_outputs(preprocess(src, InputSpec(**SPEC))[None])
        (out / "images" / f"{k + 1}.png").write_bytes(Path(src).read_bytes())
        rows.append((k + 1, float(ref["bone_age_months"][0] + e), str(bool(ref["p_male"][0] >= 0.5))))
    with open(out / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([("id", "boneage", "male"), *rows])
    return out
