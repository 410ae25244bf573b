"""Decode and preprocess ahead of the network: a bounded pool of worker threads, results in input order.

Measured on 5-megapixel PNG radiographs (docs/THROUGHPUT.md): decoding is most of the work (about 20 ms an
image on one Zen 4 core, against 1-5 ms for the resize and a few ms for the network per image at batch 8), so
the files are decoded by workers while the calling thread runs the network.

Threads, not processes: Pillow's PNG/JPEG decoders and resize, numpy's array arithmetic and the runtimes'
infer calls all release the GIL, so threads overlap them without pickling a decoded image between processes.

Memory is bounded whatever the number of inputs: at most `ahead` inputs are submitted before the one the
caller is waiting for, so at most `workers` full-resolution images are being decoded and at most `ahead`
network inputs (C x H x W float32 each) wait at any time.
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """Decode workers when the caller does not say: one per core, at most 4 (past that the network, which
    runs beside them on the same cores, is starved), at least 1."""
    return max(1, min(4, os.cpu_count() or 1))


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int, ahead: int) -> Iterator[R]:
    """fn(item) for every item, yielded in input order, computed by `workers` threads at most `ahead` items
    ahead of the caller. workers 0: in the calling thread, one at a time (no threads at all).

    fn should not raise for a bad item (return a value that says so): an exception from fn is re-raised here
    and stops the iteration. Leaving the iteration early cancels what was not started and waits for the rest."""
    if workers <= 0:
        yield from map(fn, items)
        return
    source = iter(items)
    pool = ThreadPoolExecutor(workers, thread_name_prefix="edge-prepare")
    queue: deque = deque()
    try:
        for item in source:
            queue.append(pool.submit(fn, item))
            if len(queue) >= max(ahead, 1):
                break
        while queue:
            done = queue.popleft().result()
            for item in source:  # refill one: the window stays `ahead` wide
                queue.append(pool.submit(fn, item))
                break
            yield done
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
