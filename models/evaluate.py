"""edge-eval: the paper's metrics for a checkpoint on a split, with bootstrap 95% CIs, beside the paper's.

    edge-eval --checkpoint runs/w050-100/best.pt --data ../shared/data/rsna-boneage/train-100px --split test
"""
from __future__ import annotations

import argparse
import json
import sys

from edge.metrics import METRIC_KEYS, evaluate, format_table


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="edge-eval", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True, help="labelled folder (labels.csv + images/, or an RSNA CSV)")
    p.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    p.add_argument("--split-file", help="default: the split the checkpoint was trained with")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--json", action="store_true", help="one JSON object: mae, mse, rmse, icc, accuracy, auc, "
                                                       "kappa, kappa_p, n (and ci)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    from models.checkpoint import load_model
    from models.data import load_images, load_split_labels, read_labels
    from models.train import predict_arrays

    args = parse_args(argv)
    model, ckpt = load_model(args.checkpoint)
    if args.split == "all":
        labels = read_labels(args.data)
    else:
        split_file = args.split_file or ckpt.get("split")
        if not split_file:
            raise SystemExit("edge-eval: the checkpoint names no split file; pass --split-file")
        labels = load_split_labels(args.data, split_file, args.split)
    x = load_images(labels.paths(), model.cfg.input, progress=not args.json)
    age, p_male = predict_arrays(model, x)
    result = evaluate(labels.age, age, labels.male, p_male, n_boot=args.n_boot)
    if args.json:
        print(json.dumps({k: result[k] for k in METRIC_KEYS} | {"ci": result["ci"]}))
    else:
        print(f"{args.checkpoint} on the {args.split} split (n={result['n']}), bootstrap 95% CI:")
        print(format_table({"this model": result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
