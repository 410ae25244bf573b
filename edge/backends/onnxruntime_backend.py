"""ONNX Runtime on the CPU: runs the bundle's FP32 or Q/DQ INT8 ONNX. One session serves every thread: its run()
is thread-safe (ONNX Runtime's documented guarantee for InferenceSession.run)."""
from __future__ import annotations

import numpy as np

from edge.backends.base import Backend, cannot_load


class OnnxRuntimeBackend(Backend):
    name, package = "onnxruntime", "onnxruntime"

    @classmethod
    def _import_runtime(cls):
        import onnxruntime  # telemetry is switched off before this import (edge/__init__.py)
        onnxruntime.disable_telemetry_events()  # Windows' ETW events; a no-op where there are none
        return onnxruntime

    def __init__(self, artifact, precision, threads=None):
        super().__init__(artifact, precision, threads)
        ort = self._import_runtime()
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        # Its idle threads would otherwise spin after each call, taking the cores from the decode workers and from
        # any other model in the process (2 cores, AVX2 EPYC: the next OpenVINO call took 33.7 ms instead of 19.3;
        # ONNX Runtime's own call 26.8 ms without spinning, 30.2 with).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.artifact), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's own types (InvalidProtobuf, Fail, ...) for a file it cannot use
            raise cannot_load(self.name, self.artifact, e) from None
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def io(self) -> tuple[tuple, list[str]]:
        dims = self.session.get_inputs()[0].shape[1:]
        return tuple(d if isinstance(d, int) else None for d in dims), list(self.output_names)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        results = self.session.run(self.output_names, {self.input_name: np.ascontiguousarray(batch, np.float32)})
        return self.by_name(zip(self.output_names, results), len(batch))


BACKEND = OnnxRuntimeBackend
