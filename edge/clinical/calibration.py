"""P(male) calibration: Platt scaling of the network's logit, fitted on the validation split, and the
expected calibration error (ECE) to judge it.

The network's P(male) comes out of a sigmoid trained with cross-entropy and averaged over views and member
networks, which tends to make it under- or over-confident; p' = sigmoid(a * logit(p) + b) fixes a scale and a
shift without changing which sex is called (for a > 0 and small b). A call whose calibrated confidence
max(p', 1 - p') is below UNCERTAIN_BELOW is reported as "uncertain".
"""
from __future__ import annotations

import numpy as np

UNCERTAIN_BELOW = 0.8  # calibrated confidence under which the sex call is "uncertain"
ECE_BINS = 15


def logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, float), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def sigmoid(z) -> np.ndarray:
    z = np.asarray(z, float)
    return np.exp(-np.logaddexp(0, -z))  # 1 / (1 + e^-z) without overflow


def fit_platt(p_male, male, iterations: int = 100) -> tuple[float, float]:
    """(a, b) minimising the log loss of sigmoid(a * logit(p) + b) against male (0/1): Newton's method,
    each step halved until the loss falls (plain Newton can overshoot on saturated probabilities)."""
    z, y = logit(p_male), np.asarray(male, float)
    x = np.c_[z, np.ones_like(z)]
    w = np.array([1.0, 0.0])
    loss = _log_loss(x @ w, y)
    for _ in range(iterations):
        q = sigmoid(x @ w)
        grad = x.T @ (q - y)
        hess = x.T @ (x * (q * (1 - q))[:, None]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        for _ in range(30):
            new = _log_loss(x @ (w - step), y)
            if new <= loss:
                break
            step = step / 2
        w, improved, loss = w - step, loss - new, new
        if improved < 1e-12:
            break
    return float(w[0]), float(w[1])


def _log_loss(scores, y) -> float:
    """Mean binary cross-entropy of logits `scores`, computed stably."""
    return float(np.mean(np.logaddexp(0, scores) - y * scores))


def apply(p_male, a: float, b: float):
    out = sigmoid(a * logit(p_male) + b)
    return float(out) if np.ndim(out) == 0 else out


def ece(p_male, male, bins: int = ECE_BINS) -> float:
    """Expected calibration error of the sex call: confidence max(p, 1 - p) against accuracy, equal-width
    bins over [0.5, 1], weighted by the share of images in each."""
    p, y = np.asarray(p_male, float), np.asarray(male, bool)
    conf = np.maximum(p, 1 - p)
    correct = (p >= 0.5) == y
    k = np.minimum(((conf - 0.5) / 0.5 * bins).astype(int), bins - 1)
    return float(sum(abs(conf[k == j].mean() - correct[k == j].mean()) * (k == j).mean()
                     for j in range(bins) if (k == j).any()))


def fit(p_male, male) -> dict:
    """The bundle.json entry."""
    a, b = fit_platt(p_male, male)
    return {"method": "Platt scaling of logit(P(male))", "a": round(a, 5), "b": round(b, 5),
            "uncertain_below": UNCERTAIN_BELOW, "n": int(len(p_male)),
            "ece_before": round(ece(p_male, male), 4), "ece_after": round(ece(apply(p_male, a, b), male), 4)}


def evaluate(fitted: dict, p_male, male) -> dict:
    """ECE before and after on held-out data, and how often the call is uncertain and how accurate it is
    when it is not."""
    p, y = np.asarray(p_male, float), np.asarray(male, bool)
    q = apply(p, fitted["a"], fitted["b"])
    sure = np.maximum(q, 1 - q) >= fitted["uncertain_below"]
    return {"n": int(len(p)), "ece_before": ece(p, y), "ece_after": ece(q, y),
            "uncertain_rate": float(1 - sure.mean()),
            "accuracy_when_certain": float(((q >= 0.5) == y)[sure].mean()) if sure.any() else float("nan"),
            "accuracy": float(((q >= 0.5) == y).mean())}
