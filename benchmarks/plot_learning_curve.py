"""Learning curve of one or more edge-train runs, from their train.log JSON rows: validation MAE (sex-blind and
sex given) and sex accuracy per epoch, the runs drawn one after the other (a later stage continues an earlier one).

    python benchmarks/plot_learning_curve.py benchmarks/results/training/train-w050-299-224.log benchmarks/results/training/train-w050-299.log \
        --labels "299 px input, 224 in the net" "299 in the net" --out docs/img/learning-curve-299.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from models.campaign import epoch_rows as epochs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("logs", nargs="+", type=Path)
    p.add_argument("--labels", nargs="+")
    p.add_argument("--start", nargs="+", type=float, help="validation MAE sex-blind / sex given before the first "
                                                           "epoch (the starting weights'), drawn at epoch 0")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_mae, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    offset = 0
    if args.start:
        ax_mae.plot([0], [args.start[0]], "ko", ms=4)
        ax_mae.plot([0], [args.start[-1]], "ks", ms=4, label="starting weights")
    for k, log in enumerate(args.logs):
        rows = epochs(log)
        x = [offset + r["epoch"] for r in rows]
        label = args.labels[k] if args.labels and k < len(args.labels) else log.stem
        ax_mae.plot(x, [r["val_mae"] for r in rows], "o-", label=f"{label}: sex-blind")
        if "val_mae_sex_given" in rows[0]:
            ax_mae.plot(x, [r["val_mae_sex_given"] for r in rows], "s--", label=f"{label}: sex given")
        ax_acc.plot(x, [r["val_accuracy"] for r in rows], "o-", label=label)
        offset = x[-1]
    ax_mae.set(xlabel="epoch", ylabel="validation MAE (months)", title="bone age")
    ax_acc.set(xlabel="epoch", ylabel="validation sex accuracy", title="sex")
    for ax in (ax_mae, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
