"""edge-bench: latency and throughput of each backend and precision that runs the bundle on this machine.

Measures batch-1 latency (rounds interleaved across backends, after warm-up), throughput at larger batches,
load time, peak memory of a fresh process and artifact size, with torch eager FP32 as the reference where torch
is installed, and whether each backend reproduces the bundle's stored sample outputs (its self-test).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from edge.cli.common import run_cli
from edge.formats import FORMATS, PRECISIONS


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="edge-bench", description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("--bundle", help="model bundle directory (default: the bundled model)")
    p.add_argument("--backends", nargs="*", choices=[*FORMATS, "torch"], help="default: all that run here")
    p.add_argument("--precisions", nargs="*", choices=PRECISIONS, default=list(PRECISIONS))
    p.add_argument("--batch", default="1,8", help="batch sizes; 1 gives latency, others throughput")
    p.add_argument("--rounds", type=int, default=50, help="interleaved batch-1 rounds")
    p.add_argument("--threads", type=int, help="threads per runtime, at least 1 (default: all cores)")
    p.add_argument("--checkpoint", help="torch checkpoint for the eager reference (default: the bundle's "
                                        "architecture with random weights: same cost, not the same outputs)")
    p.add_argument("--no-torch", action="store_true", help="skip the torch eager reference")
    p.add_argument("--json", action="store_true", help="print the rows as a JSON list instead of the table")
    p.add_argument("--plot", metavar="FILE.png", help="bar chart of p50 latency per backend (needs matplotlib)")
    args = p.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be at least 1 (got {args.threads}); leave it out to use all cores")
    return args


def _main(argv=None) -> int:
    from edge.bench import edge_load_code, latency_rounds, probe_load, summarize, throughput
    from edge.bundle import load_bundle
    from edge.runtime import default_bundle_path
    from edge.verify import runnable, self_test_models

    args = parse_args(argv)
    if args.plot:
        from edge.plots import require_matplotlib
        require_matplotlib()  # now, not after minutes of measuring
    bundle_dir = Path(args.bundle or default_bundle_path())
    bundle = load_bundle(bundle_dir)
    spec = bundle.config.input
    shape1 = (1, spec.channels, spec.height, spec.width)
    batches = [int(b) for b in args.batch.split(",")]
    edge_backends = [b for b in (args.backends or FORMATS) if b in FORMATS]
    models = {k: m for k, m in runnable(bundle_dir, edge_backends, args.threads).items()
              if m.precision in args.precisions}
    runners = {name: m.run_arrays for name, m in models.items()}
    checked = (self_test_models(bundle, models) or {}).get("backends", {})
    loaders = {name: edge_load_code(bundle_dir, m.backend_name, m.precision, args.threads) for name, m in models.items()}
    sizes = {name: _artifact_mb(bundle, m.backend_name, m.precision) for name, m in models.items()}
    if not args.no_torch and (args.backends is None or "torch" in args.backends):
        torch_ref = _torch_reference(bundle, args.checkpoint, args.threads)
        if torch_ref:
            runners["torch/fp32"], loaders["torch/fp32"], sizes["torch/fp32"] = torch_ref
    if not runners:
        raise ValueError(f"{bundle_dir}: no backend can run here")

    x1 = np.random.default_rng(0).standard_normal(shape1).astype(np.float32)
    times = latency_rounds(runners, x1, rounds=args.rounds)
    rows = []
    for name in runners:
        backend, precision = name.split("/")
        row = {"backend": backend, "precision": precision, **summarize(times[name]), "size_mb": sizes[name],
               "self_test": _verdict(checked.get(name))}
        for b in batches:
            if b > 1:
                xb = np.repeat(x1, b, axis=0)
                row[f"throughput_b{b}_ips"] = throughput(runners[name], xb)
        row["throughput_ips"] = row.get(f"throughput_b{max(batches)}_ips", 1000 / row["p50_ms"])
        row.update(probe_load(loaders[name], shape1))
        rows.append(row)
    base = next((r["p50_ms"] for r in rows if r["backend"] == "torch"), None)
    for r in rows:
        r["speedup_vs_torch"] = base / r["p50_ms"] if base else None
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(format_table(rows, args.rounds, batches))
    if args.plot:
        from edge.plots import latency
        latency(rows, f"{bundle.config.name} {spec.height}x{spec.width}, batch 1, {os.cpu_count()} CPU cores", args.plot)
    return 0


def _verdict(check: dict | None) -> str:
    """PASS/FAIL against the bundle's stored sample outputs (a FAIL is refused by BoneAgeModel.load)."""
    if check is None:
        return "-"
    return "PASS" if check["passed"] else f"FAIL ({check['max_abs_months']:.1f} mo off)"


def _artifact_mb(bundle, backend: str, precision: str) -> float:
    path = bundle.artifact_path(backend, precision, check=False)
    rel = path.relative_to(bundle.root).as_posix()
    return sum(a["size"] for a in bundle.companions(rel, precision)) / 1e6


def _torch_reference(bundle, checkpoint, threads):
    """(runner, loader code, size) for torch eager FP32, or None when torch is not installed.
    Only here does edge touch torch, lazily: the runtime itself never needs it."""
    try:
        import torch
        from models.checkpoint import load_model
        from models.inception import create_model
    except ImportError:
        return None
    if threads:
        torch.set_num_threads(threads)
    cfg = bundle.config
    if checkpoint:
        net, _ = load_model(checkpoint)
        load = f"from models.checkpoint import load_model; net, _ = load_model({str(checkpoint)!r})"
    else:
        net = create_model(cfg).eval()
        load = (f"from edge.config import ModelConfig; from models.inception import create_model; "
                f"net = create_model(ModelConfig.from_dict({cfg.to_dict()!r})).eval()")
    load = f"import torch\n{load}\n" + (f"torch.set_num_threads({threads})\n" if threads else "") + \
        "def run(x):\n    with torch.inference_mode():\n        return net(torch.from_numpy(x))"
    size = sum(p.numel() * 4 for p in net.parameters()) / 1e6

    def run(x):
        with torch.inference_mode():
            return net(torch.from_numpy(x))
    return run, load, size


def format_table(rows: list[dict], rounds: int, batches: list[int]) -> str:
    tp = [b for b in batches if b > 1]
    head = (f"{'backend':<12}{'prec':<6}{'p50 ms':>9}{'p95 ms':>9}{'min ms':>9}"
            + "".join(f"{'img/s b' + str(b):>12}" for b in tp)
            + f"{'load s':>8}{'RSS MB':>8}{'size MB':>9}{'vs torch':>9}  self-test")
    lines = [f"batch-1 latency: {rounds} interleaved rounds after warm-up; RSS: load + one inference, fresh process;"
             " self-test: the bundle's sample outputs reproduced here (FAIL: load() refuses the backend)", head]
    for r in rows:
        speed = f"{r['speedup_vs_torch']:.2f}x" if r.get("speedup_vs_torch") else "-"
        lines.append(f"{r['backend']:<12}{r['precision']:<6}{r['p50_ms']:>9.2f}{r['p95_ms']:>9.2f}{r['min_ms']:>9.2f}"
                     + "".join(f"{r.get(f'throughput_b{b}_ips', float('nan')):>12.1f}" for b in tp)
                     + f"{r['load_s']:>8.2f}{r['rss_mb']:>8.0f}{r['size_mb']:>9.1f}{speed:>9}"
                     + f"  {r.get('self_test', '-')}")
    return "\n".join(lines)


def main(argv=None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
