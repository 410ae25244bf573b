"""The one small interface every runtime implements (numpy in, numpy out)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np


class BackendUnavailable(RuntimeError):
    """The runtime is not installed or cannot run here; the message names the fix."""


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

    def prepare(self, batch_size: int) -> None:
        """Get ready for batches of this size (compile, allocate) so it is not timed as inference."""

    def describe(self) -> str:
        return f"{self.name} {self.precision}"
