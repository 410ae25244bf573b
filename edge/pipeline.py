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


class OrderedMap:
    """fn(item) for every item, in input order, computed by `workers` threads at most `ahead` items ahead of the
    caller. workers 0: lazily in the calling thread, one at a time (no threads at all). eager: submit the first
    `ahead` items now rather than at the first next(), so they are prepared while the caller does something else
    (edge-infer: while the model compiles); the caller then owns a pool and must iterate to the end or close().

    fn should not raise for a bad item (return a value that says so): an exception from fn is re-raised by next()
    and stops the iteration. close() cancels what was not started and waits for the rest."""

    def __init__(self, fn: Callable[[T], R], items: Iterable[T], workers: int, ahead: int, eager: bool = False):
        self._fn, self._source, self._ahead = fn, iter(items), max(ahead, 1)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="edge-prepare") if workers > 0 else None
        self._queue: deque = deque()
        if eager and self._pool:
            self._fill(self._ahead)

    def _fill(self, n: int) -> None:
        for item in self._source:
            self._queue.append(self._pool.submit(self._fn, item))
            if len(self._queue) >= n:
                break

    def __iter__(self) -> Iterator[R]:
        return self

    def __next__(self) -> R:
        if self._pool is None:
            return self._fn(next(self._source))
        if not self._queue:  # the first call of a lazy map; afterwards empty only once the items are used up
            self._fill(self._ahead)
        if not self._queue:
            self.close()
            raise StopIteration
        try:
            done = self._queue.popleft().result()
        except BaseException:
            self.close()
            raise
        self._fill(len(self._queue) + 1)  # refill one: the window stays `ahead` wide
        return done

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
