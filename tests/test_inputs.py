"""Decoding every supported format, and one clear line for every bad file."""
from __future__ import annotations

import numpy as np
import pytest

from edge.imaging import ImageError, expand_inputs, load_radiograph
from imaging_fixtures import (bad_files, dicom_pixels, phantom, write_dicom, write_jpeg_rotated, write_png8,
                              write_png16)


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    return bad_files(tmp_path_factory.mktemp("bad"))


def _corr(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def test_png8_and_png16_decode_to_the_same_unit_image(tmp_path):
    a8 = load_radiograph(write_png8(tmp_path / "a.png"))
    a16 = load_radiograph(write_png16(tmp_path / "b.png"))
    assert a8.dtype == a16.dtype == np.float32
    assert 0.0 <= a16.min() and a16.max() <= 1.0
    np.testing.assert_allclose(a16, a8, atol=1e-6)  # v * 257 / 65535 == v / 255


def test_jpeg_exif_orientation_is_applied(tmp_path):
    a = load_radiograph(write_jpeg_rotated(tmp_path / "r.jpg"))
    ref = phantom().astype(np.float32) / 255
    assert a.shape == ref.shape
    assert _corr(a, ref) > 0.99  # without exif_transpose the stored (rotated) pixels would not match


@pytest.mark.parametrize("monochrome1", [False, True])
def test_dicom_modality_lut_and_photometric(tmp_path, monochrome1):
    f = write_dicom(tmp_path / "x.dcm", dicom_pixels(monochrome1), monochrome1=monochrome1, slope=2.0, intercept=-10)
    a = load_radiograph(f)
    assert _corr(a, phantom()) > 0.999  # bone bright in both photometric interpretations
    assert a.min() == 0.0 and a.max() == 1.0


def test_dicom_window_is_applied(tmp_path):
    raw = dicom_pixels()
    narrow = load_radiograph(write_dicom(tmp_path / "w.dcm", raw, window=(1000, 200)))
    # a narrow window saturates: far more pixels at the extremes than in the unwindowed image
    full = load_radiograph(write_dicom(tmp_path / "f.dcm", raw))
    assert np.mean((narrow == 0) | (narrow == 1)) > np.mean((full == 0) | (full == 1)) + 0.2


def test_dicom_detected_by_magic_without_suffix(tmp_path):
    f = write_dicom(tmp_path / "image_without_suffix", dicom_pixels())
    assert load_radiograph(f).shape == phantom().shape


@pytest.mark.parametrize("kind,words", [
    ("empty", "empty file"), ("truncated", "truncated"), ("text", "not a readable image"),
    ("tiny", "1x1"), ("bomb", "decompression bomb"), ("dicom_no_pixels", "no pixel data"),
    ("dicom_unsupported", "JPEG 2000"),
])
def test_bad_file_gives_one_line_naming_the_file(bad, kind, words):
    path = bad[kind]
    with pytest.raises(ImageError) as e:
        load_radiograph(path)
    msg = str(e.value)
    assert msg.startswith(str(path) + ": ")
    assert words in msg
    assert "\n" not in msg


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_radiograph(tmp_path / "absent.png")


def test_expand_inputs_files_folders_globs(tmp_path):
    for n in ("a.png", "b.jpg", "sub/c.dcm"):
        (tmp_path / n).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / n).write_bytes(b"x")
    (tmp_path / "readme.txt").write_text("x")
    entries = expand_inputs([tmp_path, str(tmp_path / "*.png"), tmp_path / "nope.png", str(tmp_path / "*.gif")])
    files = [f for f, why in entries if why is None]
    assert sorted(files).count(str(tmp_path / "a.png")) == 2 and str(tmp_path / "sub/c.dcm") in files
    assert not any(f.endswith("readme.txt") for f in files)
    # In the order given: the folder's three files, the glob's one, then the two that named nothing.
    assert entries[4:] == [(str(tmp_path / "nope.png"), "no such file"),
                           (str(tmp_path / "*.gif"), "pattern matched no files")]
    assert [f for f, _ in entries[:4]] == sorted(str(tmp_path / n) for n in ("a.png", "b.jpg", "sub/c.dcm")) + [
        str(tmp_path / "a.png")]
