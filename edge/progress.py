"""A dependency-free progress line on stderr (the runtime does not install tqdm)."""
from __future__ import annotations

import sys
import time


class Progress:
    """A one-line progress display on stderr; silent when disabled (the runtime has no tqdm)."""

    def __init__(self, total: int, desc: str, enabled: bool = True):
        self.total, self.desc, self.enabled = total, desc, enabled and total > 1
        self.t0, self.last = time.perf_counter(), 0.0

    def __call__(self, done: int) -> None:
        now = time.perf_counter()
        if not self.enabled or (now - self.last < 0.5 and done < self.total):
            return
        self.last = now
        rate = done / max(now - self.t0, 1e-9)
        sys.stderr.write(f"\r{self.desc}: {done}/{self.total} ({rate:.1f}/s)")
        if done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()
