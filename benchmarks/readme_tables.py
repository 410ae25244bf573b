"""README's measured tables, written from the results files (issue 33: numbers that cannot drift).

    python benchmarks/readme_tables.py            # rewrite each block between its markers in README.md
    python benchmarks/readme_tables.py --check    # exit 1, naming each block that differs (tests do this)

A block is the text between `<!-- tables:begin NAME -->` and `<!-- tables:end NAME -->`; the prose around it
is the author's. Sources (benchmarks/results/):
- accuracy: verify-default-test.json (edge-verify --data train-299 --json on the test split) and edge.metrics.PAPER;
- speed: bench-default.json (edge-bench --json, the first run), bench-default-runs.txt (two more runs, the
  edge-bench table under "## run N"), all three on one machine, one after the other.
The model card has its own writer (benchmarks/update_model_card.py --check).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from the checkout
    sys.path.insert(0, str(ROOT))

from edge.metrics import PAPER  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
BLOCK = re.compile(r"(<!-- tables:begin (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- tables:end (?P=name) -->)", re.S)
# edge-bench's text table row: backend, precision, p50, p95, min, img/s at batch 8, load s, RSS MB, size MB, ...
BENCH_ROW = re.compile(r"^(\w+)\s+(int8|fp32)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s", re.M)
SPEED_ROWS = (("openvino/int8", "OpenVINO INT8 (the default on this CPU)"),
              ("onnxruntime/fp32", "ONNX Runtime FP32"), ("openvino/fp32", "OpenVINO FP32"),
              ("onnxruntime/int8", "ONNX Runtime INT8"), ("torch/fp32", "torch eager FP32 (reference)"))


def _ci(m: dict, key: str, digits: int) -> str:
    lo, hi = m["ci"][key]
    return f"{m[key]:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def accuracy(results: Path = RESULTS) -> str:
    """The test-split table: given the sex (FP32, OpenVINO INT8) and sex-blind (FP32), then the paper's values."""
    v = json.loads((results / "verify-default-test.json").read_text())
    fp32 = v["reference"]
    rows = [("patient's sex given, FP32", v["sex_given"][fp32]["metrics"]),
            ("patient's sex given, OpenVINO INT8 (the default on this CPU)", v["sex_given"]["openvino/int8"]["metrics"]),
            ("sex-blind, FP32", v["backends"][fp32]["metrics"])]
    lines = ["| | bone age MAE, months (95% CI) | ICC(2,1) | sex accuracy | sex AUC |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {name} | {_ci(m, 'mae', 2)} | {m['icc']:.3f} | {m['accuracy']:.3f} | {m['auc']:.3f} |"
              for name, m in rows]
    lines.append(f"| the paper (Rayed et al. 2025) | {PAPER['mae']:g} | {PAPER['icc']:g} | {PAPER['accuracy']:g} | "
                 f"{PAPER['auc']:g} |")
    return "\n".join(lines) + "\n"


def bench_runs(text: str) -> list[dict[str, tuple[float, float]]]:
    """edge-bench text tables -> per run {backend/precision: (p50 ms, img/s at batch 8)}; a "## run" line starts
    a new run."""
    runs = []
    for part in re.split(r"^## run.*$", text, flags=re.M):
        rows = {f"{m[1]}/{m[2]}": (float(m[3]), float(m[6])) for m in BENCH_ROW.finditer(part)}
        if rows:
            runs.append(rows)
    return runs


def speed(results: Path = RESULTS) -> str:
    first = {f"{r['backend']}/{r['precision']}": (r["p50_ms"], r["throughput_b8_ips"])
             for r in json.loads((results / "bench-default.json").read_text())}
    runs = [first, *bench_runs((results / "bench-default-runs.txt").read_text())]
    lines = [f"| backend and precision | batch 1, {len(runs)} runs | images/s, batch 8 | times faster than torch eager |",
             "| --- | --- | --- | --- |"]
    for key, name in SPEED_ROWS:
        p50 = " / ".join(f"{r[key][0]:.1f}" for r in runs)
        ips = " / ".join(f"{r[key][1]:.0f}" for r in runs)
        ratio = " / ".join(f"{r['torch/fp32'][0] / r[key][0]:.2f}x" for r in runs)
        lines.append(f"| {name} | {p50} ms | {ips} | {ratio} |")
    return "\n".join(lines) + "\n"


TABLES = {"accuracy": accuracy, "speed": speed}


def render(readme: str, results: Path = RESULTS) -> str:
    """README text with every block rewritten from the results; an unknown block name is an error."""
    def body(m):
        if m["name"] not in TABLES:
            raise ValueError(f"README block {m['name']!r}: no such table (known: {', '.join(TABLES)})")
        return m.group(1) + TABLES[m["name"]](results) + m.group(4)
    return BLOCK.sub(body, readme)


def differing(readme: str, results: Path = RESULTS) -> list[str]:
    """Names of the blocks whose text is not what the results give."""
    fresh = {m["name"]: m["body"] for m in BLOCK.finditer(render(readme, results))}
    return [m["name"] for m in BLOCK.finditer(readme) if m["body"] != fresh[m["name"]]]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--readme", default=str(ROOT / "README.md"))
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block differs")
    args = p.parse_args(argv)
    path = Path(args.readme)
    text = path.read_text()
    if args.check:
        stale = differing(text)
        for name in stale:
            print(f"{path}: block {name!r} differs from benchmarks/results (python benchmarks/readme_tables.py)")
        return 1 if stale else 0
    path.write_text(render(text))
    print(f"{path}: {len(BLOCK.findall(text))} block(s) written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
