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
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        results = self.session.run(self.output_names, {self.input_name: np.ascontiguousarray(batch, np.float32)})
        return self.by_name(zip(self.output_names, results), len(batch))


BACKEND = OnnxRuntimeBackend
