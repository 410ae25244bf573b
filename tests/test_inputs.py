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


def _unit(a, lo=None, hi=None) -> np.ndarray:
    """The displayed values `a` over the nominal range lo..hi (default: their own min and max) in [0, 1]: what
    edge.imaging.to_8bit cuts into 256 levels."""
    a = np.asarray(a, np.float64)
    lo, hi = (a.min() if lo is None else lo), (a.max() if hi is None else hi)
    return (a - lo) / (hi - lo)


def _close(got, want):
    """got: the decoded image in [0, 1]; want: the exact values in [0, 1]. The decoder keeps 8 bits (the range the
    network was trained on), 256 equal levels of the nominal range: every pixel within one grey level."""
    assert np.abs(got * 255 - np.asarray(want, np.float64) * 255).max() <= 1.0 + 1e-3


# Each case: how the file stores a 12-bit radiograph, and the pixels worked out by hand from DICOM PS3.3
# C.7.6.3.1.4 (MONOCHROME1/2), C.11.1 (modality LUT: slope * stored + intercept), C.11.2 (VOI LUT).
@pytest.mark.parametrize("monochrome1", [False, True])
def test_dicom_rescale_and_photometric(tmp_path, monochrome1):
    raw = dicom_pixels(monochrome1)
    a = load_radiograph(write_dicom(tmp_path / "x.dcm", raw, monochrome1=monochrome1, slope=2.0, intercept=-10))
    want = _unit(2.0 * raw - 10, -10, 2.0 * 4095 - 10)  # 12 bits stored, through the rescale
    _close(a, 1 - want if monochrome1 else want)
    assert _corr(a, phantom()) > 0.999  # bone bright in both photometric interpretations


def test_dicom_negative_slope_inverts_the_stored_values(tmp_path):
    # A negative slope turns the stored values round: skipping the modality LUT would show bone dark.
    raw = dicom_pixels()
    a = load_radiograph(write_dicom(tmp_path / "neg.dcm", raw, slope=-1.5, intercept=6000))
    _close(a, _unit(6000 - 1.5 * raw.astype(np.float64), 6000 - 1.5 * 4095, 6000))
    assert _corr(a, phantom()) < -0.999


def test_dicom_signed_pixels_keep_their_sign(tmp_path):
    # PixelRepresentation 1: -2048..2047. Read as unsigned, every negative value would wrap to the top.
    raw = dicom_pixels().astype(np.int16) - 2048
    assert raw.min() < 0 < raw.max()
    a = load_radiograph(write_dicom(tmp_path / "signed.dcm", raw, slope=1.0, intercept=100))
    _close(a, _unit(raw + 100.0, -2048 + 100, 2047 + 100))
    assert _corr(a, phantom()) > 0.999


def test_dicom_voi_lut_sequence_is_applied(tmp_path):
    # A non-linear VOI LUT (a square law) starting at stored value 1000: values below map to its first entry,
    # values past its end to its last (PS3.3 C.11.2.1.1). Min-max alone cannot produce this curve.
    raw = dicom_pixels()
    first, n = 1000, 1024
    entries = np.round(65535 * (np.arange(n) / (n - 1)) ** 2).astype(np.uint16)
    a = load_radiograph(write_dicom(tmp_path / "lut.dcm", raw, voi_lut=(first, entries)))
    want = _unit(entries[np.clip(raw.astype(np.int64) - first, 0, n - 1)], entries.min(), entries.max())
    _close(a, want)
    assert np.max(np.abs(a - _unit(raw))) > 0.2  # really another curve than the stored values'


def test_dicom_window_is_applied(tmp_path):
    # Linear window (PS3.3 C.11.2.1.2.1): (x - (c - 0.5)) / (w - 1) + 0.5, clipped to [0, 1]; this phantom's
    # values run past both ends of the window, so min-max leaves it as it is.
    raw = dicom_pixels()
    c, w = 1000, 200
    a = load_radiograph(write_dicom(tmp_path / "w.dcm", raw, window=(c, w)))
    want = np.clip((raw - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
    assert want.min() == 0 and want.max() == 1
    _close(a, want)


def test_dicom_multi_frame_reads_the_first_frame(tmp_path):
    raw = dicom_pixels()
    frames = np.stack([raw, 4095 - raw, np.zeros_like(raw)])
    a = load_radiograph(write_dicom(tmp_path / "frames.dcm", frames))
    _close(a, _unit(raw, 0, 4095))


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


def test_blank_image_message(tmp_path):
    path = write_png8(tmp_path / "blank.png", np.full((64, 64), 128, np.uint8))
    with pytest.raises(ImageError) as e:
        load_radiograph(path)
    assert str(e.value) == f"{path}: image is blank (every pixel has the same value)"


def test_glob_character_classes(tmp_path):
    for n in ("a.png", "b.png", "c.png"):
        write_png8(tmp_path / n)
    assert [f for f, _ in expand_inputs([str(tmp_path / "[ab].png")])] == [str(tmp_path / "a.png"),
                                                                             str(tmp_path / "b.png")]
    assert [f for f, _ in expand_inputs([str(tmp_path / "[!ab].png")])] == [str(tmp_path / "c.png")]
    (tmp_path / "sub").mkdir()
    write_png8(tmp_path / "sub" / "b.png")
    recursive = [f for f, _ in expand_inputs([str(tmp_path / "**" / "[!a].png")])]  # ** takes its own matcher
    assert sorted(recursive) == sorted(str(tmp_path / n) for n in ("b.png", "c.png", "sub/b.png"))


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
