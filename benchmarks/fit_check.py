"""Over- or under-fitting? A checkpoint's error on training images (no augmentation) next to validation.

Also: what an affine recalibration of the predicted age (age' = k * age + b, fitted by least absolute error
on one half of the validation images, scored on the other) would gain.

    python benchmarks/fit_check.py --checkpoint models/checkpoints/default.pt \\
        --data ../shared/data/rsna-boneage/train-100px --split models/splits/rsna-train-100px-seed0.json
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from models.checkpoint import load_model
from models.data import load_images, read_labels, read_split
from models.train import predict_arrays

AGE_BANDS = ((0, 60), (60, 120), (120, 180), (180, 240))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--n", type=int, default=1500, help="images per part (the first N of the split's list)")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, _ = load_model(args.checkpoint)
    labels, split = read_labels(args.data), read_split(args.split)
    print("| images | MAE | sex acc | bias | MAE by true age " + " / ".join(f"{a}-{b} mo" for a, b in AGE_BANDS) + " |")
    for part in ("train", "val"):  # never the test part
        subset = labels.subset(split[part][: args.n])
        age, p_male = predict_arrays(model, load_images(subset.paths(), model.cfg.input, progress=False))
        err = np.abs(age - subset.age)
        bands = " / ".join(f"{err[(subset.age >= a) & (subset.age < b)].mean():.1f}" for a, b in AGE_BANDS)
        print(f"| {part} ({len(subset)}) | {err.mean():.2f} | {((p_male > 0.5) == subset.male).mean():.3f} | "
              f"{(age - subset.age).mean():+.2f} | {bands} |")
    for fit, held_out in two_folds(len(age)):
        k, b = fit_affine_l1(age[fit], subset.age[fit])
        before = np.abs(age[held_out] - subset.age[held_out]).mean()
        after = np.abs(k * age[held_out] + b - subset.age[held_out]).mean()
        print(f"recalibration age' = {k:.3f} age {b:+.2f}: held-out val MAE {before:.2f} -> {after:.2f}")
    return 0


def two_folds(n: int, seed: int = 0):
    idx = np.random.default_rng(seed).permutation(n)
    return [(idx[: n // 2], idx[n // 2:]), (idx[n // 2:], idx[: n // 2])]


def fit_affine_l1(pred: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    """Grid search: a 2-parameter fit needs nothing smarter."""
    grid = ((np.abs(k * pred + b - true).mean(), k, b)
            for k in np.linspace(0.9, 1.2, 61) for b in np.linspace(-30, 20, 201))
    _, k, b = min(grid)
    return float(k), float(b)


if __name__ == "__main__":
    raise SystemExit(main())
