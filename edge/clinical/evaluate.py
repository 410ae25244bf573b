"""The held-out check of a bundle's clinical calibration (edge-verify and export.calibrate report it).

Coverage at the interval level checked (default 90%) is judged two-sided on its binomial (Wilson 95%) interval,
so that a folder's size is taken into account: too narrow FAILS when the whole interval lies below nominal minus
the tolerance (2 points overall, 5 in a band of the estimated age); wider than needed is a note when it lies
wholly above nominal plus the tolerance (coverage to spare costs width, not safety). Coverage by the true age's
band is reported too, for information: the intervals condition on the estimate, and regression to the mean makes
the extremes of the true age (the youngest and oldest children) less well covered.
"""
from __future__ import annotations

import numpy as np

from edge.clinical import calibration, intervals
from edge.metrics import wilson_interval

OVERALL_TOLERANCE = 0.02
BAND_TOLERANCE = 0.05
CONFIDENCE = 0.95  # of the binomial interval of a coverage


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
        judge(c, level)
        out["intervals"][name] = c
    if "sex_calibration" in clinical:
        out["sex_calibration"] = calibration.evaluate(clinical["sex_calibration"], outputs["p_male"], male)
    out["passed"] = all(c["passed"] for c in out["intervals"].values())
    return out


def coverage_verdict(k: int, n: int, level: float, tolerance: float) -> tuple[list[float], str]:
    """(Wilson interval of k/n, "narrow" / "wide" / ""): narrow when the data show coverage below level -
    tolerance, wide when they show it above level + tolerance."""
    lo, hi = wilson_interval(k, n, CONFIDENCE)
    return [lo, hi], "narrow" if hi < level - tolerance else "wide" if lo > level + tolerance else ""


def judge(c: dict, level: float) -> None:
    """Adds each coverage's interval and verdict to intervals.coverage()'s record, and `passed`, `notes`."""
    c["notes"], failures = [], []
    for where, r, tol in (("overall", c, OVERALL_TOLERANCE), *((f"band {k}", b, BAND_TOLERANCE)
                                                                 for k, b in c["bands"].items())):
        r["ci"], r["verdict"] = coverage_verdict(round(r["coverage"] * r["n"]), r["n"], level, tol)
        text = f"{where}: {r['coverage']:.1%} (95% CI {r['ci'][0]:.1%}-{r['ci'][1]:.1%}, n {r['n']})"
        if r["verdict"] == "narrow":
            failures.append(f"{text}: too narrow, below {level - tol:.0%}")
        elif r["verdict"] == "wide":
            c["notes"].append(f"{text}: wider than needed, above {level + tol:.0%}")
    c["failures"], c["passed"] = failures, not failures


def format_check(result: dict) -> str:
    level = result["level"]
    lines = [f"Prediction intervals ({level:.0%}; judged on the coverage's 95% binomial interval: FAIL when it lies "
             f"below {level - OVERALL_TOLERANCE:.0%} overall or {level - BAND_TOLERANCE:.0%} in a band of the "
             "estimate; a note when wholly above nominal plus as much)"]
    for name, c in result["intervals"].items():
        bands = ", ".join(f"{k} {b['coverage']:.1%} (n {b['n']})" for k, b in c["bands"].items())
        truth = ", ".join(f"{k} {b['coverage']:.1%}" for k, b in c["bands_by_true_age"].items())
        ci = c.get("ci", [float("nan")] * 2)
        lines += [f"  {name.replace('_', ' ')}: coverage {c['coverage']:.1%} (95% CI {ci[0]:.1%}-{ci[1]:.1%}), "
                  f"mean width {c['mean_width']:.1f} months  {'PASS' if c['passed'] else 'FAIL'}",
                  f"    by estimated age: {bands}", f"    by true age (information): {truth}"]
        lines += [f"    FAIL, {f}" for f in c.get("failures", [])] + [f"    note, {n}" for n in c.get("notes", [])]
    s = result.get("sex_calibration")
    if s:
        lines.append(f"P(male) calibration: ECE {s['ece_before']:.3f} before, {s['ece_after']:.3f} after; "
                     f"'uncertain' {s['uncertain_rate']:.1%} of images, accuracy {s['accuracy_when_certain']:.3f} "
                     f"when certain ({s['accuracy']:.3f} overall)")
    return "\n".join(lines)
