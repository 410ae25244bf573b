"""OpenVINO on the CPU: runs the bundle's own OpenVINO IR where it has one (INT8), else model-{precision}.onnx;
FP32 runs with the f32 precision hint (exact FP32).

One backend object serves any number of threads: an OpenVINO infer request is not thread-safe (4 threads sharing
one raised "Infer Request is busy", and retried, returned another image's outputs), so each call takes an idle
request from a pool (one is created when none is idle) and gives it back after its outputs are copied."""
from __future__ import annotations

import os
import queue
import threading

import numpy as np

from edge.backends.base import Backend, cannot_load
from edge.bundle import OUTPUTS


# A folder for OpenVINO's compiled-model cache, opt-in: a later process loads the compiled model instead of compiling
# it, most of the start-up for one image (docs/THROUGHPUT.md). OpenVINO keys it on the model, its settings and the
# device, so a changed bundle compiles afresh.
CACHE_ENV = "BONEAGE_OPENVINO_CACHE"


class OpenVinoBackend(Backend):
    name, package = "openvino", "openvino"

    @classmethod
    def _import_runtime(cls):
        import openvino  # its telemetry is switched off before this import (edge/__init__.py)
        return openvino

    def __init__(self, artifact, precision, threads=None):
        super().__init__(artifact, precision, threads)
        ov = self._import_runtime()
        self.core = ov.Core()
        if os.environ.get(CACHE_ENV):  # opt-in only: nothing is written outside the user's own paths otherwise
            self.core.set_property({"CACHE_DIR": os.environ[CACHE_ENV]})
        self.config = {"PERFORMANCE_HINT": "LATENCY"}
        if precision == "fp32":
            # On CPUs with native bf16 (AVX-512 BF16, AMX) OpenVINO silently runs FP32 models in bf16,
            # which moved outputs by ~1e-2; the FP32 reference must be real FP32.
            self.config["INFERENCE_PRECISION_HINT"] = "f32"
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = int(threads)
        self._lock = threading.Lock()  # guards compiling and the dict below, not inference
        self.compiled: dict[int, tuple[object, list, queue.SimpleQueue]] = {}
        try:
            if self.artifact.suffix == ".xml" and not _looks_like_xml(self.artifact):
                # Otherwise OpenVINO tries every frontend on it, and the ONNX one logs parse errors on stderr.
                raise ValueError("not an OpenVINO IR (no XML)")
            self.source = self.core.read_model(str(self.artifact))  # read once: an ONNX file is converted on reading
            self._compiled(1)  # compile now, so a bad artifact fails at load time
        except Exception as e:  # OpenVINO raises RuntimeError and its own types for files it cannot use
            raise cannot_load(self.name, self.artifact, e) from None

    def _compiled(self, batch: int):
        """One compiled model per batch size, with a static input shape, and its pool of idle infer requests.

        Workaround: OpenVINO 2026.4.1 on this AMX-capable Zen 4 CPU returned wrong outputs for our INT8 IR
        with a dynamic batch axis at batch 1 (625 months instead of 166 for a sample radiograph; batch 2,
        the f32 precision hint, or a static shape all gave 166). Static shapes are also the faster path
        (3.9 ms at batch 1 against 6.0 ms with the f32 hint). No upstream issue found yet."""
        with self._lock:
            if batch not in self.compiled:
                model = self.source.clone()
                dims = list(model.input(0).get_partial_shape())[1:]
                model.reshape({model.input(0): [batch, *(d.get_length() for d in dims)]})
                compiled = self.core.compile_model(model, "CPU", self.config)
                self.compiled[batch] = (compiled, list(compiled.outputs), queue.SimpleQueue())
            return self.compiled[batch]

    def io(self) -> tuple[tuple, list[str]]:
        dims = list(self.source.input(0).get_partial_shape())[1:]
        return (tuple(d.get_length() if d.is_static else None for d in dims),
                [_bundle_name(o) for o in self.source.outputs])

    def prepare(self, batch_size: int) -> None:
        self._compiled(batch_size)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        compiled, outputs, idle = self._compiled(len(batch))
        try:
            request = idle.get_nowait()
        except queue.Empty:
            request = compiled.create_infer_request()
        try:
            result = request.infer({0: np.ascontiguousarray(batch, np.float32)})
            return self.by_name(((_bundle_name(o), result[o]) for o in outputs), len(batch))  # copies
        finally:
            idle.put(request)


def _looks_like_xml(path) -> bool:
    with open(path, "rb") as f:
        return f.read(256).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<")


def _bundle_name(output) -> str:
    """The output's edge.bundle.OUTPUTS name: an IR output tensor can carry several names."""
    return next((n for n in output.get_names() if n in OUTPUTS), output.get_any_name())


BACKEND = OpenVinoBackend
