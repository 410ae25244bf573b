"""End-to-end throughput of `edge-infer` on full-resolution radiographs, today's code against an older revision.

One run measures, in interleaved rounds (the machine is shared and noisy: compare within a round, quote medians):
  - images/s of `edge-infer FOLDER --csv -` as a fresh process (start-up included), new code and --baseline REV;
  - images/s of 2 processes that only decode the same files (Pillow, nothing else): the floor the issue compares to;
  - seconds from process start to the first result row for one image, new and baseline.
Before the rounds, where the time goes for one image (decode, conversion, resize + normalise, network).

    python benchmarks/throughput.py                     # 120 inputs copied from $BONEAGE_DATA/fullres
    python benchmarks/throughput.py --rounds 5 --baseline 7bf2d3a --out benchmarks/results/throughput.md
    python benchmarks/throughput.py --ray 1 2           # also edge-infer --ray local with 1 and 2 workers
    python benchmarks/throughput.py --memory 120 1200   # also peak memory against the number of inputs

The inputs are copies in a temporary folder (never in the repository); results go to stdout and --out.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DECODE_ONLY = "import sys\nfrom PIL import Image\nfor f in sys.argv[1:]:\n    Image.open(f).load()\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.environ.get("BONEAGE_DATA", ROOT.parent / "shared/data/rsna-boneage"),
                   type=Path, help="RSNA folder with fullres/images (default $BONEAGE_DATA)")
    p.add_argument("--inputs", type=int, default=120, help="inputs copied from the full-resolution files")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--baseline", help="git revision of the code to compare with (default: the parent of the "
                                      "commit that added edge/pipeline.py)")
    p.add_argument("--bundle", default=str(ROOT / "edge/default_bundle"), help="bundle both versions run")
    p.add_argument("--variant", action="append", default=[], metavar="FLAGS",
                   help="also time the new code with these edge-infer flags, e.g. --variant '--batch-size 1'")
    p.add_argument("--ray", type=int, nargs="*", default=[], metavar="WORKERS",
                   help="also time edge-infer --ray local with these numbers of workers")
    p.add_argument("--memory", type=int, nargs="*", default=[], metavar="N",
                   help="also the peak memory of edge-infer on folders of these many inputs")
    p.add_argument("--out", type=Path, help="append the markdown tables to this file")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    images = sorted((args.data / "fullres" / "images").glob("*.png"))
    if not images:
        sys.exit(f"throughput: no PNGs in {args.data / 'fullres' / 'images'} (set --data or BONEAGE_DATA)")
    baseline = args.baseline or _baseline_revision()
    with tempfile.TemporaryDirectory(prefix="edge-throughput-") as tmp:
        tmp = Path(tmp)
        folder = _replicate(images, args.inputs, tmp / "inputs")
        old_tree = _extract(baseline, tmp / "baseline")
        emit = _writer(args.out)  # each table as soon as it is measured: a later failure keeps the earlier ones
        emit([f"## edge-infer throughput, {time.strftime('%Y-%m-%d %H:%M')}", "", _machine(), "",
              f"{args.inputs} inputs ({len(images)} full-resolution PNGs repeated), {args.rounds} interleaved "
              f"rounds; baseline: {baseline}; bundle: {args.bundle}", ""])
        emit(profile(images, args.bundle))
        emit(rounds(folder, old_tree, args.bundle, args.rounds, args.variant))
        if args.memory:
            emit(memory(images, args.bundle, args.memory, tmp))
        if args.ray:
            emit(ray_rounds(folder, args.bundle, args.ray, args.rounds))
    return 0


def _writer(out: Path | None):
    def emit(lines: list[str]) -> None:
        text = "\n".join(lines) + "\n"
        print(text, flush=True)
        if out:
            with open(out, "a") as f:
                f.write(text)
    return emit


def profile(images: list[Path], bundle: str) -> list[str]:
    """Median milliseconds per image of each stage, in this process (the new code)."""
    import numpy as np
    from PIL import Image

    from edge.imaging import decode_radiograph
    from edge.preprocess import to_model_input
    from edge.runtime import BoneAgeModel

    model = BoneAgeModel.load(bundle)
    spec = model.spec
    stages: dict[str, list[float]] = {}

    def timed(name, fn):
        t0 = time.perf_counter()
        out = fn()
        stages.setdefault(name, []).append((time.perf_counter() - t0) * 1000)
        return out

    for path in images:
        timed("Pillow decode only (Image.load)", lambda: Image.open(path).load())
        img = timed("decode to array (decode_radiograph)", lambda: decode_radiograph(path))
        timed("8-bit to float32, whole image (not done since the 8-bit path)", lambda: img.astype(np.float32) / 255)
        timed(f"resize + normalise to {spec.height}x{spec.width} ({spec.interpolation})",
              lambda: to_model_input(img, spec))
    x = np.stack([to_model_input(decode_radiograph(p), spec) for p in images[:8]])
    for n in (1, len(x)):  # OpenVINO compiles one static shape per batch size: is a batch worth its compile?
        model.backend.prepare(n)
        name = f"network per image at batch {n} ({model.backend_name} {model.precision})"
        for _ in range(5):
            timed(name, lambda: model.run_outputs(x[:n]))
        stages[name] = [t / n for t in stages[name]]
    rows = ["| stage | ms per image (median) |", "| --- | --- |"]
    rows += [f"| {name} | {statistics.median(ts):.1f} |" for name, ts in stages.items()]
    return ["### Where the time goes (one image at a time, this process)", "", *rows, ""]


def rounds(folder: Path, old_tree: Path, bundle: str, n: int, variants: list[str]) -> list[str]:
    files = sorted(str(p) for p in folder.iterdir())
    one = files[0]
    runs: dict[str, list[float]] = {}
    runners = [("baseline", old_tree, []), ("new", ROOT, [])]
    runners += [(f"new {v}", ROOT, v.split()) for v in variants]
    for r in range(n):
        for name, tree, extra in (runners if r % 2 == 0 else runners[::-1]):  # alternate the order
            runs.setdefault(f"{name}: edge-infer images/s", []).append(
                len(files) / _infer_seconds(tree, [str(folder), *extra], bundle))
            if not extra:
                runs.setdefault(f"{name}: start to first result, s", []).append(_first_result(tree, one, bundle))
        # Opt-in compiled-model cache (edge/backends/openvino_backend.py), filled by the first of these runs.
        runs.setdefault("new, BONEAGE_OPENVINO_CACHE filled: start to first result, s", []).append(
            _first_result(ROOT, one, bundle, {"BONEAGE_OPENVINO_CACHE": str(folder.parent / "ov-cache")}))
        decode = len(files) / _decode_only(files, 2)
        runs.setdefault("2 decode-only processes images/s", []).append(decode)
        for name, _, _ in runners:
            runs.setdefault(f"{name}: / decode-only", []).append(runs[f"{name}: edge-infer images/s"][-1] / decode)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in runs.items()), file=sys.stderr)
    rows = ["| measure | median | rounds |", "| --- | --- | --- |"]
    rows += [f"| {k} | {statistics.median(v):.2f} | {' '.join(f'{x:.2f}' for x in v)} |" for k, v in sorted(runs.items())]
    return ["### End to end (fresh processes, interleaved)", "", *rows, ""]


def ray_rounds(folder: Path, bundle: str, workers: list[int], n: int) -> list[str]:
    runs: dict[str, list[float]] = {}
    files = list(folder.iterdir())
    for _ in range(n):
        for w in workers:
            seconds = _infer_seconds(ROOT, [str(folder), "--ray", "local", "--ray-workers", str(w)], bundle)
            runs.setdefault(f"--ray local, {w} worker(s), images/s (start-up included)", []).append(len(files) / seconds)
        runs.setdefault("single process, images/s", []).append(len(files) / _infer_seconds(ROOT, [str(folder)], bundle))
    rows = ["| run | median | rounds |", "| --- | --- | --- |"]
    rows += [f"| {k} | {statistics.median(v):.2f} | {' '.join(f'{x:.2f}' for x in v)} |" for k, v in runs.items()]
    return ["### Ray Data on this machine (a local cluster started by edge-infer)", "", *rows, ""]


def _infer_seconds(tree: Path, inputs: list[str], bundle: str) -> float:
    return _infer(tree, inputs, bundle)[0]


def _infer(tree: Path, inputs: list[str], bundle: str) -> tuple[float, float]:
    """(wall seconds, peak resident MiB) of one edge-infer process writing CSV to a pipe."""
    cmd = [sys.executable, "-m", "edge.cli.infer", *inputs, "--csv", "-", "--no-progress", "--bundle", bundle]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, cwd=tree, env=_env(tree), stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        rows = out.read().count(b"\n") - 1  # CSV: a header, then one line per input
        if proc.returncode not in (0, 1) or rows < expected_rows(inputs):
            sys.exit(f"throughput: {' '.join(cmd[:4])} in {tree} wrote {rows} rows or failed: "
                     f"{err.read().decode()[-500:]}")
    return seconds, usage.ru_maxrss / 1024  # Linux: KiB


def expected_rows(inputs: list[str]) -> int:
    """Image files the inputs name (a folder: every file in it), so a run that read fewer is an error."""
    return sum(len(list(Path(i).iterdir())) if Path(i).is_dir() else 1 for i in inputs if not i.startswith("-")
               and Path(i).exists())


def memory(images: list[Path], bundle: str, sizes: list[int], tmp: Path) -> list[str]:
    """Peak memory of edge-infer on folders of growing size: flat if nothing grows with the number of inputs."""
    rows = ["| inputs | peak resident MiB | images/s |", "| --- | --- | --- |"]
    for n in sizes:
        folder = _replicate(images, n, tmp / f"memory-{n}")
        seconds, mib = _infer(ROOT, [str(folder)], bundle)
        rows.append(f"| {n} | {mib:.0f} | {n / seconds:.1f} |")
    return ["### Memory (new code, one process each)", "", *rows, ""]


def _first_result(tree: Path, image: str, bundle: str, env: dict | None = None) -> float:
    """Seconds from starting edge-infer on one image to the line with its result on stdout."""
    cmd = [sys.executable, "-m", "edge.cli.infer", image, "--csv", "-", "--no-progress", "--bundle", bundle]
    if env is not None:  # warm the cache once, outside the timing
        subprocess.run(cmd, cwd=tree, env=_env(tree) | env, capture_output=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=tree, env=_env(tree) | (env or {}), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    seconds = None
    for line in proc.stdout:
        if Path(image).name in line and seconds is None:
            seconds = time.perf_counter() - t0
    proc.wait()
    if seconds is None:
        sys.exit(f"throughput: edge-infer in {tree} printed no result for {image}")
    return seconds


def _decode_only(files: list[str], processes: int) -> float:
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", DECODE_ONLY, *files[k::processes]]) for k in range(processes)]
    if any(p.wait() for p in procs):
        sys.exit("throughput: a decode-only process failed")
    return time.perf_counter() - t0


def _env(tree: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(tree), "RAY_USAGE_STATS_ENABLED": "0"}


def _replicate(images: list[Path], n: int, folder: Path) -> Path:
    """n copies (not links: edge-infer reads a file reached by several links once) in a temporary folder."""
    folder.mkdir(parents=True)
    for k in range(n):
        src = images[k % len(images)]
        shutil.copyfile(src, folder / f"r{k // len(images):02d}_{src.name}")
    return folder


def _baseline_revision() -> str:
    added = subprocess.run(["git", "log", "--diff-filter=A", "--format=%H", "--", "edge/pipeline.py"], cwd=ROOT,
                           capture_output=True, text=True).stdout.split()
    return f"{added[-1]}^" if added else "HEAD"


def _extract(revision: str, folder: Path) -> Path:
    """The baseline's `edge` package (without its bundle: both versions run --bundle) in a temporary folder."""
    folder.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", revision, "edge", ":(exclude)edge/default_bundle"], cwd=ROOT,
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def _machine() -> str:
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor()
    load = " ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (f"Machine: {model}, {os.cpu_count()} cores, load average {load} at the start "
            "(other work shares these cores: compare within one run)")


if __name__ == "__main__":
    sys.exit(main())
