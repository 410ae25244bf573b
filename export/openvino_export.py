"""ONNX -> OpenVINO IR (xml + bin) with the bundle metadata in the IR's rt_info."""
from __future__ import annotations

import json
from pathlib import Path


def onnx_to_openvino(onnx_path, xml_path, metadata: dict | None = None) -> Path:
    """Core.read_model rather than ov.convert_model: the latter starts OpenVINO's telemetry
    (openvino/tools/ovc/convert_impl.py) and this project never sends anything over the network.
    compress_to_fp16=False: the FP32 reference must be exact (ov.save_model stores FP16 by default)."""
    import openvino as ov

    model = ov.Core().read_model(str(onnx_path))
    if metadata:
        model.set_rt_info(json.dumps(metadata, sort_keys=True), ["boneage_bundle"])
    xml_path = Path(xml_path)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return xml_path
