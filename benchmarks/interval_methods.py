"""Which grouping of the conformal intervals holds its coverage best: measured on the validation split alone.

    python benchmarks/interval_methods.py runs/calibrate-default-outputs.npz --data ../shared/data/rsna-boneage/train-299

Reads the network outputs that `python -m export.calibrate --cache FILE` kept, and only their validation part:
the test split is not looked at, so a method chosen here can still be judged on it once. Each of --splits
random halvings of the validation images fits the intervals on one half and measures them on the other
(about 310 images a band, as many as the test split has): the mean coverage per band of the estimated age and
per sex within it, the mean width, and how often a band would fail the gate (< nominal - 5 points) by chance.

Groupings (edge.clinical.intervals): "band" is the estimated-age quartile alone; "band x sex" splits each band
by the patient's sex (the given sex; for the sex-blind estimate the network's call, P(male) >= 0.5).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.clinical import intervals  # noqa: E402
from edge.clinical.evaluate import BAND_TOLERANCE, given_age  # noqa: E402
from edge.labels import read_labels  # noqa: E402


def validation_outputs(cache: Path, data: str):
    z = np.load(cache)
    labels = read_labels(data).subset([str(i) for i in z["val_ids"]])
    out = {n[4:]: z[n] for n in z.files if n.startswith("val_") and n != "val_ids"}
    return labels, out


def held_out(estimate, truth, sex, by_sex: bool, level: float, rng, splits: int) -> dict:
    """Coverage of intervals fitted on one random half and measured on the other, over `splits` halvings."""
    n, per_band, per_band_sex, overall, width, fails = len(truth), [], [], [], [], 0
    for _ in range(splits):
        fit_idx = np.zeros(n, bool)
        fit_idx[rng.permutation(n)[: n // 2]] = True
        ev = ~fit_idx
        v = intervals.fit(estimate[fit_idx], truth[fit_idx], False, male=sex[fit_idx] if by_sex else None)
        bounds = np.array([intervals.bounds_of(v, e, s, level) for e, s in zip(estimate[ev], sex[ev])])
        inside = (truth[ev] >= bounds[:, 0]) & (truth[ev] <= bounds[:, 1])
        band = intervals.band_of(estimate[ev], v["band_edges_months"])
        k = len(v["band_edges_months"]) + 1
        cov = np.array([inside[band == b].mean() for b in range(k)])
        per_band.append(cov)
        per_band_sex.append([[inside[(band == b) & (sex[ev] == s)].mean() for s in (False, True)] for b in range(k)])
        overall.append(inside.mean())
        width.append(np.mean(bounds[:, 1] - bounds[:, 0]))
        fails += bool((cov < level - BAND_TOLERANCE).any())
    return {"overall": np.mean(overall), "width": np.mean(width), "bands": np.mean(per_band, 0),
            "bands_sex": np.nanmean(np.array(per_band_sex, float), 0), "worst_band_p05": np.quantile(
                np.min(per_band, 1), 0.05), "gate_fail_rate": fails / splits}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cache", type=Path, help="the npz that python -m export.calibrate --cache wrote")
    p.add_argument("--data", required=True, help="the labelled folder the cache was computed on")
    p.add_argument("--level", type=float, default=0.9)
    p.add_argument("--splits", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    labels, out = validation_outputs(args.cache, args.data)
    truth, male = np.asarray(labels.age, float), np.asarray(labels.male, bool)
    estimates = {"sex blind": (np.asarray(out["bone_age_months"], float), intervals.seen_male(out["p_male"])),
                 "sex given": (given_age(out, labels.male), male)}
    print(f"validation split only, n={len(truth)}; {args.splits} random halvings, fitted on one half, measured on "
          f"the other; level {args.level:.0%}; band coverage: female / male in brackets")
    print("| estimate | grouping | coverage | mean width | coverage by band of the estimate (F / M) | "
          "worst band, 5th pct | P(a band < gate) |\n| --- | --- | --- | --- | --- | --- | --- |")
    for name, (estimate, sex) in estimates.items():
        for by_sex in (False, True):
            r = held_out(estimate, truth, sex, by_sex, args.level, np.random.default_rng(args.seed), args.splits)
            bands = ", ".join(f"{c:.1%} ({f:.1%} / {m:.1%})" for c, (f, m) in zip(r["bands"], r["bands_sex"]))
            print(f"| {name} | {'band x sex' if by_sex else 'band'} | {r['overall']:.1%} | {r['width']:.1f} | "
                  f"{bands} | {r['worst_band_p05']:.1%} | {r['gate_fail_rate']:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
