"""Who the radiograph belongs to, as far as the estimate needs: chronological age and the given sex.

Sources, most explicit first: the command line (--age, --sex), a patients CSV (columns file, sex, and age or
birth_date + study_date), then the DICOM file's own tags (PatientBirthDate with StudyDate, else
AcquisitionDate, else ContentDate; else PatientAge such as 010Y or 126M; PatientSex). A value that cannot be
parsed, or an age outside 0-20 years, is a PatientError: a one-line message for that file, the batch goes on.
"""
from __future__ import annotations

import csv
import datetime as dt
import numbers
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

MONTH_DAYS = 365.2425 / 12  # mean Gregorian month: ages from dates are in fractional months
MAX_AGE_MONTHS = 240.0  # 20 years: beyond it a hand radiograph has no bone age
DATE_TAGS = ("StudyDate", "AcquisitionDate", "ContentDate")
DICOM_SEX = "DICOM PatientSex"  # the sex_source of a sex read from the file's own tag


class PatientError(ValueError):
    """Unusable patient information; str() is the one-line message."""


class TagError(PatientError):
    """A DICOM file's own tag that a given value needs cannot be used: the file's failure, not the caller's."""


@dataclass(frozen=True)
class Patient:
    age_months: float | None = None
    age_source: str = ""  # e.g. "DICOM PatientBirthDate + StudyDate", "--age", "patients.csv line 3"
    sex: str = ""  # "female" / "male" / "" (not given)
    sex_source: str = ""  # "--sex", "patients.csv line 3", "DICOM PatientSex"

    def over(self, other: "Patient") -> "Patient":
        """This patient's values, with `other`'s where this one has none."""
        age = (self.age_months, self.age_source) if self.age_months is not None else (other.age_months, other.age_source)
        sex = (self.sex, self.sex_source) if self.sex else (other.sex, other.sex_source)
        return Patient(age[0], age[1], sex[0], sex[1])


def check_age(months: float, what: str) -> float:
    if not 0.0 <= months <= MAX_AGE_MONTHS:
        raise PatientError(f"{what} gives an age of {months / 12:.1f} years, outside 0-20 years")
    return float(months)


_AGE_TEXT = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*y)?\s*(?:(\d+(?:\.\d+)?)\s*m)?\s*$", re.I)


def parse_age(text: str) -> float:
    """'10y3m', '10y 3m', '123m', '10.25y', '10y' -> months. A bare number is refused: years or months?"""
    m = _AGE_TEXT.match(str(text))
    if not m or (m.group(1) is None and m.group(2) is None):
        raise PatientError(f"age {text!r}: write it as 10y3m, 123m or 10.25y")
    months = float(m.group(1) or 0) * 12 + float(m.group(2) or 0)
    return check_age(months, f"age {text!r}")


def parse_date(text: str, what: str) -> dt.date:
    """DICOM DA (YYYYMMDD, or the old YYYY.MM.DD) or ISO YYYY-MM-DD. what: the tag or field, named in the error
    (which never quotes the value)."""
    s = str(text).strip()
    for fmt in ("%Y%m%d", "%Y-%m-%d", "%Y.%m.%d"):
        try:
            return dt.datetime.strptime(s, fmt).date()
        except ValueError:
            continue
    # The value is not quoted: a birth or study date is the patient's, and this message can reach a log.
    if what.startswith("DICOM "):
        raise PatientError(f"{what} is not a valid DICOM date (YYYYMMDD)")
    raise PatientError(f"{what} is not a valid date (YYYY-MM-DD or YYYYMMDD)")


def age_between(birth: dt.date, on: dt.date, what: str) -> float:
    if on < birth:
        raise PatientError(f"{what}: the examination date is before the birth date")
    return check_age((on - birth).days / MONTH_DAYS, what)


_AS = re.compile(r"^(\d{3})([DWMY])$")
_AS_MONTHS = {"D": 1 / MONTH_DAYS, "W": 7 / MONTH_DAYS, "M": 1.0, "Y": 12.0}


def parse_dicom_age(text: str) -> float:
    """DICOM AS value ('010Y', '126M', '020W', '100D') -> months."""
    m = _AS.match(str(text).strip().upper())
    if not m:
        raise PatientError("DICOM PatientAge is not a valid DICOM age (nnnD, nnnW, nnnM or nnnY)")
    return check_age(int(m.group(1)) * _AS_MONTHS[m.group(2)], "DICOM PatientAge")


def from_dicom(path) -> Patient:
    """Age and sex from a DICOM file's tags (no pixels read). A file that is not DICOM gives Patient()."""
    from edge.imaging import ImageError, read_dicom_header

    try:
        ds = read_dicom_header(path)  # bounded for deflated files; any damage is an ImageError
    except (ImageError, OSError):
        return Patient()  # the image decoder reports an unreadable file in its own words
    sex = {"F": "female", "M": "male"}.get(str(ds.get("PatientSex", "") or "").strip().upper(), "")
    age, source = None, ""
    birth = str(ds.get("PatientBirthDate", "") or "").strip()
    exam_tag = _exam_tag(ds)
    if birth and exam_tag:
        what = f"DICOM PatientBirthDate + {exam_tag}"
        age = age_between(parse_date(birth, "DICOM PatientBirthDate"), _exam_date(ds, exam_tag), what)
        source = what
    elif str(ds.get("PatientAge", "") or "").strip():
        age, source = parse_dicom_age(str(ds.get("PatientAge"))), "DICOM PatientAge"
    return Patient(age, source, sex, DICOM_SEX if sex else "")


def _exam_tag(ds) -> str | None:
    """The tag of a DICOM dataset's examination date: the first of DATE_TAGS it fills, None when none."""
    return next((t for t in DATE_TAGS if str(ds.get(t, "") or "").strip()), None)


def _exam_date(ds, tag: str) -> dt.date:
    return parse_date(str(ds.get(tag)), f"DICOM {tag}")


class Source(NamedTuple):
    """How given values are labelled in a record (age_source, given_sex_source): an age, a sex, an age from a
    birth date and a study date, an age from a birth date alone ("{exam}": the date it was counted to)."""
    age: str
    sex: str
    dates: str = ""
    birth: str = ""

    @classmethod
    def same(cls, label: str) -> "Source":
        return cls(label, label, label, label)


ARGUMENTS = Source("age argument", "sex argument", "birth_date + study_date arguments", "birth_date argument + {exam}")


def given_patient(sex=None, age=None, birth_date=None, study_date=None, source: Source = ARGUMENTS,
                  path=None) -> Patient:
    """The one reading of what a caller gives about a patient, on every path (BoneAgeModel's arguments, edge-infer's
    --age/--sex and patients CSV, the page's form): sex F/M; an age as text (10y3m, 123m, 10.25y) or a number of
    months; or a birth date (date, YYYY-MM-DD or YYYYMMDD) with the study date, else counted to the examination date
    the DICOM file at `path` states (as from_dicom reads it), else to today for a file that is not DICOM or states
    none. A value that cannot be used is a ValueError (a PatientError, but for the sex: edge.runtime.parse_sex's);
    a TagError when the file's own examination date, needed for a birth date, is not a date."""
    from edge.runtime import parse_sex

    sex = parse_sex(sex)
    months, age_source = None, ""
    has_age = age is not None and str(age).strip() != ""
    if has_age and (birth_date or study_date):
        raise PatientError("give the age or the birth date, not both")
    if isinstance(age, numbers.Real) and not isinstance(age, bool):  # months (numpy numbers too)
        months, age_source = check_age(float(age), f"age {age} months"), source.age
    elif has_age:
        months, age_source = parse_age(str(age)), source.age
    elif birth_date or study_date:
        if not birth_date or not (study_date or path is not None):
            raise PatientError("give both birth_date and study_date (or the age)")
        birth = _as_date(birth_date, "birth_date")
        if study_date:
            on, what, age_source = _as_date(study_date, "study_date"), "birth_date + study_date", source.dates
        else:
            tag, on = _exam_of(path)
            exam = f"DICOM {tag}" if tag else "today's date"
            what, age_source = f"birth_date + {exam}", source.birth.format(exam=exam)
        months = age_between(birth, on, what)
    return Patient(months, age_source, sex, source.sex if sex else "")


def _as_date(value, what: str) -> dt.date:
    return value if isinstance(value, dt.date) else parse_date(str(value), what)


def _exam_of(path) -> tuple[str, dt.date]:
    """(tag, date) of a DICOM file's examination date; ("", today) for a file that is not DICOM or states none.
    A date tag that is not a date is a PatientError, as from_dicom has it."""
    from edge.imaging import ImageError, read_dicom_header

    try:
        ds = read_dicom_header(path) if _looks_dicom(path) else None
    except (ImageError, OSError):  # unreadable: the decoder says so
        ds = None
    tag = _exam_tag(ds) if ds is not None else None
    try:
        return (tag, _exam_date(ds, tag)) if tag else ("", dt.date.today())
    except PatientError as e:
        raise TagError(str(e)) from None


def resolve(source, given: Patient = Patient(), fill: Patient = Patient()) -> Patient | PatientError:
    """The one rule for whose values count, on every path (edge-infer, BoneAgeModel.predict_many, the page and
    its API, the DICOM node): what was given for this input, over the DICOM file's own tags (from_dicom; none
    for an array or a file that is not DICOM), over `fill` (values meant for a whole batch that must not override
    a file's own tags: the page's batch-wide fields). A tag that cannot be read fails the input (its PatientError
    is returned) only when the age would come from it."""
    try:
        own = from_dicom(source) if _looks_dicom(source) else Patient()
    except PatientError as e:
        if given.age_months is None and fill.age_months is None:
            return e
        own = Patient()  # a given age stands in for the broken tag
    return given.over(own).over(fill)


def read_patients(path) -> dict[str, Patient | PatientError]:
    """A patients CSV -> {file as written: Patient, or the PatientError of an unusable row naming its line}.
    Columns: file, and any of sex (F/M, empty: not known), age (10y3m / 123m / 10.25y), birth_date +
    study_date (YYYY-MM-DD or YYYYMMDD). Only a CSV without a file column and one of those is an error for
    the whole batch."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        col = {c.strip().lower(): c for c in reader.fieldnames or []}
        if "file" not in col or not ({"sex", "age"} & set(col) or {"birth_date", "study_date"} <= set(col)):
            raise ValueError(f"{path}: needs a header with columns file and sex, age, or birth_date and study_date;"
                             f" found {reader.fieldnames}")
        table: dict[str, Patient | PatientError] = {}
        for row in reader:
            where = f"{Path(path).name} line {reader.line_num}"
            name = (row[col["file"]] or "").strip()
            try:
                patient = _row_patient(row, col, where)
            except ValueError as e:
                patient = PatientError(f"{path}, line {reader.line_num}: {e}")
            if name in table and table[name] != patient:
                patient = PatientError(f"{path}, line {reader.line_num}: {name} is listed twice, differently")
            table[name] = patient
    return table


def _row_patient(row, col, where) -> Patient:
    cell = lambda c: (row.get(col[c]) or "").strip() if c in col else ""  # noqa: E731
    dates = ("", "") if cell("age") else (cell("birth_date"), cell("study_date"))  # an age wins over dates
    return given_patient(cell("sex"), cell("age"), *dates, source=Source.same(where))


def lookup(files: list[str], table: dict) -> list:
    """Each file's entry in a table keyed as written in a CSV: by the path as given, else by file name;
    None when not listed. A file name that two inputs share, listed by name alone, is ambiguous: a
    PatientError for both."""
    names = [Path(f).name for f in files]
    out = []
    for f, name in zip(files, names):
        if f in table:
            out.append(table[f])
        elif name in table:
            out.append(PatientError(f"{name}: more than one input has this file name; give its path in the CSV")
                       if names.count(name) > 1 else table[name])
        else:
            out.append(None)
    return out


def patients_for(files: list[str], age: str | None = None, sex: str = "", csv_path=None,
                 read_dicom: bool = True) -> list[Patient | PatientError]:
    """Each file's Patient (resolve): --age/--sex over the CSV's row over the DICOM file's own tags."""
    given = given_patient(sex, age, source=Source("--age", "--sex"))
    rows = lookup(files, read_patients(csv_path)) if csv_path else [None] * len(files)
    out: list[Patient | PatientError] = []
    for f, row in zip(files, rows):
        if isinstance(row, PatientError):
            out.append(row)
            continue
        mine = given.over(row or Patient())
        out.append(resolve(f, mine) if read_dicom else mine)
    return out


def _looks_dicom(path) -> bool:
    from edge.imaging import _is_dicom

    if not isinstance(path, (str, os.PathLike)):  # an array: no tags
        return False
    p = Path(path)
    return p.is_file() and p.stat().st_size > 0 and _is_dicom(p)


__all__ = ["Patient", "PatientError", "TagError", "Source", "parse_age", "parse_dicom_age", "from_dicom", "given_patient",
           "resolve", "read_patients", "patients_for", "lookup"]
