"""The backend formats, declared once. The exporter, `edge` dispatch and benchmarks/ all read this table.

It lives in edge/ (not export/) because dependencies point down the pipeline: export imports edge,
never the other way round.
"""
from __future__ import annotations

from dataclasses import dataclass

PRECISIONS = ("int8", "fp32")


@dataclass(frozen=True)
class Format:
    backend: str  # name used by BoneAgeModel.load(backend=...)
    module: str  # edge.backends.<module>, imported lazily
    package: str  # what to pip install for it
    # Bundle-relative path patterns of the files it loads, {precision} filled in: the first the bundle has is used.
    artifacts: tuple[str, ...]
    precisions: tuple[str, ...]
    device: str  # "cpu" or "gpu"
    built_on_target: bool = False  # True: the bundle ships its source, the engine is built and cached locally
    # False: its INT8 ran slower than its own FP32 on every CPU measured, so precision "auto" takes it last.
    int8_pays: bool = True

    def __post_init__(self):
        if isinstance(self.artifacts, str):  # a bare pattern would be iterated letter by letter
            raise TypeError(f"{self.backend}: artifacts must be a tuple of path patterns, not a string")

    def paths(self, precision: str) -> list[str]:
        return [pattern.format(precision=precision) for pattern in self.artifacts]


FORMATS: dict[str, Format] = {
    # Its own IR where the bundle has one (INT8: an unsigned-activation model of its own), else the ONNX file:
    # OpenVINO reads the FP32 ONNX as it is, so a bundle holds one FP32 copy of the weights, not two.
    "openvino": Format("openvino", "openvino_backend", "openvino",
                       ("openvino/model-{precision}.xml", "model-{precision}.onnx"), PRECISIONS, "cpu"),
    # INT8 1.2-1.9x slower than FP32 on an AVX2-only EPYC (2026-11-28/29) and 2x on an AVX-512 VNNI EPYC
    # (v6.1, 2026-11-29): its CPU provider runs most of our Q/DQ convolutions as FP32 behind DequantizeLinear.
    "onnxruntime": Format("onnxruntime", "onnxruntime_backend", "onnxruntime", ("model-{precision}.onnx",),
                          PRECISIONS, "cpu", int8_pays=False),
    # Built from the bundle's ONNX (explicit Q/DQ for INT8, FP16 for the FP32 model) on the GPU that runs it.
    "tensorrt": Format("tensorrt", "tensorrt_backend", "tensorrt", ("model-{precision}.onnx",),
                       PRECISIONS, "gpu", built_on_target=True),
}
# `auto` tries these in order: fastest first where each works (OpenVINO INT8 ran 1.4x faster than
# ONNX Runtime INT8 on the 2-core Zen 4 CPU, see benchmarks/).
AUTO_ORDER = ("tensorrt", "openvino", "onnxruntime")
# One image (`edge-infer IMAGE`, a PACS hook): the backend that is ready first. ONNX Runtime loads the bundled model
# in 0.26 s against OpenVINO's 1.00 s (AVX2-only EPYC) and 0.12 against 0.35 s (AVX-512 VNNI EPYC), the edge-bench
# "load s" column. It decides only among backends of the same answer: the precision is the CPU's, whatever the number
# of images (edge.cpu), so where INT8 is chosen its only paying backend, OpenVINO, serves one image as it serves a
# folder, and ONNX Runtime serves one image only in FP32, where it and OpenVINO agree to 0.001 months. TensorRT stays
# first, as in AUTO_ORDER: a GPU machine answers one image as it answers a folder ("One answer per radiograph",
# docs/ARCHITECTURE.md).
ONE_IMAGE_ORDER = ("tensorrt", "onnxruntime", "openvino")


def auto_order(inputs: int | None = None) -> tuple[str, ...]:
    """The backends `auto` tries, in order, for a run of `inputs` images (None: unknown, a server)."""
    return ONE_IMAGE_ORDER if inputs == 1 else AUTO_ORDER


def get_format(backend: str) -> Format:
    if backend not in FORMATS:
        import difflib
        close = difflib.get_close_matches(backend, list(FORMATS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown backend {backend!r}{hint}; choose from auto, {', '.join(FORMATS)}")
    return FORMATS[backend]
