"""FP32 vs INT8 occlusion heatmaps (edge.clinical.heatmap) of the bundled samples, per backend: the Pearson
correlation behind tests/test_clinical_heatmap.py's threshold, and each map's time.

    python benchmarks/heatmap_agreement.py [--bundle B] [--backends onnxruntime openvino]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from edge.backends import BackendUnavailable
from edge.clinical import heatmap
from edge.preprocess import preprocess
from edge.runtime import BoneAgeModel, default_bundle_path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", default=str(default_bundle_path()))
    p.add_argument("--backends", nargs="*", default=["onnxruntime", "openvino"])
    args = p.parse_args()
    samples = sorted((Path(args.bundle) / "samples").glob("*.png"))
    for backend in args.backends:
        maps, seconds = {}, {}
        for precision in ("fp32", "int8"):
            try:
                model = BoneAgeModel.load(args.bundle, backend=backend, precision=precision)
            except BackendUnavailable as e:
                print(f"{backend} {precision}: does not run here ({e})")
                break
            t0 = time.perf_counter()
            maps[precision] = [heatmap.occlusion_map(model, preprocess(s, model.spec)) for s in samples]
            seconds[precision] = (time.perf_counter() - t0) / len(samples)
        else:
            for s, a, b in zip(samples, maps["fp32"], maps["int8"]):
                print(f"{backend} {s.name}: FP32 vs INT8 correlation {np.corrcoef(a.ravel(), b.ravel())[0, 1]:.4f}")
            cross = np.corrcoef(maps["fp32"][0].ravel(), maps["int8"][1].ravel())[0, 1]
            print(f"{backend}: different images {cross:.4f}; s per map FP32 {seconds['fp32']:.1f}, INT8 {seconds['int8']:.1f}")


if __name__ == "__main__":
    main()
