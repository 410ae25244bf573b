"""Decode a radiograph file to a 2-D float32 array in [0, 1], higher = brighter (bone is bright).

Every failure becomes an ImageError whose message is one line naming the file and the problem:
a clinic user never sees a stack trace for a bad file.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# Hand radiographs are at most a few tens of megapixels; anything larger is refused before decoding.
MAX_PIXELS = 60_000_000
MIN_SIDE = 16

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".tif", ".tiff", ".bmp"}


class ImageError(ValueError):
    """A file that cannot be used as a radiograph. str() is the one-line user message."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def load_radiograph(path) -> np.ndarray:
    """A file -> 2-D float32 in [0, 1]."""
    return to_unit(decode_radiograph(path))


def to_unit(img: np.ndarray) -> np.ndarray:
    """A decoded radiograph (uint8, or float32 in [0, 1]) -> float32 in [0, 1]."""
    return img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img


def decode_radiograph(path) -> np.ndarray:
    """A file -> 2-D array: uint8 for 8-bit sources (so they can be resized in Pillow's 8-bit mode, exactly as
    the RSNA sets were made, and cheaply), else float32 in [0, 1] (16-bit PNG, DICOM)."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(path, "no such file")
    if path.stat().st_size == 0:
        raise ImageError(path, "empty file")
    if _is_dicom(path):
        img = _decode_dicom(path)
    else:
        img = _decode_pillow(path)
    return _check_size(path, img)


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    with open(path, "rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def _decode_pillow(path: Path) -> np.ndarray:
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise ImageError(path, f"image is {im.width}x{im.height}, larger than {MAX_PIXELS:,} pixels")
                im = ImageOps.exif_transpose(im)  # phone photos and some scanners store rotation in EXIF
                return _pil_to_unit_gray(im)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(path, f"image is larger than {MAX_PIXELS:,} pixels (decompression bomb guard)") from None
    except Image.UnidentifiedImageError:
        raise ImageError(path, "not a readable image (PNG, JPEG or DICOM expected)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(path, f"corrupt or truncated image ({_first_line(e)})") from None


def _pil_to_unit_gray(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im).astype(np.float32)
        top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        return np.clip(a / top, 0.0, 1.0)
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float32)
        return _minmax(a)
    if im.mode not in ("L", "1"):
        im = im.convert("L")  # RGB(A), P, LA, CMYK: luminance
    return np.asarray(im.convert("L"), dtype=np.uint8)


def _decode_dicom(path: Path) -> np.ndarray:
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:
        raise ImageError(path, "DICOM needs pydicom: pip install pydicom") from None
    try:
        ds = pydicom.dcmread(path)
    except Exception as e:  # pydicom raises many types for malformed files
        raise ImageError(path, f"not a readable DICOM file ({_first_line(e)})") from None
    if "PixelData" not in ds:
        raise ImageError(path, "DICOM file has no pixel data")
    try:
        pixels = ds.pixel_array
    except Exception as e:
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(ts, "name", str(ts))
        raise ImageError(path, f"cannot decode DICOM pixel data in transfer syntax {name} "
                               f"(install pylibjpeg and pylibjpeg-libjpeg/-openjpeg for compressed DICOM): "
                               f"{_first_line(e)}") from None
    if pixels.ndim == 3 and ds.get("SamplesPerPixel", 1) == 1:
        pixels = pixels[0]  # multi-frame: a radiograph has one frame, take the first
    if pixels.ndim == 3:
        pixels = pixels.mean(axis=-1)
    a = apply_modality_lut(pixels, ds).astype(np.float32)  # rescale slope/intercept
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        a = apply_voi_lut(a, ds, prefer_lut=True).astype(np.float32)
    a = _minmax(a)
    if ds.get("PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        a = 1.0 - a  # MONOCHROME1: high values are dark; bone must be bright as in training
    return a


def _minmax(a: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(a)), float(np.max(a))
    if not np.isfinite(lo) or not np.isfinite(hi):
        a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(a.min()), float(a.max())
    return ((a - lo) / (hi - lo)).astype(np.float32) if hi > lo else np.zeros_like(a, dtype=np.float32)


def _check_size(path: Path, img: np.ndarray) -> np.ndarray:
    if img.ndim != 2:
        raise ImageError(path, f"expected a 2-D grayscale image, got shape {img.shape}")
    h, w = img.shape
    if min(h, w) < MIN_SIDE:
        raise ImageError(path, f"image is only {w}x{h} pixels; a hand radiograph needs at least {MIN_SIDE}")
    if float(img.max()) == float(img.min()):
        raise ImageError(path, "image is blank (every pixel has the same value)")
    return img


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0].rstrip(": ") if text else type(e).__name__


def expand_inputs(items) -> list[tuple[str, str | None]]:
    """Files, folders (recursive) and globs -> [(image file, None) or (item, why it gave no file)], in the
    order given, so a report can list every input where the user put it."""
    import glob

    entries: list[tuple[str, str | None]] = []
    for item in items:
        item = os.fspath(item)
        p = Path(item)
        if p.is_dir():
            found = sorted(str(q) for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
            why = "folder holds no PNG, JPEG or DICOM files"
        elif p.exists():
            found, why = [item], ""
        elif any(ch in item for ch in "*?["):
            found, why = sorted(glob.glob(item, recursive=True)), "pattern matched no files"
        else:
            found, why = [], "no such file"
        entries.extend((f, None) for f in found) if found else entries.append((item, why))
    return entries
