"""Console scripts that need an optional part of the install (pyproject's [project.scripts] point here).

The runtime install (`pip install .`) installs every command, but edge-train, edge-quantize and edge-export
need torch ([train]) and edge-serve needs FastAPI, uvicorn and pynetdicom ([serve]). Without them the command
says, in one line, what to install and exits 2: no traceback, however deep the missing import sits.
"""
from __future__ import annotations

import importlib
import sys

EXIT_MISSING = 2  # as a usage error: the command cannot run in this install
# Top-level module -> the extra (pyproject [project.optional-dependencies]) that installs it.
EXTRA_OF = {"torch": "train", "nncf": "train", "torchao": "train", "torch_pruning": "train", "onnx": "train",
            "onnxscript": "train", "scipy": "train", "tqdm": "train", "fastapi": "serve", "uvicorn": "serve",
            "multipart": "serve", "python_multipart": "serve", "pynetdicom": "serve", "highdicom": "serve",
            "ray": "cluster", "matplotlib": "plot"}


def missing_extra(error: ModuleNotFoundError, command: str) -> str | None:
    """The one line for a missing optional module (None when the module is not one of an extra's)."""
    top = (error.name or "").split(".")[0]
    extra = EXTRA_OF.get(top)
    if extra is None:
        return None
    return (f"{command}: error: needs {top}, which this install leaves out: pip install \"boneage-edge[{extra}]\" "
            f"(from a checkout: pip install \".[{extra}]\")")


def exit_missing(error: ModuleNotFoundError, command: str) -> int:
    """Print the one line for an extra's missing module and return the exit code; re-raise any other."""
    line = missing_extra(error, command)
    if line is None:
        raise error
    print(line, file=sys.stderr)
    return EXIT_MISSING


def run(command: str, target: str) -> int:
    """Import `target` ("module:function") and run it, turning a missing optional module into one line."""
    module, function = target.split(":")
    try:
        return getattr(importlib.import_module(module), function)()
    except ModuleNotFoundError as e:
        return exit_missing(e, command)


def train() -> int:
    return run("edge-train", "models.train:main")


def quantize() -> int:
    return run("edge-quantize", "quantize.cli:main")


def export() -> int:
    return run("edge-export", "export.cli:main")


def serve() -> int:
    return run("edge-serve", "edge.cli.serve:main")
