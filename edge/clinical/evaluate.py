"""The held-out check of a bundle's clinical calibration (edge-verify and export.calibrate report it).

Gates, at the interval level checked (default 90%): overall coverage within 2 points of nominal, and every
band of the estimated age at least nominal minus 5 points. Coverage by the true age's band is reported too,
for information: the intervals condition on the estimate, and regression to the mean makes the extremes of
the true age (the youngest and oldest children) less well covered.
"""
from __future__ import annotations

import numpy as np

from edge.clinical import calibration, intervals

OVERALL_TOLERANCE = 0.02
BAND_TOLERANCE = 0.05
# Fewer images than this (overall, or in a band) are reported but not gated: at 90% the standard error of a
# coverage on 100 images is 3 points, so a small clinic folder would fail or pass by chance.
MIN_GATED = 100


def given_age(outputs: dict, male) -> np.ndarray | None:
    by_sex = outputs.get("bone_age_months_by_sex")
    return None if by_sex is None else by_sex[np.arange(len(by_sex)), np.asarray(male, int)]


def check(clinical: dict, age, male, outputs: dict, level: float = 0.9) -> dict:
    """Coverage per variant (sex-blind; sex given, each image its true sex), P(male) calibration, verdict."""
    out = {"n": int(len(age)), "level": level, "intervals": {}}
    for name, estimate, sex in (("sex_blind", outputs["bone_age_months"], intervals.seen_male(outputs["p_male"])),
                                ("sex_given", given_age(outputs, male), male)):
        if estimate is None or name not in clinical["intervals"]["variants"]:
            continue
        c = intervals.coverage(clinical["intervals"], estimate, age, name == "sex_given", level, male=sex)
        c["bands_by_true_age"] = intervals.coverage(clinical["intervals"], estimate, age, name == "sex_given",
                                                    level, by_truth=True, male=sex)["bands"]
        c["passed"] = bool((c["n"] < MIN_GATED or abs(c["coverage"] - level) <= OVERALL_TOLERANCE)
                           and all(b["coverage"] >= level - BAND_TOLERANCE
                                   for b in c["bands"].values() if b["n"] >= MIN_GATED))
        out["intervals"][name] = c
    if "sex_calibration" in clinical:
        out["sex_calibration"] = calibration.evaluate(clinical["sex_calibration"], outputs["p_male"], male)
    out["passed"] = all(c["passed"] for c in out["intervals"].values())
    return out


def format_check(result: dict) -> str:
    level = result["level"]
    lines = [f"Prediction intervals ({level:.0%}; gate: overall within {OVERALL_TOLERANCE:.0%} of nominal, every "
             f"band of the estimate >= {level - BAND_TOLERANCE:.0%}; fewer than {MIN_GATED} images: not gated)"]
    for name, c in result["intervals"].items():
        bands = ", ".join(f"{k} {b['coverage']:.1%} (n {b['n']})" for k, b in c["bands"].items())
        truth = ", ".join(f"{k} {b['coverage']:.1%}" for k, b in c["bands_by_true_age"].items())
        lines += [f"  {name.replace('_', ' ')}: coverage {c['coverage']:.1%}, mean width {c['mean_width']:.1f} months  "
                  f"{'PASS' if c['passed'] else 'FAIL'}", f"    by estimated age: {bands}",
                  f"    by true age (information): {truth}"]
    s = result.get("sex_calibration")
    if s:
        lines.append(f"P(male) calibration: ECE {s['ece_before']:.3f} before, {s['ece_after']:.3f} after; "
                     f"'uncertain' {s['uncertain_rate']:.1%} of images, accuracy {s['accuracy_when_certain']:.3f} "
                     f"when certain ({s['accuracy']:.3f} overall)")
    return "\n".join(lines)
