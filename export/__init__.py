"""Torch side: write a model bundle (ONNX, OpenVINO IR, TensorRT build recipe) from a checkpoint."""
