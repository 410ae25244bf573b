"""What the input check's tilt limits do to usable radiographs, on validation ids only: MAE after the check against
the same images read unchecked, and what the check said, for a few (TILT_WARN, TILT_MIN, mirror) settings.

    python benchmarks/tilt_limits.py --images 600 > benchmarks/results/tilt-limits-validation.md
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.ood_suite import _reader, gray  # noqa: E402
from edge import quality  # noqa: E402
from edge.bundle import load_bundle  # noqa: E402
from edge.labels import image_path, read_labels, read_split  # noqa: E402

SETTINGS = [(20, 30, True), (25, 90, True), (25, 90, False), (30, 90, True)]  # (warn, straighten, mirror); 90: never


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=Path("edge/default_bundle"))
    p.add_argument("--data", type=Path, default=Path("../shared/data/rsna-boneage/train-299"))
    p.add_argument("--images", type=int, default=600, help="the first N validation ids of the bundle's split")
    args = p.parse_args(argv)
    fitted = quality.quality_model(load_bundle(args.bundle))
    labels = read_labels(args.data)
    age = dict(zip(labels.ids, labels.age))
    ids = read_split(args.bundle / "split.json")["val"][: args.images]
    read = _reader(args.bundle)
    images = {i: gray(image_path(args.data / "images", i)) for i in ids}
    unchecked = read(images)
    print(f"{len(ids)} validation ids; unchecked MAE {np.mean([abs(unchecked[i] - age[i]) for i in ids]):.2f} months\n")
    print("| warn from | straighten from | mirror | refused | MAE after the check | same images unchecked | said |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for warn, straighten, mirror in SETTINGS:
        quality.TILT_WARN, quality.TILT_MIN = warn, straighten
        model = fitted if mirror else dataclasses.replace(fitted, laterality=None)
        verdicts = {i: quality.check(images[i], model, 299) for i in ids}
        accepted = {i: v.image for i, v in verdicts.items() if v.image is not None}
        after = read(accepted)
        said = collections.Counter(c.split(" (")[0].split(":")[0] for v in verdicts.values() for c in v.corrections)
        print(f"| {warn} | {straighten if straighten < 90 else 'never'} | {'yes' if mirror else 'no'} | "
              f"{len(ids) - len(accepted)} | {np.mean([abs(after[i] - age[i]) for i in accepted]):.2f} | "
              f"{np.mean([abs(unchecked[i] - age[i]) for i in accepted]):.2f} | "
              f"{', '.join(f'{k} {n}' for k, n in said.most_common())} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
