"""The one definition of preprocessing: decoded radiograph -> network input (C, H, W) float32.

Training (models/data.py) calls `to_model_input` on every image before augmentation, export calibrates
through it and every backend runs it, so what the network saw in training is what it sees in a clinic.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from edge.config import InputSpec
from edge.imaging import decode_radiograph, to_8bit

_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
}


def preprocess(source, spec: InputSpec) -> np.ndarray:
    """A path or a 2-D array (grayscale, any range) -> (C, H, W) float32 network input."""
    return to_model_input(decode(source), spec)


def decode(source) -> np.ndarray:
    """A path or a 2-D array -> the decoded 2-D image (uint8, or float32 in [0, 1]) to_model_input takes."""
    return decode_radiograph(source) if not isinstance(source, np.ndarray) else _as_unit_gray(source)


def to_model_input(img: np.ndarray, spec: InputSpec) -> np.ndarray:
    """2-D image (uint8, or float in [0, 1]) -> (C, H, W) float32, resized and normalised as `spec` says.
    uint8 is resized in Pillow's 8-bit mode: that is how the RSNA sets were made from the 8-bit originals
    (train-299: BILINEAR, identical pixels on fullres/; the float path differs by up to 0.8 grey levels)."""
    img = resize(img, spec)
    if img.dtype == np.uint8:
        img = img.astype(np.float32) / 255.0
    img = normalize(img, spec)
    return np.repeat(img[None], spec.channels, axis=0)


def resize(img: np.ndarray, spec: InputSpec) -> np.ndarray:
    if spec.resize == "pad":
        img = pad_to_aspect(img, spec.height / spec.width)
    if img.shape == (spec.height, spec.width):
        return img if img.dtype == np.uint8 else img.astype(np.float32, copy=False)
    if img.dtype == np.uint8:
        out = Image.fromarray(np.ascontiguousarray(img)).resize((spec.width, spec.height), _FILTERS[spec.interpolation])
        return np.asarray(out)
    # Pillow's 32-bit float mode keeps 16-bit detail that an 8-bit round trip would lose.
    pil = Image.fromarray(np.ascontiguousarray(img, dtype=np.float32), mode="F")
    out = pil.resize((spec.width, spec.height), _FILTERS[spec.interpolation])
    return np.asarray(out, dtype=np.float32)


def pad_to_aspect(img: np.ndarray, aspect_hw: float) -> np.ndarray:
    """Pad (centred, with the border's median, i.e. the background) to height/width == aspect_hw."""
    h, w = img.shape
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    fill = float(np.median(border))
    target_h, target_w = max(h, round(w * aspect_hw)), max(w, round(h / aspect_hw))
    dtype = np.uint8 if img.dtype == np.uint8 else np.float32
    out = np.full((target_h, target_w), round(fill) if dtype == np.uint8 else fill, dtype=dtype)
    top, left = (target_h - h) // 2, (target_w - w) // 2
    out[top:top + h, left:left + w] = img
    return out


def normalize(img: np.ndarray, spec: InputSpec) -> np.ndarray:
    if spec.normalize == "image":
        std = float(img.std())
        return ((img - img.mean()) / max(std, 1e-6)).astype(np.float32)
    return ((img - spec.mean) / spec.std).astype(np.float32)


def _as_unit_gray(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        a = a[..., :3].mean(axis=-1)
    if a.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale array, got shape {a.shape}")
    if a.dtype == np.uint8:
        return a  # resized in 8-bit mode, like a file (to_model_input)
    if a.dtype == np.uint16:  # a 16-bit PNG's pixels: the file's 8 bits (edge.imaging.to_8bit)
        return to_8bit(a.astype(np.float64), np.array([0, 65535]))
    if np.issubdtype(a.dtype, np.integer):
        top = 255.0 if a.dtype == np.uint8 else float(np.iinfo(a.dtype).max)
        return (a.astype(np.float32) / top).clip(0, 1)
    return a.astype(np.float32)
