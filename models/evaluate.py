"""edge-eval: the paper's metrics for a checkpoint on labelled images, with bootstrap 95% CIs, beside the paper's.

Any labelled folder (labels.csv with id,boneage,male + images/, or an RSNA CSV): by default every image the
checkpoint was neither trained nor selected on (its split's test part, and every image its split does not name,
such as a clinic's own), said so in the output; then the errors by age band and by sex, the largest errors and,
with --plot, the agreement and Bland-Altman plot.

    edge-eval --checkpoint runs/w050-100/best.pt --data ../shared/data/rsna-boneage/train-100px
    edge-eval --checkpoint runs/w050-100/best.pt --data CLINIC_FOLDER --plot agreement.png
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge.metrics import METRIC_KEYS, evaluate, format_table


def parse_args(argv=None):
    head, _, rest = __doc__.partition("\n\n")
    p = argparse.ArgumentParser(prog="edge-eval", description=head, epilog=rest.split("\n\n")[0].replace("\n", " "))
    p.add_argument("--checkpoint", required=True, help="a trained checkpoint (best.pt) with its config")
    p.add_argument("--data", required=True, metavar="FOLDER",
                   help="labelled folder (labels.csv + images/, or an RSNA CSV)")
    p.add_argument("--split", default="test", choices=["train", "val", "test", "all"],
                   help="test (default): every image the checkpoint neither trained nor was selected on (its test "
                        "split and images its split does not name); all: every labelled image; train/val: that part")
    p.add_argument("--split-file", help="default: the split the checkpoint was trained with")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the 95%% CIs")
    p.add_argument("--worst", type=int, default=10, metavar="N", help="list the N largest errors (default 10)")
    p.add_argument("--plot", metavar="FILE.png", help="agreement + Bland-Altman plot (needs matplotlib)")
    p.add_argument("--json", action="store_true", help="one JSON object: mae, mse, rmse, icc, accuracy, auc, "
                                                       "kappa, kappa_p, n, ci, selection, breakdown")
    return p.parse_args(argv)


def main(argv=None) -> int:
    """Known failures (a missing file, unreadable labels, nothing to evaluate) are one line, never a traceback."""
    try:
        return _main(argv)
    except (ValueError, FileNotFoundError) as e:  # ImageError is a ValueError
        print(f"edge-eval: error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:  # the runtime install has no torch: say what to install
        from edge.cli.extras import exit_missing

        return exit_missing(e, "edge-eval")
    except KeyboardInterrupt:
        print("edge-eval: interrupted", file=sys.stderr)
        return 130


def _main(argv=None) -> int:
    args = parse_args(argv)  # before torch is imported: --help works in the runtime install
    from edge.labels import read_labels
    from edge.verify import (age_given_sex, breakdown, format_breakdown, format_selection, held_out,
                             preprocess_labelled, read_split_file)
    from models.checkpoint import load_model
    from models.train import predict_outputs

    if args.plot:
        from edge.plots import require_matplotlib
        require_matplotlib()  # before the long part, not after it
    if not Path(args.checkpoint).is_file():
        raise FileNotFoundError(f"{args.checkpoint}: no such checkpoint")
    model, ckpt = load_model(args.checkpoint)
    split_file = args.split_file or ckpt.get("split")
    if args.split_file and not Path(args.split_file).is_file():
        raise FileNotFoundError(f"--split-file {args.split_file}: no such file")
    labels, selection = held_out(read_labels(args.data), read_split_file(split_file), args.split)
    found = preprocess_labelled(labels, selection, model.cfg.input, show_progress=not args.json)
    labels = found.labels
    outputs = predict_outputs(model, found.x)
    age, p_male = outputs["bone_age_months"], outputs["p_male"]
    result = evaluate(labels.age, age, labels.male, p_male, n_boot=args.n_boot)
    result |= {"selection": found.selection, "unreadable": found.unreadable,
               "breakdown": breakdown(labels.ids, labels.age, age, labels.male, args.worst)}
    given = age_given_sex(outputs, labels.male) if model.cfg.sex_heads else None
    if given is not None:
        result["sex_given"] = evaluate(labels.age, given, labels.male, p_male, n_boot=args.n_boot)
    if args.plot:
        from edge.plots import agreement
        result["plot"] = str(agreement(labels.age, age, labels.male, f"{args.checkpoint}, {args.data} (n="
                                       f"{len(labels)}): MAE {result['mae']:.2f} mo, ICC {result['icc']:.3f}",
                                       args.plot))
    if args.json:
        print(json.dumps({k: result[k] for k in METRIC_KEYS} | {k: v for k, v in result.items()
                                                                 if k not in METRIC_KEYS}))
        return 0
    print(f"{args.checkpoint} on {args.data}: {format_selection(found.selection)}")
    for line in found.unreadable[:3]:
        print(f"unreadable, left out: {line}")
    rows = {"this model": result} | ({"given the sex": result["sex_given"]} if "sex_given" in result else {})
    print(f"bootstrap 95% CI:\n{format_table(rows)}\n\n{format_breakdown(result['breakdown'])}")
    if args.plot:
        print(f"agreement plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
