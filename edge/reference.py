"""The bundle's stored sample outputs: what a backend must reproduce on this machine before it is trusted.

Export stores the FP32 torch model's outputs for the bundled sample radiographs. A runtime or CPU that
computes something else (measured: OpenVINO 2026.4.1 INT8 on an AVX2-only AMD EPYC, up to 98 months off)
is caught here, once at load, instead of giving a clinician a wrong number.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.bundle import OUTPUTS
from edge.preprocess import preprocess

# Largest allowed difference on any one sample: (months, P(male)). INT8 may move a single image by much
# more than its average error; these catch broken arithmetic, not small quantization noise.
TOLERANCE = {"fp32": (0.05, 0.001), "int8": (25.0, 0.35)}


def reference_samples(bundle) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """(preprocessed inputs, {output name: stored FP32 values}), or None when the bundle stores no samples."""
    samples = bundle.meta.get("samples", [])
    if not samples:
        return None
    x = np.stack([preprocess(Path(bundle.root) / s["file"], bundle.config.input) for s in samples])
    names = [n for n in OUTPUTS if n in samples[0]]
    return x, {n: np.array([s[n] for s in samples]) for n in names}


def compare(got: dict[str, np.ndarray], want: dict[str, np.ndarray], precision: str) -> dict:
    """Largest difference of every stored output; ages (with or without the sex given) share a tolerance."""
    tol_age, tol_p = TOLERANCE[precision]
    if set(want) - set(got):
        raise ValueError(f"the backend gives no {', '.join(sorted(set(want) - set(got)))} output")
    d_p = float(np.max(np.abs(got["p_male"] - want["p_male"])))
    d_age = max(float(np.max(np.abs(got[n] - want[n]))) for n in want if n != "p_male")
    return {"max_abs_months": d_age, "max_abs_p_male": d_p, "tolerance": [tol_age, tol_p],
            "passed": d_age <= tol_age and d_p <= tol_p}
