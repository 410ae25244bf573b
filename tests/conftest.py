"""Shared fixtures: the repository on sys.path, the RSNA data location, and phantom training runs
that are trained once per session and shared by every test that needs a trained model."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the project is used from its checkout, not installed
    sys.path.insert(0, str(REPO))

# Phantom training used by tests: small enough for 2 CPU cores, large enough to learn bone age.
PHANTOM_N = 600
PHANTOM_MODEL = "w035-100"
PHANTOM_EPOCHS = 10
PHANTOM_BATCH = 32
# One thread: the phantom's weights do not depend on the thread count (trained at 2 on an AVX-512 VNNI EPYC, one
# came out whose INT8 missed two tests' bounds; docs/TESTING.md), and 2 threads stall when the cores are busy.
TRAIN_THREADS = int(os.environ.get("BONEAGE_TEST_THREADS", "1"))


# The retention gate's defaults (edge.retention.Thresholds) are sized for the RSNA validation split (2484 images,
# tenths of 248). The phantom model's validation split holds 119 (tenths of 12): what a sound INT8 copy moves by
# chance grows as 1/sqrt(n), so the phantom tests judge by the defaults scaled by sqrt(2484 / 119) = 4.6:
# +1.14 months MAE, +4.6 in a tenth by age, -4.6 points of sex accuracy and AUC. Measured on the phantom model
# (2026-11-30): PTQ +0.35 / +1.93 in its worst tenth, QAT (1 epoch) +0.45 / +2.80; blank calibration p95 170 months.
RSNA_VAL_N, PHANTOM_VAL_N = 2484, 119


def scaled_gate(n: int):
    from edge.retention import Thresholds

    t, f = Thresholds(), (RSNA_VAL_N / n) ** 0.5
    return Thresholds(t.max_mae_increase * f, t.max_accuracy_drop * f, t.max_auc_drop * f, t.max_band_mae_increase * f)


# A test that needs a trained model (these fixtures train one, minutes on 2 cores) is slow wherever it is written.
SLOW_FIXTURES = {"phantom_run", "resumed_run"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def cpu_has_int8_dot_product() -> bool:
    """VNNI / AMX: where the runtime makes INT8 its default precision (edge.cpu)."""
    from edge.cpu import int8_dot_product

    return int8_dot_product()


def repo_env() -> dict:
    """Environment for subprocesses that import the project from the checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def rsna_root() -> Path:
    """The RSNA bone-age data folder: $BONEAGE_DATA, else ../shared/data/rsna-boneage beside the repo."""
    env = os.environ.get("BONEAGE_DATA")
    root = Path(env) if env else REPO.parent / "shared" / "data" / "rsna-boneage"
    if not root.is_dir():
        how = "BONEAGE_DATA" if env else "the default ../shared/data/rsna-boneage (set BONEAGE_DATA to override)"
        missing_data(f"RSNA bone-age data not found at {root} ({how})")
    return root


def missing_data(message: str) -> None:
    """Skip a test that needs the RSNA data, or fail it where the data must be there (CI has it: a silent skip
    there would hide every real-data check)."""
    if data_required():
        pytest.fail(message + "; BONEAGE_DATA_REQUIRED=1 or CI is set, so this is an error, not a skip", pytrace=False)
    pytest.skip(message)


def data_required() -> bool:
    """Whether a missing RSNA folder fails the run: .ci/run sets BONEAGE_DATA_REQUIRED=1; CI services set CI."""
    flag = os.environ.get("BONEAGE_DATA_REQUIRED", os.environ.get("CI", ""))
    return flag.strip().lower() not in ("", "0", "false", "no")


def _train(out: Path, *extra: str) -> int:
    from models.train import main

    return main(["--out", str(out), "--model", PHANTOM_MODEL, "--no-progress",
                 "--threads", str(TRAIN_THREADS), *extra])


@pytest.fixture(scope="session")
def phantom_run(tmp_path_factory) -> Path:
    """A w035-100 network trained on PHANTOM_N phantoms: run folder with best.pt, last.pt, split.json,
    history.json, train.log and the phantom data set (phantoms-<N>/)."""
    out = tmp_path_factory.mktemp("phantom-run")
    assert _train(out, "--synthetic", str(PHANTOM_N), "--epochs", str(PHANTOM_EPOCHS),
                  "--batch-size", str(PHANTOM_BATCH)) == 0
    return out


@pytest.fixture(scope="session")
def resumed_run(tmp_path_factory) -> dict:
    """Train 2 epochs, keep a copy of what they left, then call again with --epochs 3 on the same folder."""
    import json
    import shutil

    out = tmp_path_factory.mktemp("resume-run")
    common = ("--synthetic", "200", "--batch-size", "32")
    assert _train(out, *common, "--epochs", "2") == 0
    first = {"history": json.loads((out / "history.json").read_text()),
             "log": (out / "train.log").read_text()}
    shutil.copy(out / "last.pt", out / "last-after-2.pt")
    assert _train(out, *common, "--epochs", "3") == 0
    return {"out": out, "first": first}


@pytest.fixture(scope="session")
def phantom_data(phantom_run) -> Path:
    return phantom_run / f"phantoms-{PHANTOM_N}"


@pytest.fixture(scope="session")
def phantom_fp32(phantom_run):
    from models.checkpoint import load_model

    return load_model(phantom_run / "best.pt")[0]


@pytest.fixture(scope="session")
def phantom_sex_heads(phantom_run, phantom_data, tmp_path_factory) -> Path:
    """The phantom model's checkpoint with an age head per sex fitted on its features (models.sex_heads)."""
    from models.sex_heads import main

    out = tmp_path_factory.mktemp("phantom-sex-heads") / "best.pt"
    assert main([str(phantom_run / "best.pt"), str(out), "--data", str(phantom_data),
                 "--split-file", str(phantom_run / "split.json"), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="session")
def phantom_bundle(phantom_run, phantom_data, phantom_sex_heads, tmp_path_factory) -> Path:
    """A full bundle (ONNX + OpenVINO, FP32 + INT8 by PTQ) of the phantom model with sex heads fitted
    (models.sex_heads), with two samples."""
    from export.cli import main

    out = tmp_path_factory.mktemp("phantom-bundle")
    samples = sorted((phantom_data / "images").glob("*.png"))[-2:]
    assert main(["--checkpoint", str(phantom_sex_heads), "--out", str(out), "--data", str(phantom_data),
                 "--calibration-data", str(phantom_data), "--calibration-size", "64",
                 "--samples", *map(str, samples)]) == 0
    return out


# ---------------------------------------------------------------- fast: a hand-written graph, no training

TINY_N = 24  # labelled images; noise of the labels around the FP32 graph's ages: +-NOISE months, alternating
TINY_NOISE = 1.5


@pytest.fixture(scope="session")
def tiny_images(tmp_path_factory) -> list[Path]:
    """TINY_N phantom radiographs (PNG, 8-bit), every other one mirrored so the tiny graph reads both sexes; none
    it reads as P(male) within 0.1 of 0.5, where INT8 rounding could flip the call, and each one the runtime's input
    check (edge.quality) takes as it is, so the graph sees exactly preprocess(file)."""
    import numpy as np
    from PIL import Image

    from edge.config import InputSpec
    from edge.preprocess import preprocess
    from edge.quality import check
    from models.phantoms import render_phantom
    from tiny_bundle import SPEC, reference_outputs

    out = tmp_path_factory.mktemp("tiny-images")
    rng = np.random.default_rng(0)
    paths = []
    for k in range(8 * TINY_N):
        img = render_phantom(float(1 + (37 * k) % 228), k % 3 == 0, 96, rng)
        img = np.fliplr(img).copy() if k % 2 else img
        verdict = check(img, None, min(SPEC["height"], SPEC["width"]))
        if verdict.rejection or verdict.corrections:
            continue
        path = out / f"hand-{len(paths):02d}.png"
        Image.fromarray(img).save(path)
        if abs(reference_outputs(preprocess(path, InputSpec(**SPEC))[None])["p_male"][0] - 0.5) > 0.1:
            paths.append(path)
        else:
            path.unlink()
        if len(paths) == TINY_N:
            return paths
    raise AssertionError("too few phantoms away from P(male) 0.5")


@pytest.fixture(scope="session")
def tiny_noise():
    import numpy as np

    return TINY_NOISE * np.where(np.arange(TINY_N) % 2, 1.0, -1.0)


@pytest.fixture(scope="session")
def tiny_data(tiny_images, tiny_noise, tmp_path_factory) -> Path:
    from tiny_bundle import write_labelled

    return write_labelled(tmp_path_factory.mktemp("tiny-data"), tiny_images, tiny_noise)


def _tiny(tmp_path_factory, tiny_images, name: str, damage: float = 0.0) -> Path:
    from tiny_bundle import make_tiny_bundle

    split = {"train": [], "val": [], "test": [str(k + 1) for k in range(TINY_N)]}
    return make_tiny_bundle(tmp_path_factory.mktemp(name), tiny_images[:3], split, damage)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_images) -> Path:
    """A real bundle (FP32 + Q/DQ INT8 ONNX) of a hand-written graph (tests/tiny_bundle.py): made in a second."""
    return _tiny(tmp_path_factory, tiny_images, "tiny-bundle")


@pytest.fixture(scope="session")
def tiny_bundle_damaged(tmp_path_factory, tiny_images) -> Path:
    """The same bundle whose INT8 model puts every age 3 months high (tests/tiny_bundle.py: damage)."""
    return _tiny(tmp_path_factory, tiny_images, "tiny-bundle-damaged", damage=3.0)
