"""The per-patient HTML report (edge.clinical.report): every item the issue lists, self-contained, and rendered
by a real headless Chromium (Debian's `chromium`) to one printed page."""
from __future__ import annotations

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


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(default_bundle_path())


def _page(bundle, patient=Patient(150, "DICOM PatientBirthDate + StudyDate", "male", "DICOM PatientSex"), **kw):
    pred = Prediction(**{"file": "scans/hand-01.dcm", "bone_age_months": 180.0, "p_male": 0.95, "sex": "male",
                         "backend": "openvino", "precision": "int8", "ms": 4.0, "given_sex": "male", **kw})
    pred = annotate(pred, patient, bundle.meta.get("clinical"))
    image = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (80, 1))
    heat = Image.fromarray((np.random.default_rng(0).random((80, 64, 3)) * 255).astype(np.uint8))
    return pred, report.render(pred, bundle, image, heat)


def test_report_holds_every_item(bundle):
    pred, page = _page(bundle)
    assert pred.sds is not None and pred.interval_low_months is not None
    for text in ["180 months (15 y 0 m)", f"{pred.interval_low_months:.0f}-{pred.interval_high_months:.0f} months",
                 "150.0 months (12 y 6 m)", "DICOM PatientBirthDate + StudyDate", f"{pred.delay_months:+.1f} months",
                 f"{pred.sds:+.2f}", pred.category, "from DICOM PatientSex", "P(male) 0.95",
                 bundle.meta["model"]["name"], f"version {bundle.meta['model']['version']}", "mean absolute error",
                 "coverage", "For research use only", "Greulich WW, Pyle SI"]:
        assert text in page, text
    assert page.count("data:image/png;base64,") == 2  # the radiograph and its heatmap, inline
    assert "<polygon" in page and "<circle" in page  # the +-2 SD band and this patient on the chart


def test_report_is_self_contained(bundle):
    _, page = _page(bundle)
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:)""", page)
    assert "<script" not in page and "<link" not in page and "@import" not in page


def test_report_says_what_is_missing(bundle):
    pred, page = _page(bundle, patient=None, given_sex="", warning="given sex male, but the image reads as female")
    assert "not given" in page and "no chronological age" in page and "the image reads as female" in page
    assert "<circle" not in page  # no age: the bone age is a line, not a point


def test_report_escapes_file_names(bundle):
    _, page = _page(bundle, file="<b>x</b>.dcm")
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page


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
