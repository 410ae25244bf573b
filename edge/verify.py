"""Accuracy checks of a bundle on this machine, for every backend and precision that runs here.

- with labelled data: the paper's metrics per backend, their change against the FP32 reference and the
  retention verdict (edge.retention), and where the errors are (by age band and sex, the largest), on the images
  of any labelled folder the model neither trained nor was selected on (held_out: a clinic's own images, or the
  test part of the bundle's split);
- without data: the installation self-test, reproducing the FP32 outputs stored for the bundled samples.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge import metrics
from edge.backends import BackendUnavailable
from edge.bundle import load_bundle
from edge.cpu import auto_precision
from edge.formats import AUTO_ORDER
from edge.imaging import ImageError
from edge.labels import SPLIT_NAMES, Labels, read_labels, read_split
from edge.preprocess import preprocess
from edge.progress import Progress
from edge.reference import compare, reference_samples, tolerance
from edge.retention import Thresholds, retention
from edge.runtime import BoneAgeModel, sex_disagrees


def runnable(bundle_dir, backends=None, threads=None) -> dict[str, BoneAgeModel]:
    """'backend/precision' -> loaded model, for every pair that this bundle has and this machine runs."""
    b = load_bundle(bundle_dir)
    models = {}
    for backend, precision in b.available():
        if backends and backend not in backends:
            continue
        try:
            # check=False: verification reports a backend that gets the samples wrong; it must not skip it.
            models[f"{backend}/{precision}"] = BoneAgeModel.load(bundle_dir, backend, precision, threads, check=False)
        except BackendUnavailable:
            continue
    return models


def predict_outputs(model: BoneAgeModel, x: np.ndarray, batch: int = 32) -> dict[str, np.ndarray]:
    parts = [model.run_outputs(x[s:s + batch]) for s in range(0, len(x), batch)]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def predict_arrays(model: BoneAgeModel, x: np.ndarray, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    out = predict_outputs(model, x, batch)
    return out["bone_age_months"], out["p_male"]


def age_given_sex(outputs: dict[str, np.ndarray], male) -> np.ndarray | None:
    """Each image's bone age given its (true) sex, or None when the model has no age head per sex."""
    by_sex = outputs.get("bone_age_months_by_sex")
    return None if by_sex is None else by_sex[np.arange(len(by_sex)), np.asarray(male, int)]


def sex_warning_rates(male, p_male) -> dict[str, float]:
    """How often edge-infer's given-sex warning fires when each image is given its true sex, and the other."""
    male = np.asarray(male, bool)
    return {"true_sex": float(sex_disagrees(male, p_male).mean()),
            "wrong_sex": float(sex_disagrees(~male, p_male).mean())}


# Age bands (years) for MAE by age; the last is open-ended.
AGE_BANDS_YEARS = (0, 2, 6, 10, 14, 19)


@dataclass
class LabelledSet:
    """The labelled images a model is evaluated on, preprocessed, with how they were chosen."""
    labels: Labels
    x: np.ndarray  # (N, C, H, W) float32
    selection: dict  # held_out()'s account: how many images from which part of the model's split
    unreadable: list[str]  # one-line messages for labelled images that could not be read (left out)


def held_out(labels: Labels, split: dict | None, part: str = "test") -> tuple[Labels, dict]:
    """The images of a labelled folder to evaluate a model on, given the model's split (None: unknown).
    part "test": the model's test images and every image its split does not name (a clinic's own images),
    never one it trained on or was selected on; "train"/"val": that part only; "all": every image.
    Returns the subset and an account of the choice (what the output says about it)."""
    where = {i: name for name in SPLIT_NAMES for i in (split or {}).get(name, [])}
    found = Counter(where.get(i, "none") for i in labels.ids)
    if split is None and part in ("train", "val"):
        raise ValueError(f"the model's split is unknown: --split {part} needs it (use --split test or all)")
    keep = {"all": lambda i: True, "test": lambda i: where.get(i) in ("test", None)}.get(
        part, lambda i: where.get(i) == part)
    subset = labels.subset([i for i in labels.ids if keep(i)])
    selection = {"part": part, "labelled": len(labels), "evaluated": len(subset), "split_known": split is not None,
                 "found": {name: found.get(name, 0) for name in (*SPLIT_NAMES, "none")}}
    if not len(subset):
        raise ValueError(f"{labels.image_dir}: none of its {len(labels)} labelled images is in the requested part "
                         f"({format_selection(selection)})")
    return subset, selection


def format_selection(sel: dict) -> str:
    """held_out()'s account in words."""
    f, n, total = sel["found"], sel["evaluated"], sel["labelled"]
    if not sel["split_known"]:
        return (f"{n} labelled images, all evaluated: the model's split is unknown, so any it was trained on "
                "would flatter these numbers")
    seen = f"{f['train']} training, {f['val']} validation"
    if sel["part"] == "all":
        return (f"all {n} labelled images evaluated: {f['test']} from the model's test split, {f['none']} not in "
                f"its split, and {seen} images it was trained or selected on (these flatter the numbers)")
    if sel["part"] != "test":
        return f"{n} of {total} labelled images evaluated: those in the model's {sel['part']} split"
    left = total - n
    return (f"{n} of {total} labelled images evaluated: {f['none']} not in the model's split (images it never "
            f"saw) and {f['test']} from its test split" + (f"; {left} left out ({seen}: it was trained or "
                                                           "selected on them; --split all includes them)"
                                                           if left else ""))


def read_split_file(path) -> dict | None:
    """A model's split (train/val/test id lists), None when it has none; a malformed one is a one-line error."""
    if not path or not Path(path).is_file():
        return None
    try:
        split = read_split(path)
    except (KeyError, TypeError, ValueError) as e:  # a missing part, not a JSON object, not JSON at all
        raise ValueError(f"{path}: not a split file (needs lists train, val and test): {type(e).__name__} {e}") from None
    return {name: [str(i) for i in ids] for name, ids in split.items()}


def load_labelled(bundle_dir, data, part: str = "test", show_progress: bool = False) -> LabelledSet:
    """A labelled folder's held-out images (held_out(), against the bundle's split.json), preprocessed for the
    bundle; an unreadable image is left out and named in `unreadable`, never the end of the run."""
    spec = load_bundle(bundle_dir).config.input
    labels, selection = held_out(read_labels(data), read_split_file(Path(bundle_dir) / "split.json"), part)
    return preprocess_labelled(labels, selection, spec, show_progress)


def preprocess_labelled(labels: Labels, selection: dict, spec, show_progress: bool = False) -> LabelledSet:
    """Labelled images -> network inputs for `spec` (an InputSpec); unreadable images left out and named."""
    x = np.empty((len(labels), spec.channels, spec.height, spec.width), np.float32)
    progress = Progress(len(labels), "preprocessing", enabled=show_progress)
    good, unreadable = [], []
    for k, path in enumerate(labels.paths()):
        try:
            x[len(good)] = preprocess(path, spec)
            good.append(labels.ids[k])
        except ImageError as e:
            unreadable.append(str(e))
        progress(k + 1)
    if not good:
        raise ValueError(f"{labels.image_dir}: none of the {len(labels)} labelled images could be read "
                         f"(first: {unreadable[0]})")
    selection = selection | {"unreadable": len(unreadable)}
    return LabelledSet(labels.subset(good), x[:len(good)], selection, unreadable)


def labelled_inputs(bundle_dir, data, split: str = "test", show_progress: bool = False):
    """The bundle's `split` of a labelled folder (held_out()) -> (Labels, preprocessed (N, C, H, W) inputs).
    Strict: an unreadable image is an error (for fitting, where a silently smaller set would mislead)."""
    found = load_labelled(bundle_dir, data, split, show_progress)
    if found.unreadable:
        raise ValueError(f"{len(found.unreadable)} labelled image(s) unreadable; first: {found.unreadable[0]}")
    return found.labels, found.x


def breakdown(ids, true, pred, male, worst: int = 10) -> dict:
    """Where the errors are: MAE and bias by age band and by sex, the Bland-Altman bias and 95% limits of
    agreement, and the `worst` largest errors (id, true, predicted, error, sex)."""
    true, pred, male = np.asarray(true, float), np.asarray(pred, float), np.asarray(male).astype(bool)
    err = pred - true

    def stats(sel) -> dict:
        return {"n": int(sel.sum()), "mae": float(np.abs(err[sel]).mean()), "bias": float(err[sel].mean())}
    bands = []
    for lo, hi in zip(AGE_BANDS_YEARS[:-1], AGE_BANDS_YEARS[1:]):
        last = hi == AGE_BANDS_YEARS[-1]
        sel = (true >= lo * 12) & ((true < hi * 12) | last)
        if sel.any():
            bands.append({"years": f"{lo}-{hi}" if not last else f"{lo}+"} | stats(sel))
    sd = float(err.std(ddof=1)) if len(err) > 1 else 0.0
    order = np.argsort(-np.abs(err), kind="stable")[:worst]
    return {"by_age": bands,
            "by_sex": {name: stats(sel) for name, sel in (("female", ~male), ("male", male)) if sel.any()},
            "agreement": {"bias": float(err.mean()), "loa": [float(err.mean() - 1.96 * sd),
                                                            float(err.mean() + 1.96 * sd)]},
            "largest_errors": [{"id": str(ids[k]), "true": float(true[k]), "predicted": float(pred[k]),
                                "error": float(err[k]), "sex": "M" if male[k] else "F"} for k in order]}


def format_breakdown(b: dict) -> str:
    a = b["agreement"]
    lines = [f"bias (predicted - true) {a['bias']:+.1f} months, 95% limits of agreement "
             f"{a['loa'][0]:+.1f} to {a['loa'][1]:+.1f}",
             f"{'age (years)':<14}{'n':>6}{'MAE mo':>9}{'bias mo':>9}"]
    lines += [f"{r['years']:<14}{r['n']:>6}{r['mae']:>9.2f}{r['bias']:>+9.2f}" for r in b["by_age"]]
    lines += [f"{name:<14}{r['n']:>6}{r['mae']:>9.2f}{r['bias']:>+9.2f}" for name, r in b["by_sex"].items()]
    lines += ["largest errors:", f"{'id':<24}{'sex':>4}{'true mo':>9}{'pred mo':>9}{'error':>8}"]
    lines += [f"{r['id'][:24]:<24}{r['sex']:>4}{r['true']:>9.1f}{r['predicted']:>9.1f}{r['error']:>+8.1f}"
              for r in b["largest_errors"]]
    return "\n".join(lines)


def primary(names) -> str | None:
    """Of 'backend/precision' names, the one BoneAgeModel.load() prefers on this machine (auto)."""
    order = [auto_precision()] + [p for p in ("fp32", "int8") if p != auto_precision()]
    ranked = [f"{b}/{p}" for p in order for b in AUTO_ORDER]
    return next((n for n in ranked if n in names), None)


def verify_labelled(bundle_dir, data, split: str = "test", backends=None, thresholds=Thresholds(),
                    n_boot: int = 500, show_progress: bool = False, worst: int = 10, plot=None) -> dict:
    """The paper's metrics (bootstrap CIs) per backend on the held-out images of a labelled folder, each one's
    retention against FP32, and for the backend edge-infer would use here: the errors by age band and sex, the
    largest errors, and (plot: a PNG path) the agreement and Bland-Altman plot."""
    found = load_labelled(bundle_dir, data, split, show_progress)
    labels, x = found.labels, found.x
    models = runnable(bundle_dir, backends)
    outputs = {name: predict_outputs(m, x) for name, m in models.items()}
    ref_name = next((n for n in outputs if n.endswith("/fp32")), None)
    main = primary(outputs)
    out = {"data": str(data), "split": split, "selection": found.selection, "unreadable": found.unreadable,
           "n": len(labels), "reference": ref_name, "primary": main, "backends": {}}
    # The sex-blind age, and where the model has it, the age given each image's true sex (the clinic's case).
    variants = {"backends": lambda o: (o["bone_age_months"], o["p_male"]),
                "sex_given": lambda o: (age_given_sex(o, labels.male), o["p_male"])}
    for key, pick in variants.items():
        preds = {name: pick(o) for name, o in outputs.items() if pick(o)[0] is not None}
        if not preds:
            continue
        out[key] = {}
        for name, (age, p) in preds.items():
            entry = {"metrics": metrics.evaluate(labels.age, age, labels.male, p, n_boot=n_boot)}
            if ref_name:
                entry["retention"] = retention(labels.age, labels.male, *preds[ref_name], age, p, thresholds)
            if key == "sex_given":
                entry["sex_warning_rate"] = sex_warning_rates(labels.male, p)
            if name == main:
                entry["breakdown"] = breakdown(labels.ids, labels.age, age, labels.male, worst)
                if plot:
                    entry["plot"] = str(_plot(plot, key, labels, age, entry["metrics"], main, bundle_dir))
            out[key][name] = entry
    entries = [e for key in variants for e in out.get(key, {}).values()]
    out["passed"] = bool(outputs) and all(e.get("retention", {}).get("passed", True) for e in entries)
    _check_clinical(out, bundle_dir, labels, outputs.get(main))
    return out


def _check_clinical(out: dict, bundle_dir, labels, outputs) -> None:
    """The bundle's prediction intervals and P(male) calibration on these images, for the backend edge-infer
    uses (edge.clinical.evaluate; its gate joins out["passed"])."""
    from edge.clinical.evaluate import check

    clinical = load_bundle(bundle_dir).meta.get("clinical")
    if clinical and outputs is not None:
        out["clinical"] = check(clinical, labels.age, labels.male, outputs)
        out["passed"] = out["passed"] and out["clinical"]["passed"]


def _plot(path, key: str, labels: Labels, age, m: dict, name: str, bundle_dir) -> Path:
    from edge.plots import agreement

    path = Path(path)
    if key == "sex_given":
        path = path.with_name(f"{path.stem}-sex-given{path.suffix}")
    title = (f"{load_bundle(bundle_dir).config.name}, {name}, {labels.image_dir.parent.name} (n={m['n']})"
             f"{', sex given' if key == 'sex_given' else ''}: MAE {m['mae']:.2f} mo, ICC {m['icc']:.3f}, "
             f"sex acc {m['accuracy']:.3f}")
    return agreement(labels.age, age, labels.male, title, path)


def self_test(bundle_dir, backends=None) -> dict:
    out = self_test_models(load_bundle(bundle_dir), runnable(bundle_dir, backends))
    if out is None:
        raise ValueError(f"{bundle_dir}: bundle stores no sample outputs; run edge-verify with --data")
    return out


def self_test_models(bundle, models: dict[str, BoneAgeModel]) -> dict | None:
    """Each loaded model on the bundle's samples against the stored FP32 outputs; None if none are stored."""
    ref = reference_samples(bundle)
    if ref is None:
        return None
    x, want = ref
    out = {"samples": len(x), "backends": {}}
    for name, model in models.items():
        out["backends"][name] = compare(predict_outputs(model, x), want, model.precision,
                                        tolerance(bundle.meta, model.backend_name, model.precision))  # as load() does
    out["passed"] = bool(out["backends"]) and all(r["passed"] for r in out["backends"].values())
    return out


def format_report(result: dict, split: str) -> str:
    """verify_labelled's result as text: which images, the metrics per backend, each one's retention, and the
    breakdown of the backend edge-infer uses here."""
    from edge.metrics import format_table
    from edge.retention import format_rows

    blocks = [f"{result.get('data', 'labelled data')}: {format_selection(result['selection'])}"
              if "selection" in result else f"{result['n']} images ({split} split)"]
    if result.get("unreadable"):
        blocks.append(f"{len(result['unreadable'])} unreadable, left out: " + "; ".join(result["unreadable"][:3])
                      + ("; ..." if len(result["unreadable"]) > 3 else ""))
    blocks.append(f"reference: {result['reference']}")
    for key, title in (("backends", None), ("sex_given", "Bone age given the patient's (true) sex")):
        entries = result.get(key)
        if not entries:
            continue
        blocks += ([f"\n{title}"] if title else []) + [
            format_table({k: v["metrics"] for k, v in entries.items()}), "",
            format_rows({k: v["retention"] for k, v in entries.items() if "retention" in v})]
        rates = {k: v["sex_warning_rate"] for k, v in entries.items() if "sex_warning_rate" in v}
        if rates:
            blocks += ["", "given-sex warning fires (P(male) against the given sex): "
                       + "; ".join(f"{k} {r['true_sex']:.1%} given the true sex, {r['wrong_sex']:.1%} given the other"
                                   for k, r in rates.items())]
        for name, v in entries.items():
            if "breakdown" in v:
                blocks += ["", f"{name} (what edge-infer uses here):", format_breakdown(v["breakdown"])]
            if "plot" in v:
                blocks.append(f"agreement plot: {v['plot']}")
    if "clinical" in result:
        from edge.clinical.evaluate import format_check
        blocks += ["", f"{result['primary']}: " + format_check(result["clinical"])]
    return "\n".join(blocks)
