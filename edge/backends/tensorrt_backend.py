"""TensorRT on an NVIDIA GPU. NOT RUN on the machines this project is built on (TensorRT's core
libraries cannot be installed there, see docs/ARCHITECTURE.md); written against the TensorRT 10/11 Python
API, and what can run without a GPU (the cache key, the build recipe) is tested.

The engine is built from the bundle's ONNX on the machine that runs it, strongly typed (the only mode in
TensorRT 11; opt-in from 10.12): the INT8 ONNX carries explicit Q/DQ, and the FP32 ONNX is first cast to
FP16 with ModelOpt AutoCast (BuilderFlag.FP16 is removed in TensorRT 11). Engines are cached per GPU,
compute capability, TensorRT version and artifact hash, since an engine runs only where it was built.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path

import numpy as np

from edge.backends.base import Backend, BackendUnavailable

MAX_BATCH = 32
CACHE_ENV = "BONEAGE_TRT_CACHE"


def engine_cache_key(artifact_sha256: str, precision: str, gpu_name: str, compute_capability: str,
                     trt_version: str) -> str:
    gpu = "".join(c if c.isalnum() else "-" for c in gpu_name).strip("-").lower()
    digest = hashlib.sha256(f"{artifact_sha256}|{precision}|{MAX_BATCH}".encode()).hexdigest()[:16]
    return f"{gpu}-sm{compute_capability.replace('.', '')}-trt{trt_version}-{precision}-{digest}.engine"


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "boneage-edge" / "tensorrt"))


def build_plan(precision: str) -> dict:
    """How the engine is built for a precision (pure data, so it is testable without TensorRT)."""
    return {"strongly_typed": True, "autocast_fp16": precision == "fp32", "max_batch": MAX_BATCH,
            "workspace_bytes": 1 << 30}


def load_or_build(path: Path, build, deserialize):
    """The cached engine at `path`, else a fresh build, cached. The cache is written atomically (a temporary file in
    the same folder, then os.replace), so a crash or a second process never leaves half an engine there; a cached
    engine that does not deserialize (another TensorRT, a damaged file: deserialize returns None) is rebuilt once."""
    if path.exists():
        engine = deserialize(path.read_bytes())
        if engine is not None:
            return engine
    data = build()
    engine = deserialize(data)
    if engine is None:
        raise BackendUnavailable(f"tensorrt: the engine just built for {path.name} does not deserialize")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return engine


class TensorRtBackend(Backend):
    name, package = "tensorrt", "tensorrt"

    @classmethod
    def _import_runtime(cls):
        import tensorrt
        from cuda.bindings import runtime  # noqa: F401  (cuda-python: device buffers and the stream)
        return tensorrt

    @classmethod
    def check_available(cls) -> None:
        super().check_available()
        from cuda.bindings import runtime as cudart
        err, count = cudart.cudaGetDeviceCount()
        if int(err) != 0 or count == 0:
            raise BackendUnavailable("tensorrt backend needs an NVIDIA GPU; none is visible")

    def __init__(self, artifact, precision, threads=None, cache_dir: Path | None = None):
        super().__init__(artifact, precision, threads)
        self.trt = self._import_runtime()
        from cuda.bindings import runtime as cudart
        self.cudart = cudart
        self.engine = load_or_build(Path(cache_dir or default_cache_dir()) / self._cache_key(), self._build_engine,
                                    self._deserialize)
        self.context = self.engine.create_execution_context()
        _, self.stream = cudart.cudaStreamCreate()
        self._lock = threading.Lock()  # one execution context and stream: one batch at a time

    def _deserialize(self, data: bytes):
        logger = self.trt.Logger(self.trt.Logger.WARNING)
        return self.trt.Runtime(logger).deserialize_cuda_engine(data)

    def _cache_key(self) -> str:
        _, props = self.cudart.cudaGetDeviceProperties(0)
        from edge.bundle import sha256_file
        name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        return engine_cache_key(sha256_file(self.artifact), self.precision, name,
                                f"{props.major}.{props.minor}", self.trt.__version__)

    def io(self) -> tuple[tuple, list[str]]:
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        dims = tuple(self.engine.get_tensor_shape(names[0]))[1:]
        return tuple(int(d) if int(d) >= 0 else None for d in dims), names[1:]

    def _onnx_bytes(self) -> bytes:
        if not build_plan(self.precision)["autocast_fp16"]:
            return self.artifact.read_bytes()
        try:
            from modelopt.onnx.autocast import convert_to_mixed_precision
        except ImportError:
            raise BackendUnavailable("tensorrt fp32 bundles are built in FP16 through ModelOpt AutoCast: "
                                     "pip install nvidia-modelopt onnx") from None
        model = convert_to_mixed_precision(onnx_path=str(self.artifact), low_precision_type="fp16",
                                           keep_io_types=True)
        return model.SerializeToString()

    def _build_engine(self) -> bytes:
        trt, plan = self.trt, build_plan(self.precision)
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(self._onnx_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendUnavailable(f"{self.artifact}: TensorRT could not parse the ONNX: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan["workspace_bytes"])
        shape = tuple(network.get_input(0).shape)[1:]
        profile = builder.create_optimization_profile()
        profile.set_shape(network.get_input(0).name, (1, *shape), (1, *shape), (plan["max_batch"], *shape))
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BackendUnavailable(f"{self.artifact}: TensorRT engine build failed (see the log above)")
        return bytes(serialized)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        with self._lock:
            return self._run_locked(batch)

    def _run_locked(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        chunks = [self._run_chunk(np.ascontiguousarray(batch[start:start + MAX_BATCH], np.float32))
                  for start in range(0, len(batch), MAX_BATCH)]
        return {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}

    def _run_chunk(self, x: np.ndarray) -> dict[str, np.ndarray]:
        cudart, n = self.cudart, len(x)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.context.set_input_shape(names[0], x.shape)
        host = {names[0]: x}
        for name in names[1:]:
            host[name] = np.empty(tuple(self.context.get_tensor_shape(name)), np.float32)
        device = {}
        try:
            for name, arr in host.items():
                _, device[name] = cudart.cudaMalloc(arr.nbytes)
                self.context.set_tensor_address(name, device[name])
            cudart.cudaMemcpyAsync(device[names[0]], x.ctypes.data, x.nbytes,
                                   cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream)
            self.context.execute_async_v3(self.stream)
            for name in names[1:]:
                cudart.cudaMemcpyAsync(host[name].ctypes.data, device[name], host[name].nbytes,
                                       cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream)
            cudart.cudaStreamSynchronize(self.stream)
        finally:
            for ptr in device.values():
                cudart.cudaFree(ptr)
        return self.by_name(((name, host[name]) for name in names[1:]), n)


BACKEND = TensorRtBackend
