"""The compression table (issue 3): every variant that benchmarks/compression_runs.sh wrote, side by side.

    python benchmarks/compression_table.py [--root runs/compression] [--parent models/checkpoints/default.pt]

Columns: parameters (non-zero ones too, for unstructured pruning), GMACs at the deployed input size (dense:
a CPU does not skip zeros), OpenVINO batch-1 latency (all variants compiled first, then timed in
interleaved rounds so the shared machine's noise falls on all alike), the validation metrics and the gate's
verdict from each run's retention.json. Writes ROOT/compression-table.{md,json} and a latency-vs-MAE plot
into benchmarks/results/, and names the fastest variant that passed.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edge.backends.openvino_backend import OpenVinoBackend
from edge.bench import latency_rounds, summarize
from export.artifacts import write_model_files
from models.checkpoint import load_model
from quantize.compressed import DEFAULT_NAME, REJECTED_NAME, load_compressed

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="runs/compression", help="one folder per variant (edge-quantize --out)")
    p.add_argument("--parent", default="models/checkpoints/default.pt", help="the FP32 checkpoint they came from")
    p.add_argument("--rounds", type=int, default=60)
    p.add_argument("--threads", type=int, default=2, help="OpenVINO inference threads")
    p.add_argument("--out", default=str(RESULTS / "compression-w050-100"), help="output path prefix")
    return p.parse_args(argv)


def weight_counts(net: nn.Module) -> tuple[int, int]:
    """(parameters, non-zero parameters) of the network itself, not of NNCF's quantizer scales."""
    tensors = [p for name, p in net.named_parameters() if "__nncf" not in name]
    return sum(t.numel() for t in tensors), sum(int(torch.count_nonzero(t)) for t in tensors)


def count_gmacs(net: nn.Module, shape: tuple) -> float:
    """Multiply-accumulates of the convolutions and linear layers for one image."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * int(np.prod(module.kernel_size))
            total += output.numel() * per_output
        else:
            total += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        net.eval()(torch.zeros(1, *shape))
    for h in handles:
        h.remove()
    return total / 1e9


# Table order: single methods before combinations; then pruning before INT8, lighter before heavier.
METHOD_ORDER = {"unstructured": 0, "structured": 1, "int8-ptq": 2, "int8-qat": 3}


def _table_order(ret: dict, name: str) -> tuple:
    steps = [(METHOD_ORDER.get(m["method"], len(METHOD_ORDER)), m.get("ratio", 0.0), m.get("finetune_epochs") or 0)
             for m in ret["methods"]]
    return len(steps), steps, name


def variants(root: Path, parent_ckpt: str) -> list[dict]:
    """The parent first, then each run folder in a fixed order (_table_order), whenever it ran."""
    parent, _ = load_model(parent_ckpt)
    rows = [{"name": "fp32 (parent)", "net": parent, "cfg": parent.cfg, "quantized": False, "run": None}]
    runs = {run: json.loads((run / "retention.json").read_text())
            for run in root.iterdir() if (run / "retention.json").exists()}
    for run, ret in sorted(runs.items(), key=lambda item: _table_order(item[1], item[0].name)):
        weights = run / (DEFAULT_NAME if ret["passed"] else REJECTED_NAME)
        if not weights.exists():
            print(f"skip {run.name}: no {weights.name}", file=sys.stderr)
            continue
        net, cfg, _info = load_compressed(weights)
        rows.append({"name": run.name, "net": net, "cfg": cfg, "run": ret,
                     "quantized": any(m["method"].startswith("int8") for m in ret["methods"])})
    return rows


def measure(rows: list[dict], rounds: int, threads: int) -> None:
    shape = (rows[0]["cfg"].input.channels, rows[0]["cfg"].input.height, rows[0]["cfg"].input.width)
    runners = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, row in enumerate(rows):
            base = row["net"]
            row["params"], row["nonzero"] = weight_counts(base)
            row["gmacs"] = count_gmacs(base, shape)
            precision = "int8" if row["quantized"] else "fp32"
            xml = write_model_files(base, row["cfg"], Path(tmp) / f"v{k}.onnx", Path(tmp) / f"v{k}.xml", precision)
            runners[row["name"]] = OpenVinoBackend(xml, precision, threads).run
            print(f"compiled {row['name']}: {row['params'] / 1e6:.2f} M params, {row['gmacs']:.3f} GMACs",
                  file=sys.stderr)
        x1 = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
        times = latency_rounds(runners, x1, rounds=rounds)
    for row in rows:
        row["latency"] = summarize(times[row["name"]])


def table_rows(rows: list[dict]) -> list[dict]:
    parent_p50 = rows[0]["latency"]["p50_ms"]
    out = []
    for row in rows:
        ret = row["run"]
        final = ret["rows"][ret["final"]] if ret else None
        metrics = final["candidate"] if final else None
        if metrics is None:  # the parent: its own validation metrics, from any run's reference
            metrics = next((r["run"]["rows"][r["run"]["final"]]["reference"] for r in rows if r["run"]), {})
        out.append({"variant": row["name"], "params_m": row["params"] / 1e6, "nonzero_m": row["nonzero"] / 1e6,
                    "gmacs": row["gmacs"], **row["latency"], "speedup": parent_p50 / row["latency"]["p50_ms"],
                    "val_mae": metrics.get("mae"), "val_accuracy": metrics.get("accuracy"),
                    "val_auc": metrics.get("auc"),
                    "verdict": "parent" if not ret else ("PASS" if ret["passed"] else "FAIL: " +
                                                         "; ".join(final["failures"]))})
    return out


def format_markdown(rows: list[dict], rounds: int, threads: int) -> str:
    head = ("| variant | params (M) | non-zero (M) | GMACs | OV p50 ms | OV p95 ms | speed-up | val MAE | "
            "sex acc | AUC | gate |\n|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['params_m']:.2f} | {r['nonzero_m']:.2f} | {r['gmacs']:.3f} | "
                     f"{r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['speedup']:.2f}x | {r['val_mae']:.2f} | "
                     f"{r['val_accuracy']:.3f} | {r['val_auc']:.3f} | {r['verdict']} |")
    passing = [r for r in rows if r["verdict"] == "PASS"]
    best = min(passing, key=lambda r: r["p50_ms"]) if passing else None
    lines.append(f"\nOpenVINO CPU, batch 1, {threads} threads, {rounds} interleaved rounds (p50/p95 over rounds).")
    lines.append(f"Fastest variant that passed the gate: **{best['variant']}** ({best['p50_ms']:.2f} ms, "
                 f"{best['speedup']:.2f}x the FP32 parent)." if best else "No variant passed the gate.")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        color = {"parent": "black", "PASS": "tab:green"}.get(r["verdict"], "tab:red")
        ax.scatter(r["p50_ms"], r["val_mae"], color=color)
        ax.annotate(r["variant"], (r["p50_ms"], r["val_mae"]), fontsize=8, xytext=(4, 3), textcoords="offset points")
    ax.set_xlabel("OpenVINO latency, batch 1, p50 (ms)")
    ax.set_ylabel("validation MAE (months)")
    ax.set_title("Compression variants: green passed the retention gate, red failed")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    args = parse_args(argv)
    rows = variants(Path(args.root), args.parent)
    measure(rows, args.rounds, args.threads)
    table = table_rows(rows)
    text = format_markdown(table, args.rounds, args.threads)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps({"rounds": args.rounds, "threads": args.threads,
                                                    "parent": args.parent, "rows": table}, indent=1))
    plot(table, out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
