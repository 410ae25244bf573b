"""One precision's model files: ONNX (int8 weights folded for INT8) and the OpenVINO IR made from it.

The one sequence that edge-export and benchmarks/compression_table.py both follow, so a timed variant is
what a bundle would ship (bundles give OpenVINO the FP32 ONNX itself rather than an IR converted from it: the
same graph).
"""
from __future__ import annotations

from pathlib import Path

from edge.config import ModelConfig
from export.onnx_export import export_onnx, fold_weight_quantizers
from export.openvino_export import onnx_to_openvino


def write_model_files(net, cfg: ModelConfig, onnx_path, xml_path, precision: str,
                      metadata: dict | None = None) -> Path | None:
    """net: a BoneAgeNet (FP32, pruned, or NNCF-quantized for precision "int8"). Returns the IR's xml path
    (xml_path None: ONNX only)."""
    meta = {**metadata, "precision": precision} if metadata else None
    export_onnx(net, cfg, onnx_path, meta)
    if precision == "int8":
        fold_weight_quantizers(onnx_path)
    return onnx_to_openvino(onnx_path, xml_path, meta) if xml_path is not None else None
