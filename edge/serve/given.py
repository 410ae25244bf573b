"""What the page's form says about each file's patient, and how it combines with a DICOM file's own tags.

The rule, field by field (sex; chronological age): a value given on the form for that file, else the DICOM
file's own tag, else a value given on the form for the whole batch. So a batch-wide value only fills gaps: it
never overrides a DICOM's own tags (one child's age must not become another's), while a value typed for one
file overrides that file's tags, as the person who typed it meant. A per-file value that cannot be read fails
that file alone, with the reason; a batch-wide one fails the request (edge.serve.web answers 422).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from edge.clinical.patient import (DATE_TAGS, Patient, PatientError, age_between, parse_age, parse_date,
                                   patients_for)

FORM = "given on the form"
BATCH = "given on the form for all files"


@dataclass(frozen=True)
class Given:
    """Form text as typed: sex F/M, age 10y3m / 123m / 10.25y, birth date YYYY-MM-DD; "" where not given."""
    sex: str = ""
    age: str = ""
    birth_date: str = ""


def patients(paths: list[str], per_file: list[Given] | None, batch: Given) -> list[Patient | PatientError]:
    """Each file's Patient by the rule above. A bad batch-wide value raises PatientError (a ValueError)."""
    wide = _patient(batch, None, BATCH)
    out: list[Patient | PatientError] = []
    for path, given in zip(paths, per_file or [Given()] * len(paths)):
        try:
            mine = _patient(given, path, FORM)
        except ValueError as e:
            out.append(PatientError(f"{FORM}: {e}"))
            continue
        own = patients_for([path])[0]  # the DICOM's own tags; Patient() for other files
        if isinstance(own, PatientError):
            if mine.age_months is None and wide.age_months is None:
                out.append(own)  # the age would come from the broken tag: the file fails
                continue
            own = Patient()  # an age given on the form stands in for it
        out.append(mine.over(own).over(wide))
    return out


def _patient(given: Given, path: str | None, source: str) -> Patient:
    from edge.runtime import parse_sex

    sex = parse_sex(given.sex)
    age, age_source = None, ""
    if given.age.strip() and given.birth_date.strip():
        raise PatientError("give the age or the birth date, not both")
    if given.age.strip():
        age, age_source = parse_age(given.age), source
    elif given.birth_date.strip():
        if path is None:
            raise PatientError("a birth date applies to one file: give it for that file")
        age, age_source = _age_from_birth(given.birth_date, path, source)
    return Patient(age, age_source, sex, source if sex else "")


def _age_from_birth(text: str, path: str, source: str) -> tuple[float, str]:
    """Age on the examination date the DICOM states (as edge.clinical.patient reads it), else today."""
    birth = parse_date(text, "birth date")
    tag, on = _exam_date(path)
    what = f"birth date {source} + " + (f"DICOM {tag}" if tag else "today's date")
    return age_between(birth, on or dt.date.today(), what), what


def _exam_date(path: str) -> tuple[str, dt.date | None]:
    from edge.imaging import ImageError, read_dicom_header

    try:
        ds = read_dicom_header(path)
    except (ImageError, OSError):  # not DICOM (a PNG, a JPEG), or unreadable: the decoder says so
        return "", None
    for tag in DATE_TAGS:
        text = str(ds.get(tag, "") or "").strip()
        if text:
            try:
                return tag, parse_date(text, f"DICOM {tag}")
            except PatientError:
                return "", None
    return "", None
