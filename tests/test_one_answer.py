"""Issue 33: one answer per radiograph, and no input stops a batch.

The same pixels read the same whatever carries them (PNG, an 8-bit DICOM, 12/16-bit DICOM of the same values),
alone or in a folder, through edge-infer or the Python API, which returns edge-infer's record; a damaged value
representation in any DICOM element the reader touches is that file's one-line error, the rest of the batch is
answered, and the web API answers 200 with it. docs/ARCHITECTURE.md, "One answer per radiograph"."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import repo_env
from dicom_fixtures import radiograph_dataset, write

from edge.preprocess import decode
from edge.runtime import BoneAgeModel, Failure, Prediction, default_bundle_path

SAMPLES = sorted((default_bundle_path() / "samples").glob("*.png"))  # three real RSNA radiographs, 8-bit
# What must agree between paths (beside bone_age_months, within 0.1): edge-infer's record, less timing/sources.
SAME = ("sex", "given_sex", "warning", "status", "corrections", "sex_uncertain", "category", "backend", "precision")
CLOSE = ("bone_age_months", "interval_low_months", "interval_high_months", "chronological_age_months",
         "delay_months", "sds", "p_male", "p_male_calibrated")


def _pixels(png: Path) -> np.ndarray:
    return np.asarray(Image.open(png).convert("L"))


def _dicom(png: Path, out: Path, stored=None, bits: int = 8, monochrome1: bool = False, **tags) -> Path:
    """An OT image of `png` holding `stored` (default: its own 8-bit pixels) at `bits` bits stored."""
    ds = radiograph_dataset(png, modality="OT")
    stored = _pixels(png) if stored is None else stored
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = (8 if bits <= 8 else 16), bits, bits - 1
    ds.PixelData = stored.astype(np.uint8 if bits <= 8 else np.uint16).tobytes()
    if monochrome1:
        ds.PhotometricInterpretation = "MONOCHROME1"
    for key, value in tags.items():
        setattr(ds, key, value)
    return write(ds, out)


def _voi_lut(out_bits: int, table) -> list:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.LUTDescriptor = [len(table), 0, out_bits]
    item.LUTData = [int(v) for v in table]
    item["LUTData"].VR = "US"
    return [item]


def test_dicoms_and_a_16_bit_png_of_a_pngs_pixels_decode_to_the_png_bit_for_bit(tmp_path):
    """A 16-bit PNG of them x 257; DICOM 8-bit as stored, inverted MONOCHROME1, a DX with an identity window and rescale, and the 8-bit pixels
    widened to 10, 12 or 16 bits stored (shifted, scaled, replicated) or through a VOI LUT: each decodes to
    exactly the PNG's array, so it takes the PNG's 8-bit path (input check, resize) from there."""
    png = SAMPLES[0]
    v = _pixels(png)
    w = v.astype(np.uint16)
    cases = {
        "ot8": _dicom(png, tmp_path / "ot8.dcm"),
        "dx8": write(radiograph_dataset(png, modality="DX"), tmp_path / "dx8.dcm"),  # window 128/256, slope 1
        "mono1": _dicom(png, tmp_path / "mono1.dcm", stored=255 - v, monochrome1=True),
        "u16": _dicom(png, tmp_path / "u16.dcm", stored=w * 257, bits=16),
        "u12_shifted": _dicom(png, tmp_path / "u12s.dcm", stored=(w << 4) | 7, bits=12),
        "u12_scaled": _dicom(png, tmp_path / "u12c.dcm", stored=np.round(v * 4095.0 / 255), bits=12),
        "u10": _dicom(png, tmp_path / "u10.dcm", stored=(w << 2) | (w >> 6), bits=10),
        "lut8": _dicom(png, tmp_path / "lut.dcm", stored=w * 16 + 5, bits=12,
                       VOILUTSequence=_voi_lut(16, np.arange(4096) // 16 * 257)),
    }
    cases["png16"] = tmp_path / "sixteen.png"
    Image.fromarray(w * 257).save(cases["png16"])  # a 16-bit PNG of the same pixels: the same 8 bits
    for name, path in cases.items():
        got = decode(path)
        assert got.dtype == np.uint8, name
        np.testing.assert_array_equal(got, v, err_msg=name)


def test_a_12_bit_window_maps_its_output_range_onto_256_levels(tmp_path):
    """A window's output runs over the nominal range (0-4095 for 12 bits stored): cut into 256 equal levels. The
    window centred on that range, as wide, gives the 8-bit pixels back within a level; a narrower one clips."""
    png = SAMPLES[1]
    v = _pixels(png).astype(np.int64)
    wide = decode(_dicom(png, tmp_path / "wide.dcm", stored=v * 16 + 8, bits=12, WindowCenter=2048,
                         WindowWidth=4096))
    assert np.abs(wide.astype(np.int64) - v).max() <= 1
    narrow = decode(_dicom(png, tmp_path / "narrow.dcm", stored=v * 16 + 8, bits=12, WindowCenter=2048,
                           WindowWidth=2048))  # stored 1024-3072 spread over all 256 levels
    want = np.clip(np.floor((v * 16 + 8 - 1024) / 2048 * 256), 0, 255)
    assert np.abs(narrow.astype(np.int64) - want).max() <= 1
    # A header declaring 16 bits for 8 bits of data (under a quarter of its range) is stretched min to max.
    sparse = decode(_dicom(png, tmp_path / "sparse.dcm", stored=v, bits=16))
    assert sparse.max() == 255 and sparse.min() == 0


@pytest.fixture(scope="module")
def model():
    return BoneAgeModel.load()  # the shipped model, "auto": what edge-infer and edge-serve load


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> list[Path]:
    """Each sample as a PNG and as a DX DICOM of the same pixels (its own PatientSex M and dates: 144.4 months)."""
    out = tmp_path_factory.mktemp("one-answer")
    files = []
    for png in SAMPLES:
        files.append(out / png.name)
        files[-1].write_bytes(png.read_bytes())
        files.append(write(radiograph_dataset(png, modality="DX"), out / f"{png.stem}.dcm"))
    return files


def _agree(a: dict, b: dict, why: str) -> None:
    for key in SAME:
        assert a.get(key) == b.get(key), (why, key, a.get(key), b.get(key))
    for key in CLOSE:
        x, y = a.get(key), b.get(key)
        assert (x is None) == (y is None), (why, key)
        if x is not None:
            assert abs(x - y) <= (0.1 if "month" in key else 0.01), (why, key, x, y)


def _cli(args, capsys) -> list[dict]:
    from edge.cli.infer import main

    assert main([*map(str, args), "--json", "--no-progress"]) == 0
    return json.loads(capsys.readouterr().out)


def test_alone_in_a_folder_png_or_dicom_cli_or_api_one_answer(model, folder, capsys):
    """edge-infer on the folder, on one PNG and one DICOM alone (its one-image load), and the API's predict_many
    and predict with the same sex and age: every record agrees with every other (bone age within 0.1 months; sex
    call, warning, interval, calibrated P(male), delay, SDS, category), and each PNG with its DICOM."""
    from edge.output import model_info, record

    given = ["--sex", "F", "--age", "12y"]
    batch = _cli([*folder, *given], capsys)
    alone = {str(f): _cli([f, *given], capsys)[0] for f in folder[:2]}
    info = model_info(model.bundle)
    api = [record(r, info) for r in model.predict_many(folder, sex="F", age="12y")]
    one = record(model.predict(folder[1], sex="F", age=144.0), info)
    assert all(r["status"] == "ok" and r["chronological_age_months"] == 144.0 for r in batch)
    for rec, via_api in zip(batch, api):
        _agree(rec, via_api, f"CLI folder vs API: {rec['file']}")
    for path, rec in alone.items():
        _agree(rec, batch[[str(f) for f in folder].index(path)], f"alone vs folder: {path}")
    _agree(one, batch[1], "API predict vs CLI folder")
    for png, dcm in zip(batch[::2], batch[1::2]):
        _agree(png, dcm, f"PNG vs its DICOM: {png['file']}")
        assert png["bone_age_months"] == dcm["bone_age_months"]  # the same array in, the same number out


def test_api_takes_age_or_dates_and_reads_dicom_tags_as_edge_infer_does(model, folder):
    import datetime as dt

    png, dcm = folder[2], folder[3]
    by_age = model.predict(png, sex="M", age="10y6m")
    by_dates = model.predict(png, sex="m", birth_date="2014-01-15", study_date=dt.date(2024, 7, 15))
    assert by_age.chronological_age_months == 126.0 and by_age.age_source == "age argument"
    assert by_dates.chronological_age_months == pytest.approx(126.0, abs=0.05)
    assert by_dates.age_source == "birth_date + study_date arguments"
    for r in (by_age, by_dates):
        assert r.interval_low_months < r.bone_age_months < r.interval_high_months
        assert r.p_male_calibrated is not None and r.sds is not None and r.category
        assert r.delay_months == pytest.approx(r.bone_age_months - r.chronological_age_months)
    own = model.predict(dcm)  # nothing given: the file's PatientSex and PatientBirthDate + StudyDate
    assert (own.given_sex, own.given_sex_source) == ("male", "DICOM PatientSex")
    assert own.chronological_age_months == pytest.approx(144.4, abs=0.1)
    assert own.age_source == "DICOM PatientBirthDate + StudyDate"
    mixed = model.predict_many([png, dcm, _pixels(SAMPLES[0])], sex=["F", None, "M"], age=[None, 100, "9y"])
    assert [r.given_sex for r in mixed] == ["female", "male", "male"]
    assert [r.chronological_age_months for r in mixed] == [None, 100.0, 108.0]
    assert mixed[0].sds is None and "no chronological age" in mixed[0].context_note
    with pytest.raises(ValueError, match="10 years"):
        model.predict(png, age="10 years")
    with pytest.raises(ValueError, match="not both"):
        model.predict(png, age="9y", birth_date="2014-01-15", study_date="2024-01-15")
    with pytest.raises(ValueError, match="2 values of age for 3 inputs"):
        model.predict_many([png, png, png], age=["9y", "8y"])


# --- no input stops a batch ----------------------------------------------------------------------------------

# Every element edge.imaging and edge.clinical.patient read, by tag (group, element).
READ = {"TransferSyntaxUID": (0x0002, 0x0010), "StudyDate": (0x0008, 0x0020), "AcquisitionDate": (0x0008, 0x0022),
        "ContentDate": (0x0008, 0x0023), "PatientBirthDate": (0x0010, 0x0030), "PatientSex": (0x0010, 0x0040),
        "PatientAge": (0x0010, 0x1010), "SamplesPerPixel": (0x0028, 0x0002),
        "PhotometricInterpretation": (0x0028, 0x0004), "NumberOfFrames": (0x0028, 0x0008), "Rows": (0x0028, 0x0010),
        "Columns": (0x0028, 0x0011), "BitsAllocated": (0x0028, 0x0100), "BitsStored": (0x0028, 0x0101),
        "HighBit": (0x0028, 0x0102), "PixelRepresentation": (0x0028, 0x0103), "WindowCenter": (0x0028, 0x1050),
        "WindowWidth": (0x0028, 0x1051), "RescaleIntercept": (0x0028, 0x1052), "RescaleSlope": (0x0028, 0x1053),
        "PixelData": (0x7FE0, 0x0010)}
# An unknown VR (the case) and a known one of the wrong size (a parser error of another kind).
DAMAGE = (b"ZZ", b"FD")


def _damaged_folder(out: Path, png: Path) -> tuple[list[Path], list[Path]]:
    ds = radiograph_dataset(png, modality="DX")
    ds.PatientAge, ds.AcquisitionDate, ds.ContentDate, ds.NumberOfFrames = "012Y", "20260115", "20260115", 1
    good = [write(ds, out / "good-1.dcm")]
    good.append(out / "good-2.png")
    good[-1].write_bytes(png.read_bytes())
    raw = good[0].read_bytes()
    damaged = []
    for name, (group, element) in READ.items():
        at = raw.find(struct.pack("<HH", group, element))
        assert at > 0, name
        for vr in DAMAGE:
            path = out / f"bad-{name}-{vr.decode()}.dcm"
            path.write_bytes(raw[:at + 4] + vr + raw[at + 6:])
            damaged.append(path)
    return good, damaged


def test_a_damaged_vr_in_any_element_read_is_that_files_one_line_error(tiny_bundle, tiny_images, tmp_path):
    good, damaged = _damaged_folder(tmp_path, tiny_images[0])
    out = subprocess.run([sys.executable, "-m", "edge.cli.infer", str(tmp_path), "--bundle", str(tiny_bundle),
                          "--json", "--no-progress"], env=repo_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    records = {Path(r["file"]).name: r for r in json.loads(out.stdout)}
    assert set(records) == {p.name for p in good + damaged}  # every input answered, none lost
    for path in good:
        assert records[path.name]["status"] == "ok", records[path.name]
    errors = {name: r.get("error") for name, r in records.items() if r["status"] != "ok"}
    assert all(e and "\n" not in e for e in errors.values()), errors
    for name in ("PatientSex", "TransferSyntaxUID", "PatientBirthDate"):  # the and the age's source
        assert f"bad-{name}-ZZ.dcm" in errors
    assert "(0010,0040)" in errors["bad-PatientSex-ZZ.dcm"] and "(0002,0010)" in errors["bad-TransferSyntaxUID-ZZ.dcm"]
    sex_fd = errors["bad-PatientSex-FD.dcm"]  # the parser quotes the value's bytes: never passed on
    assert "(0010,0040)" in sex_fd and "b'" not in sex_fd and "'M " not in sex_fd
    assert len(errors) >= len(READ)  # most damage is refused; what is left readable is answered, never crashes


def test_web_api_answers_200_with_the_damaged_files_error(tiny_bundle, tiny_images, tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from edge.serve.service import Service
    from edge.serve.web import create_app

    good, damaged = _damaged_folder(tmp_path, tiny_images[0])
    sent = [good[1]] + [p for p in damaged if "PatientSex-ZZ" in p.name or "TransferSyntaxUID-ZZ" in p.name]
    client = TestClient(create_app(Service(BoneAgeModel.load(tiny_bundle))))
    r = client.post("/v1/predict", files=[("files", (p.name, p.read_bytes(), "application/octet-stream"))
                                          for p in sent])
    assert r.status_code == 200, r.text
    ok, *bad = r.json()["results"]
    assert ok["status"] == "ok" and ok.get("bone_age_months") is not None
    assert [b["status"] for b in bad] == ["failed", "failed"] and all("\n" not in b["error"] for b in bad)


def test_the_python_api_reports_a_damaged_file_and_answers_the_rest(tiny_bundle, tiny_images, tmp_path):
    good, damaged = _damaged_folder(tmp_path, tiny_images[0])
    results = BoneAgeModel.load(tiny_bundle).predict_many([good[1], *damaged, good[0]])
    assert isinstance(results[0], Prediction) and isinstance(results[-1], Prediction)
    assert len(results) == len(damaged) + 2
    assert sum(isinstance(r, Failure) for r in results) >= len(READ)


def test_a_model_without_sex_heads_ignores_a_dicoms_own_sex_and_refuses_a_given_one(tiny_bundle, tiny_images,
                                                                                  tmp_path, monkeypatch):
    model = BoneAgeModel.load(tiny_bundle)
    monkeypatch.setattr(BoneAgeModel, "uses_sex", property(lambda self: False))
    dcm = write(radiograph_dataset(tiny_images[0], modality="DX", sex="M"), tmp_path / "own-sex.dcm")
    r = model.predict(dcm)  # the file's PatientSex M: not an error, the sex-blind estimate
    assert r.given_sex == "" and r.chronological_age_months == pytest.approx(144.4, abs=0.1)
    with pytest.raises(ValueError, match="no age head per sex"):
        model.predict(dcm, sex="M")
