"""Torch model -> ONNX file with bone age in months and P(male) as outputs, and bundle metadata embedded."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from edge.config import ModelConfig
from models.inception import BoneAgeOutputs

INPUT_NAME, OUTPUT_NAMES = "image", ("bone_age_months", "p_male")
OPSET = 17


def export_onnx(net: torch.nn.Module, cfg: ModelConfig, path, metadata: dict | None = None) -> Path:
    """Export with a dynamic batch axis. The TorchScript exporter (dynamo=False) writes one self-contained
    file (the dynamo exporter puts weights in a side .onnx.data file), which keeps the bundle's sha256
    per artifact simple; it also exports NNCF's quantizers as QuantizeLinear/DequantizeLinear pairs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapped = BoneAgeOutputs(net, cfg.age_mean, cfg.age_std).eval()
    spec = cfg.input
    example = torch.zeros(1, spec.channels, spec.height, spec.width)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapped, (example,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                          dynamic_axes={INPUT_NAME: {0: "batch"}, **{o: {0: "batch"} for o in OUTPUT_NAMES}})
    if metadata:
        embed_metadata(path, metadata)
    return path


def embed_metadata(path, metadata: dict) -> None:
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = "boneage_bundle", json.dumps(metadata, sort_keys=True)
    onnx.save(model, str(path))
