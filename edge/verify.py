"""Accuracy checks of a bundle on this machine, for every backend and precision that runs here.

- with labelled data: the paper's metrics per backend, their change against the FP32 reference and the
  retention verdict (edge.retention), on the bundle's own test split;
- without data: the installation self-test, reproducing the FP32 outputs stored for the bundled samples.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edge import metrics
from edge.backends import BackendUnavailable
from edge.bundle import load_bundle
from edge.labels import read_labels, read_split
from edge.preprocess import preprocess
from edge.progress import Progress
from edge.reference import compare, reference_samples
from edge.retention import Thresholds, retention
from edge.runtime import BoneAgeModel, sex_disagrees

# Self-test tolerances against the stored FP32 outputs (months, probability). FP32 backends agree with
# torch to ~1e-3 months. INT8 moves single predictions more: on the default model's 2484 validation
# images the INT8-vs-FP32 difference had p95 5.8 and max 20.4 months (edge-quantize's gate), so the INT8
# self-test catches gross breakage (wrong preprocessing, a broken runtime), not quantization noise.
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


def labelled_inputs(bundle_dir, data, split: str = "test", show_progress: bool = False):
    """The bundle's `split` of a labelled folder -> (Labels, preprocessed (N, C, H, W) inputs)."""
    b = load_bundle(bundle_dir)
    labels = read_labels(data)
    split_path = Path(bundle_dir) / "split.json"
    if split != "all":
        if not split_path.exists():
            raise FileNotFoundError(f"{split_path}: bundle has no split file; use --split all")
        present = set(labels.ids)
        labels = labels.subset([i for i in read_split(split_path)[split] if i in present])
    spec = b.config.input
    x = np.empty((len(labels), spec.channels, spec.height, spec.width), np.float32)
    progress = Progress(len(labels), "preprocessing", enabled=show_progress)
    for k, path in enumerate(labels.paths()):
        x[k] = preprocess(path, spec)
        progress(k + 1)
    return labels, x


def verify_labelled(bundle_dir, data, split: str = "test", backends=None, thresholds=Thresholds(),
                    n_boot: int = 500, show_progress: bool = False) -> dict:
    labels, x = labelled_inputs(bundle_dir, data, split, show_progress)
    models = runnable(bundle_dir, backends)
    outputs = {name: predict_outputs(m, x) for name, m in models.items()}
    ref_name = next((n for n in outputs if n.endswith("/fp32")), None)
    out = {"split": split, "n": len(labels), "reference": ref_name, "backends": {}}
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
            out[key][name] = entry
    entries = [e for key in variants for e in out.get(key, {}).values()]
    out["passed"] = bool(outputs) and all(e.get("retention", {}).get("passed", True) for e in entries)
    return out


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
        out["backends"][name] = compare(predict_outputs(model, x), want, model.precision)
    out["passed"] = bool(out["backends"]) and all(r["passed"] for r in out["backends"].values())
    return out


def format_report(result: dict, split: str) -> str:
    """verify_labelled's result as text: the metrics per backend, then each one's retention."""
    from edge.metrics import format_table
    from edge.retention import format_rows

    blocks = [f"{result['n']} images ({split} split); reference: {result['reference']}"]
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
    return "\n".join(blocks)
