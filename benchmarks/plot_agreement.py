"""Predicted vs true bone age and the Bland-Altman plot, for a bundle on its test split (one backend and
precision chosen here; `edge-verify --data D --plot F.png` draws the same plot for what edge-infer runs).

    python benchmarks/plot_agreement.py --bundle edge/default_bundle \
        --data ../shared/data/rsna-boneage/train-100px --out benchmarks/results/agreement.png [--sex-given]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge.metrics import point_metrics
from edge.plots import agreement, require_matplotlib
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
    require_matplotlib("plot_agreement.py")

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
    agreement(labels.age, age, labels.male, title, args.out)
    Path(args.out).with_suffix(".json").write_text(json.dumps({"metrics": m, "backend": model.backend_name,
                                                               "precision": args.precision,
                                                               "sex_given": args.sex_given}, indent=1))
    print(title)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
