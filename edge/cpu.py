"""Which precision pays on this CPU: INT8 only where the CPU has INT8 dot-product instructions.

Measured on an AVX2-only AMD EPYC (edge-bench, README; docs/EXPERIMENTS.md, 2026-11-29): ONNX Runtime INT8 ran
the bundled model slower than FP32 (31 vs 25 ms at batch 1, 40 vs 99 img/s at batch 8; no faster even with
the convolutions fused to QLinearConv: benchmarks/ort_int8_fusion_check.py) and OpenVINO INT8 gave wrong
outputs (refused at load). On the VNNI machines of v1-v2 OpenVINO INT8 was right and 1.45-1.73x faster
than FP32; on the AVX-512 VNNI EPYC of v6.1 it was wrong again (refused) and ONNX Runtime INT8 ran 2x
slower than FP32, so the runtime takes ONNX Runtime INT8 last (edge.formats, int8_pays). Both precisions pass the
retention gate, so "auto" picks the faster one and never a less accurate one than the bundle promises.
"""
from __future__ import annotations

from pathlib import Path

# /proc/cpuinfo flags (Linux) and numpy's cpuid names (any OS) of VNNI and AMX; int8_dot_product() also counts, since
# 2026-11-30, AVX2's u8 x s8 products, which OpenVINO's unsigned-activation INT8 model uses (docs/THROUGHPUT.md:
# OpenVINO INT8 was never measured slower than its FP32 on any CPU: 1.0x and 1.5x on AVX2-only EPYCs, 1.3-2.7x on
# the AVX-512 VNNI one; the load-time self-test refuses it wherever it computes wrongly).
_VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
_NUMPY_VNNI = ("AVX512VNNI", "AVX512_CLX", "AVX512_ICL", "AVX512_SPR")


def int8_dot_product(cpuinfo: str | None = None) -> bool:
    """Whether this x86 CPU has AVX2, VNNI or AMX. `cpuinfo`: /proc/cpuinfo's text (tests pass their own)."""
    return _has(("avx2", *_VNNI_FLAGS), ("AVX2", *_NUMPY_VNNI), cpuinfo)


def vnni(cpuinfo: str | None = None) -> bool:
    """Whether this x86 CPU has VNNI or AMX (INT8 dot products in one instruction, not AVX2's three)."""
    return _has(_VNNI_FLAGS, _NUMPY_VNNI, cpuinfo)


def _has(linux_flags, numpy_features, cpuinfo: str | None) -> bool:
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    flags = set(cpuinfo.split())
    if flags:
        return any(f in flags for f in linux_flags)
    # Windows / macOS: numpy's own cpuid probe (a private table, hence the guard). It has no entry for the
    # AVX-VNNI of client CPUs without AVX-512, which then get FP32: right, if maybe slower than INT8.
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:
        return False
    return any(features.get(name) for name in numpy_features)


def auto_precision(inputs: int | None = None) -> str:
    """ "int8" where INT8 runs faster than FP32 here, else "fp32". inputs: how many images the caller will run,
    when it knows. One image on a CPU with AVX2 but no VNNI gets FP32: OpenVINO compiles the INT8 model about a
    second longer there, more than INT8 saves on one image (`edge-infer IMAGE` on an AVX2 EPYC Zen 3: 2.35-2.43 s
    in INT8, 1.37-1.49 s in FP32, whose batch-1 call is only 2.8 ms slower; docs/THROUGHPUT.md)."""
    if not int8_dot_product():
        return "fp32"
    return "fp32" if inputs == 1 and not vnni() else "int8"
