"""What the edge CLIs share: bundle/backend arguments and clean one-line errors."""
from __future__ import annotations

import argparse
import sys

from edge.formats import FORMATS, PRECISIONS
from edge.progress import Progress  # noqa: F401  (re-exported for the CLIs)


def add_model_args(p: argparse.ArgumentParser, precision_default: str | None = "auto") -> None:
    p.add_argument("--bundle", help="model bundle directory (default: the bundled model)")
    p.add_argument("--backend", default="auto", choices=["auto", *FORMATS],
                   help="runtime (auto: fastest installed here)")
    if precision_default:
        p.add_argument("--precision", default=precision_default, choices=["auto", *PRECISIONS],
                       help="auto: INT8 where this CPU has INT8 dot products (VNNI/AMX) and a backend runs it right and faster "
                            "than FP32 (OpenVINO), else FP32")
    p.add_argument("--threads", type=int, help="CPU threads for the runtime (default: all cores)")


def run_cli(main_fn, argv=None) -> int:
    """Run a CLI body; known failures become one line on stderr and exit code 2, never a traceback."""
    from edge.backends import BackendUnavailable
    from edge.bundle import BundleError
    from edge.imaging import ImageError

    prog = main_fn.__module__.rsplit(".", 1)[-1]
    try:
        return main_fn(argv)
    except (BundleError, BackendUnavailable, ImageError, FileNotFoundError, ValueError) as e:
        print(f"edge-{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"edge-{prog}: interrupted", file=sys.stderr)
        return 130
