"""Put each Prediction in clinical context: interval, calibrated P(male), chronological age, delay, SDS.

Computed after the network outputs, from the record and the patient's information alone, so every output
(table, JSON, CSV, report, web page, DICOM SR) renders the same fields. What was fitted on validation data
is read from the bundle's bundle.json "clinical" key (written by `python -m export.calibrate`).
"""
from __future__ import annotations

import math
from dataclasses import fields as dataclass_fields, replace

from edge.clinical import calibration, intervals, reference
from edge.clinical.patient import Patient

DEFAULT_LEVEL = 0.9
# What annotate() computes; each starts from its default, so a record annotated before (BoneAgeModel.predict does)
# keeps none of its earlier values, e.g. a 90% interval under a 99% level that has none.
CLINICAL_FIELDS = ("interval_low_months", "interval_high_months", "interval_level", "p_male_calibrated",
                   "sex_uncertain", "chronological_age_months", "age_source", "delay_months", "sds", "category",
                   "given_sex_source", "context_note")


def fitted(bundle) -> dict | None:
    """The bundle's clinical calibration, or None when `python -m export.calibrate` was never run on it."""
    return bundle.meta.get("clinical")


def annotate(pred, patient: Patient | None, clinical: dict | None, level: float = DEFAULT_LEVEL):
    """A copy of `pred` (edge.runtime.Prediction) with the clinical fields filled in."""
    fields = {f.name: f.default for f in dataclass_fields(pred) if f.name in CLINICAL_FIELDS}
    notes = []
    if clinical and "intervals" in clinical:
        male = (pred.given_sex or pred.sex) == "male"  # as the network sees it when not given
        lo, hi = intervals.interval(clinical["intervals"], pred.bone_age_months, bool(pred.given_sex), level, male)
        if math.isfinite(hi) and math.isfinite(lo):
            fields.update(interval_low_months=lo, interval_high_months=hi, interval_level=level)
        else:
            notes.append(f"no {level:.0%} interval: too few calibration images in this age band for that level")
    else:
        notes.append("no interval: the bundle has no clinical calibration (run python -m export.calibrate)")
    if clinical and "sex_calibration" in clinical:
        cal = clinical["sex_calibration"]
        q = calibration.apply(pred.p_male, cal["a"], cal["b"])
        fields.update(p_male_calibrated=q, sex_uncertain=max(q, 1 - q) < cal["uncertain_below"])
    patient = patient or Patient()
    if patient.age_months is not None:
        fields.update(chronological_age_months=patient.age_months, age_source=patient.age_source)
    # The reference is sex-specific: the given sex, else the network's call when it is not uncertain.
    sex = pred.given_sex or ("" if fields.get("sex_uncertain") else pred.sex)
    ctx = reference.assess(pred.bone_age_months, patient.age_months, sex)
    if ctx.note:
        notes.append(ctx.note)
    elif not pred.given_sex:
        notes.append(f"SDS read against the sex the image shows ({sex}); give the sex to be sure")
    fields.update(delay_months=ctx.delay_months, sds=ctx.sds, category=ctx.category,
                  given_sex_source=patient.sex_source if pred.given_sex else "", context_note="; ".join(notes))
    return replace(pred, **fields)


def in_context(results, patients, bundle, level: float = DEFAULT_LEVEL) -> list:
    """annotate() for a batch: Failures pass through; patients: one Patient (or None) per result."""
    from edge.runtime import Prediction

    clinical = fitted(bundle)
    return [annotate(r, p, clinical, level) if isinstance(r, Prediction) else r for r, p in zip(results, patients)]


def summary(pred) -> str:
    """The clinical fields as one line for the table (empty when none was computed)."""
    parts = []
    if pred.interval_low_months is not None:
        parts.append(f"{pred.interval_level:.0%} interval {pred.interval_low_months:.0f}-"
                     f"{pred.interval_high_months:.0f} mo")
    if pred.chronological_age_months is not None:
        months = int(round(pred.chronological_age_months))
        age = f"age {months // 12}y {months % 12}m ({pred.age_source})"
        parts.append(age + (f": {pred.delay_months:+.1f} mo" if pred.delay_months is not None else ""))
    if pred.sds is not None:
        parts.append(f"SDS {pred.sds:+.2f} {pred.category}")
    if pred.given_sex_source and not pred.given_sex_source.startswith("--"):
        parts.append(f"sex {pred.given_sex} from {pred.given_sex_source}")
    if pred.sex_uncertain:
        parts.append("sex call uncertain")
    if pred.context_note and pred.chronological_age_months is not None:
        parts.append(pred.context_note)
    return "; ".join(parts)
