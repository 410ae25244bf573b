"""Mutation score of the runtime's core against the FAST tests (mutmut 3): how many deliberate small changes to
each file some fast test notices. Results: docs/TESTING.md quotes them; the survivors' diffs are written to
benchmarks/results/mutation/<file>.txt.

    python benchmarks/mutation_testing.py                      # every file below, one after another
    python benchmarks/mutation_testing.py edge/metrics.py      # one file

Each file runs in its own scratch copy of the repository (mutmut writes a mutants/ folder and reads its settings
from pyproject.toml: the copy gets its own [tool.mutmut] table, the checkout is left alone). Mutants run one at a
time (--max-children 1, nice 19); a mutant that runs past timeout_multiplier x the tests' clean time +
timeout_constant seconds counts as killed (mutmut's rule). mutmut 3 makes 100-400 mutants of a file of this size;
on 2 shared cores that is hours, so the score is measured on a seeded random sample of them (--sample, default 40;
--sample 0 runs all) and given with its 95% interval. Score = (killed + timeout) / sampled; a mutant that no
selected test reaches counts as surviving.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "mutation"
NOT_SLOW = ["-m", "not slow", "-p", "no:cacheprovider", "-q"]
# The fast tests that exercise each file. CLI tests that run in a subprocess are left out: mutmut maps tests to
# the functions they call in its own process, so they would only cost time, and one with a cleared environment
# (test_hardening's no-HOME edge-infer) fails under mutmut's trampolines, which read MUTANT_UNDER_TEST.
IN_PROCESS = "not edge_infer and not misses_the_stored_outputs"
TARGETS = {
    "edge/metrics.py": (["tests/test_metrics.py"], None),
    "edge/retention.py": (["tests/test_metrics.py", "tests/test_runtime.py"], IN_PROCESS),
    "edge/preprocess.py": (["tests/test_preprocess.py", "tests/test_inputs.py", "tests/test_data.py"], None),
    "edge/imaging.py": (["tests/test_inputs.py", "tests/test_preprocess.py", "tests/test_hardening.py"], IN_PROCESS),
    "edge/bundle.py": (["tests/test_runtime.py", "tests/test_export.py", "tests/test_hardening.py"], IN_PROCESS),
    "edge/runtime.py": (["tests/test_runtime.py", "tests/test_hardening.py"], IN_PROCESS),
}
COPY = ["edge", "models", "export", "quantize", "tests", "pyproject.toml"]


def mutmut_table(target: str, tests: list[str], keyword: str | None, args) -> str:
    selection = [t for t in tests if (REPO / t).exists()] + (["-k", keyword] if keyword else [])
    return "\n".join([
        "", "[tool.mutmut]",
        'source_paths = ["edge"]',
        'also_copy = ["models", "export", "quantize"]',  # the tests import them (phantoms, checkpoints)
        f"only_mutate = {json.dumps([target])}",
        f"pytest_add_cli_args = {json.dumps(NOT_SLOW)}",
        f"pytest_add_cli_args_test_selection = {json.dumps(selection)}",
        f"timeout_multiplier = {args.timeout_multiplier}",
        f"timeout_constant = {args.timeout_constant}",
        # OpenVINO and ONNX Runtime start thread pools: fork mutants from a server that has run no test.
        'process_isolation = "forkserver"',
        "use_git_change_detection = false",
        "",
    ])


def scratch_copy(target: str, tests: list[str], keyword: str | None, args) -> Path:
    work = Path(tempfile.mkdtemp(prefix="mutation-", dir=args.scratch))
    for name in COPY:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, work / name)
    with open(work / "pyproject.toml", "a") as f:
        f.write(mutmut_table(target, tests, keyword, args))
    return work


def run_one(target: str, args) -> dict:
    tests, keyword = TARGETS[target]
    work = scratch_copy(target, tests, keyword, args)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "BONEAGE_DATA_REQUIRED")}
    env["PYTHONPATH"] = ""  # the scratch copy's packages, not the checkout's
    t0 = time.time()
    # 1. Generate the mutants and map tests to functions (one clean run): a filter that matches nothing stops
    #    mutmut right after that, before it runs any mutant.
    _mutmut(work, env, args, "run", "--max-children", "1", "no-such-mutant")
    meta = work / "mutants" / (target + ".meta")
    if not meta.exists():
        raise SystemExit(f"{target}: mutmut generated no mutants (see {work} with --keep)")
    names = sorted(json.loads(meta.read_text())["exit_code_by_key"])
    # 2. A seeded random sample of them (all with --sample 0): each runs the tests that reach its function.
    sample = names if not args.sample or args.sample >= len(names) else \
        sorted(random.Random(args.seed).sample(names, args.sample))
    _mutmut(work, env, args, "run", "--max-children", "1", *sample)
    status = dict(re.findall(r"^\s*(\S+): (.+)$", _mutmut(work, env, args, "results", "--all", "true").stdout, re.M))
    counts = Counter(status.get(n, "not checked") for n in sample)
    if counts["not checked"] == len(sample):  # the clean run failed: mutmut ran nothing (a failing selected test)
        raise SystemExit(f"{target}: no mutant was run; the selected tests must pass on the unmutated code first "
                         f"(rerun with --keep and see mutmut run in {work})")
    killed = counts["killed"] + counts["timeout"]
    survivors = [n for n in sample if status.get(n) in ("survived", "no tests")]
    RESULTS.mkdir(parents=True, exist_ok=True)
    report = RESULTS / (Path(target).stem + ".txt")
    shows = [_mutmut(work, env, args, "show", n).stdout.strip() for n in survivors]
    report.write_text(f"# {target}: the {len(survivors)} surviving mutants of a sample of {len(sample)} "
                      f"(of {len(names)}; seed {args.seed}; mutmut {_version()}); tests: {' '.join(tests)}"
                      f"{' -k ' + repr(keyword) if keyword else ''}\n\n" + "\n\n".join(shows) + "\n")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    low, high = _wilson(killed, len(sample))
    return {"file": target, "mutants": len(names), "sampled": len(sample), "killed": killed,
            "survived": counts["survived"], "no_tests": counts["no tests"],
            "other": len(sample) - killed - counts["survived"] - counts["no tests"],
            "score": killed / len(sample), "ci95": [round(low, 3), round(high, 3)],
            "minutes": round((time.time() - t0) / 60, 1), "survivors": str(report.relative_to(REPO))}


def _mutmut(work: Path, env: dict, args, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["nice", "-n", "19", sys.executable, "-m", "mutmut", *argv], cwd=work, env=env,
                          capture_output=True, text=True, timeout=args.file_timeout)


def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% interval of a share k/n (Wilson): the score of a sample says this much about the whole file."""
    if n == 0:
        return float("nan"), float("nan")
    p, d = k / n, 1 + z * z / n
    centre, half = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return centre - half, centre + half


def _version() -> str:
    from importlib.metadata import version
    return version("mutmut")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="*", default=list(TARGETS), choices=list(TARGETS))
    p.add_argument("--timeout-multiplier", type=float, default=5.0)
    p.add_argument("--timeout-constant", type=float, default=10.0, help="seconds")
    p.add_argument("--file-timeout", type=int, default=1800, help="seconds for one file's whole run")
    p.add_argument("--scratch", default=None, help="where the scratch copies go (default: the system's temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the scratch copies (mutmut browse works in them)")
    p.add_argument("--sample", type=int, default=40, help="mutants per file, drawn at random (0: every one)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rows = []
    for target in args.files:
        row = run_one(target, args)
        rows.append(row)
        print(f"{row['file']:<20} killed {row['killed']:>3} of {row['sampled']:>3} sampled (of {row['mutants']}): "
              f"{row['score']:.0%} [{row['ci95'][0]:.0%}, {row['ci95'][1]:.0%}]  survived {row['survived']}, "
              f"no test {row['no_tests']}, other {row['other']}  {row['minutes']} min", flush=True)
    (RESULTS / "scores.json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
