"""A result record (edge.runtime.Prediction) as a DICOM Structured Report on the source image (highdicom).

Content: TID 1500 Measurement Report with one TID 1501 group referencing the source image, holding the bone age
(LOINC 85151-9 "XR Bone age", UCUM mo), P(male), and what the record's clinical context has (prediction interval,
chronological age, delay, SDS, category), the sex as the network sees it and the sex the estimate was read
against, and the algorithm's name and version (TID 4019).
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
MONTHS, NO_UNITS, PERCENT = codes.UCUM.Month, codes.UCUM.NoUnits, codes.UCUM.Percent
# (record field, concept, unit, scale, decimals): a numeric item for each field the record has a value for.
NUMBERS = (
    ("bone_age_months", Code("85151-9", "LN", "Bone age"), MONTHS, 1, 2),
    ("interval_low_months", Code("interval-low", LOCAL, "Bone age prediction interval lower limit"), MONTHS, 1, 2),
    ("interval_high_months", Code("interval-high", LOCAL, "Bone age prediction interval upper limit"), MONTHS, 1, 2),
    ("interval_level", Code("interval-level", LOCAL, "Bone age prediction interval coverage"), PERCENT, 100, 2),
    ("p_male", Code("p-male", LOCAL, "Probability of male sex"), NO_UNITS, 1, 4),
    ("chronological_age_months", Code("30525-0", "LN", "Age"), MONTHS, 1, 2),
    ("delay_months", Code("delay", LOCAL, "Bone age minus chronological age"), MONTHS, 1, 2),
    ("sds", Code("sds", LOCAL, "Bone age standard deviation score (Greulich-Pyle)"), NO_UNITS, 1, 2),
)
SEX_SEEN = Code("sex-seen", LOCAL, "Sex as seen in the image")
SEX_GIVEN = Code("sex-given", LOCAL, "Sex the bone age was read against")
SEXES = {"male": codes.cid7455.Male, "female": codes.cid7455.Female}
CATEGORY = Code("category", LOCAL, "Bone age category")
CATEGORIES = {c: Code(c, LOCAL, c.capitalize()) for c in ("delayed", "within", "advanced")}
SR_SERIES_NUMBER = 990  # a high number keeps the AI result after the acquired series in a PACS viewer


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
    return [hd.sr.Measurement(name=concept, value=round(float(value) * scale, digits), unit=unit,
                              algorithm_id=algorithm)
            for field, concept, unit, scale, digits in NUMBERS if (value := getattr(record, field, None)) is not None]


def _evaluations(record) -> list[hd.sr.QualitativeEvaluation]:
    out = [hd.sr.QualitativeEvaluation(SEX_SEEN, SEXES[record.sex])]
    if record.given_sex:
        out.append(hd.sr.QualitativeEvaluation(SEX_GIVEN, SEXES[record.given_sex]))
    if getattr(record, "category", "") in CATEGORIES:
        out.append(hd.sr.QualitativeEvaluation(CATEGORY, CATEGORIES[record.category]))
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
