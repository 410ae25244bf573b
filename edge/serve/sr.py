"""A result record (edge.runtime.Prediction) as a DICOM Structured Report on the source image (highdicom).

Content: TID 1500 Measurement Report with one TID 1501 group referencing the source image, holding the bone age
(LOINC 85151-9 "XR Bone age", UCUM mo), the prediction interval and P(male) when the record has them, the sex as
the network sees it and the sex the estimate was read against, and the algorithm's name and version (TID 4019).
Quantities without a standard code use this project's local coding scheme (LOCAL, declared in the SR's Coding
Scheme Identification Sequence). The SR is a Comprehensive SR in the source image's study, for its patient.
"""
from __future__ import annotations

import highdicom as hd
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

LOCAL = "99BONEAGE"
BONE_AGE = Code("85151-9", "LN", "Bone age")
MONTHS, NO_UNITS, PERCENT = codes.UCUM.Month, codes.UCUM.NoUnits, codes.UCUM.Percent
P_MALE = Code("p-male", LOCAL, "Probability of male sex")
INTERVAL_LOW = Code("interval-low", LOCAL, "Bone age prediction interval lower limit")
INTERVAL_HIGH = Code("interval-high", LOCAL, "Bone age prediction interval upper limit")
INTERVAL_LEVEL = Code("interval-level", LOCAL, "Bone age prediction interval coverage")
SEX_SEEN = Code("sex-seen", LOCAL, "Sex as seen in the image")
SEX_GIVEN = Code("sex-given", LOCAL, "Sex the bone age was read against")
SEXES = {"male": codes.cid7455.Male, "female": codes.cid7455.Female}
SR_SERIES_NUMBER = 990  # a high number keeps the AI result after the acquired series in a PACS viewer

# Record fields (edge.runtime.Prediction) that hold the interval, when the runtime gives one.
INTERVAL_FIELDS = ("interval_low_months", "interval_high_months", "interval_level")


def build_sr(record, source: Dataset, model: dict, manufacturer: str = "boneage-edge") -> hd.sr.ComprehensiveSR:
    """record: a Prediction (not a Failure); source: the image it was read from (its patient and study are the
    SR's); model: {"name", "version"} from bundle.json."""
    algorithm = hd.sr.AlgorithmIdentification(name=model["name"], version=model["version"] or "unknown")
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="Bone age"),
        algorithm_id=algorithm,
        finding_sites=[hd.sr.FindingSite(codes.SCT.Hand)],
        measurements=_measurements(record, algorithm),
        qualitative_evaluations=_evaluations(record),
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
    )
    device = hd.sr.ObserverContext(
        observer_type=codes.cid270.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(), name=model["name"], manufacturer_name=manufacturer, model_name=model["name"]))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=codes.cid100.XRUnspecifiedBodyRegion,
        imaging_measurements=[group],
    )  # no Image Library: its descriptors need attributes (pixel spacing, orientation) a CR often lacks
    return hd.sr.ComprehensiveSR(
        evidence=[source], content=report[0], series_instance_uid=generate_uid(), series_number=SR_SERIES_NUMBER,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer=manufacturer,
        series_description="Bone age (AI, research use)", is_complete=True, is_final=False, is_verified=False,
        coding_schemes=[CodingSchemeIdentificationItem(designator=LOCAL, name="boneage-edge local codes")])


def _measurements(record, algorithm) -> list[hd.sr.Measurement]:
    def measurement(name, value, unit):
        return hd.sr.Measurement(name=name, value=float(value), unit=unit, algorithm_id=algorithm)

    out = [measurement(BONE_AGE, round(record.bone_age_months, 2), MONTHS)]
    low, high, level = (getattr(record, f, None) for f in INTERVAL_FIELDS)
    if low is not None and high is not None:
        out += [measurement(INTERVAL_LOW, round(low, 2), MONTHS), measurement(INTERVAL_HIGH, round(high, 2), MONTHS)]
        if level is not None:
            out.append(measurement(INTERVAL_LEVEL, round(100 * level, 2), PERCENT))
    out.append(measurement(P_MALE, round(record.p_male, 4), NO_UNITS))
    return out


def _evaluations(record) -> list[hd.sr.QualitativeEvaluation]:
    out = [hd.sr.QualitativeEvaluation(SEX_SEEN, SEXES[record.sex])]
    if record.given_sex:
        out.append(hd.sr.QualitativeEvaluation(SEX_GIVEN, SEXES[record.given_sex]))
    return out


def read_sr(sr: Dataset) -> dict:
    """What an SR written by build_sr holds, by meaning: {"Bone age": (value, unit code), ...,
    "Sex as seen in the image": "Male", "Algorithm Name": ..., "Algorithm Version": ..., "source": SOP UID}.
    Used by the tests and by anyone checking what the node sent."""
    found: dict = {}

    def walk(items):
        for item in items:
            name = item.ConceptNameCodeSequence[0].CodeMeaning if "ConceptNameCodeSequence" in item else ""
            if item.ValueType == "NUM":
                mv = item.MeasuredValueSequence[0]
                found[name] = (float(mv.NumericValue), mv.MeasurementUnitsCodeSequence[0].CodeValue)
            elif item.ValueType == "CODE":
                found[name] = item.ConceptCodeSequence[0].CodeMeaning
            elif item.ValueType == "TEXT":
                found[name] = item.TextValue
            elif item.ValueType == "IMAGE" and name == "Source of Measurement":
                found["source"] = item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
            walk(item.get("ContentSequence", []))

    walk(sr.ContentSequence)
    return found
