"""BoneAgeModel: load a bundle, pick a backend, predict bone age and sex from radiographs."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from edge.backends import BackendUnavailable, backend_class
from edge.bundle import Bundle, BundleError, load_bundle
from edge.formats import AUTO_ORDER, FORMATS, PRECISIONS
from edge.imaging import ImageError
from edge.preprocess import preprocess
from edge.reference import compare, reference_samples


@dataclass
class Prediction:
    file: str
    bone_age_months: float
    p_male: float
    sex: str
    backend: str
    precision: str
    ms: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Failure:
    file: str
    error: str

    def to_dict(self) -> dict:
        return asdict(self)


def default_bundle_path() -> Path:
    return Path(str(resources.files("edge") / "default_bundle"))


class BoneAgeModel:
    def __init__(self, bundle: Bundle, backend, precision: str, check: bool = True):
        self.bundle, self.backend, self.precision = bundle, backend, precision
        self.spec = bundle.config.input
        # Warm-up: the first inference allocates and tunes kernels; a user's first image should not report
        # that cost as its latency. The reference check's batch-1 calls are the warm-up when it runs.
        if not (check and self._check_reference()):
            backend.run(np.zeros((1, self.spec.channels, self.spec.height, self.spec.width), np.float32))

    def _check_reference(self) -> bool:
        """Refuse a backend that does not reproduce the bundle's stored sample outputs on this machine.
        Returns False when the bundle stores no samples (nothing was checked)."""
        ref = reference_samples(self.bundle)
        if ref is None:
            return False
        x, want_age, want_p = ref
        # One image per call: batch 1 is the shape a single radiograph uses, so nothing extra is compiled.
        outputs = [self.backend.run(x[k:k + 1]) for k in range(len(x))]
        age, p_male = (np.concatenate(o) for o in zip(*outputs))
        got = compare(age, p_male, want_age, want_p, self.precision)
        if not got["passed"]:
            raise BackendUnavailable(
                f"{self.backend.name} {self.precision} gives wrong outputs on this machine (a bundled sample is "
                f"{got['max_abs_months']:.1f} months / P(male) {got['max_abs_p_male']:.2f} off the stored "
                f"reference; `edge-verify` shows it)")
        return True

    @classmethod
    def load(cls, bundle=None, backend: str = "auto", precision: str = "int8",
             threads: int | None = None, check: bool = True) -> "BoneAgeModel":
        """bundle: a bundle directory (default: the one shipped with the package).
        backend: "auto" (fastest that is installed and works here), "openvino", "onnxruntime", "tensorrt".
        The artifact's sha256 is checked against bundle.json; a mismatch is refused. check: run the
        bundled samples and refuse a backend whose outputs differ from the stored reference (edge.reference);
        "auto" then tries the next backend."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
        b = load_bundle(bundle if bundle is not None else default_bundle_path())
        names = [n for n in AUTO_ORDER if (n, precision) in b.available()] if backend == "auto" else [backend]
        errors = []
        for name in names:
            cls_ = backend_class(name)
            try:
                cls_.check_available()
            except BackendUnavailable as e:
                errors.append(str(e))
                continue
            artifact = b.artifact_path(name, precision)  # BundleError on a tampered file: never skipped
            try:
                return cls(b, cls_(artifact, precision, threads), precision, check)
            except BackendUnavailable as e:
                errors.append(str(e))
        usable = ", ".join(n for n in FORMATS if _installed(n)) or "none"
        raise BackendUnavailable(f"no backend can run {precision} from {b.root}: " + "; ".join(errors)
                                 + f" (installed here: {usable})")

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def predict(self, source) -> Prediction:
        """One path or 2-D array -> Prediction. Raises ImageError (one-line message) for a bad file."""
        result = self.predict_many([source], batch_size=1)[0]
        if isinstance(result, Failure):
            raise ImageError(result.file, result.error)
        return result

    def predict_many(self, sources, batch_size: int = 8, progress=None) -> list[Prediction | Failure]:
        """Paths or arrays -> one Prediction or Failure each, in input order. A bad input never stops the
        batch. `progress`, if given, is called with the number of inputs finished after each batch."""
        sources = list(sources)
        results: list[Prediction | Failure | None] = [None] * len(sources)
        pending: list[tuple[int, np.ndarray]] = []
        for k, src in enumerate(sources):
            try:
                pending.append((k, preprocess(src, self.spec)))
            except ImageError as e:
                results[k] = Failure(_name(src, k), e.problem)
            except Exception as e:  # a decoder's unforeseen failure is this file's problem, not the batch's
                first = (str(e).strip().splitlines() or [""])[0]
                results[k] = Failure(_name(src, k), f"cannot read image ({type(e).__name__}: {first})")
            if len(pending) == batch_size or (k == len(sources) - 1 and pending):
                self._run_batch(pending, sources, results)
                pending = []
                if progress:
                    progress(k + 1)
        return results

    def _run_batch(self, pending, sources, results) -> None:
        x = np.stack([arr for _, arr in pending])
        self.backend.prepare(len(x))
        t0 = time.perf_counter()
        try:
            age, p_male = self.backend.run(x)
        except Exception as e:  # a runtime failure loses this batch only, never the results already made
            for k, _ in pending:
                results[k] = Failure(_name(sources[k], k), f"{self.backend.name} failed: {e}".splitlines()[0])
            return
        ms = (time.perf_counter() - t0) * 1000 / len(pending)
        for (k, _), a, p in zip(pending, age, p_male):
            results[k] = Prediction(_name(sources[k], k), float(a), float(p), "male" if p >= 0.5 else "female",
                                    self.backend.name, self.precision, round(ms, 2))

    def run_arrays(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Already-preprocessed (N, C, H, W) inputs -> (bone age months, P(male)); used by verify/bench."""
        return self.backend.run(x)


def _name(src, k: int) -> str:
    return str(src) if not isinstance(src, np.ndarray) else f"<array {k}>"


def _installed(name: str) -> bool:
    try:
        backend_class(name).check_available()
        return True
    except BackendUnavailable:
        return False


__all__ = ["BoneAgeModel", "Prediction", "Failure", "BundleError", "default_bundle_path"]
