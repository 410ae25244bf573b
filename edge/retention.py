"""The accuracy-retention gate, one definition: a compressed model (or another backend) against its
FP32 reference on the same labelled images. Used by quantize/ (torch models) and edge-verify (backends).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from edge import metrics


@dataclass(frozen=True)
class Thresholds:
    max_mae_increase: float = 0.25  # months
    max_accuracy_drop: float = 0.01  # 1 point
    max_auc_drop: float = 0.01


def retention(age_true, male_true, ref_age, ref_p, cand_age, cand_p, thresholds: Thresholds = Thresholds()) -> dict:
    """Metrics of both, their change, per-image agreement and the verdict (`passed`, `failures`)."""
    ref = metrics.point_metrics(age_true, ref_age, male_true, ref_p)
    cand = metrics.point_metrics(age_true, cand_age, male_true, cand_p)
    diff = np.abs(np.asarray(cand_age, float) - np.asarray(ref_age, float))
    flips = int(np.sum((np.asarray(ref_p) >= 0.5) != (np.asarray(cand_p) >= 0.5)))
    delta = {"mae": cand["mae"] - ref["mae"], "accuracy": cand["accuracy"] - ref["accuracy"],
             "auc": cand["auc"] - ref["auc"]}
    failures = []
    if delta["mae"] > thresholds.max_mae_increase:
        failures.append(f"MAE +{delta['mae']:.3f} months > {thresholds.max_mae_increase}")
    if -delta["accuracy"] > thresholds.max_accuracy_drop:
        failures.append(f"sex accuracy {delta['accuracy']:+.4f} < -{thresholds.max_accuracy_drop}")
    if -delta["auc"] > thresholds.max_auc_drop:
        failures.append(f"AUC {delta['auc']:+.4f} < -{thresholds.max_auc_drop}")
    return {
        "reference": ref, "candidate": cand, "delta": delta,
        "agreement": {"max_abs_months": float(diff.max()), "p95_abs_months": float(np.percentile(diff, 95)),
                      "sex_flips": flips, "n": int(len(diff))},
        "thresholds": asdict(thresholds), "passed": not failures, "failures": failures,
    }


def format_rows(rows: dict[str, dict]) -> str:
    """{variant name: retention()} -> a text table."""
    head = (f"{'variant':<28}{'MAE':>8}{'dMAE':>8}{'acc':>8}{'dacc':>8}{'AUC':>8}{'dAUC':>8}"
            f"{'max|d|':>8}{'p95|d|':>8}{'flips':>7}  verdict")
    lines = [head]
    for name, r in rows.items():
        c, d, a = r["candidate"], r["delta"], r["agreement"]
        verdict = "PASS" if r["passed"] else "FAIL: " + "; ".join(r["failures"])
        lines.append(f"{name:<28}{c['mae']:>8.2f}{d['mae']:>+8.2f}{c['accuracy']:>8.3f}{d['accuracy']:>+8.3f}"
                     f"{c['auc']:>8.3f}{d['auc']:>+8.3f}{a['max_abs_months']:>8.2f}{a['p95_abs_months']:>8.2f}"
                     f"{a['sex_flips']:>7}  {verdict}")
    return "\n".join(lines)
