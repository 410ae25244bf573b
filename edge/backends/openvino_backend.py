"""OpenVINO on the CPU: runs the bundle's IR (FP32 exact, or INT8)."""
from __future__ import annotations

import numpy as np

from edge.backends.base import Backend


class OpenVinoBackend(Backend):
    name, package = "openvino", "openvino"

    @classmethod
    def _import_runtime(cls):
        import openvino
        return openvino

    def __init__(self, artifact, precision, threads=None):
        super().__init__(artifact, precision, threads)
        ov = self._import_runtime()
        core = ov.Core()
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if precision == "fp32":
            # On CPUs with native bf16 (AVX-512 BF16, AMX) OpenVINO silently runs FP32 models in bf16,
            # which moved outputs by ~1e-2; the FP32 reference must be real FP32.
            config["INFERENCE_PRECISION_HINT"] = "f32"
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = core.compile_model(core.read_model(str(self.artifact)), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.outputs = [self.compiled.output(name) for name in ("bone_age_months", "p_male")]

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        result = self.request.infer({0: np.ascontiguousarray(batch, np.float32)})
        age, p_male = (result[o] for o in self.outputs)
        return np.asarray(age).reshape(-1), np.asarray(p_male).reshape(-1)


BACKEND = OpenVinoBackend
