"""BoneAgeModel: load a bundle, pick a backend, predict bone age and sex from radiographs."""
from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path

import numpy as np

from edge.backends import BackendUnavailable, backend_class
from edge.bundle import Bundle, BundleError, load_bundle
from edge.clinical.context import DEFAULT_LEVEL, annotate, fitted
from edge.clinical.patient import DICOM_SEX, Patient, PatientError, TagError, given_patient, resolve
from edge.config import InputSpec
from edge.cpu import auto_precision
from edge.formats import FORMATS, PRECISIONS, auto_order, get_format
from edge.imaging import ImageError
from edge.pipeline import OrderedMap, default_workers
from edge.preprocess import decode, to_model_input
from edge.quality import QualityModel, check as check_quality, quality_model
from edge.reference import compare, reference_samples, tolerance


# Given sex that the network's own reading contradicts this strongly is flagged (a wrong file, a wrong
# form field, or an unusual image): P(male) at or above this for a girl, at or below 1 - this for a boy.
SEX_DISAGREES = 0.9
SEXES = {"f": "female", "female": "female", "m": "male", "male": "male"}


@dataclass
class Prediction:
    file: str
    bone_age_months: float  # given the patient's sex when given_sex is set, else the sex-blind estimate
    p_male: float
    sex: str  # as the network sees it
    backend: str
    precision: str
    ms: float
    given_sex: str = ""
    warning: str = ""
    # Clinical context (edge.clinical.context.annotate; docs/CLINICAL.md): None/"" where not computed.
    given_sex_source: str = ""  # where given_sex came from: "--sex", "<csv> line N", "DICOM PatientSex"
    interval_low_months: float | None = None  # conformal prediction interval of bone_age_months
    interval_high_months: float | None = None
    interval_level: float | None = None  # its nominal coverage, e.g. 0.9
    p_male_calibrated: float | None = None  # P(male) after the bundle's Platt scaling
    sex_uncertain: bool = False  # calibrated confidence below the bundle's threshold: sex call is "uncertain"
    chronological_age_months: float | None = None
    age_source: str = ""  # "--age", "<csv> line N", "DICOM PatientBirthDate + StudyDate", "DICOM PatientAge"
    delay_months: float | None = None  # bone age - chronological age
    sds: float | None = None  # delay / Greulich-Pyle SD at that age and sex (edge.clinical.reference)
    category: str = ""  # "delayed" (SDS < -2) / "within" / "advanced" (SDS > +2); "" without an SDS
    context_note: str = ""  # why something above is missing (no age given, age outside the reference...)
    # The input check (edge.quality): "ok" passed it, "unchecked" it was bypassed (quality_check=False).
    status: str = "ok"
    corrections: str = ""  # what the check fixed before the estimate ("; "-separated), e.g. a turn, a crop

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Failure:
    file: str
    error: str
    status: str = "failed"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Rejected(Failure):
    """The input check refused the image (edge.quality): no bone age, the reason in `error`; counted as a failure."""

    status: str = "rejected"


@dataclass
class Prepared:
    """A network input and what the input check corrected to make it."""

    x: np.ndarray
    corrections: tuple[str, ...] = ()


class BackendFailure(Failure):
    """The runtime failed on the batch this input was in: not the file's fault (predict() does not blame it)."""


def parse_sex(value) -> str:
    """F/M/female/male (any case) -> "female"/"male"; None or "" -> "" (not given)."""
    if value is None or str(value).strip() == "":
        return ""
    try:
        return SEXES[str(value).strip().lower()]
    except KeyError:
        raise ValueError(f"sex {value!r}: give F or M (or leave it out)") from None


def default_bundle_path() -> Path:
    return Path(str(resources.files("edge") / "default_bundle"))


@dataclass(frozen=True)
class InputPreparer:
    """The per-file step every decode worker runs: (index, path or array) -> network input with what the input
    check corrected, or the input's Failure or Rejected (never raises for a bad input). It needs the bundle only,
    not a loaded backend, so edge-infer starts decoding while the model compiles (start())."""

    spec: InputSpec
    quality: QualityModel | None
    quality_check: bool = True  # False: no input check, results say "unchecked"
    on_decoded: object = None  # called with (index, decoded image) once each input is decoded (predict_iter)

    @classmethod
    def for_bundle(cls, bundle: Bundle, quality_check: bool = True) -> "InputPreparer":
        return cls(bundle.config.input, quality_model(bundle), quality_check)

    def start(self, sources, workers: int | None = None, ahead: int = 32) -> OrderedMap:
        """Begin preparing `sources` now, up to `ahead` inputs (C x H x W float32 each) ahead of the consumer;
        pass the result to predict_iter(prepared=...) with the same sources."""
        workers = default_workers() if workers is None else workers
        return OrderedMap(self, enumerate(sources), workers, ahead, eager=True)

    def __call__(self, indexed) -> Prepared | Failure:
        k, src = indexed
        try:
            img = decode(src)
            if self.on_decoded is not None:
                self.on_decoded(k, img)
            if not self.quality_check:
                return Prepared(to_model_input(img, self.spec))
            verdict = check_quality(img, self.quality, min(self.spec.height, self.spec.width))
            if not verdict.accepted:
                return Rejected(_name(src, k), verdict.rejection)
            return Prepared(to_model_input(verdict.image, self.spec), verdict.corrections)
        except ImageError as e:
            return Failure(_name(src, k), e.problem)
        except Exception as e:  # a decoder's unforeseen failure is this file's problem, not the batch's
            first = (str(e).strip().splitlines() or [""])[0]
            return Failure(_name(src, k), f"cannot read image ({type(e).__name__}: {first})")


class BoneAgeModel:
    def __init__(self, bundle: Bundle, backend, precision: str, check: bool = True, quality_check: bool = True):
        self.bundle, self.backend, self.precision = bundle, backend, precision
        self.spec = bundle.config.input
        self._quality_check = quality_check
        self.prepare_input = InputPreparer.for_bundle(bundle, quality_check)  # what each decode worker runs
        backend.check_io(self.spec, bundle.output_names)  # BundleError: another model under a matching sha256
        # Warm-up: the first inference allocates and tunes kernels; a user's first image should not report
        # that cost as its latency. The reference check's batch-1 calls are the warm-up when it runs.
        if not (check and self._check_reference()):
            backend.run(np.zeros((1, self.spec.channels, self.spec.height, self.spec.width), np.float32))

    def _check_reference(self) -> bool:
        """Refuse a backend that does not reproduce the bundle's stored sample outputs on this machine.
        A bundle without samples is refused too (a constant model would otherwise pass unseen); check=False
        loads it unchecked."""
        ref = reference_samples(self.bundle)
        if ref is None:
            raise BundleError(f"{self.bundle.root}: bundle.json stores no sample outputs, so this machine's results "
                              "cannot be checked (self-test); export it with --samples")
        x, want = ref
        # One image per call: batch 1 is the shape a single radiograph uses, so nothing extra is compiled.
        outputs = [self.backend.run(x[k:k + 1]) for k in range(len(x))]
        got = compare({n: np.concatenate([o[n] for o in outputs]) for n in outputs[0]}, want, self.precision,
                      tolerance(self.bundle.meta, self.backend.name, self.precision))
        if not got["passed"]:
            raise BackendUnavailable(
                f"{self.backend.name} {self.precision} gives wrong outputs on this machine (a bundled sample is "
                f"{got['max_abs_months']:.1f} months / P(male) {got['max_abs_p_male']:.2f} off the stored "
                f"reference; `edge-verify` shows it)")
        return True

    @property
    def quality_check(self) -> bool:
        """The input check before every estimate (edge.quality); False bypasses it and marks results "unchecked".
        One switch: setting it changes what the decode workers run, not only the results' label."""
        return self._quality_check

    @quality_check.setter
    def quality_check(self, on: bool) -> None:
        self._quality_check = bool(on)
        self.prepare_input = InputPreparer.for_bundle(self.bundle, self._quality_check)

    @classmethod
    def load(cls, bundle=None, backend: str = "auto", precision: str = "auto",
             threads: int | None = None, check: bool = True, quality_check: bool = True,
             inputs: int | None = None) -> "BoneAgeModel":
        """bundle: a bundle directory or a loaded Bundle (default: the one shipped with the package).
        backend: "auto" (fastest that is installed and works here; for one image, the quickest to load:
        edge.formats.auto_order), "openvino", "onnxruntime", "tensorrt".
        precision: "int8", "fp32", or "auto": INT8 where the CPU has INT8 dot products, else FP32 (edge.cpu; never
        by the number of inputs, so one image reads as it does in a folder), then the other precision if the
        preferred one has no working backend here (or no artifact); a backend whose INT8 does not pay
        (edge.formats) runs it only when nothing runs FP32.
        The artifact's sha256 is checked against bundle.json; a mismatch is refused. check: run the
        bundled samples and refuse a backend whose outputs differ from the stored reference (edge.reference);
        "auto" then tries the next backend. quality_check: refuse or correct unusable images before every
        estimate (edge.quality); False bypasses it (results say "unchecked"). inputs: how many images this model
        will run, when known (edge-infer knows): one image loads the quickest backend of the same precision
        (edge.formats.auto_order)."""
        precisions = _precision_order(precision)
        if backend != "auto":
            get_format(backend)  # an unknown name is a one-line error with a suggestion, never "not available"
        b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle if bundle is not None else default_bundle_path())
        pairs = [(n, p) for p in precisions for n in (auto_order(inputs) if backend == "auto" else [backend])]
        if precision == "auto":  # stable sort: slow INT8 after every FP32 choice
            pairs.sort(key=lambda pair: pair[1] == "int8" and not FORMATS[pair[0]].int8_pays)
        if len(pairs) > 1:  # something left to choose: only what the bundle has
            pairs = [pair for pair in pairs if pair in b.available()]
        errors, missing = [], []  # why each installed backend failed first: a missing package is no news
        for name, prec in pairs:
            cls_ = backend_class(name)
            try:
                cls_.check_available()
            except BackendUnavailable as e:
                missing.append(str(e))
                continue
            artifact = b.artifact_path(name, prec)  # BundleError on a tampered file: never skipped
            try:
                return cls(b, cls_(artifact, prec, threads), prec, check, quality_check)
            except BundleError:
                raise  # the bundle is wrong whatever runs it
            except Exception as e:  # cannot load or run here (BackendUnavailable, a runtime's own error): next
                errors.append(str(e) if isinstance(e, BackendUnavailable) else
                              f"{name} {prec} failed: {type(e).__name__}: {(str(e).splitlines() or [''])[0]}")
        usable = ", ".join(n for n in FORMATS if _installed(n)) or "none"
        raise BackendUnavailable(f"no backend can run {' or '.join(precisions)} from {b.root}: "
                                 + ("; ".join(dict.fromkeys(errors + missing)) or "the bundle has no such artifact")
                                 + f" (installed here: {usable})")

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def uses_sex(self) -> bool:
        """Whether this model can take the patient's sex (it has an age head per sex)."""
        return self.bundle.config.sex_heads

    def predict(self, source, sex=None, age=None, birth_date=None, study_date=None,
                interval_level: float = DEFAULT_LEVEL) -> Prediction:
        """One path or 2-D array -> the Prediction edge-infer prints for it, clinical fields included. Raises
        ImageError (one-line message) for a bad file or unusable DICOM patient tags. sex ("F"/"M"), age ("10y3m",
        "123m", "10.25y", or a number of months) or birth_date (date or "YYYY-MM-DD") + study_date, or birth_date
        alone (counted to the DICOM file's own examination date, else today): the patient's, if known; a DICOM
        file's own PatientSex and dates fill what is not given (edge.clinical.patient.given_patient, resolve: the
        rule edge-infer and edge-serve follow too)."""
        result = self.predict_many([source], batch_size=1, sex=sex, workers=0, age=age, birth_date=birth_date,
                                   study_date=study_date, interval_level=interval_level)[0]
        if isinstance(result, BackendFailure):
            raise BackendUnavailable(f"{result.file}: {result.error}")  # the runtime failed, not the file
        if isinstance(result, Failure):
            raise ImageError(result.file, result.error)
        return result

    def predict_many(self, sources, batch_size: int = 1, progress=None, sex=None, workers: int | None = None,
                     age=None, birth_date=None, study_date=None, interval_level: float = DEFAULT_LEVEL,
                     patients=None, on_decoded=None) -> list[Prediction | Failure]:
        """Paths or arrays -> one record each, in input order: the Prediction edge-infer prints (interval,
        calibrated P(male), delay, SDS, category: edge.clinical.context.annotate) or a Failure. sex, age,
        birth_date, study_date: one value for every input or a list with one per input (None where not known);
        see predict(). `progress`, if given, is called with the number of inputs finished after each batch.
        patients: instead of sex, age, birth_date and study_date, each input's Patient or PatientError already
        resolved by edge.clinical.patient.resolve (edge-serve's form). on_decoded: see predict_iter."""
        sources = list(sources)
        if patients is None:
            patients = _patients(sources, sex, age, birth_date, study_date)
        elif len(patients) != len(sources) or any(v is not None for v in (sex, age, birth_date, study_date)):
            raise ValueError("give one resolved patient per input, and then no sex, age or dates")
        # A DICOM's own PatientSex is used where the model has an age head per sex; a sex given to a model without
        # them is refused (predict_iter).
        sexes = [p.sex if isinstance(p, Patient) and (self.uses_sex or p.sex_source != DICOM_SEX) else ""
                 for p in patients]
        clinical, results = fitted(self.bundle), []
        for result, patient in zip(self.predict_iter(sources, batch_size, sexes, workers, on_decoded=on_decoded),
                                   patients):
            if isinstance(patient, PatientError):
                result = Failure(result.file, str(patient))
            elif isinstance(result, Prediction):
                result = annotate(result, patient, clinical, interval_level)
            results.append(result)
            if progress and (len(results) % batch_size == 0 or len(results) == len(sources)):
                progress(len(results))
        return results

    def predict_iter(self, sources, batch_size: int = 1, sex=None, workers: int | None = None,
                     prepared: OrderedMap | None = None, on_decoded=None):
        """Paths or arrays -> one Prediction or Failure each, yielded in input order as soon as its batch is
        done. A bad input never stops the batch. batch_size 1 by default: the model compiled at load (OpenVINO
        compiles one static shape per batch size, 1-5 s each) and no faster per image at 8 on 299 px inputs or
        under load (docs/THROUGHPUT.md). sex: None, one sex for every input, or one per input (None/""
        where not known). workers: threads that decode and preprocess ahead of the network (edge.pipeline;
        None: one per core, 0: none, all in this thread). Memory stays bounded whatever the number of inputs.
        prepared: InputPreparer(...).start(sources) begun earlier (edge-infer, while the model loaded); closed here.
        on_decoded: called (from a decode worker) with (index, decoded image: edge.preprocess.decode's) for each
        input that decodes, so a caller that also shows the image (edge-serve's thumbnail, report) decodes nothing
        again; not with prepared."""
        sources = list(sources)
        sexes = self._given_sexes(sex, len(sources))
        workers = default_workers() if workers is None else workers
        compiling = self._prepare_batch_size(min(batch_size, len(sources)))
        if prepared is None:
            prepare = self.prepare_input if on_decoded is None else replace(self.prepare_input, on_decoded=on_decoded)
            prepared = OrderedMap(prepare, enumerate(sources), workers, ahead=batch_size + workers)
        elif on_decoded is not None:
            raise ValueError("on_decoded goes with inputs predict_iter decodes itself, not with prepared")
        done: dict[int, Prediction | Failure] = {}  # finished, waiting for an earlier input's batch
        pending: list[tuple[int, np.ndarray]] = []
        upcoming = 0
        try:
            for k, item in enumerate(prepared):
                if isinstance(item, Failure):
                    done[k] = item
                else:
                    pending.append((k, item))
                if len(pending) == batch_size or (k == len(sources) - 1 and pending):
                    if compiling:
                        compiling.join()
                        compiling = None
                    self._run_batch(pending, sources, sexes, done)
                    pending = []
                while upcoming in done:
                    yield done.pop(upcoming)
                    upcoming += 1
        finally:  # also when the caller stops early: no decode worker outlives the iteration
            prepared.close()

    def _prepare_batch_size(self, n: int):
        """Compile the batch-n model in a thread while the first inputs are decoded (OpenVINO compiles one
        static shape per batch size: about a second). Returns the thread to join before the first batch."""
        if n <= 1:
            return None
        def compile_quietly():  # a failure here is raised again, as a one-line error, by the batch's own prepare
            try:
                self.backend.prepare(n)
            except Exception:
                pass
        thread = threading.Thread(target=compile_quietly, name="edge-compile", daemon=True)
        thread.start()
        return thread

    def _given_sexes(self, sex, n: int) -> list[str]:
        sexes = [parse_sex(s) for s in sex] if isinstance(sex, (list, tuple)) else [parse_sex(sex)] * n
        if len(sexes) != n:
            raise ValueError(f"{len(sexes)} sexes for {n} inputs")
        if any(sexes) and not self.uses_sex:
            raise ValueError(f"{self.bundle.root}: this model has no age head per sex (bundle config sex_heads "
                             "is false); run it without the patient's sex")
        return sexes

    def _run_batch(self, pending, sources, sexes, results) -> None:
        x = np.stack([prepared.x for _, prepared in pending])
        try:
            self.backend.prepare(len(x))  # compiling for this batch size can fail too: this batch's failure
            t0 = time.perf_counter()
            outputs = self.backend.run(x)
        except Exception as e:  # a runtime failure loses this batch only, never the results already made
            for k, _ in pending:
                results[k] = BackendFailure(_name(sources[k], k), f"{self.backend.name} failed: {e}".splitlines()[0])
            return
        ms = (time.perf_counter() - t0) * 1000 / len(pending)
        status = "ok" if self.quality_check else "unchecked"
        for row, (k, prepared) in enumerate(pending):
            p, given = float(outputs["p_male"][row]), sexes[k]
            age = outputs["bone_age_months_by_sex"][row, int(given == "male")] if given else outputs["bone_age_months"][row]
            results[k] = Prediction(_name(sources[k], k), float(age), p, "male" if p >= 0.5 else "female",
                                    self.backend.name, self.precision, round(ms, 2), given, _sex_warning(given, p),
                                    status=status, corrections="; ".join(prepared.corrections))

    def run_arrays(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Already-preprocessed (N, C, H, W) inputs -> (sex-blind bone age months, P(male))."""
        outputs = self.backend.run(x)
        return outputs["bone_age_months"], outputs["p_male"]

    def run_outputs(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Already-preprocessed (N, C, H, W) inputs -> every graph output by name (edge.bundle.OUTPUTS)."""
        return self.backend.run(x)


def _precision_order(precision: str) -> list[str]:
    if precision == "auto":
        first = auto_precision()
        return [first, *(p for p in PRECISIONS if p != first)]
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be auto or one of {', '.join(PRECISIONS)}; got {precision!r}")
    return [precision]


def _patients(sources, sex, age, birth_date, study_date) -> list[Patient | PatientError]:
    """Each input's Patient for the API: the values given (one for all inputs or one each) over a DICOM file's own
    tags, by the rule every path follows (edge.clinical.patient.resolve): a tag that cannot be read fails its file
    only when the age would come from it. A given value that cannot be read is the caller's ValueError."""
    n = len(sources)
    each = lambda v: list(v) if isinstance(v, (list, tuple)) else [v] * n  # noqa: E731
    values = [each(v) for v in (sex, age, birth_date, study_date)]
    for name, v in zip(("sex", "age", "birth_date", "study_date"), values):
        if len(v) != n:
            raise ValueError(f"{len(v)} values of {name} for {n} inputs: give one for all or one per input")
    out: list[Patient | PatientError] = []
    for src, s, a, born, seen in zip(sources, *values):
        try:
            given = given_patient(s, a, born, seen, path=None if isinstance(src, np.ndarray) else src)
        except TagError as e:  # the file's examination date, which the birth date needs: the file fails
            out.append(e)
            continue
        out.append(resolve(src, given))
    return out


def sex_disagrees(given_male, p_male):
    """Whether the image reads strongly against the given sex (arrays or scalars; given_male: bool)."""
    given_male, p_male = np.asarray(given_male, bool), np.asarray(p_male)
    return np.where(given_male, p_male <= 1 - SEX_DISAGREES, p_male >= SEX_DISAGREES)


def _sex_warning(given: str, p_male: float) -> str:
    if given and sex_disagrees(given == "male", p_male):
        return (f"given sex {given}, but the image reads as {'male' if p_male >= 0.5 else 'female'} "
                f"(P(male) {p_male:.2f}): check that the file is this patient's")
    return ""


def _name(src, k: int) -> str:
    return str(src) if not isinstance(src, np.ndarray) else f"<array {k}>"


def _installed(name: str) -> bool:
    try:
        backend_class(name).check_available()
        return True
    except BackendUnavailable:
        return False


__all__ = ["BoneAgeModel", "Prediction", "Failure", "Rejected", "BundleError", "default_bundle_path"]
