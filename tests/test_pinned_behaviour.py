"""Behaviour a review found loosely tested (issue 33, item 7), pinned at its boundary: the months-per-day
constant against the calendar, interval bands chosen by the estimate, the "sex uncertain" boundary on calibrated
probabilities, CSV columns after a resume under an older header, and the rounding of the SDS."""
from __future__ import annotations

import csv
import datetime as dt
import math

import pytest

from edge.clinical import calibration, intervals, reference
from edge.clinical.context import annotate
from edge.clinical.patient import MONTH_DAYS, Patient, age_between
from edge.runtime import Prediction


def _prediction(**kw):
    return Prediction(**{"file": "a.png", "bone_age_months": 150.0, "p_male": 0.97, "sex": "male",
                         "backend": "onnxruntime", "precision": "fp32", "ms": 1.0, **kw})


# ---- months from dates ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("years", [1, 10, 17])
def test_ages_from_dates_average_twelve_months_a_year_over_a_gregorian_cycle(years):
    # Independent of MONTH_DAYS: the calendar itself. Over a whole 400-year cycle of birthdays, the exact N-th
    # birthday is on average N x 365.2425 days later, so age_between must average 12 N months there. A 365.25/12
    # month (Julian) would read 20 ppm short: 0.0025 months at 10 years, caught at 1e-4.
    start = dt.date(2000, 3, 1)
    ages = []
    for k in range(146097):  # days in 400 Gregorian years
        birth = start + dt.timedelta(days=k)
        try:
            exam = birth.replace(year=birth.year + years)
        except ValueError:  # born on 29 February: the birthday is kept on 1 March in common years
            exam = dt.date(birth.year + years, 3, 1)
        ages.append(age_between(birth, exam, "test"))
    assert sum(ages) / len(ages) == pytest.approx(12 * years, abs=1e-4)
    assert 12 * years - 0.05 < min(ages) and max(ages) < 12 * years + 0.05  # any one birthday: within 1.5 days


def test_ages_from_dates_match_calendar_months_to_a_day():
    # Whole calendar months elapsed plus the days into the next, against days / MONTH_DAYS.
    for birth, exam in [(dt.date(2015, 1, 31), dt.date(2025, 7, 15)), (dt.date(2012, 2, 29), dt.date(2013, 2, 28)),
                        (dt.date(2020, 12, 1), dt.date(2021, 1, 1)), (dt.date(2010, 6, 15), dt.date(2010, 6, 15))]:
        whole = (exam.year - birth.year) * 12 + exam.month - birth.month - (exam.day < birth.day)
        assert abs(age_between(birth, exam, "t") - whole) <= 31 / MONTH_DAYS, (birth, exam)
    assert age_between(dt.date(2020, 1, 1), dt.date(2020, 1, 2), "t") == pytest.approx(12 / 365.2425)


# ---- intervals: the estimate's band ----------------------------------------------------------------------------

FITTED = {"variants": {v: {"band_edges_months": [100.0], "bands": [[-5.0, 5.0] * 50, [-20.0, 20.0] * 50]}
                       for v in intervals.VARIANTS}}


def test_the_interval_band_is_the_estimates_at_its_edge():
    assert intervals.interval(FITTED, 99.9, False, 0.9) == pytest.approx((94.9, 104.9))
    assert intervals.interval(FITTED, 100.0, False, 0.9) == (80.0, 120.0)  # an edge starts the upper band


def test_coverage_groups_by_the_estimate_and_by_truth_only_when_asked():
    # One reading estimated at 90 (band 0: +-5) whose truth is 130 (band 1's ages): it is a miss of band 0, and
    # band 1's intervals (+-20, which would have covered it from 110) are not used for it.
    c = intervals.coverage(FITTED, [90.0, 150.0], [130.0, 150.0], False, 0.9)
    assert c["bands"] == {"0-100 mo": {"n": 1, "coverage": 0.0, "mean_width": 10.0},
                          ">= 100 mo": {"n": 1, "coverage": 1.0, "mean_width": 40.0}}
    by_truth = intervals.coverage(FITTED, [90.0, 150.0], [130.0, 150.0], False, 0.9, by_truth=True)
    assert by_truth["bands"] == {">= 100 mo": {"n": 2, "coverage": 0.5, "mean_width": 25.0}}
    assert annotate(_prediction(bone_age_months=90.0), None, {"intervals": FITTED}).interval_high_months == 95.0


# ---- "sex uncertain" ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("a, b", [(1.0, 0.0), (2.0, 0.5), (0.6, -0.3)])
def test_sex_uncertain_flips_exactly_at_the_calibrated_boundary(a, b):
    cal = {"a": a, "b": b, "uncertain_below": calibration.UNCERTAIN_BELOW}
    for target in (calibration.UNCERTAIN_BELOW, 1 - calibration.UNCERTAIN_BELOW):  # boy side and girl side
        p = float(calibration.sigmoid((math.log(target / (1 - target)) - b) / a))  # raw P giving that calibrated P
        for eps, uncertain in ((-1e-4, target > 0.5), (1e-4, target < 0.5)):
            got = annotate(_prediction(p_male=p + eps), None, {"sex_calibration": cal})
            assert got.sex_uncertain is uncertain, (a, b, target, eps, got.p_male_calibrated)
            assert abs(got.p_male_calibrated - target) < 1e-3


# ---- CSV resumed under an older header -------------------------------------------------------------------------

def test_a_csv_resumed_under_an_older_header_keeps_its_columns(tmp_path):
    from edge.output import columns, csv_cell, open_sink, record

    info = {"model": "m", "model_version": "1"}
    old = [c for c in columns() if not c.startswith(("interval", "p_male_cal", "sds", "delay", "category"))]
    old = old[:3] + old[3:][::-1]  # another order too: columns are matched by name, never by position
    first = record(_prediction(file="a.png"), info)
    path = tmp_path / "results.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([old, [csv_cell(first.get(c)) for c in old]])
    sink = open_sink("csv", str(path), info, resume=True)
    new = record(_prediction(file="b.png", bone_age_months=99.25, p_male=0.1234, sds=-1.5, interval_low_months=80.0),
                 info)
    sink.write(record(_prediction(file="a.png"), info))  # already there: skipped
    sink.write(new)
    sink.close()
    rows = list(csv.reader(open(path, newline="")))
    assert rows[0] == old and len(rows) == 3 and all(len(r) == len(old) for r in rows)
    got = dict(zip(old, rows[2]))
    assert got["file"] == "b.png" and got["bone_age_months"] == "99.2" and got["p_male"] == "0.123"
    assert got["model"] == "m" and "sds" not in got and "interval_low_months" not in got
    assert sink.missing and "sds" in sink.missing  # what the older header cannot hold is known


# ---- SDS rounding ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("delay_sd, sds, category", [(-2.004, -2.0, "within"), (-2.006, -2.01, "delayed"),
                                                    (2.0049, 2.0, "within"), (2.0051, 2.01, "advanced"),
                                                    (-1.234567, -1.23, "within")])
def test_sds_is_rounded_once_and_the_category_reads_the_shown_value(delay_sd, sds, category):
    from edge.output import record

    sd = reference.sd_at(120, "male")
    ctx = reference.assess(120 + delay_sd * sd, 120, "male")
    assert (ctx.sds, ctx.category) == (sds, category)
    pred = annotate(_prediction(bone_age_months=120 + delay_sd * sd, given_sex="male"), Patient(120.0, "--age"), None)
    assert record(pred, {})["sds"] == sds and f"{pred.sds:+.2f}" == f"{sds:+.2f}" and pred.category == category


def test_annotating_again_keeps_nothing_of_the_first_annotation():
    # BoneAgeModel.predict annotates at 90%; in_context at a level the band cannot give must not keep the 90% one.
    few = {"intervals": {"variants": {v: {"band_edges_months": [], "bands": [[-5.0, 5.0] * 10]}
                                      for v in intervals.VARIANTS}}}
    first = annotate(_prediction(), Patient(120.0, "--age"), few, 0.9)
    assert first.interval_level == 0.9 and first.sds is not None
    again = annotate(first, None, few, 0.99)
    assert (again.interval_low_months, again.interval_high_months, again.interval_level) == (None, None, None)
    assert again.chronological_age_months is None and again.sds is None and again.category == ""
    assert "too few calibration images" in again.context_note and again.age_source == ""


@pytest.mark.parametrize("sds, category, shown", [(-2.01, "delayed", "SDS -2.01 (delayed)"),
                                                  (-2.00, "within", "SDS -2.00 (within)")])
def test_the_sr_summary_shows_the_sds_as_the_record_rounds_it(sds, category, shown):
    """At the -2 boundary the SR's text must show the value the category was read from (one decimal said
    "-2.0 (delayed)" for -2.01)."""
    pytest.importorskip("highdicom")  # edge.serve.sr needs the serve extra
    from edge.serve.sr import summary

    assert shown in summary(_prediction(sds=sds, category=category))
