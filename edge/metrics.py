"""The paper's metrics, one definition (numpy only): bone age MSE/MAE/RMSE/ICC, sex accuracy/AUC/kappa.

ICC form: ICC(2,1) in Shrout & Fleiss's notation (McGraw & Wong's ICC(A,1)): two-way random effects,
absolute agreement, single measurement. Absolute agreement is the clinically relevant form here: a model
that is off by a constant number of months must score lower, and ICC(3,1) (consistency) would forgive it.
"""
from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

# Rayed, Amasya, Sezdi, J Imaging Inform Med 2025 (abstract): RSNA 2017, 7:2:1 split.
PAPER = {"mae": 3.1, "mse": 25.0, "icc": 0.997, "accuracy": 0.95, "auc": 0.97, "kappa": 0.898}
METRIC_KEYS = ("mae", "mse", "rmse", "icc", "accuracy", "auc", "kappa", "kappa_p", "n")


def mae(y, p) -> float:
    return float(np.mean(np.abs(np.asarray(p, float) - np.asarray(y, float))))


def mse(y, p) -> float:
    return float(np.mean((np.asarray(p, float) - np.asarray(y, float)) ** 2))


def rmse(y, p) -> float:
    return math.sqrt(mse(y, p))


def icc(ratings) -> float:
    """ICC(2,1) for an (n targets x k raters) matrix; for predictions use icc(np.c_[true, pred])."""
    x = np.asarray(ratings, float)
    n, k = x.shape
    grand = x.mean()
    ss_rows = k * np.sum((x.mean(1) - grand) ** 2)
    ss_cols = n * np.sum((x.mean(0) - grand) ** 2)
    ss_err = np.sum((x - grand) ** 2) - ss_rows - ss_cols
    ms_r, ms_c, ms_e = ss_rows / (n - 1), ss_cols / (k - 1), ss_err / ((n - 1) * (k - 1))
    return float((ms_r - ms_e) / (ms_r + (k - 1) * ms_e + k * (ms_c - ms_e) / n))


def accuracy(y, label) -> float:
    return float(np.mean(np.asarray(y) == np.asarray(label)))


def auc(y, score) -> float:
    """ROC AUC as the Mann-Whitney U statistic (ties count one half)."""
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(np.asarray(score, float))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_ranks(a: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given their group's average rank (vectorised: the paired bootstrap calls it 2,000 times)."""
    _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((2 * ends - counts + 1) / 2)[inverse.ravel()]


def cohen_kappa(y, label) -> tuple[float, float]:
    """Cohen's kappa for two binary raters, and its two-sided p-value against kappa = 0
    (z test with the null standard error of Fleiss, Cohen & Everitt 1969)."""
    y, label = np.asarray(y).astype(int), np.asarray(label).astype(int)
    n = len(y)
    table = np.zeros((2, 2))
    np.add.at(table, (y, label), 1)
    table /= n
    rows, cols = table.sum(1), table.sum(0)
    po, pe = np.trace(table), float(rows @ cols)
    if pe == 1.0:
        return float("nan"), float("nan")
    kappa = (po - pe) / (1 - pe)
    var0 = (pe + pe ** 2 - float(np.sum(rows * cols * (rows + cols)))) / ((1 - pe) ** 2 * n)
    z = kappa / math.sqrt(var0) if var0 > 0 else float("inf")
    return float(kappa), float(math.erfc(abs(z) / math.sqrt(2)))


def wilson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval of a binomial proportion k/n (Wilson 1927): unlike the normal approximation it
    stays inside [0, 1] and keeps its coverage near 0 and 1 and on small n."""
    if n <= 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p, z2 = k / n, z * z
    centre, half = (p + z2 / (2 * n)) / (1 + z2 / n), z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def point_metrics(age_true, age_pred, male_true, p_male, threshold: float = 0.5) -> dict:
    age_true, age_pred = np.asarray(age_true, float), np.asarray(age_pred, float)
    male_true = np.asarray(male_true).astype(int)
    label = (np.asarray(p_male) >= threshold).astype(int)
    kappa, kappa_p = cohen_kappa(male_true, label)
    return {
        "mae": mae(age_true, age_pred), "mse": mse(age_true, age_pred), "rmse": rmse(age_true, age_pred),
        "icc": icc(np.c_[age_true, age_pred]), "accuracy": accuracy(male_true, label),
        "auc": auc(male_true, p_male), "kappa": kappa, "kappa_p": kappa_p, "n": int(len(age_true)),
    }


def evaluate(age_true, age_pred, male_true, p_male, n_boot: int = 1000, seed: int = 0) -> dict:
    """Point metrics plus percentile bootstrap 95% CIs under "ci": {metric: [low, high]}."""
    arrays = [np.asarray(a) for a in (age_true, age_pred, male_true, p_male)]
    result = point_metrics(*arrays)
    rng = np.random.default_rng(seed)
    n = len(arrays[0])
    boots = {k: [] for k in ("mae", "mse", "rmse", "icc", "accuracy", "auc", "kappa")}
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        m = point_metrics(*(a[idx] for a in arrays))
        for k in boots:
            boots[k].append(m[k])
    result["ci"] = {k: [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))]
                    for k, v in boots.items()} if n_boot else {}
    return result


def format_table(rows: dict[str, dict], paper: bool = True) -> str:
    """{column name: metrics} -> a text table, one metric a line, the paper's values last."""
    names = list(rows) + (["paper"] if paper else [])
    cols = {**rows, **({"paper": PAPER} if paper else {})}
    lines = [f"{'metric':<10}" + "".join(f"{n:>24}" for n in names)]
    for key in ("mae", "mse", "rmse", "icc", "accuracy", "auc", "kappa", "kappa_p", "n"):
        cells = []
        for name in names:
            m = cols[name]
            v = m.get(key)
            if v is None:
                cells.append(f"{'-':>24}")
                continue
            text = f"{v:.3g}" if key == "kappa_p" else (f"{v}" if key == "n" else f"{v:.3f}")
            ci = m.get("ci", {}).get(key)
            if ci:
                text += f" [{ci[0]:.3f}, {ci[1]:.3f}]" if key not in ("mse",) else f" [{ci[0]:.1f}, {ci[1]:.1f}]"
            cells.append(f"{text:>24}")
        lines.append(f"{key:<10}" + "".join(cells))
    return "\n".join(lines)
