"""`python -m export.calibrate` on a bundle other than the shipped one (what the lead re-runs after a rebuild):
fits on the bundle's validation split, checks on its test split, rewrites only bundle.json's "clinical" key,
and the runtime then gives intervals from it. Real ONNX Runtime on the tiny graph; no torch, no RSNA data."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from PIL import Image

from edge.bundle import load_bundle
from edge.clinical.context import in_context
from edge.clinical.patient import Patient
from edge.config import InputSpec
from edge.preprocess import preprocess
from edge.runtime import BoneAgeModel
from export.calibrate import main as calibrate
from models.phantoms import render_phantom
from tiny_bundle import SPEC, make_tiny_bundle, reference_outputs

N_VAL, N_TEST = 120, 60


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """labels.csv + images/: the tiny graph's own age plus N(0, 6) months, its own sex call flipped for 1 in 6."""
    out = tmp_path_factory.mktemp("calib-data")
    (out / "images").mkdir()
    rng = np.random.default_rng(3)
    rows = []
    for k in range(N_VAL + N_TEST):
        path = out / "images" / f"{k}.png"
        Image.fromarray(render_phantom(float(rng.uniform(12, 216)), bool(k % 2), 96, rng)).save(path)
        ref = reference_outputs(preprocess(path, InputSpec(**SPEC))[None])
        male = bool(ref["p_male"][0] >= 0.5) != (k % 6 == 0)
        rows.append((k, float(ref["bone_age_months"][0] + rng.normal(0, 6)), str(male)))
    with open(out / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([("id", "boneage", "male"), *rows])
    return out


def test_calibrate_writes_only_the_clinical_key_and_the_runtime_reads_it(tmp_path, labelled, capsys):
    split = {"train": [], "val": [str(k) for k in range(N_VAL)],
             "test": [str(k) for k in range(N_VAL, N_VAL + N_TEST)]}
    bundle = make_tiny_bundle(tmp_path / "b", sorted((labelled / "images").glob("*.png"))[:2], split)
    before = json.loads((bundle / "bundle.json").read_text())
    assert calibrate(["--bundle", str(bundle), "--data", str(labelled)]) == 0
    assert "Prediction intervals (90%" in capsys.readouterr().out
    after = json.loads((bundle / "bundle.json").read_text())
    assert {k: v for k, v in after.items() if k != "clinical"} == before
    clinical = after["clinical"]
    assert clinical["fitted_on"]["n"] == N_VAL and clinical["test"]["n"] == N_TEST
    assert set(clinical["intervals"]["variants"]) == {"sex_blind", "sex_given"}
    assert sum(len(b) for b in clinical["intervals"]["variants"]["sex_blind"]["bands"]) == N_VAL
    for v in clinical["intervals"]["variants"].values():  # grouped by sex too, each image once
        assert sum(len(b) for s in ("female", "male") for b in v["bands_by_sex"][s]) == N_VAL
    assert 0 < clinical["sex_calibration"]["a"] and clinical["test"]["sex_calibration"]["n"] == N_TEST

    model = BoneAgeModel.load(bundle, backend="onnxruntime", precision="fp32")
    image = labelled / "images" / f"{N_VAL}.png"
    pred = in_context([model.predict(image)], [Patient(100, "--age")], load_bundle(bundle))[0]
    assert pred.interval_low_months < pred.bone_age_months < pred.interval_high_months
    assert 5 < pred.interval_high_months - pred.interval_low_months < 60  # labels were the age +- N(0, 6)
    narrow = in_context([model.predict(image)], [None], load_bundle(bundle), level=0.5)[0]
    assert narrow.interval_high_months - narrow.interval_low_months < pred.interval_high_months - pred.interval_low_months
    # 30 calibration images in a band cannot make a 99% interval: said, not infinite
    wide = in_context([model.predict(image)], [None], load_bundle(bundle), level=0.99)[0]
    assert wide.interval_low_months is None and "too few calibration images" in wide.context_note
    assert not math.isinf(pred.interval_high_months)
