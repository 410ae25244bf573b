"""The project's plots, one place: agreement with the labels (edge-verify, edge-eval, benchmarks) and latency
per backend (edge-bench). matplotlib is optional (`pip install matplotlib`, or the `plot` extra): a command
that will plot calls require_matplotlib() before any work starts, so a long run never fails at its end."""
from __future__ import annotations

from pathlib import Path

import numpy as np

MALE_COLOUR, FEMALE_COLOUR = "#2a6fb0", "#c2417a"


class PlotUnavailable(ValueError):
    """matplotlib is not installed: str() is the one-line message naming the fix."""


def require_matplotlib(option: str = "--plot") -> None:
    """Raise PlotUnavailable now, rather than after the measuring, when matplotlib cannot be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailable(f"{option} needs matplotlib, which is not installed here: pip install matplotlib "
                              f"(the 'plot' extra), or leave {option} out") from None


def _pyplot():
    require_matplotlib()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def agreement(true, pred, male, title: str, path) -> Path:
    """Predicted against true bone age (boys and girls coloured) beside the Bland-Altman plot (difference
    against mean, with the bias and the 95% limits of agreement), saved as one PNG."""
    plt = _pyplot()
    true, pred, male = np.asarray(true, float), np.asarray(pred, float), np.asarray(male).astype(bool)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.8))
    for sel, colour, name in ((male, MALE_COLOUR, "boys"), (~male, FEMALE_COLOUR, "girls")):
        a.scatter(true[sel], pred[sel], s=6, alpha=0.5, c=colour, label=name)
    lim = [0, max(true.max(), pred.max()) + 5]
    a.plot(lim, lim, "k--", lw=1, label="identity")
    a.set(xlim=lim, ylim=lim, xlabel="true bone age (months)", ylabel="predicted bone age (months)",
          title="predicted vs true")
    a.legend(loc="upper left", fontsize=8)
    mean, diff = (true + pred) / 2, pred - true
    bias, sd = diff.mean(), diff.std(ddof=1) if len(diff) > 1 else 0.0
    b.scatter(mean, diff, s=6, alpha=0.5, c=np.where(male, MALE_COLOUR, FEMALE_COLOUR))
    for y, style, text in ((bias, "-", f"bias {bias:+.1f}"),
                           (bias + 1.96 * sd, "--", f"+1.96 SD {bias + 1.96 * sd:+.1f}"),
                           (bias - 1.96 * sd, "--", f"-1.96 SD {bias - 1.96 * sd:+.1f}")):
        b.axhline(y, color="k", ls=style, lw=1)
        b.text(mean.max(), y, text, ha="right", va="bottom", fontsize=8)
    b.set(xlabel="mean of true and predicted (months)", ylabel="predicted - true (months)", title="Bland-Altman")
    fig.suptitle(title, fontsize=9)
    return _save(fig, plt, path)


def latency(rows: list[dict], title: str, path) -> Path:
    """edge-bench's rows: p50 latency per backend and precision, bars from min to p95; torch grey."""
    plt = _pyplot()
    names = [f"{r['backend']}\n{r['precision']}" for r in rows]
    fig, ax = plt.subplots(figsize=(1.6 * len(rows) + 2, 4))
    p50 = [r["p50_ms"] for r in rows]
    err = [[r["p50_ms"] - r["min_ms"] for r in rows], [r["p95_ms"] - r["p50_ms"] for r in rows]]
    bars = ax.bar(names, p50, yerr=err, capsize=4,
                  color=["#888" if r["backend"] == "torch" else "#3a7" for r in rows])
    ax.bar_label(bars, labels=[f"{v:.1f}" for v in p50], padding=3)
    ax.set_ylabel("latency, ms (median; bars: min to p95)")
    ax.set_title(title, fontsize=9)
    return _save(fig, plt, path)


def _save(fig, plt, path) -> Path:
    path = Path(path)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
