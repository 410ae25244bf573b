"""Prediction-time variants of trained checkpoints on the validation split, with no training: what each buys.

Scores, on the same validation images: each checkpoint as it is, with and without the mirror average, at other
internal sizes (`net_size`, same weights), with small zooms averaged in, and the mean of several checkpoints.
The test split is never read.

    python benchmarks/tta_trials.py --data ../shared/data/rsna-boneage/train-100px \\
        --split models/splits/rsna-train-100px-seed0.json --checkpoints models/checkpoints/default.pt OTHER.pt
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from edge import metrics
from models.augment import warp
from models.checkpoint import load_model, with_config
from models.data import load_images, read_labels, read_split
from models.train import predict_outputs


def zoomed(x: np.ndarray, scale: float) -> np.ndarray:
    """Zoom about the centre (scale > 1 magnifies), border pixels repeated: the training augmentation's own warp."""
    theta = torch.tensor([[1 / scale, 0, 0], [0, 1 / scale, 0]]).expand(len(x), 2, 3)
    return warp(torch.from_numpy(x), theta).numpy()


def predict_age_logit(model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Age in months, sex logit and age given each sex (N, 2; NaN without sex heads): averaged over views as the
    mirror averages them (age is linear in its z)."""
    out = predict_outputs(model, x)
    p = np.clip(out["p_male"], 1e-7, 1 - 1e-7)
    by_sex = out.get("bone_age_months_by_sex", np.full((len(p), 2), np.nan))
    return out["bone_age_months"], np.log(p / (1 - p)), by_sex


def mean_views(views: list) -> tuple:
    return tuple(np.mean(parts, 0) for parts in zip(*views))


def score(name: str, age: np.ndarray, logit: np.ndarray, by_sex: np.ndarray, labels) -> dict:
    m = metrics.point_metrics(labels.age, age, labels.male, 1 / (1 + np.exp(-logit)))
    given = by_sex[np.arange(len(age)), labels.male.astype(int)]
    m["mae_sex_given"] = float(np.abs(given - labels.age).mean())
    print(f"| {name} | {m['mae']:.2f} | {m['mae_sex_given']:.2f} | {m['accuracy']:.3f} | {m['auc']:.3f} |",
          flush=True)
    return m


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoints", nargs="+", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--net-sizes", type=int, nargs="*", default=[160, 176], help="other internal sizes to try")
    p.add_argument("--zoom-sets", nargs="*", default=["0.95,1.05"], metavar="S1,S2",
                   help="each a comma-separated set of zooms averaged with scale 1 (and mirrored)")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    labels = read_labels(args.data).subset(read_split(args.split)["val"])
    print(f"validation split, n={len(labels)}; mirror = mean of the image's and its mirror's predictions")
    print("| variant | MAE | MAE given sex | sex acc | AUC |\n| --- | --- | --- | --- | --- |")
    x = None
    mirrored = []
    for ck in args.checkpoints:
        model, _ = load_model(ck)
        x = load_images(labels.paths(), model.cfg.input, progress=False) if x is None else x
        plain = with_config(model, flip_tta=False)
        score(f"{ck}, no mirror", *predict_age_logit(plain, x), labels)
        mirror = with_config(model, flip_tta=True)
        z = predict_age_logit(mirror, x)
        mirrored.append(z)
        score(f"{ck}, mirror (net_size {model.cfg.net_size})", *z, labels)
        for size in [] if model.cfg.member_net_sizes else args.net_sizes:  # a mean of networks has its sizes
            score(f"{ck}, mirror, net_size {size}",
                  *predict_age_logit(with_config(model, flip_tta=True, net_size=size), x), labels)
        by_zoom = {1.0: z}
        for zoom_set in args.zoom_sets:
            zooms = [float(s) for s in zoom_set.split(",")]
            for s in zooms:
                if s not in by_zoom:
                    by_zoom[s] = predict_age_logit(mirror, zoomed(x, s))
                    score(f"{ck}, mirror, zoom {s} alone", *by_zoom[s], labels)
            zs = [by_zoom[s] for s in sorted({1.0, *zooms})]
            score(f"{ck}, mirror x zooms {', '.join(map(str, sorted({1.0, *zooms})))}", *mean_views(zs), labels)
    if len(mirrored) > 1:
        score("mean of the checkpoints, each mirrored", *mean_views(mirrored), labels)
    return 0


if __name__ == "__main__":
    sys.exit(main())
