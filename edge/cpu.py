"""Which precision pays on this CPU: INT8 where the CPU has INT8 dot products (AVX2's u8 x s8 products, VNNI, AMX).

OpenVINO's unsigned-activation INT8 model was never measured slower than its FP32 (1.0-1.8x faster on AVX2-only
EPYCs, 1.3-2.7x on an AVX-512 VNNI one: README, docs/THROUGHPUT.md); the load-time self-test refuses it wherever it
computes wrongly, and ONNX Runtime's INT8 runs last (edge.formats, int8_pays). Both precisions pass the retention
gate, so "auto" picks the faster one and never a less accurate one than the bundle promises.
"""
from __future__ import annotations

from pathlib import Path

# /proc/cpuinfo flags (Linux) and numpy's cpuid names (any OS) of AVX2, VNNI and AMX.
_LINUX_FLAGS = ("avx2", "avx512_vnni", "avx_vnni", "amx_int8")
_NUMPY_FEATURES = ("AVX2", "AVX512VNNI", "AVX512_CLX", "AVX512_ICL", "AVX512_SPR")


def int8_dot_product(cpuinfo: str | None = None) -> bool:
    """Whether this x86 CPU has AVX2, VNNI or AMX. `cpuinfo`: /proc/cpuinfo's text (tests pass their own)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    flags = set(cpuinfo.split())
    if flags:
        return any(f in flags for f in _LINUX_FLAGS)
    # Windows / macOS: numpy's own cpuid probe (a private table, hence the guard). It has no entry for the
    # AVX-VNNI of client CPUs without AVX-512, which then get FP32: right, if maybe slower than INT8.
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:
        return False
    return any(features.get(name) for name in _NUMPY_FEATURES)


def auto_precision() -> str:
    """ "int8" where INT8 runs faster than FP32 here, else "fp32": decided by the CPU alone, never by how many images
    a run has, because INT8 and FP32 are two models whose answers differ (by up to 7 months on a test image, 0.8 on
    average, with a given sex): one image alone must read as it does in a folder, on the page or the DICOM node
    (docs/ARCHITECTURE.md, "One answer per radiograph"). What that costs one image: OpenVINO INT8 loads in place of
    ONNX Runtime FP32, `edge-infer IMAGE` 1.1-1.3 s instead of 0.5-0.6 s on the AVX-512 VNNI EPYC (2026-12-07)."""
    return "int8" if int8_dot_product() else "fp32"
