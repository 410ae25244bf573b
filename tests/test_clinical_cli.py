"""edge-infer in clinical context, end to end on the shipped bundle: generated DICOM files carry the age and sex,
a patients CSV and --age override them, a bad date fails that file only, --heatmap and --report write files."""
from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
from PIL import Image

from edge.cli.infer import main
from edge.runtime import default_bundle_path
from imaging_fixtures import write_dicom

SAMPLE = sorted((default_bundle_path() / "samples").glob("*.png"))[0]
MODEL = ["--backend", "onnxruntime", "--precision", "fp32", "--no-progress"]


def radiograph_dicom(path, **tags):
    """The bundled sample radiograph as a 12-bit CR DICOM with the given tags."""
    a = np.asarray(Image.open(SAMPLE).convert("L"), float)
    write_dicom(path, (a / a.max() * 4095).astype(np.uint16))
    ds = pydicom.dcmread(path)
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.save_as(path, enforce_file_format=True)
    return str(path)


def run_json(capsys, *args) -> tuple[int, list[dict]]:
    code = main([*args, *MODEL, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_dicom_tags_give_age_and_sex_and_a_bad_date_fails_alone(tmp_path, capsys):
    good = radiograph_dicom(tmp_path / "good.dcm", PatientBirthDate="20100115", StudyDate="20230415",
                            PatientSex="F")
    age_only = radiograph_dicom(tmp_path / "age.dcm", PatientAge="011Y")
    bad = radiograph_dicom(tmp_path / "bad.dcm", PatientBirthDate="20101515", StudyDate="20230415")
    code, rows = run_json(capsys, good, age_only, bad)
    assert code == 1  # one input failed, the others were processed
    by = {r["file"]: r for r in rows}
    g = by[good]
    assert (g["given_sex"], g["given_sex_source"]) == ("female", "DICOM PatientSex")
    assert g["age_source"] == "DICOM PatientBirthDate + StudyDate"
    assert g["chronological_age_months"] == pytest.approx(159.0, abs=0.1)  # 13 y 3 m
    assert g["delay_months"] == pytest.approx(g["bone_age_months"] - g["chronological_age_months"], abs=0.11)
    assert g["sds"] is not None and g["category"] in ("delayed", "within", "advanced")
    assert g["interval_low_months"] < g["bone_age_months"] < g["interval_high_months"]
    assert g["interval_level"] == 0.9
    assert (by[age_only]["chronological_age_months"], by[age_only]["given_sex"]) == (132, "")
    assert "PatientBirthDate is not a valid DICOM date (YYYYMMDD)" in by[bad]["error"]
    assert "20101515" not in by[bad]["error"]  # patient data: never quoted in a message


def test_user_age_and_sex_win_and_interval_level(tmp_path, capsys):
    dcm = radiograph_dicom(tmp_path / "a.dcm", PatientAge="011Y", PatientSex="F")
    _, narrow = run_json(capsys, dcm, "--age", "12y6m", "--sex", "M", "--interval-level", "0.8")
    _, wide = run_json(capsys, dcm, "--age", "12y6m", "--sex", "M", "--interval-level", "0.95")
    r = narrow[0]
    assert (r["given_sex"], r["given_sex_source"], r["chronological_age_months"], r["age_source"]) == \
        ("male", "--sex", 150, "--age")
    assert r["interval_level"] == 0.8 and wide[0]["interval_level"] == 0.95
    assert (r["interval_high_months"] - r["interval_low_months"]
            < wide[0]["interval_high_months"] - wide[0]["interval_low_months"])


def test_patients_csv(tmp_path, capsys):
    png = tmp_path / "hand.png"
    png.write_bytes(SAMPLE.read_bytes())
    other = tmp_path / "other.png"
    other.write_bytes(SAMPLE.read_bytes())
    csv = tmp_path / "patients.csv"
    csv.write_text("file,sex,birth_date,study_date\nhand.png,M,2012-03-01,2024-09-01\nother.png,M,2025-01-01,"
                   "2024-09-01\n")
    code, rows = run_json(capsys, str(png), str(other), "--patients", str(csv))
    assert code == 1
    assert rows[0]["age_source"] == "patients.csv line 2" and rows[0]["given_sex_source"] == "patients.csv line 2"
    assert "line 3" in rows[1]["error"] and "before the birth date" in rows[1]["error"]


def test_bad_age_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main([str(SAMPLE), "--age", "12"])
    assert e.value.code == 2 and "10y3m, 123m or 10.25y" in capsys.readouterr().err


def test_heatmap_and_report_files(tmp_path, capsys):
    code = main([str(SAMPLE), *MODEL, "--age", "10y", "--heatmap", str(tmp_path / "hm"),
                 "--report", str(tmp_path / "rep")])
    out = capsys.readouterr().out
    assert code == 0 and "interval" in out and "age 10y 0m (--age)" in out  # the table's clinical line
    png = tmp_path / "hm" / f"{SAMPLE.stem}.heatmap.png"
    assert Image.open(png).mode == "RGB"
    page = (tmp_path / "rep" / f"{SAMPLE.stem}.report.html").read_text()
    assert "For research use only" in page and page.count("data:image/png;base64,") == 2


def test_same_file_name_in_two_folders_gets_two_reports(tmp_path, capsys):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "hand.png").write_bytes(SAMPLE.read_bytes())
    code = main([str(tmp_path / "a" / "hand.png"), str(tmp_path / "b" / "hand.png"), *MODEL,
                 "--report", str(tmp_path / "rep")])
    capsys.readouterr()
    pages = sorted(p.name for p in (tmp_path / "rep").iterdir())
    assert code == 0 and len(pages) == 2 and "hand.report.html" in pages
