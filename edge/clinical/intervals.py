"""Split-conformal prediction intervals for bone age, conditional on age band and on whether the sex was given.

Mondrian split conformal: the validation split's signed residuals (truth - estimate) are grouped by the band
of the ESTIMATED age (the truth is unknown at run time), by whether the patient's sex was given (the
per-sex head is more accurate) and, in bundles since v8.1.0, by the sex (the given one, else the network's
call): pooled, girls' and boys' residuals differ so much that one sex was under-covered in some band while the
band's mean held (benchmarks/results/interval-methods.md). For a level 1 - a, the interval is [estimate + r_lo, estimate + r_hi] with
r_lo, r_hi the group's a/2 and 1 - a/2 order statistics taken with the finite-sample correction, so each
tail misses with probability at most a/2 for an exchangeable new image of that group. Signed rather than
absolute residuals because the error is biased within a band (the youngest children are over-estimated),
and an equal-tailed interval follows that bias instead of widening both sides.
"""
from __future__ import annotations

import math

import numpy as np

# Bands are the quartiles of the estimated age on the validation split (rounded to whole months): each holds
# a quarter of the calibration images (~600 on RSNA), so each band's quantiles are stable and its coverage on
# the test split is measured on ~300 images (standard error ~2 points at 90%). Finer bands were tried on the
# default model: bands of 50-130 validation images gave unstable test coverage (77-94% at 90%).
N_BANDS = 4
VARIANTS = ("sex_given", "sex_blind")
SEXES = ("female", "male")


def seen_male(p_male) -> np.ndarray:
    """The network's sex call (Prediction.sex), which groups the sex-blind intervals: fit and use must agree."""
    return np.asarray(p_male) >= 0.5


def band_of(age_months, edges) -> np.ndarray:
    return np.searchsorted(np.asarray(edges, float), np.asarray(age_months, float), side="right")


def band_label(k: int, edges) -> str:
    lo = 0 if k == 0 else edges[k - 1]
    return f"{lo:g}-{edges[k]:g} mo" if k < len(edges) else f">= {lo:g} mo"


def fit(estimate, truth, sex_given: bool, n_bands: int = N_BANDS, male=None) -> dict:
    """One variant's calibration: band edges and the sorted signed residuals per band (0.1 month); with `male`
    (bool per image) also per band and sex ("bands_by_sex"), the bands' edges staying those of all images."""
    estimate, truth = np.asarray(estimate, float), np.asarray(truth, float)
    edges = sorted({float(round(e)) for e in np.quantile(estimate, np.arange(1, n_bands) / n_bands)})
    bands = band_of(estimate, edges)
    residual = truth - estimate
    out = {"variant": VARIANTS[0] if sex_given else VARIANTS[1], "n": int(len(residual)),
           "band_edges_months": edges, "bands": [_sorted(residual[bands == k]) for k in range(len(edges) + 1)]}
    if male is not None:
        male = np.asarray(male, bool)
        out["bands_by_sex"] = {s: [_sorted(residual[(bands == k) & (male == (s == "male"))])
                                   for k in range(len(edges) + 1)] for s in SEXES}
    return out


def fit_all(estimate_blind, estimate_given, truth, n_bands: int = N_BANDS, male=None, seen_male=None) -> dict:
    """The bundle.json entry: both variants (estimate_given None when the model has no per-sex head). With
    `male` (the true sex) the sex-given intervals are grouped by band and sex, with `seen_male` (the network's
    call) the sex-blind ones: the sex is known when the interval is drawn, in the second case as seen."""
    out = {"method": "split conformal, Mondrian by estimated-age band (validation quartiles)"
                     + (" and sex" if male is not None or seen_male is not None else "")
                     + ", equal-tailed signed residuals",
           "variants": {"sex_blind": fit(estimate_blind, truth, False, n_bands, male=seen_male)}}
    if estimate_given is not None:
        out["variants"]["sex_given"] = fit(estimate_given, truth, True, n_bands, male=male)
    return out


def _sorted(r: np.ndarray) -> list[float]:
    return [round(float(v), 1) for v in np.sort(r)]


def residual_bounds(scores, level: float) -> tuple[float, float]:
    """(r_lo, r_hi) for sorted signed residuals at coverage `level`; +-inf when too few scores for it."""
    n, alpha = len(scores), 1.0 - level
    k_hi = math.ceil((n + 1) * (1 - alpha / 2))  # 1-based order statistics
    k_lo = math.floor((n + 1) * (alpha / 2))
    hi = scores[k_hi - 1] if k_hi <= n else math.inf
    lo = scores[k_lo - 1] if k_lo >= 1 else -math.inf
    return lo, hi


def variant(fitted: dict, sex_given: bool) -> dict:
    variants = fitted["variants"]
    return variants["sex_given" if sex_given and "sex_given" in variants else "sex_blind"]


def bounds_of(v: dict, estimate: float, male: bool | None, level: float) -> tuple[float, float]:
    """(low, high) from the estimate's band, and its sex's residuals in that band when the variant was fitted
    by sex, the sex is known and the group has enough of them for the level (else the band's, pooled)."""
    k = int(band_of(estimate, v["band_edges_months"]))
    lo, hi = -math.inf, math.inf
    if male is not None and "bands_by_sex" in v:
        lo, hi = residual_bounds(v["bands_by_sex"][SEXES[int(bool(male))]][k], level)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = residual_bounds(v["bands"][k], level)
    return max(0.0, estimate + lo), estimate + hi


def interval(fitted: dict, estimate: float, sex_given: bool, level: float, male: bool | None = None):
    """(low, high) months for one estimate, clipped at 0. `male`: the given sex when sex_given, else the
    network's call (used by the variants fitted by sex)."""
    if not 0.5 <= level < 1.0:
        raise ValueError(f"interval level must be in [0.5, 1); got {level}")
    return bounds_of(variant(fitted, sex_given), estimate, male, level)


def coverage(fitted: dict, estimate, truth, sex_given: bool, level: float, by_truth: bool = False,
             male=None) -> dict:
    """Empirical coverage and mean width on held-out data, overall and per band of the estimated age (the
    bands the intervals condition on), or with by_truth per the same bands of the true age. `male`: per
    image, as interval() takes it."""
    estimate, truth = np.asarray(estimate, float), np.asarray(truth, float)
    male = [None] * len(estimate) if male is None else np.asarray(male, bool)
    bounds = np.array([interval(fitted, e, sex_given, level, m) for e, m in zip(estimate, male)])
    inside = (truth >= bounds[:, 0]) & (truth <= bounds[:, 1])
    width = bounds[:, 1] - bounds[:, 0]
    edges = variant(fitted, sex_given)["band_edges_months"]
    groups = band_of(truth if by_truth else estimate, edges)
    per_band = {band_label(k, edges): {"n": int((groups == k).sum()), "coverage": float(inside[groups == k].mean()),
                                       "mean_width": float(width[groups == k].mean())}
                for k in range(len(edges) + 1) if (groups == k).any()}
    return {"level": level, "n": int(len(truth)), "coverage": float(inside.mean()),
            "mean_width": float(width.mean()), "bands": per_band}
