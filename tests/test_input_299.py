"""The 299 px input spec reproduces train-299 from a clinic's full-resolution image.

train-299 is Pillow `resize((299, 299), BILINEAR)` of the 8-bit originals, saved as JPEG quality 90
(../shared/data/rsna-boneage/README.md). The runtime decodes an 8-bit file to uint8 and resizes it in
Pillow's 8-bit mode, so a full-resolution original gives exactly the lossless 299 px image, and the
training JPEGs differ from it only by their JPEG noise.
"""
import numpy as np
import pytest
from PIL import Image

from edge.config import InputSpec
from edge.preprocess import preprocess

SPEC_299 = InputSpec(height=299, width=299, resize="squash", interpolation="bilinear")
RAW_299 = InputSpec(height=299, width=299, resize="squash", interpolation="bilinear",
                    normalize="fixed", mean=0.0, std=1.0)  # identity normalisation: raw [0, 1] pixels
JPEG_NOISE_GREY_LEVELS = 1.5  # train-299's README: 0.6 on average; measured 0.37-0.90 per image on fullres/


def _fullres_ids(rsna_root):
    ids = sorted(p.stem for p in (rsna_root / "fullres" / "images").glob("*.png"))
    if len(ids) < 3:
        pytest.skip(f"fewer than 3 full-resolution images under {rsna_root / 'fullres' / 'images'}")
    return ids


def test_299_spec_is_exactly_the_bilinear_squash_that_made_train_299(rsna_root):
    for i in _fullres_ids(rsna_root):
        full = rsna_root / "fullres" / "images" / f"{i}.png"
        with Image.open(full) as im:
            made = np.asarray(im.convert("L").resize((299, 299), Image.Resampling.BILINEAR), np.float32) / 255
        np.testing.assert_array_equal(preprocess(full, RAW_299)[0], made, err_msg=f"id {i}")


def test_299_spec_matches_the_training_jpegs_up_to_jpeg_noise(rsna_root):
    for i in _fullres_ids(rsna_root):
        full = preprocess(rsna_root / "fullres" / "images" / f"{i}.png", RAW_299)[0]
        jpeg = preprocess(rsna_root / "train-299" / "images" / f"{i}.jpg", RAW_299)[0]
        assert np.abs(full - jpeg).mean() * 255 < JPEG_NOISE_GREY_LEVELS, f"id {i}"


def test_8bit_arrays_and_files_take_the_same_path(tmp_path):
    """An 8-bit array given to the API is resized like the file it came from (8-bit mode), not in float."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (523, 401), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "a.png")
    np.testing.assert_array_equal(preprocess(a, SPEC_299), preprocess(tmp_path / "a.png", SPEC_299))
    # The float path gives another (slightly different) result: the test above would notice a fall-back to it.
    assert not np.array_equal(preprocess(a.astype(np.float32) / 255, RAW_299),
                              preprocess(a, RAW_299))
