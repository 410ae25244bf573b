"""Bone age against chronological age: delay, SDS and category by Greulich and Pyle's reference spread.

The reference: the standard deviations of skeletal age at each chronological age and sex in the Brush
Foundation study (Cleveland, Ohio; white children of the 1930s), as tabulated in
    Greulich WW, Pyle SI. Radiographic Atlas of Skeletal Development of the Hand and Wrist, 2nd ed.
    Stanford (CA): Stanford University Press; 1959 (the table of mean skeletal ages and their standard
    deviations for the Brush Foundation series, boys 3 months-17 years, girls 3 months-16 years).
The RSNA labels this model learnt are Greulich-Pyle readings, so this is the matching reference.
Provenance of the numbers below: the atlas itself could not be consulted where this was written; they were
transcribed from a secondary source (a public source file that tabulates the atlas's Brush Foundation
means and SDs) and must be checked against the atlas's printed table before clinical use. docs/CLINICAL.md
repeats the table.

SDS = (bone age - chronological age) / SD(chronological age, sex), the SD interpolated linearly between the
tabulated ages. Outside the tabulated ages there is no SDS, and the result says so.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CITATION = ("Greulich WW, Pyle SI. Radiographic Atlas of Skeletal Development of the Hand and Wrist, 2nd ed. "
            "Stanford University Press, 1959: standard deviations of skeletal age, Brush Foundation study "
            "(transcribed from a secondary source; see docs/CLINICAL.md)")

# Chronological age (months) -> SD of skeletal age (months).
_AGES = [3, 6, 9, 12, 18, 24, 30, 36, 42, 48, 54, 60, 72, 84, 96, 108, 120, 132, 144, 156, 168, 180, 192, 204]
SD_MONTHS = {
    "male": dict(zip(_AGES, [0.69, 1.13, 1.43, 1.97, 3.52, 3.92, 4.52, 5.08, 5.40, 6.66, 8.36, 8.79, 9.17, 8.91,
                             9.10, 9.00, 9.79, 10.09, 10.38, 10.44, 10.72, 11.32, 12.86, 13.05])),
    "female": dict(zip(_AGES[:-1], [0.72, 1.16, 1.36, 1.77, 3.49, 4.64, 5.37, 5.97, 7.48, 8.98, 10.73, 11.65,
                                    10.23, 9.64, 10.23, 10.74, 11.73, 11.94, 10.24, 10.67, 11.30, 9.23, 7.31])),
}
LIMIT_SDS = 2.0  # delayed below -2 SD, advanced above +2 SD
# The SDS every output shows (table, JSON, CSV, report, SR) and the category is read from: one rounding, so a
# report never says "-2.00, delayed" (an unrounded -2.004 is below -2; the -2.00 shown is not).
SDS_DECIMALS = 2


@dataclass(frozen=True)
class Context:
    delay_months: float | None  # bone age - chronological age
    sds: float | None
    category: str  # "delayed" / "within" / "advanced" / "" (no SDS)
    note: str = ""  # why there is no SDS, said plainly


def covered(sex: str) -> tuple[float, float]:
    ages = list(SD_MONTHS[sex])
    return float(ages[0]), float(ages[-1])


def sd_at(age_months: float, sex: str) -> float | None:
    """The reference SD at this chronological age, or None outside the tabulated ages."""
    table = SD_MONTHS.get(sex)
    if table is None:
        return None
    lo, hi = covered(sex)
    if not lo <= age_months <= hi:
        return None
    return float(np.interp(age_months, list(table), list(table.values())))


def assess(bone_age_months: float, age_months: float | None, sex: str) -> Context:
    """Delay, SDS and category of one estimate; sex: the patient's sex ("female"/"male"), given or as seen."""
    if age_months is None:
        return Context(None, None, "", "no chronological age given: no delay or SDS")
    delay = float(bone_age_months - age_months)
    if sex not in SD_MONTHS:
        return Context(delay, None, "", "sex unknown: the reference is sex-specific, no SDS")
    sd = sd_at(age_months, sex)
    if sd is None:
        lo, hi = covered(sex)
        return Context(delay, None, "", f"the Greulich-Pyle reference covers {sex}s aged {_years(lo)} to "
                                        f"{_years(hi)} only: no SDS at {_years(age_months)}")
    sds = round(delay / sd, SDS_DECIMALS)
    category = "delayed" if sds < -LIMIT_SDS else "advanced" if sds > LIMIT_SDS else "within"
    return Context(delay, sds, category)


def band(sex: str, limit: float = LIMIT_SDS) -> list[tuple[float, float, float]]:
    """[(chronological age, low, high)] months of the reference's +-limit SD band, for the chart."""
    return [(float(a), a - limit * sd, a + limit * sd) for a, sd in SD_MONTHS[sex].items()]


def _years(months: float) -> str:
    y, m = divmod(int(round(months)), 12)
    return f"{y}y{m}m" if y and m else f"{y}y" if y else f"{m}m"
