"""Synthetic hand radiograph phantoms for tests: structures that change with age and sex.

Bones lengthen and widen with age, carpal ossification centres appear one by one and grow, and each
phalanx's growth plate (a dark gap under its epiphysis) narrows and closes. Girls mature earlier
(skeletal maturity runs ~15% ahead) and boys' hands end up larger, so a tiny network can learn both
outputs in about a minute. Written in the RSNA layout (labels.csv + images/<id>.png).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

MAX_AGE_MONTHS = 228.0


def maturity(age_months: float, male: bool) -> float:
    return float(np.clip(age_months / MAX_AGE_MONTHS * (1.0 if male else 1.15), 0.0, 1.0))


def render_phantom(age_months: float, male: bool, size: int = 128, rng=None) -> np.ndarray:
    """One phantom as uint8 (size x size)."""
    rng = rng or np.random.default_rng()
    m = maturity(age_months, male)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = 0.08 + 0.03 * rng.standard_normal((size, size)).astype(np.float32)
    scale = (0.62 + 0.33 * m + (0.05 * m if male else 0.0)) * rng.uniform(0.95, 1.05)
    cx, wrist_y = 0.5 + rng.uniform(-0.04, 0.04), 0.92 + rng.uniform(-0.02, 0.02)

    def rod(p0, p1, width, value):
        nonlocal img
        d = _segment_distance(xx, yy, p0, p1)
        img = np.where(d < width, np.maximum(img, value), img)

    def disc(c, r, value):
        nonlocal img
        img = np.where((xx - c[0]) ** 2 + (yy - c[1]) ** 2 < r * r, np.maximum(img, value), img)

    bone_w = 0.012 + 0.010 * m
    plate_gap = 0.018 * max(0.0, 1.0 - m / 0.85)  # growth plate closes at maturity 0.85
    # Soft tissue: palm and fingers.
    rod((cx, wrist_y), (cx, wrist_y - 0.35 * scale), 0.16 * scale, 0.28)
    angles = np.deg2rad([-38, -14, -3, 8, 20]) + rng.normal(0, 0.02, 5)
    lengths = np.array([0.55, 0.78, 0.85, 0.80, 0.65]) * scale
    for k, (a, length) in enumerate(zip(angles, lengths)):
        base = np.array([cx + (k - 2) * 0.055 * scale, wrist_y - 0.12 * scale])
        direction = np.array([np.sin(a), -np.cos(a)])
        tip = base + direction * length * 0.75
        rod(base, tip, 0.03 * scale, 0.28)
        segments = 3 if k == 0 else 4  # metacarpal + phalanges; the thumb has one phalanx fewer
        seg_len = length * 0.75 / segments
        for s in range(segments):
            p0 = base + direction * seg_len * s
            p1 = base + direction * seg_len * (s + 0.85)
            rod(p0 + direction * (plate_gap + 0.01), p1, bone_w, 0.75 + 0.1 * m)
            disc(p0 + direction * 0.008, bone_w * (0.6 + 0.5 * m), 0.8)  # epiphysis
    # Carpal ossification centres: more appear, and grow, with maturity.
    n_carpals = int(np.clip(np.floor(8 * m * 1.4 + 0.5), 0, 8))
    for j in range(n_carpals):
        c = (cx + (j % 4 - 1.5) * 0.05 * scale, wrist_y - 0.03 - (j // 4) * 0.05 * scale)
        disc(c, (0.008 + 0.018 * m) * scale, 0.72)
    img = img * rng.uniform(0.85, 1.15) + 0.02 * rng.standard_normal(img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def _segment_distance(xx, yy, p0, p1):
    p0, p1 = np.asarray(p0, np.float32), np.asarray(p1, np.float32)
    d = p1 - p0
    t = np.clip(((xx - p0[0]) * d[0] + (yy - p0[1]) * d[1]) / max(float(d @ d), 1e-9), 0, 1)
    return np.hypot(xx - (p0[0] + t * d[0]), yy - (p0[1] + t * d[1]))


def write_phantom_dataset(out: str | Path, n: int, size: int = 128, seed: int = 0) -> Path:
    """n phantoms in the RSNA layout; ages uniform over 1..228 months, half boys."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n):
        age = float(rng.integers(1, 229))
        male = bool(rng.random() < 0.5)
        Image.fromarray(render_phantom(age, male, size, rng)).save(out / "images" / f"{k + 1}.png")
        rows.append((k + 1, int(age), str(male)))
    with open(out / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "boneage", "male"])
        w.writerows(rows)
    return out
