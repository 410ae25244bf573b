"""What the edge CLIs share: bundle/backend arguments and clean one-line errors."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge.formats import FORMATS, PRECISIONS
from edge.progress import Progress  # noqa: F401  (re-exported for the CLIs)


def add_model_args(p: argparse.ArgumentParser, precision_default: str | None = "auto") -> None:
    p.add_argument("--bundle", help="model bundle directory (default: the bundled model)")
    p.add_argument("--backend", default="auto", choices=["auto", *FORMATS],
                   help="runtime (auto: fastest installed here)")
    if precision_default:
        p.add_argument("--precision", default=precision_default, choices=["auto", *PRECISIONS],
                       help="auto: INT8 where this CPU has INT8 products (AVX2, VNNI, AMX) and a backend runs it right and "
                            "faster than FP32 (OpenVINO), else FP32")
    p.add_argument("--threads", type=int, help="CPU threads for the runtime (default: all cores)")


# Exit codes of every edge CLI (README, docs/HARDENING.md). argparse's own usage errors are 2 as well.
EXIT_OK = 0
EXIT_INPUTS_FAILED = 1  # some inputs gave no result (each is reported); the others were processed
EXIT_ERROR = 2  # usage, an unreadable input list or option file, a single file that cannot be read
EXIT_BUNDLE = 3  # the model bundle is refused: malformed bundle.json, a changed or unlisted file, no samples
EXIT_NO_BACKEND = 4  # no backend can run the bundle here: not installed, cannot load it, fails the self-test
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGINT


def run_cli(main_fn, argv=None) -> int:
    """Run a CLI body; known failures become one printable line on stderr and their exit code, never a traceback."""
    import warnings

    from PIL import Image

    from edge.backends import BackendUnavailable
    from edge.bundle import BundleError
    from edge.imaging import ImageError, printable

    # Pillow warns (on stderr) about images between its own limit and twice it, which edge.imaging refuses anyway
    # with its own message; set once here, for the process the CLI owns, never per call in the hot path.
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    module = sys.modules.get(main_fn.__module__)
    prog = Path(getattr(module, "__file__", None) or main_fn.__module__).stem.rsplit(".", 1)[-1]  # also as __main__
    codes = ((BundleError, EXIT_BUNDLE), (BackendUnavailable, EXIT_NO_BACKEND),
             ((ImageError, OSError, ValueError), EXIT_ERROR))
    try:
        return main_fn(argv)
    except KeyboardInterrupt:
        print(f"edge-{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        code = next((c for kinds, c in codes if isinstance(e, kinds)), None)
        if code is None:
            raise
        print(f"edge-{prog}: error: {printable(_one_line(e), 500)}", file=sys.stderr)
        return code


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror and e.filename:  # e.g. an output path: "out.csv: Permission denied"
        return f"{e.filename}: {e.strerror}"
    return " ".join(str(e).split()) or type(e).__name__


def arg_type(parse, name: str | None = None):
    """An argparse `type` from a parser that raises ValueError: its message becomes argparse's one-line usage
    error (never a traceback). The parser's return value is the argument's value."""
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    convert.__name__ = name or getattr(parse, "__name__", "value")  # argparse names the type in its messages
    return convert


def number_in(kind, low, high=None, example: str = ""):
    """An argparse `type`: a number of `kind` (int or float) at least `low` (and at most `high`)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a {'whole number' if kind is int else 'number'}") from None
        if value < low or (high is not None and value > high):
            span = f"at least {low}" if high is None else f"between {low} and {high}"
            raise ValueError(f"give a value {span}{', e.g. ' + example if example else ''}; got {value}")
        return value
    return arg_type(parse, kind.__name__)
