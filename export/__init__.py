"""Torch side: write a model bundle (ONNX, OpenVINO IR, TensorRT build recipe) from a checkpoint."""

import quantize as _quantize  # noqa: F401,E402  (turns NNCF telemetry off before anything imports nncf)
