"""The per-patient HTML report (edge.clinical.report): every item the issue lists, self-contained, and rendered
by a real headless Chromium (Debian's `chromium`) to one printed page."""
from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from edge.bundle import load_bundle
from edge.clinical import report
from edge.clinical.context import annotate
from edge.clinical.patient import Patient
from edge.runtime import Prediction, default_bundle_path
from dicom_fixtures import radiograph_dataset, write


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(default_bundle_path())


SAMPLE = sorted((default_bundle_path() / "samples").glob("*.png"))[0]
PEOPLE = {"Name": "Doe, Jane", "Patient ID": "P-0042", "Birth date": "2014-01-02", "Study date": "2026-01-15",
          "Accession number": "ACC1"}
MADE = dt.datetime(2026, 12, 7, 9, 30)


def _page(bundle, patient=Patient(150, "DICOM PatientBirthDate + StudyDate", "male", "DICOM PatientSex"),
          people=PEOPLE, **kw):
    pred = Prediction(**{"file": "/srv/clinic/Doe_Jane/hand-01.dcm", "bone_age_months": 180.0, "p_male": 0.95,
                         "sex": "male", "backend": "openvino", "precision": "int8", "ms": 4.0, "given_sex": "male",
                         **kw})
    pred = annotate(pred, patient, bundle.meta.get("clinical"))
    image = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (80, 1))
    heat = Image.fromarray((np.random.default_rng(0).random((80, 64, 3)) * 255).astype(np.uint8))
    return pred, report.render(pred, bundle, image, heat, patient=people, made=MADE)


def test_report_holds_every_item(bundle):
    pred, page = _page(bundle)
    assert pred.sds is not None and pred.interval_low_months is not None
    for text in ["180 months (15 y 0 m)", f"{pred.interval_low_months:.0f}-{pred.interval_high_months:.0f} months",
                 "150.0 months (12 y 6 m), from the DICOM (PatientBirthDate + StudyDate)",
                 f"{pred.delay_months:+.1f} months", f"{pred.sds:+.2f}", pred.category,
                 "male, from the DICOM (PatientSex)", "P(male) 0.95", "report made 2026-12-07 09:30",
                 *(f"<th>{k}</th><td>{v}</td>" for k, v in PEOPLE.items()),
                 bundle.meta["model"]["name"], f"version {bundle.meta['model']['version']}", "mean absolute error",
                 "coverage", "For research use only", "Greulich WW, Pyle SI"]:
        assert text in page, text
    assert page.count("data:image/png;base64,") == 2  # the radiograph and its heatmap, inline
    assert "<polygon" in page and "<circle" in page  # the +-2 SD band and this patient on the chart


def test_report_names_no_path_and_no_command(bundle):
    """The reader sees the file's name, and where each value came from in plain words, never a folder path
    (which can name the patient), a command-line option or a document of this project."""
    _, page = _page(bundle, patient=Patient(150, "--age", "male", "--sex"),
                    context_note="no interval: the bundle has no clinical calibration (run python -m export.calibrate)")
    assert "hand-01.dcm" in page and "/srv/clinic" not in page and "Doe_Jane" not in page
    assert "given by the user" in page
    assert not re.search(r"--\w|docs/|\.md\b|python -m", page), re.search(r".{30}(--\w|docs/|\.md\b|python -m).{30}",
                                                                       page).group(0)


def test_report_patient_from_a_dicom(bundle, tmp_path):
    """identity() reads the DICOM's own tags; absent tags say so, a PNG says it names no patient."""
    ds = radiograph_dataset(SAMPLE, "DX", patient_id="P-0042", patient_name="Doe^Jane")
    people = report.identity(write(ds, tmp_path / "hand.dcm"))
    assert people == PEOPLE
    del ds.AccessionNumber, ds.PatientBirthDate
    sparse = report.identity(write(ds, tmp_path / "sparse.dcm"))
    assert sparse["Accession number"] == sparse["Birth date"] == "" and sparse["Name"] == "Doe, Jane"
    _, page = _page(bundle, people=sparse)
    assert "<th>Accession number</th><td>not in the DICOM</td>" in page
    assert report.identity(SAMPLE) == {}
    _, page = _page(bundle, people={})
    assert "not named in the image file" in page and "<th>Name</th>" not in page


def test_report_is_self_contained(bundle):
    _, page = _page(bundle)
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:)""", page)
    assert "<script" not in page and "<link" not in page and "@import" not in page


def test_report_says_what_is_missing(bundle):
    pred, page = _page(bundle, patient=None, given_sex="", warning="given sex male, but the image reads as female")
    assert "not given" in page and "no chronological age" in page and "the image reads as female" in page
    assert "<circle" not in page  # no age: the bone age is a line, not a point


def test_report_escapes_file_names(bundle):
    _, page = _page(bundle, file="<i>x<i>.dcm", people={"Name": "<b>Doe"})
    assert "<i>x<i>" not in page and "&lt;i&gt;x&lt;i&gt;" in page
    assert "<b>Doe" not in page and "&lt;b&gt;Doe" in page


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_report_renders_in_chromium_to_one_printed_page(bundle, tmp_path):
    _, page = _page(bundle)
    html = tmp_path / "report.html"
    html.write_text(page, encoding="utf-8")
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]
    shot, pdf = tmp_path / "shot.png", tmp_path / "page.pdf"
    subprocess.run([*flags, "--window-size=900,1250", f"--screenshot={shot}", html.as_uri()], check=True,
                   capture_output=True, timeout=120)
    subprocess.run([*flags, "--no-pdf-header-footer", f"--print-to-pdf={pdf}", html.as_uri()], check=True,
                   capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("L"), float)
    assert pixels.std() > 20  # something was drawn, not a blank page
    assert len(re.findall(rb"/Type\s*/Page[^s]", pdf.read_bytes())) == 1  # fits one A4 page
