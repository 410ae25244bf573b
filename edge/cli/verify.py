"""edge-verify: check a bundle's accuracy on this machine, per backend and precision.

With --data (RSNA labels.csv + images/): the paper's metrics on the bundle's test split, the change against
the FP32 reference and the retention verdict. Without --data: the installation self-test on the bundled
samples. Exit code 0 only when every backend passes.
"""
from __future__ import annotations

import argparse
import json
import sys

from edge.cli.common import run_cli
from edge.formats import FORMATS
from edge.retention import add_threshold_args


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="edge-verify", description=__doc__.splitlines()[0])
    p.add_argument("--bundle", help="model bundle directory (default: the bundled model)")
    p.add_argument("--data", help="labelled images (labels.csv + images/); omit for the self-test")
    p.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    p.add_argument("--backends", nargs="*", choices=list(FORMATS), help="default: every one that runs here")
    add_threshold_args(p)
    p.add_argument("--json", action="store_true")
    return p.parse_args(argv)


def _main(argv=None) -> int:
    from edge.retention import thresholds_from
    from edge.runtime import default_bundle_path
    from edge.verify import format_report, self_test, verify_labelled

    args = parse_args(argv)
    bundle = args.bundle or default_bundle_path()
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
    result = verify_labelled(bundle, args.data, args.split, args.backends, thresholds, show_progress=not args.json)
    print(json.dumps(result, indent=1) if args.json else format_report(result, args.split))
    return 0 if result["passed"] else 1


def main(argv=None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
