"""What the page's form says about each file's patient, read by the rule every path follows
(edge.clinical.patient.given_patient and resolve: the same as BoneAgeModel's arguments and edge-infer's).

The rule, field by field (sex; chronological age): a value given on the form for that file, else the DICOM
file's own tag, else a value given on the form for the whole batch. So a batch-wide value only fills gaps: it
never overrides a DICOM's own tags (one child's age must not become another's), while a value typed for one
file overrides that file's tags, as the person who typed it meant. A birth date typed for a file counts to the
examination date its DICOM states, else today. A per-file value that cannot be read fails that file alone, with
the reason; a batch-wide one fails the request (edge.serve.web answers 422).
"""
from __future__ import annotations

from dataclasses import dataclass

from edge.clinical.patient import Patient, PatientError, Source, TagError, given_patient, resolve

FORM = Source("given on the form", "given on the form", birth="birth date given on the form + {exam}")
BATCH = Source("given on the form for all files", "given on the form for all files")


@dataclass(frozen=True)
class Given:
    """Form text as typed: sex F/M, age 10y3m / 123m / 10.25y, birth date YYYY-MM-DD; "" where not given."""
    sex: str = ""
    age: str = ""
    birth_date: str = ""


def patients(paths: list[str], per_file: list[Given] | None, batch: Given) -> list[Patient | PatientError]:
    """Each file's Patient by the rule above. A bad batch-wide value raises a ValueError."""
    if batch.birth_date.strip():
        raise PatientError("a birth date applies to one file: give it for that file")
    wide = given_patient(batch.sex, batch.age, source=BATCH)
    out: list[Patient | PatientError] = []
    for path, given in zip(paths, per_file or [Given()] * len(paths)):
        try:
            mine = given_patient(given.sex, given.age, given.birth_date, source=FORM, path=path)
        except TagError as e:  # the file's own date, which the birth date needs: in the file's words
            out.append(e)
            continue
        except ValueError as e:
            out.append(PatientError(f"{FORM.age}: {e}"))
            continue
        out.append(resolve(path, mine, wide))
    return out
