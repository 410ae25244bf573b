"""What drove the estimate: an occlusion map, by the torch-free runtime, on every backend.

Each square patch of the network input (a GRID x GRID lattice of patches twice the lattice step wide, so
neighbours overlap by half) is set to 0, the image's own mean after the per-image z-score, and the whole
occluded set is run through the loaded backend in fixed-size batches. A pixel's value is the mean change
of the estimate, |bone age occluded - bone age|, in months, over the patches that cover it. Occlusion needs
no extra graph output and no gradient, so the bundle's graph is untouched and every backend and precision
computes its own map. Cost: GRID^2 + 1 network passes (145 by default), whatever the input size.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

GRID = 12
BATCH = 16  # one fixed batch size: OpenVINO compiles a static shape per batch size
DISPLAY = 512  # longer side of the overlay PNG, pixels


def occlusion_inputs(x: np.ndarray, grid: int = GRID) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """(C, H, W) input -> (grid^2 occluded copies, their (top, left, bottom, right) boxes)."""
    _, h, w = x.shape
    sy, sx = math.ceil(h / grid), math.ceil(w / grid)
    boxes = [(max(0, i * sy - sy // 2), max(0, j * sx - sx // 2), min(h, i * sy + sy + sy // 2),
              min(w, j * sx + sx + sx // 2)) for i in range(grid) for j in range(grid)]
    out = np.repeat(x[None], len(boxes), axis=0)
    for k, (t, l, b, r) in enumerate(boxes):
        out[k, :, t:b, l:r] = 0.0
    return out, boxes


def _ages(model, x: np.ndarray, sex: str) -> np.ndarray:
    """The estimate for each input (given the sex when given), in padded fixed-size batches."""
    n = len(x)
    pad = (-n) % BATCH
    xs = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)]) if pad else x
    parts = []
    for s in range(0, len(xs), BATCH):
        out = model.run_outputs(xs[s:s + BATCH])
        parts.append(out["bone_age_months_by_sex"][:, int(sex == "male")] if sex else out["bone_age_months"])
    return np.concatenate(parts)[:n]


def occlusion_map(model, x: np.ndarray, sex: str = "", grid: int = GRID) -> np.ndarray:
    """(C, H, W) preprocessed input -> (H, W) float32 map of |change of the estimate| in months."""
    occluded, boxes = occlusion_inputs(x, grid)
    ages = _ages(model, np.concatenate([x[None], occluded]), sex)
    change = np.abs(ages[1:] - ages[0])
    total = np.zeros(x.shape[1:], np.float64)
    count = np.zeros(x.shape[1:], np.float64)
    for (t, l, b, r), c in zip(boxes, change):
        total[t:b, l:r] += c
        count[t:b, l:r] += 1
    return (total / np.maximum(count, 1)).astype(np.float32)


def to_image_frame(heat: np.ndarray, image_shape: tuple[int, int], spec) -> np.ndarray:
    """The map in network-input coordinates -> the radiograph's own (H, W) frame (undoes squash or pad)."""
    if spec.resize == "pad":  # the image sat centred in a padded square; keep that part of the map
        h, w = image_shape
        aspect = spec.height / spec.width
        th, tw = max(h, round(w * aspect)), max(w, round(h / aspect))
        top, left = (th - h) / th * spec.height / 2, (tw - w) / tw * spec.width / 2
        heat = heat[int(round(top)):spec.height - int(round(top)) or None,
                    int(round(left)):spec.width - int(round(left)) or None]
    pil = Image.fromarray(heat.astype(np.float32), mode="F")
    return np.asarray(pil.resize((image_shape[1], image_shape[0]), Image.Resampling.BILINEAR), np.float32)


def _colour(v: np.ndarray) -> np.ndarray:
    """[0, 1] -> RGB uint8 on a dark-red, red, yellow, white ramp (readable over a grey radiograph)."""
    stops = np.array([0.0, 0.35, 0.7, 1.0])
    rgb = np.array([[80, 0, 0], [230, 30, 0], [255, 210, 0], [255, 255, 230]], float)
    return np.stack([np.interp(v, stops, rgb[:, c]) for c in range(3)], axis=-1).astype(np.uint8)


def overlay(image: np.ndarray, heat: np.ndarray, spec, display: int = DISPLAY) -> Image.Image:
    """Radiograph in [0, 1] (H, W) + map in input coordinates -> RGB overlay, longer side `display` px.
    The map is scaled to its own maximum; weak areas stay transparent."""
    scale = display / max(image.shape)
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    gray = Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).resize(size, Image.Resampling.BILINEAR)
    frame = to_image_frame(heat, (size[1], size[0]), spec)
    v = frame / frame.max() if frame.max() > 0 else frame
    alpha = (np.clip((v - 0.15) / 0.85, 0, 1) * 0.6)[..., None]
    base = np.repeat(np.asarray(gray, float)[..., None], 3, axis=-1)
    return Image.fromarray((base * (1 - alpha) + _colour(v) * alpha).astype(np.uint8), "RGB")


def explain(model, source, sex: str = "") -> tuple[np.ndarray, Image.Image]:
    """One radiograph (path) -> (the image in [0, 1], its heatmap overlay), decoded as preprocess() decodes it
    so the map explains that very input."""
    from edge.imaging import decode_radiograph, to_unit
    from edge.preprocess import to_model_input

    decoded = decode_radiograph(source)
    heat = occlusion_map(model, to_model_input(decoded, model.spec), sex)
    image = to_unit(decoded)
    return image, overlay(image, heat, model.spec)
