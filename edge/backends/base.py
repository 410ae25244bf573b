"""The one small interface every runtime implements (numpy in, numpy out)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np


class BackendUnavailable(RuntimeError):
    """The runtime is not installed or cannot run here; the message names the fix."""


def cannot_load(name: str, artifact: Path, e: BaseException) -> BackendUnavailable:
    """A runtime's own load or compile error as one line naming the backend and file, so `auto` can try the next
    backend and the user reads which file failed where."""
    from edge.imaging import printable
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return BackendUnavailable(f"{name} cannot load {Path(artifact).name}: {printable(first, 200)}")


class Backend(ABC):
    name: str = ""
    package: str = ""

    def __init__(self, artifact: Path, precision: str, threads: int | None = None):
        self.artifact, self.precision, self.threads = Path(artifact), precision, threads

    @classmethod
    def check_available(cls) -> None:
        """Raise BackendUnavailable (naming the package to install) when the runtime cannot be used."""
        try:
            cls._import_runtime()
        except ImportError as e:
            raise BackendUnavailable(f"{cls.name} backend needs the {cls.package!r} package "
                                     f"(pip install {cls.package}): {e}") from None

    @classmethod
    @abstractmethod
    def _import_runtime(cls):
        ...

    @abstractmethod
    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """(N, C, H, W) float32 -> the graph's outputs by name (edge.bundle.OUTPUTS): bone_age_months (N,),
        p_male (N,) and, where the model has sex heads, bone_age_months_by_sex (N, 2)."""

    @staticmethod
    def by_name(named, n: int) -> dict[str, np.ndarray]:
        """(name, array) pairs -> {name: (N,) or (N, K) copy}, whatever shape the runtime gave."""
        out = {}
        for name, arr in named:
            arr = np.array(arr, np.float32).reshape(n, -1)  # a copy: runtimes reuse their buffers
            out[name] = arr[:, 0] if arr.shape[1] == 1 else arr
        return out

    def io(self) -> tuple[tuple, list[str]]:
        """(the input's shape after the batch axis, with None where dynamic; the output names)."""
        return (), []

    def check_io(self, spec, output_names) -> None:
        """Refuse an artifact whose input is not what bundle.json's config.input says or that lacks an output the
        bundle promises: a model of another shape, or another model, under a matching sha256."""
        from edge.bundle import BundleError
        shape, outputs = self.io()
        want = (spec.channels, spec.height, spec.width)
        if shape and (len(shape) != 3 or any(d is not None and d != w for d, w in zip(shape, want))):
            raise BundleError(f"{self.artifact}: the model takes input {'x'.join(map(str, shape))}, but bundle.json "
                              f"config.input says {'x'.join(map(str, want))}")
        missing = [n for n in output_names if outputs and n not in outputs]
        if missing:
            raise BundleError(f"{self.artifact}: the model has no {', '.join(missing)} output (it has "
                              f"{', '.join(outputs)})")

    def prepare(self, batch_size: int) -> None:
        """Get ready for batches of this size (compile, allocate) so it is not timed as inference."""

    def describe(self) -> str:
        return f"{self.name} {self.precision}"
