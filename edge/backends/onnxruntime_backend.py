"""ONNX Runtime on the CPU: runs the bundle's FP32 or Q/DQ INT8 ONNX."""
from __future__ import annotations

import numpy as np

from edge.backends.base import Backend


class OnnxRuntimeBackend(Backend):
    name, package = "onnxruntime", "onnxruntime"

    @classmethod
    def _import_runtime(cls):
        import onnxruntime
        return onnxruntime

    def __init__(self, artifact, precision, threads=None):
        super().__init__(artifact, precision, threads)
        ort = self._import_runtime()
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.artifact), opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        age, p_male = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, np.float32)})
        return age.reshape(-1), p_male.reshape(-1)


BACKEND = OnnxRuntimeBackend
