"""The bundle's stored sample outputs: what a backend must reproduce on this machine before it is trusted.

Export stores the FP32 torch model's outputs for the bundled sample radiographs. A runtime or CPU that
computes something else (measured: OpenVINO 2026.4.1 INT8 on an AVX2-only AMD EPYC, up to 98 months off)
is caught here, once at load, instead of giving a clinician a wrong number.

How far INT8 may be from the stored FP32 outputs comes from the retention gate that let the INT8 model ship: the
95th percentile of |INT8 - FP32| over the validation images (bundle.json retention.agreement.p95_abs_months; the
OpenVINO IR has its own, openvino_int8.retention) plus a margin for another CPU's rounding. edge-export stores it
as self_test.int8_max_abs_months; a bundle without it is derived from its gate record the same way, and a bundle
without a gate record gets DEFAULT_INT8_MONTHS. Measured 2026-11-30 (docs/HARDENING.md): the 100 px bundle's INT8
samples 1.1 / 1.2 months off (ONNX Runtime / OpenVINO), bound 4.3 / 3.1, its wrong resize interpolation 4.9-5.8
months off and refused (the former bound, 25 months, let it through); the 299 px bundle's 1.9 / 1.8, bound 4.87 / 4.0.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.bundle import OUTPUTS, BundleError
from edge.formats import FORMATS

# Largest allowed difference on any one sample: (months, P(male)). FP32 allows rounding between runtimes only.
TOLERANCE = {"fp32": (0.05, 0.001), "int8": (5.0, 0.35)}
INT8_MARGIN_MONTHS = 2.0  # over the gate's p95 |d|: another CPU's INT8 rounding
DEFAULT_INT8_MONTHS = TOLERANCE["int8"][0]  # INT8 that no gate measured


def reference_samples(bundle) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """(preprocessed inputs, {output name: stored FP32 values}), or None when the bundle stores no samples."""
    samples = bundle.meta.get("samples", [])
    if not samples:
        return None
    names = [n for n in OUTPUTS if n in samples[0]]
    if not {"bone_age_months", "p_male"} <= set(names):
        raise BundleError(f"{bundle.root}: bundle.json samples lack stored bone_age_months or p_male outputs")
    try:
        x = np.stack([preprocess_sample(bundle, s["file"]) for s in samples])
        return x, {n: np.array([s[n] for s in samples], dtype=np.float32) for n in names}
    except (KeyError, TypeError, ValueError) as e:
        raise BundleError(f"{bundle.root}: bundle.json samples are unusable ({e})") from None


def preprocess_sample(bundle, rel: str) -> np.ndarray:
    from edge.imaging import ImageError
    from edge.preprocess import preprocess
    try:
        return preprocess(Path(bundle.root) / rel, bundle.config.input)
    except ImageError as e:
        raise BundleError(f"bundle sample {e}") from None


def tolerance(meta: dict, backend: str, precision: str) -> tuple[float, float]:
    """(months, P(male)) a backend's outputs may be from the stored FP32 ones on any sample."""
    if precision != "int8":
        return TOLERANCE[precision]
    stored = ((meta.get("self_test") or {}).get("int8_max_abs_months") or {}).get(backend)
    months = stored if _is_number(stored) else derive_int8_tolerances(meta).get(backend, DEFAULT_INT8_MONTHS)
    return float(months), TOLERANCE["int8"][1]


def derive_int8_tolerances(meta: dict) -> dict[str, float]:
    """{backend: gate p95 |INT8 - FP32| on validation + INT8_MARGIN_MONTHS} for each backend whose INT8 model has a
    gate record in `meta` (edge-export writes the result to bundle.json as self_test.int8_max_abs_months)."""
    out = {}
    for backend in FORMATS:
        p95 = ((_gate_record(meta, backend) or {}).get("agreement") or {}).get("p95_abs_months")
        if _is_number(p95):
            out[backend] = round(float(p95) + INT8_MARGIN_MONTHS, 2)
    return out


def _gate_record(meta: dict, backend: str) -> dict | None:
    """The retention record of the INT8 model this backend runs: OpenVINO's own IR has its own gate."""
    own_ir = FORMATS["openvino"].paths("int8")[0]
    listed = {a.get("path") for a in meta.get("artifacts", []) if isinstance(a, dict)}
    record = (meta.get("openvino_int8") or {}).get("retention") if backend == "openvino" and own_ir in listed \
        else meta.get("retention")
    return record if isinstance(record, dict) else None


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v >= 0


def compare(got: dict[str, np.ndarray], want: dict[str, np.ndarray], precision: str,
            tol: tuple[float, float] | None = None) -> dict:
    """Largest difference of every stored output; ages (with or without the sex given) share a tolerance.
    tol: (months, P(male)); default TOLERANCE[precision] (runtime: tolerance(), from the bundle's gate)."""
    tol_age, tol_p = tol or TOLERANCE[precision]
    if set(want) - set(got):
        raise ValueError(f"the backend gives no {', '.join(sorted(set(want) - set(got)))} output")
    d_p = float(np.max(np.abs(got["p_male"] - want["p_male"])))
    d_age = max(float(np.max(np.abs(got[n] - want[n]))) for n in want if n != "p_male")
    return {"max_abs_months": d_age, "max_abs_p_male": d_p, "tolerance": [tol_age, tol_p],
            "passed": d_age <= tol_age and d_p <= tol_p}
