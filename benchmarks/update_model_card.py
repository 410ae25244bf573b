"""Rewrite a bundle's MODEL_CARD.md with measured edge-verify and edge-bench results (artifacts untouched).

    edge-verify --bundle edge/default_bundle --data $D --json > benchmarks/results/verify-default-test.json
    edge-bench --bundle edge/default_bundle --json > benchmarks/results/bench-default.json
    python benchmarks/update_model_card.py --bundle edge/default_bundle \
        --verify benchmarks/results/verify-default-test.json --bench benchmarks/results/bench-default.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge.bundle import load_bundle
from export.model_card import write_model_card


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--verify", help="edge-verify --json output (labelled)")
    p.add_argument("--bench", help="edge-bench --json output")
    args = p.parse_args(argv)
    meta = load_bundle(args.bundle).meta
    verify = json.loads(Path(args.verify).read_text()) if args.verify else None
    bench = json.loads(Path(args.bench).read_text()) if args.bench else None
    print(write_model_card(args.bundle, meta, verify=verify, bench=bench))


if __name__ == "__main__":
    main()
