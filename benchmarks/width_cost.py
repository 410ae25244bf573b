"""What a wider network costs on this CPU: the width choice of issue 18 (0.5, 0.75, 1.0), measured, not estimated.

For each width (and with or without the mirror pass, --mirror), the shipped model's layout (299 px input resized
to 224 inside the graph, mirror pass, an age head per sex) with its own random weights: parameters, GMACs per
image, training images/s (forward + backward + AdamW, as edge-train runs) and so minutes per epoch of the 8,687
training ids, and OpenVINO batch-1 latency in FP32 and unsigned INT8 (PTQ on random inputs: weights do not change a
CPU's speed), all variants timed in interleaved rounds.

    python benchmarks/width_cost.py --widths 0.5 0.75 1.0 --threads 1 --out benchmarks/results/width-cost.md

Accuracy is what this cannot give: a width other than 0.5 has no trained weights to start from here.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from compression_table import count_gmacs, weight_counts  # noqa: E402
from train_throughput import images_per_second  # noqa: E402

from edge.backends.openvino_backend import OpenVinoBackend  # noqa: E402
from edge.bench import latency_rounds, summarize  # noqa: E402
from export.artifacts import write_model_files  # noqa: E402
from models.checkpoint import load_model  # noqa: E402
from models.inception import create_model  # noqa: E402
from quantize.ptq import quantize_ptq  # noqa: E402

TRAIN_IDS = 8687  # the committed split's training ids (models/splits/rsna-train-100px-seed0.json)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=str(ROOT / "models/checkpoints/default.pt"), help="whose layout to widen")
    p.add_argument("--widths", type=float, nargs="+", default=[0.5, 0.75, 1.0])
    p.add_argument("--mirror", choices=["on", "off", "both"], default="on",
                   help="the in-graph mirror pass (v8 averages the image and its mirror: twice the network's work)")
    p.add_argument("--threads", type=int, default=1, help="torch training threads (edge-train ran on one)")
    p.add_argument("--ov-threads", type=int, default=2, help="OpenVINO inference threads")
    p.add_argument("--batch", type=int, default=64, help="training batch (edge-train's default)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--out", help="also write the table here (markdown)")
    return p.parse_args(argv)


def measure(args) -> list[dict]:
    base, _ = load_model(args.checkpoint)
    torch.set_num_threads(args.threads)
    spec = base.cfg.input
    shape = (spec.channels, spec.height, spec.width)
    calib = np.random.default_rng(0).standard_normal((8, *shape)).astype(np.float32)
    rows, runners = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        mirrors = {"on": [True], "off": [False], "both": [True, False]}[args.mirror]
        for w, mirror in [(w, m) for w in args.widths for m in mirrors]:
            cfg = replace(base.cfg, width=w, flip_tta=mirror)
            net = create_model(cfg).eval()
            params, _ = weight_counts(net)
            row = {"width": w, "mirror": mirror, "params_m": params / 1e6, "gmacs": count_gmacs(net, shape),
                   "train_img_s": images_per_second(cfg, args.batch, args.steps)}
            row["epoch_min"] = TRAIN_IDS / row["train_img_s"] / 60
            for precision in ("fp32", "int8"):
                model = net if precision == "fp32" else quantize_ptq(net, calib, signed=False)
                stem = Path(tmp) / f"w{round(w * 100):03d}-{mirror:d}-{precision}"  # no dot: with_suffix cuts at it
                xml = write_model_files(model, cfg, stem.with_suffix(".onnx"), stem.with_suffix(".xml"), precision)
                runners[(w, mirror, precision)] = OpenVinoBackend(xml, precision, args.ov_threads).run
            rows.append(row)
            print(f"width {w}, mirror {mirror}: {row['params_m']:.2f} M params, {row['gmacs']:.2f} GMACs, "
                  f"{row['train_img_s']:.1f} training img/s", file=sys.stderr)
        times = latency_rounds(runners, calib[:1], rounds=args.rounds)
    for row in rows:
        for precision in ("fp32", "int8"):
            row[f"ov_{precision}_ms"] = summarize(times[(row["width"], row["mirror"], precision)])["p50_ms"]
    return rows


def format_table(rows: list[dict], args) -> str:
    first = rows[0]
    lines = ["| width | mirror pass | params (M) | GMACs | training img/s | min/epoch | OV FP32 ms | OV INT8 ms | "
             "x the first row (INT8) |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['width']:g} | {'on' if r['mirror'] else 'off'} | {r['params_m']:.2f} | {r['gmacs']:.2f} | "
                     f"{r['train_img_s']:.1f} | {r['epoch_min']:.0f} | {r['ov_fp32_ms']:.1f} | {r['ov_int8_ms']:.1f} | "
                     f"{r['ov_int8_ms'] / first['ov_int8_ms']:.2f}x |")
    lines.append(f"\nTraining: torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, "
                 f"{args.steps} steps after 2 warm-up; an epoch is {TRAIN_IDS} training images (validation not "
                 f"counted). OpenVINO: batch 1, {args.ov_threads} threads, median of {args.rounds} interleaved rounds. "
                 f"{os.cpu_count()} cores.")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    text = format_table(measure(args), args)
    print(text)
    if args.out:
        Path(args.out).write_text(f"# python benchmarks/width_cost.py {' '.join(sys.argv[1:])}\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
