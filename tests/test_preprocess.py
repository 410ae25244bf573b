"""edge.preprocess and edge.imaging: the one preprocessing definition, decode to network input."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from edge.config import InputSpec
from edge.imaging import ImageError, load_radiograph
from edge.preprocess import pad_to_aspect, preprocess, to_model_input
from conftest import missing_data

RAW = dict(normalize="fixed", mean=0.0, std=1.0)  # identity normalisation: compare raw [0, 1] pixels


def _disc_image(h=200, w=100, r=30, background=0.1, value=0.9):
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.full((h, w), background, np.float32)
    img[(yy - h / 2 + 0.5) ** 2 + (xx - w / 2 + 0.5) ** 2 < r * r] = value
    return img


def _extent(mask, axis):
    """Number of rows (axis=1) or columns (axis=0) that hold any bright pixel."""
    return int(mask.any(axis=axis).sum())


@pytest.fixture
def random_png(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (241, 173), dtype=np.uint8)  # non-square, odd sizes
    path = tmp_path / "random.png"
    Image.fromarray(a).save(path)
    return path, a


# ---------------------------------------------------------------- shape, dtype, normalisation

@pytest.mark.parametrize("channels", [1, 3])
def test_output_shape_and_dtype(channels):
    img = np.random.default_rng(1).random((150, 120)).astype(np.float32)
    spec = InputSpec(channels=channels, height=96, width=80)
    x = preprocess(img, spec)
    assert x.shape == (channels, 96, 80) and x.dtype == np.float32
    for c in range(1, channels):
        np.testing.assert_array_equal(x[c], x[0])


def test_image_normalisation_is_z_score():
    img = np.random.default_rng(2).random((300, 200)).astype(np.float32) * 0.3 + 0.4
    x = preprocess(img, InputSpec())
    assert abs(float(x.mean())) < 1e-5
    assert float(x.std()) == pytest.approx(1.0, abs=1e-4)


def test_image_normalisation_is_invariant_to_exposure():
    img = np.random.default_rng(3).random((120, 100)).astype(np.float32)
    a = preprocess(img, InputSpec())
    b = preprocess(img * 0.5 + 0.2, InputSpec())  # a different window / exposure of the same picture
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_fixed_normalisation():
    img = np.random.default_rng(4).random((100, 100)).astype(np.float32)
    spec = InputSpec(normalize="fixed", mean=0.5, std=0.25)
    np.testing.assert_allclose(preprocess(img, spec)[0], (img - 0.5) / 0.25, rtol=1e-6, atol=1e-6)


def test_constant_image_does_not_divide_by_zero():
    x = to_model_input(np.full((100, 100), 0.3, np.float32), InputSpec())
    # Uniform and near zero (float32 rounding of the mean, over the 1e-6 std floor, leaves ~0.03).
    assert np.isfinite(x).all() and float(x.std()) == 0.0 and np.abs(x).max() < 0.1


# ---------------------------------------------------------------- resize policies

def test_squash_and_pad_differ_for_non_square_image():
    img = _disc_image()
    squash = preprocess(img, InputSpec(resize="squash", interpolation="bilinear", **RAW))
    pad = preprocess(img, InputSpec(resize="pad", interpolation="bilinear", **RAW))
    assert squash.shape == pad.shape == (1, 100, 100)
    assert np.abs(squash - pad).max() > 0.5


def test_pad_keeps_aspect_and_squash_does_not():
    img = _disc_image(h=200, w=100, r=30)  # a disc of diameter 60 in a 2:1 portrait image
    pad = preprocess(img, InputSpec(resize="pad", interpolation="nearest", **RAW))[0] > 0.5
    squash = preprocess(img, InputSpec(resize="squash", interpolation="nearest", **RAW))[0] > 0.5
    # Pad: 200x100 -> 200x200 -> 100x100, the disc stays round (diameter 30 px both ways).
    assert abs(_extent(pad, 1) - _extent(pad, 0)) <= 1
    assert _extent(pad, 1) == pytest.approx(30, abs=2)
    # Squash: width is stretched twice as much as height, the disc becomes a 2:1 ellipse.
    assert _extent(squash, 0) == pytest.approx(2 * _extent(squash, 1), abs=2)


def test_pad_fills_with_the_background():
    img = _disc_image(h=200, w=100, background=0.1)
    padded = pad_to_aspect(img, 1.0)
    assert padded.shape == (200, 200)
    np.testing.assert_array_equal(padded[:, :50], np.float32(0.1))
    np.testing.assert_array_equal(padded[:, 150:], np.float32(0.1))
    np.testing.assert_array_equal(padded[:, 50:150], img)
    wide = pad_to_aspect(img.T, 1.0)  # landscape: padded top and bottom
    assert wide.shape == (200, 200)
    np.testing.assert_array_equal(wide[50:150], img.T)


def test_nearest_squash_of_png_equals_pillow_resize(random_png):
    path, _ = random_png
    x = preprocess(path, InputSpec(resize="squash", interpolation="nearest", **RAW))[0]
    with Image.open(path) as im:
        ref = np.asarray(im.resize((100, 100), Image.Resampling.NEAREST), dtype=np.float32) / 255.0
    np.testing.assert_array_equal(x, ref)


def test_bilinear_squash_is_close_to_pillow_8bit_resize(random_png):
    path, _ = random_png
    x = preprocess(path, InputSpec(resize="squash", interpolation="bilinear", **RAW))[0]
    with Image.open(path) as im:
        ref = np.asarray(im.resize((100, 100), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    np.testing.assert_allclose(x, ref, atol=1 / 255 + 1e-6)  # float path vs 8-bit rounding


@pytest.mark.parametrize("name", ["nearest", "bilinear", "bicubic", "box", "lanczos"])
def test_each_interpolation_is_pillows_own_in_both_modes(random_png, name):
    # 8-bit images resize in Pillow's 8-bit mode, float ones in its 32-bit float mode: each name is that filter.
    _, a = random_png
    spec = InputSpec(height=90, width=77, resize="squash", interpolation=name, **RAW)
    want8 = np.asarray(Image.fromarray(a).resize((77, 90), getattr(Image.Resampling, name.upper())))
    np.testing.assert_array_equal(preprocess(a, spec)[0], want8.astype(np.float32) / 255.0)
    f = a.astype(np.float32) / 255.0
    want_f = np.asarray(Image.fromarray(f, mode="F").resize((77, 90), getattr(Image.Resampling, name.upper())))
    np.testing.assert_array_equal(preprocess(f, spec)[0], want_f)


def test_array_inputs_by_type():
    spec = InputSpec(height=80, width=80, **RAW)
    rng = np.random.default_rng(4)
    u16 = rng.integers(0, 65536, (80, 80)).astype(np.uint16)
    np.testing.assert_allclose(preprocess(u16, spec)[0], (u16 // 256) / 255.0, rtol=1e-6)  # a 16-bit PNG's 8 bits
    i16 = rng.integers(-50, 32768, (80, 80)).astype(np.int16)  # negatives clip to black
    np.testing.assert_allclose(preprocess(i16, spec)[0], np.clip(i16 / 32767.0, 0, 1), rtol=1e-6)
    f = rng.random((80, 80)) * 3 - 1  # floats are taken as they are
    np.testing.assert_allclose(preprocess(f, spec)[0], f, rtol=1e-6)
    rgba = rng.integers(0, 256, (80, 80, 4)).astype(np.uint8)
    rgba[..., 3] = 0  # alpha is not a colour: ignored
    np.testing.assert_allclose(preprocess(rgba.astype(np.float32) / 255, spec)[0],
                               rgba[..., :3].mean(axis=-1) / 255, rtol=1e-5)
    with pytest.raises(ValueError, match=r"expected a 2-D grayscale array, got shape \(80, 80, 2\)"):
        preprocess(np.zeros((80, 80, 2)), spec)


def test_pad_to_a_tall_aspect_and_the_fill_from_the_outermost_columns():
    # 2:1 (height:width) from a 100x10 strip: padded left and right to 50 wide. The border's median comes from
    # the outer rows and columns: the second column (0.8 here) is image, not border.
    img = np.full((100, 10), 0.2, np.float32)
    img[:, -1] = 0.8
    img[1:-1, 1] = 0.8
    out = pad_to_aspect(img, 2.0)
    assert out.shape == (100, 50)
    np.testing.assert_array_equal(out[:, :20], np.float32(0.2))
    np.testing.assert_array_equal(out[:, 20:30], img)
    assert pad_to_aspect(img.T, 2.0).shape == (200, 100)  # a wide image: padded top and bottom


def test_pad_of_an_8bit_image_stays_8bit_and_fills_with_the_border_median():
    img = np.full((60, 30), 100, np.uint8)
    img[0, :] = img[-1, :] = 101  # a brighter top and bottom row: the border's median is still 100
    img[10:50, 5:25] = 250
    out = pad_to_aspect(img, 1.0)
    assert out.dtype == np.uint8 and out.shape == (60, 60)
    assert (out[:, :15] == 100).all() and (out[:, 45:] == 100).all()
    np.testing.assert_array_equal(out[:, 15:45], img)


# ---------------------------------------------------------------- decoding

def test_16bit_png_decodes_to_its_top_8_bits(tmp_path):
    # Every file becomes the 8 bits the network was trained on (edge.imaging.to_8bit, issue 33): a 16-bit PNG by its
    # nominal range, so one holding an 8-bit image's pixels x 257 is that image bit for bit.
    a = np.linspace(0, 65535, 300 * 200).round().astype(np.uint16).reshape(300, 200)
    path = tmp_path / "sixteen.png"
    Image.fromarray(a).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")  # really stored as 16 bit
    img = load_radiograph(path)
    assert img.dtype == np.float32 and img.shape == (300, 200)
    np.testing.assert_array_equal(img, (a // 256).astype(np.float32) / 255.0)
    x = preprocess(path, InputSpec(interpolation="bilinear", **RAW))
    np.testing.assert_array_equal(x, preprocess((a // 256).astype(np.uint8), InputSpec(interpolation="bilinear", **RAW)))


def test_8bit_png_decodes_to_unit_range(random_png):
    path, a = random_png
    np.testing.assert_array_equal(load_radiograph(path), a.astype(np.float32) / 255.0)


def test_rgb_png_decodes_to_luminance(tmp_path):
    gray = np.random.default_rng(5).integers(0, 256, (64, 80), dtype=np.uint8)
    path = tmp_path / "rgb.png"
    Image.fromarray(np.stack([gray] * 3, -1)).save(path)
    np.testing.assert_array_equal(load_radiograph(path), gray / np.float32(255.0))


def test_array_input_equals_file_input(random_png, tmp_path):
    path, a = random_png
    for spec in (InputSpec(), InputSpec(resize="pad", interpolation="bilinear"), InputSpec(channels=3)):
        np.testing.assert_array_equal(preprocess(path, spec), preprocess(a, spec))
    a16 = (a.astype(np.uint16) * 257 + 3)
    path16 = tmp_path / "sixteen.png"
    Image.fromarray(a16).save(path16)
    np.testing.assert_array_equal(preprocess(path16, InputSpec()), preprocess(a16, InputSpec()))


@pytest.mark.parametrize("content, problem", [
    (None, "no such file"),
    (b"", "empty file"),
    (b"this is not an image at all" * 10, "not a readable image"),
])
def test_bad_files_raise_one_line_image_errors(tmp_path, content, problem):
    path = tmp_path / "bad.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageError, match=problem) as err:
        load_radiograph(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_blank_and_tiny_images_are_refused(tmp_path):
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((100, 100), 7, np.uint8)).save(blank)
    with pytest.raises(ImageError, match="blank"):
        load_radiograph(blank)
    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.eye(8, dtype=np.uint8) * 255).save(tiny)
    with pytest.raises(ImageError, match="pixels"):
        load_radiograph(tiny)


def test_input_spec_validation():
    with pytest.raises(ValueError):
        InputSpec(resize="crop")
    with pytest.raises(ValueError):
        InputSpec(channels=2)
    with pytest.raises(ValueError):
        InputSpec(normalize="minmax")


# ---------------------------------------------------------------- runtime stays torch-free

def test_edge_runtime_imports_do_not_import_torch(repo_root):
    from conftest import repo_env

    code = ("import sys, edge, edge.config, edge.imaging, edge.labels, edge.preprocess, edge.metrics, "
            "edge.retention; print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=repo_root, env=repo_env(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


# ---------------------------------------------------------------- real data (skipped without it)

def test_the_100px_spec_reproduces_the_rsna_100px_set(rsna_root):
    """Full-resolution originals through a 100x100 NEAREST squash give exactly the pixels of the RSNA 100 px
    set, so a model trained on train-100px sees in the clinic what it saw in training."""
    ids = sorted(p.stem for p in (rsna_root / "fullres" / "images").glob("*.png"))[:3]
    if len(ids) < 3:
        missing_data(f"fewer than 3 full-resolution images under {rsna_root / 'fullres' / 'images'}")
    # The spec that made train-100px (the 299 px bundle's default differs: tests/test_input_299.py checks that one).
    spec = InputSpec(height=100, width=100, resize="squash", interpolation="nearest")
    for i in ids:
        full = rsna_root / "fullres" / "images" / f"{i}.png"
        small = rsna_root / "train-100px" / "images" / f"{i}.png"
        assert small.is_file(), f"id {i} missing from train-100px"
        np.testing.assert_array_equal(preprocess(full, InputSpec(**RAW)), preprocess(small, InputSpec(**RAW)),
                                      err_msg=f"id {i}: resized pixels differ")
        np.testing.assert_array_equal(preprocess(full, spec), preprocess(small, spec),
                                      err_msg=f"id {i}: normalised inputs differ")
