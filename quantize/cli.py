"""edge-quantize: prune and/or quantize a trained checkpoint, gate it against its FP32 parent, write it.

    edge-quantize --checkpoint runs/x/best.pt --data DATA --out runs/x-int8 --int8 ptq
    edge-quantize --checkpoint runs/x/best.pt --data DATA --out runs/x-s30 --prune-structured 0.3 \\
                  --finetune-epochs 3 --int8 qat

Methods run in this order: structured pruning, unstructured pruning, INT8 (each optional, at least one).
OUT/retention.json is always written; OUT/compressed.pt (quantize.compressed format, the input of
edge-export --compressed) only when the final model passes the retention gate, and one left by an earlier run
is removed when it fails. Exit code 1 when it fails.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edge.retention import add_threshold_args, format_rows, thresholds_from
from models.checkpoint import load_model
from models.data import Labels, load_images, read_labels, read_split
from quantize.compressed import DEFAULT_NAME, REJECTED_NAME, save_compressed
from quantize.finetune import FINETUNE_LR, finetune
from quantize.gate import RetentionGate
from quantize.ptq import calibration_info, pick_calibration, quantize_ptq, scheme
from quantize.qat import QAT_LR, quantize_qat
from quantize.structured import channel_summary, prune_structured
from quantize.unstructured import MODES, bake, prune_unstructured, sparsity


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="edge-quantize", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="FP32 checkpoint (best.pt from edge-train)")
    p.add_argument("--data", required=True, help="the labelled data folder the checkpoint was trained on")
    p.add_argument("--out", required=True, help=f"output directory ({DEFAULT_NAME}, retention.json)")
    p.add_argument("--split-file", help="training split (default: the one stored in the checkpoint)")
    p.add_argument("--prune-structured", type=_ratio, metavar="RATIO", help="remove this share of filters")
    p.add_argument("--prune-unstructured", type=_ratio, metavar="RATIO", help="zero this share of weights")
    p.add_argument("--unstructured-mode", choices=list(MODES), default="local",
                   help="rank weights per layer (local) or across layers (global)")
    p.add_argument("--int8", choices=["ptq", "qat"], help="INT8: post-training or quantization-aware training")
    p.add_argument("--activations", choices=["signed", "unsigned"], default="signed",
                   help="INT8 PTQ activations: signed (ONNX Runtime, TensorRT) or unsigned post-ReLU (the OpenVINO "
                        "artifact: OpenVINO runs signed ones wrong on the CPUs measured, docs/EXPERIMENTS.md)")
    p.add_argument("--finetune-epochs", type=int, metavar="N",
                   help="fine-tune epochs after each pruning and for QAT (default: 0 after pruning, 1 for QAT)")
    p.add_argument("--lr", type=float,
                   help=f"learning rate (default {FINETUNE_LR:g} after pruning, {QAT_LR:g} for QAT)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--calibration-size", type=int, default=300, help="training images for INT8 ranges and BN")
    add_threshold_args(p)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep-rejected", action="store_true",
                   help=f"also write a model that fails the gate, as OUT/{REJECTED_NAME} (for benchmarks only)")
    p.add_argument("--json", action="store_true", help="print retention.json on stdout (logs go to stderr)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if not (args.prune_structured or args.prune_unstructured or args.int8):
        p.error("nothing to do: give --prune-structured, --prune-unstructured and/or --int8")
    if args.activations == "unsigned" and args.int8 != "ptq":
        p.error("--activations unsigned is for --int8 ptq")
    if args.int8 == "qat" and args.finetune_epochs == 0:
        p.error("--int8 qat trains: give --finetune-epochs 1 or more (or use --int8 ptq)")
    return args


def _ratio(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"a share between 0 and 1 (exclusive), e.g. 0.3; got {text}")
    return value


@dataclass
class Images:
    """Everything the methods and the gate read, preprocessed once."""

    train: Labels  # labels of the images in x_train (all training images, or the calibration subset)
    x_train: np.ndarray
    x_calib: np.ndarray
    calibration: dict
    val: Labels
    x_val: np.ndarray


def load_data(args, spec, split_file: Path, needs_training: bool) -> Images:
    labels = read_labels(args.data)
    split = read_split(split_file)
    _require_split_images(labels, split, args.data, split_file)
    calib_ids = pick_calibration(split["train"], args.calibration_size, args.seed)
    # Fine-tuning needs every training image; without it the calibration subset is all that is read.
    train = labels.subset(split["train"] if needs_training else calib_ids)
    x_train = load_images(train.paths(), spec, progress=not args.no_progress)
    where = {i: k for k, i in enumerate(train.ids)}
    x_calib = x_train[[where[i] for i in calib_ids]]
    val = labels.subset(split["val"])
    x_val = load_images(val.paths(), spec, progress=False)
    return Images(train, x_train, x_calib, calibration_info(calib_ids, args.data, split_file), val, x_val)


def _require_split_images(labels: Labels, split: dict, data, split_file: Path) -> None:
    """The gate and calibration need the very images the checkpoint was trained and validated on: a folder
    without them (a clinic's own, another data set) is a one-line refusal, not a KeyError."""
    have = set(labels.ids)
    missing = {part: sum(i not in have for i in split[part]) for part in ("train", "val")}
    if any(missing.values()):
        raise SystemExit(f"edge-quantize: {data} lacks {missing['train']} training and {missing['val']} validation "
                         f"images of the split {split_file}: --data must be the labelled folder the checkpoint was "
                         "trained on (to check a model on other labelled images: edge-eval or edge-verify --data)")


def run_structured(model, data: Images, args, epochs: int):
    before = channel_summary(model)
    model = prune_structured(model, args.prune_structured, data.x_calib)
    model = _finetune(model, data, args, epochs, "fine-tune (structured)")
    after = channel_summary(model)
    return model, {"method": "structured", "tool": "torch-pruning", "ratio": args.prune_structured,
                   "importance": "L2 magnitude, per layer", "params_before": before["params"],
                   "params_after": after["params"], "features": after["features"], "finetune_epochs": epochs}


def run_unstructured(model, data: Images, args, epochs: int):
    masked = prune_unstructured(model, args.prune_unstructured, data.x_calib, args.unstructured_mode)
    model = bake(_finetune(masked, data, args, epochs, "fine-tune (unstructured)"))
    return model, {"method": "unstructured", "tool": "nncf.prune", "mode": args.unstructured_mode,
                   "ratio": args.prune_unstructured, "sparsity": round(sparsity(model), 4),
                   "bn_adaptation_images": len(data.x_calib), "finetune_epochs": epochs}


def run_int8(model, data: Images, args, epochs: int):
    if args.int8 == "ptq":
        model, epochs = quantize_ptq(model, data.x_calib, signed=args.activations == "signed"), 0
    else:
        model = quantize_qat(model, data.x_calib, data.x_train, data.train.age, data.train.male, epochs=epochs,
                             lr=args.lr or QAT_LR, batch_size=args.batch_size, seed=args.seed,
                             progress=not args.no_progress)
    signed = args.activations == "signed"
    return model, {"method": f"int8-{args.int8}", **scheme(signed), "signed_activations": signed,
                   "calibration_images": len(data.x_calib), "finetune_epochs": epochs}


def _finetune(model, data: Images, args, epochs: int, desc: str):
    return finetune(model, data.x_train, data.train.age, data.train.male, epochs, lr=args.lr or FINETUNE_LR,
                    batch_size=args.batch_size, seed=args.seed, desc=desc, progress=not args.no_progress)


def plan(args) -> list[tuple[str, object, int]]:
    """(row label, method, fine-tune epochs) in the order they run."""
    prune_epochs = args.finetune_epochs or 0
    steps = []
    if args.prune_structured:
        steps.append((f"structured {args.prune_structured:g}", run_structured, prune_epochs))
    if args.prune_unstructured:
        steps.append((f"unstructured {args.prune_unstructured:g}", run_unstructured, prune_epochs))
    if args.int8:
        qat_epochs = 1 if args.finetune_epochs is None else args.finetune_epochs
        steps.append((f"int8 {args.int8}", run_int8, qat_epochs))
    return steps


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.json:
        return compress(args)
    # NNCF logs and draws progress bars on stdout: keep it for the JSON alone.
    with _stdout_to_stderr():
        code = compress(args)
    print((Path(args.out) / "retention.json").read_text())
    return code


def compress(args) -> int:
    """The numbered steps; returns the exit code (0: passed the gate and written, 1: failed)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = plan(args)
    total = len(steps) + 3

    print(f"[1/{total}] {args.checkpoint}, images from {args.data}", flush=True)
    parent, ckpt = load_model(args.checkpoint)
    split_file = _split_file(args, ckpt)
    pruning = args.prune_structured or args.prune_unstructured
    if parent.cfg.member_net_sizes and (pruning or args.int8 == "qat"):
        raise SystemExit(f"{args.checkpoint}: a mean of networks takes post-training quantization only (--int8 ptq); "
                         "prune or train its members, then combine them again (python -m models.ensemble)")
    data = load_data(args, parent.cfg.input, split_file, args.int8 == "qat" or bool(args.finetune_epochs and pruning))
    gate = RetentionGate(parent, data.x_val, data.val,
                         thresholds_from(args))
    print(f"      {len(data.x_train)} training / {len(data.x_calib)} calibration / {len(data.x_val)} validation "
          f"images (split {split_file})", flush=True)

    model, methods, rows, label = parent, [], {}, ""
    for k, (name, method, epochs) in enumerate(steps, start=2):
        print(f"[{k}/{total}] {name}", flush=True)
        model, entry = method(model, data, args, epochs)
        methods.append(entry)
        label = f"{label} + {name}" if label else name
        rows[label] = gate(model)  # every stage is measured; the last one is judged

    final = rows[label]
    print(f"[{total - 1}/{total}] retention against the FP32 parent on {len(data.x_val)} validation images\n"
          f"      FP32 parent: MAE {final['reference']['mae']:.2f} months, sex accuracy "
          f"{final['reference']['accuracy']:.3f}, AUC {final['reference']['auc']:.3f}\n{format_rows(rows)}")
    print(f"[{total}/{total}] writing {out}", flush=True)
    info = {"methods": methods, "calibration": data.calibration, "retention": final,
            "parent": {"checkpoint": str(args.checkpoint), "epoch": ckpt.get("epoch"),
                       "val_metrics": ckpt.get("val_metrics")},
            "data": str(args.data), "split_file": str(split_file),
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    return write_results(out, model, parent.cfg, info, rows, label, args.keep_rejected)


def write_results(out: Path, model, cfg, info: dict, rows: dict, label: str, keep_rejected: bool = False) -> int:
    """retention.json always; compressed.pt only for a model that passed."""
    final = rows[label]
    summary = {"passed": final["passed"], "final": label, "rows": rows,
               **{k: info[k] for k in ("methods", "calibration", "parent", "created")}}
    (out / "retention.json").write_text(json.dumps(summary, indent=1))
    if final["passed"]:
        save_compressed(out / DEFAULT_NAME, model, cfg, info)
        print(f"PASS: {out / DEFAULT_NAME}", flush=True)
        return 0
    print(f"FAIL: {'; '.join(final['failures'])}. {DEFAULT_NAME} not written; see {out / 'retention.json'}")
    if keep_rejected:
        # Under another name, so nothing downstream mistakes it for a model that passed.
        save_compressed(out / REJECTED_NAME, model, cfg, info)
        print(f"kept for benchmarking only: {out / REJECTED_NAME}")
    stale = out / DEFAULT_NAME
    if stale.exists():
        # An earlier run's model beside this run's failing retention.json would be exported as if it passed.
        stale.unlink()
        print(f"removed {stale}: an earlier run's model, not the one this run judged")
    return 1


@contextlib.contextmanager
def _stdout_to_stderr():
    """Point file descriptor 1 at stderr (loggers and progress bars hold their own stdout references)."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _split_file(args, ckpt: dict) -> Path:
    path = args.split_file or ckpt.get("split")
    if not path or not Path(path).is_file():
        raise SystemExit(f"edge-quantize: split file {path!r} not found; pass the training run's split.json "
                         "with --split-file (the gate needs the validation images the parent never trained on)")
    return Path(path)


if __name__ == "__main__":
    sys.exit(main())
