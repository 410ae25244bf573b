"""Torch model -> ONNX file with bone age in months and P(male) as outputs, and bundle metadata embedded."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from edge.config import ModelConfig
from models.inception import BoneAgeOutputs

INPUT_NAME = "image"
OPSET = 17


def export_onnx(net: torch.nn.Module, cfg: ModelConfig, path, metadata: dict | None = None) -> Path:
    """Export with a dynamic batch axis. The TorchScript exporter (dynamo=False) writes one self-contained
    file (the dynamo exporter puts weights in a side .onnx.data file), which keeps the bundle's sha256
    per artifact simple; it also exports NNCF's quantizers as QuantizeLinear/DequantizeLinear pairs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = output_names(cfg)
    wrapped = BoneAgeOutputs(net, cfg.age_mean, cfg.age_std).eval()
    spec = cfg.input
    example = torch.zeros(1, spec.channels, spec.height, spec.width)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapped, (example,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=names,
                          dynamic_axes={INPUT_NAME: {0: "batch"}, **{o: {0: "batch"} for o in names}})
    if metadata:
        embed_metadata(path, metadata)
    return path


def output_names(cfg: ModelConfig) -> list[str]:
    """BoneAgeOutputs' outputs, in order, under their edge.bundle.OUTPUTS names."""
    return ["bone_age_months", "p_male"] + (["bone_age_months_by_sex"] if cfg.sex_heads else [])


def embed_metadata(path, metadata: dict) -> None:
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = "boneage_bundle", json.dumps(metadata, sort_keys=True)
    onnx.save(model, str(path))


def fold_weight_quantizers(path) -> int:
    """Store INT8 weights as int8 initializers: QuantizeLinear(W_fp32) -> DequantizeLinear becomes
    W_int8 -> DequantizeLinear. NNCF's export quantizes the FP32 weights at run time, which keeps the
    INT8 file as large as the FP32 one; folded, it is ~4x smaller and is the form TensorRT and ONNX
    Runtime expect for weights. Returns the number of folded weights."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node if n.op_type == "Constant"}
    consts.update({name: numpy_helper.to_array(i) for name, i in inits.items()})
    folded, drop = 0, []
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] not in inits or len(node.input) < 3:
            continue
        w = numpy_helper.to_array(inits[node.input[0]])
        scale, zp = consts[node.input[1]], consts[node.input[2]]
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * w.ndim
        if scale.ndim:
            shape[axis] = -1
        q = np.rint(w / scale.reshape(shape)) + zp.astype(np.int32).reshape(shape)  # ONNX: round half to even
        info = np.iinfo(zp.dtype)
        q_init = numpy_helper.from_array(np.clip(q, info.min, info.max).astype(zp.dtype), node.output[0])
        graph.initializer.append(q_init)
        drop.append(node)
        folded += 1
    for node in drop:
        graph.node.remove(node)
    used = {i for n in graph.node for i in n.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    onnx.save(model, str(path))
    return folded
