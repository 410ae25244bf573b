"""Rewrite a bundle's MODEL_CARD.md with measured edge-verify and edge-bench results (artifacts untouched).

    edge-verify --bundle edge/default_bundle --data $D --json > benchmarks/results/verify-default-test.json
    edge-bench --bundle edge/default_bundle --json > benchmarks/results/bench-default.json
    python benchmarks/update_model_card.py --bundle edge/default_bundle \
        --verify benchmarks/results/verify-default-test.json --bench benchmarks/results/bench-default.json

--check changes nothing and exits 1 when the card is not what these files give (tests/test_readme_tables.py).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from the checkout
    sys.path.insert(0, str(ROOT))

from edge.bundle import load_bundle  # noqa: E402
from export.model_card import render  # noqa: E402


def card_text(bundle, verify=None, bench=None) -> str:
    """The card the bundle's bundle.json and these results files (paths or None) give."""
    load = lambda path: json.loads(Path(path).read_text()) if path else None  # noqa: E731
    return render(load_bundle(bundle).meta, verify=load(verify), bench=load(bench))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--verify", help="edge-verify --json output (labelled)")
    p.add_argument("--bench", help="edge-bench --json output")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if MODEL_CARD.md differs")
    args = p.parse_args(argv)
    if args.check:
        card = Path(args.bundle) / "MODEL_CARD.md"
        same = card.is_file() and card.read_text() == card_text(args.bundle, args.verify, args.bench)
        if not same:
            print(f"{card}: differs from what bundle.json and the results files give (run without --check)")
        return 0 if same else 1
    card = Path(args.bundle) / "MODEL_CARD.md"
    card.write_text(card_text(args.bundle, args.verify, args.bench))
    print(card)
    return 0


if __name__ == "__main__":
    sys.exit(main())
