"""Latency, throughput, load time and memory per backend and precision, measured the same way for all.

Batch-1 latency runs warm-up first, then interleaved rounds (one call per backend per round) so that the
noise of a shared machine falls on every backend alike. Load time and peak RSS come from a fresh process
per backend, so one runtime's memory does not count against another.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np


# Pause after each timed call: a runtime's idle threads spin for a while after a call (torch's OpenMP pool does),
# which would slow whichever runtime is timed next; one radiograph at a time also arrives after a pause.
SETTLE_S = 0.01


def latency_rounds(runners: dict, x1: np.ndarray, rounds: int = 50, warmup: int = 5) -> dict[str, list[float]]:
    """runners: name -> callable(batch). Returns name -> batch-1 latencies in ms."""
    for fn in runners.values():
        for _ in range(warmup):
            fn(x1)
    times = {name: [] for name in runners}
    for _ in range(rounds):
        for name, fn in runners.items():
            t0 = time.perf_counter()
            fn(x1)
            times[name].append((time.perf_counter() - t0) * 1000)
            time.sleep(SETTLE_S)
    return times


def throughput(fn, xb: np.ndarray, seconds: float = 2.0) -> float:
    fn(xb)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn(xb)
        n += len(xb)
    return n / (time.perf_counter() - t0)


def summarize(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"p50_ms": float(np.median(a)), "p95_ms": float(np.percentile(a, 95)), "min_ms": float(a.min())}


# Peak RSS is read from VmHWM (per address space, reset by exec): getrusage's ru_maxrss survives exec on
# Linux and would report the benchmarking parent's memory for every child.
_PROBE = """
import json, sys, time, numpy as np
t0 = time.perf_counter()
{load}
load_s = time.perf_counter() - t0
run(np.zeros({shape}, np.float32))
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({{"load_s": load_s, "rss_mb": hwm / 1024}}))
"""

# check=False: the probe measures the very model the latency rounds timed, trusted here or not (the table's
# self-test column says which).
_LOAD_EDGE = """from edge.runtime import BoneAgeModel
m = BoneAgeModel.load({bundle!r}, {backend!r}, {precision!r}, {threads!r}, check=False); run = m.run_arrays"""


def probe_load(load_code: str, shape: tuple) -> dict:
    """Load time and peak RSS (load + one inference) in a fresh Python process."""
    code = _PROBE.format(load=load_code, shape=shape)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    if out.returncode != 0:
        return {"load_s": float("nan"), "rss_mb": float("nan"), "error": out.stderr.strip().splitlines()[-1:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def edge_load_code(bundle, backend: str, precision: str, threads) -> str:
    return _LOAD_EDGE.format(bundle=str(bundle), backend=backend, precision=precision, threads=threads)
