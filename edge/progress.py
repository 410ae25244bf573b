"""A dependency-free progress line on stderr (the runtime does not install tqdm)."""
from __future__ import annotations

import sys
import time


class Progress:
    """Progress on stderr; silent when disabled or for a single item. On a terminal one line rewritten in place
    (at most twice a second); into a file or a pipe (a log) one plain line every LOG_EVERY_S seconds instead, so
    the log holds no carriage returns."""

    LOG_EVERY_S = 10.0

    def __init__(self, total: int, desc: str, enabled: bool = True):
        self.total, self.desc, self.enabled = total, desc, enabled and total > 1
        self.t0, self.last = time.perf_counter(), 0.0
        self.tty = sys.stderr.isatty() if hasattr(sys.stderr, "isatty") else False

    def __call__(self, done: int) -> None:
        now = time.perf_counter()
        every = 0.5 if self.tty else self.LOG_EVERY_S
        if not self.enabled or (now - self.last < every and done < self.total):
            return
        self.last = now
        line = f"{self.desc}: {done}/{self.total} ({done / max(now - self.t0, 1e-9):.1f}/s)"
        if self.tty:
            sys.stderr.write(f"\r{line}" + ("\n" if done >= self.total else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()
