"""A result record (edge.runtime.Prediction) as a DICOM Structured Report on the source image (highdicom).

Content: TID 1500 Measurement Report with one TID 1501 group referencing the source image, holding the bone age
(LOINC 85151-9 "XR Bone age", UCUM mo), P(male), and what the record's clinical context has (prediction interval,
chronological age, delay, SDS, category), the sex as the network sees it and the sex the estimate was read
against, the algorithm's name and version (TID 4019), the record's warnings (given sex against the image, an
uncertain sex call, what the input check corrected) as TEXT items, and a one-paragraph summary (DCM Summary).
Quantities without a standard code use this project's local coding scheme (LOCAL, declared in the SR's Coding
Scheme Identification Sequence). The SR is a Comprehensive SR in the source image's study, for its patient.
A source may lack the Type 2 patient and study attributes the SR must carry: they are written empty (SOURCE_TYPE2).
"""
from __future__ import annotations

import highdicom as hd
from highdicom.sr.enum import RelationshipTypeValues
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from edge.clinical.report import years_months

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
WARNING = Code("warning", LOCAL, "Warning")
SUMMARY = codes.DCM.Summary
# The SR's Patient and General Study attributes highdicom copies from the source: Type 2, so empty where the
# source lacks them. The stored image is never changed: the SR is built from a copy.
SOURCE_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                "AccessionNumber", "StudyID", "ReferringPhysicianName")
SR_SERIES_NUMBER = 990  # a high number keeps the AI result after the acquired series in a PACS viewer


def build_sr(record, source: Dataset, model: dict, manufacturer: str = "boneage-edge") -> hd.sr.ComprehensiveSR:
    """record: a Prediction (not a Failure); source: the image it was read from (its patient and study are the
    SR's); model: {"name", "version"} from bundle.json."""
    source = _completed(source)
    algorithm = hd.sr.AlgorithmIdentification(name=model["name"], version=model["version"] or "unknown")
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="Bone age"),
        algorithm_id=algorithm,
        finding_sites=[hd.sr.FindingSite(codes.SCT.Hand)],
        measurements=_measurements(record, algorithm),
        qualitative_evaluations=_evaluations(record),
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
    )
    group[0].ContentSequence.extend(_texts(record))  # highdicom's group takes coded evaluations only
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


def _completed(source: Dataset) -> Dataset:
    """A shallow copy of source with what the SR needs from it: absent Type 2 attributes empty, and a Study or
    Series Instance UID the source lacks (Type 1, yet seen) made up from its SOP Instance UID, the same each time."""
    ds = Dataset()
    ds.update(source)  # its own element dictionary (Dataset(source) and copy.copy share the source's)
    for keyword in SOURCE_TYPE2:
        if keyword not in ds:
            setattr(ds, keyword, "")
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
        if not ds.get(keyword):
            setattr(ds, keyword, generate_uid(entropy_srcs=[str(ds.SOPInstanceUID), keyword]))
    return ds


def _texts(record) -> list[hd.sr.TextContentItem]:
    """The warnings, then the summary, as TEXT items of the measurement group (CONTAINS)."""
    texts = [(WARNING, w) for w in warnings(record)] + [(SUMMARY, summary(record))]
    return [hd.sr.TextContentItem(name=name, value=text, relationship_type=RelationshipTypeValues.CONTAINS)
            for name, text in texts]


def warnings(record) -> list[str]:
    """What a reader must see before trusting the number: the image read against the given sex, an uncertain
    sex call, the input check's corrections."""
    out = [record.warning] if record.warning else []
    if getattr(record, "sex_uncertain", False):
        out.append(f"the sex the image reads as is uncertain (P(male) {record.p_male:.2f})")
    if getattr(record, "corrections", ""):
        out.append(f"the image was corrected before the estimate: {record.corrections}")
    return out


def summary(record) -> str:
    """The result in one paragraph, for a PACS viewer that shows an SR as text."""
    parts = [f"Bone age {years_months(record.bone_age_months)} ({record.bone_age_months:.0f} mo)"]
    if record.interval_low_months is not None:
        parts[0] += (f", {record.interval_level:.0%} interval {record.interval_low_months:.0f}-"
                     f"{record.interval_high_months:.0f} mo")
    parts.append(f"read against sex {record.given_sex}" if record.given_sex else "sex not given: sex-blind estimate")
    if record.chronological_age_months is not None:
        parts.append(f"chronological age {years_months(record.chronological_age_months)}")
    if record.delay_months is not None:
        parts.append(f"bone age minus chronological age {record.delay_months:+.0f} mo")
    if record.sds is not None:
        parts.append(f"SDS {record.sds:+.2f} ({record.category})")  # the record's rounding, which the category reads
    parts.append(f"the image reads as {record.sex} (P(male) {record.p_male:.2f})")
    return "; ".join(parts) + ". Research use only: a qualified reader must review the radiograph."


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
    "Sex as seen in the image": "Male", "Warning": [text, ...], "Summary": text, "Algorithm Name": ...,
    "Algorithm Version": ..., "source": SOP UID}.
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
            elif item.ValueType == "TEXT" and name == WARNING.meaning:
                found.setdefault(name, []).append(item.TextValue)
            elif item.ValueType == "TEXT":
                found[name] = item.TextValue
            elif item.ValueType == "IMAGE" and name == "Source of Measurement":
                found["source"] = item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
            walk(item.get("ContentSequence", []))

    walk(sr.ContentSequence)
    return found
