"""edge-verify: check a bundle's accuracy on this machine, per backend and precision.

With --data FOLDER (labels.csv with id,boneage,male + images/, or an RSNA CSV beside the images): the paper's
metrics with bootstrap 95% CIs on every labelled image the model was not trained or selected on (a clinic's
own images; of RSNA's, the bundle's test split), the change against the FP32 reference and the retention
verdict, the errors by age band and by sex, the largest errors, and with --plot the agreement and
Bland-Altman plot. Without --data: the installation self-test on the bundled samples.
Exit code 0 only when every backend passes: a backend fails when the paired bootstrap interval of its change
against FP32 lies wholly beyond a threshold, or its prediction intervals' coverage lies wholly below nominal minus
its tolerance (binomial interval); a threshold inside an interval is a note, not a failure.
"""
from __future__ import annotations

import argparse
import json
import sys

from edge.cli.common import run_cli
from edge.formats import FORMATS
from edge.retention import add_threshold_args


def parse_args(argv=None):
    head, _, rest = __doc__.partition("\n\n")
    p = argparse.ArgumentParser(prog="edge-verify", description=head, epilog=rest.replace("\n", " "))
    p.add_argument("--bundle", help="model bundle directory (default: the bundled model)")
    p.add_argument("--data", metavar="FOLDER",
                   help="labelled images (labels.csv + images/, or an RSNA CSV); omit for the self-test")
    p.add_argument("--split", default="test", choices=["train", "val", "test", "all"],
                   help="test (default): every image the model neither trained nor was selected on (its test split "
                        "and images its split does not name); all: every labelled image; train/val: that part")
    p.add_argument("--worst", type=int, default=10, metavar="N", help="list the N largest errors (default 10)")
    p.add_argument("--plot", metavar="FILE.png", help="agreement + Bland-Altman plot (needs matplotlib); with an "
                                                      "age head per sex, FILE-sex-given.png too")
    p.add_argument("--backends", nargs="*", choices=list(FORMATS), help="default: every one that runs here")
    add_threshold_args(p)
    p.add_argument("--json", action="store_true", help="print the result as one JSON object instead of the report")
    return p.parse_args(argv)


def _main(argv=None) -> int:
    from edge.retention import thresholds_from
    from edge.runtime import default_bundle_path
    from edge.verify import format_report, self_test, verify_labelled

    args = parse_args(argv)
    bundle = args.bundle or default_bundle_path()
    if args.plot:
        if not args.data:
            raise ValueError("--plot needs --data (labelled images to compare with)")
        from edge.plots import require_matplotlib
        require_matplotlib()  # before the long part, not after it
    if not args.data:
        result = self_test(bundle, args.backends)
        if args.json:
            print(json.dumps(result, indent=1))
        else:
            print(f"self-test on {result['samples']} bundled sample(s): FP32 outputs stored at export")
            for name, r in result["backends"].items():
                print(f"{name:<22} max |d age| {r['max_abs_months']:.4f} mo  max |d p| {r['max_abs_p_male']:.5f}"
                      f"  (tol {r['tolerance'][0]}, {r['tolerance'][1]})  {'PASS' if r['passed'] else 'FAIL'}")
        return 0 if result["passed"] else 1
    thresholds = thresholds_from(args)
    result = verify_labelled(bundle, args.data, args.split, args.backends, thresholds, show_progress=not args.json,
                             worst=args.worst, plot=args.plot)
    print(json.dumps(result, indent=1) if args.json else format_report(result, args.split))
    return 0 if result["passed"] else 1


def main(argv=None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
