"""Predicted vs true bone age and the Bland-Altman plot, for a bundle on its test split.

    python benchmarks/plot_agreement.py --bundle edge/default_bundle \
        --data ../shared/data/rsna-boneage/train-100px --out benchmarks/results/agreement.png [--sex-given]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from edge.metrics import point_metrics
from edge.runtime import BoneAgeModel
from edge.verify import age_given_sex, labelled_inputs, predict_outputs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--backend", default="auto")
    p.add_argument("--precision", default="int8")
    p.add_argument("--out", default="benchmarks/results/agreement.png")
    p.add_argument("--sex-given", action="store_true", help="plot the age given each image's true sex")
    args = p.parse_args(argv)

    labels, x = labelled_inputs(args.bundle, args.data, args.split, show_progress=True)
    model = BoneAgeModel.load(args.bundle, args.backend, args.precision)
    outputs = predict_outputs(model, x)
    age, p_male = outputs["bone_age_months"], outputs["p_male"]
    if args.sex_given:
        age = age_given_sex(outputs, labels.male)
        if age is None:
            p.error(f"{args.bundle}: the model has no age head per sex")
    m = point_metrics(labels.age, age, labels.male, p_male)
    title = (f"{model.bundle.config.name}, {model.backend_name} {args.precision}, {args.split} split (n={m['n']})"
             f"{', sex given' if args.sex_given else ''}: MAE {m['mae']:.2f} mo, ICC {m['icc']:.3f}, "
             f"sex acc {m['accuracy']:.3f}")
    plot(labels.age, age, labels.male, title, args.out)
    Path(args.out).with_suffix(".json").write_text(json.dumps({"metrics": m, "backend": model.backend_name,
                                                               "precision": args.precision,
                                                               "sex_given": args.sex_given}, indent=1))
    print(title)
    print(f"wrote {args.out}")


def plot(true, pred, male, title, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    true, pred, male = np.asarray(true), np.asarray(pred), np.asarray(male).astype(bool)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.8))
    for sel, colour, name in ((male, "#2a6fb0", "boys"), (~male, "#c2417a", "girls")):
        a.scatter(true[sel], pred[sel], s=6, alpha=0.5, c=colour, label=name)
    lim = [0, max(true.max(), pred.max()) + 5]
    a.plot(lim, lim, "k--", lw=1, label="identity")
    a.set(xlim=lim, ylim=lim, xlabel="true bone age (months)", ylabel="predicted bone age (months)",
          title="predicted vs true")
    a.legend(loc="upper left", fontsize=8)
    mean, diff = (true + pred) / 2, pred - true
    bias, sd = diff.mean(), diff.std(ddof=1)
    b.scatter(mean, diff, s=6, alpha=0.5, c=np.where(male, "#2a6fb0", "#c2417a"))
    for y, style, text in ((bias, "-", f"bias {bias:+.1f}"), (bias + 1.96 * sd, "--", f"+1.96 SD {bias + 1.96 * sd:+.1f}"),
                           (bias - 1.96 * sd, "--", f"-1.96 SD {bias - 1.96 * sd:+.1f}")):
        b.axhline(y, color="k", ls=style, lw=1)
        b.text(mean.max(), y, text, ha="right", va="bottom", fontsize=8)
    b.set(xlabel="mean of true and predicted (months)", ylabel="predicted - true (months)", title="Bland-Altman")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
