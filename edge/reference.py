"""The bundle's stored sample outputs: what a backend must reproduce on this machine before it is trusted.

Export stores the FP32 torch model's outputs for the bundled sample radiographs. A runtime or CPU that
computes something else (measured: OpenVINO 2026.4.1 INT8 on an AVX2-only AMD EPYC, up to 98 months off)
is caught here, once at load, instead of giving a clinician a wrong number.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.preprocess import preprocess

# Largest allowed difference on any one sample: (months, P(male)). INT8 may move a single image by much
# more than its average error; these catch broken arithmetic, not small quantization noise.
TOLERANCE = {"fp32": (0.05, 0.001), "int8": (25.0, 0.35)}


def reference_samples(bundle) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(preprocessed inputs, stored bone age, stored P(male)), or None when the bundle stores no samples."""
    samples = bundle.meta.get("samples", [])
    if not samples:
        return None
    x = np.stack([preprocess(Path(bundle.root) / s["file"], bundle.config.input) for s in samples])
    return x, np.array([s["bone_age_months"] for s in samples]), np.array([s["p_male"] for s in samples])


def compare(age, p_male, want_age, want_p, precision: str) -> dict:
    tol_age, tol_p = TOLERANCE[precision]
    d_age, d_p = float(np.max(np.abs(age - want_age))), float(np.max(np.abs(p_male - want_p)))
    return {"max_abs_months": d_age, "max_abs_p_male": d_p, "tolerance": [tol_age, tol_p],
            "passed": d_age <= tol_age and d_p <= tol_p}
