"""edge-export: write a model bundle (bundle.json, ONNX FP32/INT8, OpenVINO INT8 IR, model card).

    edge-export --checkpoint runs/x/best.pt --compressed runs/x-int8/compressed.pt --out bundles/x \
                --data ../shared/data/rsna-boneage/train-100px --samples a.png b.png
Without --compressed, INT8 comes from post-training quantization of the checkpoint, calibrated on
--calibration-data (default: the checkpoint's training images).
"""
from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import edge
from edge.bundle import OUTPUTS, artifact_entry, write_bundle_json
from edge.formats import FORMATS
from edge.reference import INT8_MARGIN_MONTHS, derive_int8_tolerances
from export.model_card import write_model_card
from export.artifacts import write_model_files


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="edge-export", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="FP32 checkpoint (best.pt from edge-train)")
    p.add_argument("--compressed", help="INT8 model from edge-quantize (compressed.pt)")
    p.add_argument("--compressed-openvino", metavar="COMPRESSED",
                   help="the OpenVINO INT8 model (edge-quantize --activations unsigned); default: --compressed")
    p.add_argument("--out", required=True, help="bundle directory to write")
    p.add_argument("--data", help="labelled data: test-split reference metrics go into bundle.json")
    p.add_argument("--calibration-data", help="images for PTQ when --compressed is not given")
    p.add_argument("--calibration-size", type=int, default=300)
    p.add_argument("--no-int8", action="store_true", help="FP32 artifacts only")
    p.add_argument("--samples", nargs="*", default=[], help="sample radiographs to ship with their FP32 outputs")
    p.add_argument("--version", default="0.1.0", help="model version written into the bundle")
    p.add_argument("--split-file", help="the training split (split.json); default: the one the checkpoint records, "
                                        "found as written, else under the checkpoint's folders")
    return p.parse_args(argv)


def main(argv=None) -> int:
    from models.checkpoint import load_model

    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"[1/5] loading {args.checkpoint}")
    fp32, ckpt = load_model(args.checkpoint)
    ckpt["split"] = resolve_split(args.checkpoint, args.split_file or ckpt.get("split"))
    cfg = fp32.cfg
    meta = base_metadata(cfg, ckpt, args)
    embedded = {k: meta[k] for k in ("model", "config", "outputs")}

    print("[2/5] INT8 models")
    int8, int8_info = (None, {}) if args.no_int8 else int8_model(args, fp32, ckpt, signed=True)
    ov_int8, ov_info = int8, None
    if int8 is not None and args.compressed and not args.compressed_openvino:
        print("      warning: no --compressed-openvino: OpenVINO gets the signed INT8 model, which it ran wrongly on "
              "the CPUs measured (the load-time self-test refuses it there)")
    elif int8 is not None:
        ov_int8, ov_info = int8_model(args, fp32, ckpt, signed=False)

    print("[3/5] ONNX files, and OpenVINO's own INT8 IR")
    artifacts = []
    for precision, net, ov_net in (("fp32", fp32, fp32), ("int8", int8, ov_int8)):
        if net is None:
            continue
        artifacts += write_precision(out, cfg, precision, net, ov_net, embedded)
    meta["artifacts"] = artifacts
    meta.update(int8_info)
    if ov_info is not None:
        meta["openvino_int8"] = ov_info
    # How far each INT8 backend may be from the stored FP32 sample outputs at load: the gate's p95 |d| + a margin.
    meta["self_test"] = {"int8_max_abs_months": derive_int8_tolerances(meta),
                         "rule": f"retention agreement p95_abs_months + {INT8_MARGIN_MONTHS} (edge.reference)"}

    if ckpt["split"]:
        shutil.copyfile(ckpt["split"], out / "split.json")  # edge-verify evaluates on the same test ids

    print("[4/5] reference outputs")
    meta["samples"] = ship_samples(fp32, args.samples, out)
    if args.data:
        meta["reference_metrics"] = test_metrics(fp32, args.data, ckpt)

    print("[5/5] bundle.json and model card")
    write_bundle_json(out, meta)
    write_model_card(out, meta)
    print(f"bundle written to {out}: " + ", ".join(a["path"] for a in artifacts if a["role"] == "model"))
    return 0


def resolve_split(checkpoint, split) -> str | None:
    """The split file a checkpoint records, as an existing path; None when it records none. edge-train writes
    the path as given on its command line (often relative to where it ran), so a relative path is also looked
    for under each folder above the checkpoint. One that is nowhere stops the export: a bundle without its
    split.json cannot be verified on its own test ids."""
    if not split:
        return None
    split = Path(split)
    folders = [Path.cwd()] + ([] if split.is_absolute() else list(Path(checkpoint).resolve().parents))
    found = next((f / split for f in folders if (f / split).is_file()), None)
    if found is None:
        raise SystemExit(f"edge-export: {checkpoint}: its split file {str(split)!r} is not found (here or under the "
                         "checkpoint's folders); pass it with --split-file")
    return str(found)


def base_metadata(cfg, ckpt: dict, args) -> dict:
    split_file = ckpt.get("split")
    counts = json.loads(Path(split_file).read_text()).get("counts") if split_file else None
    return {
        "model": {"name": cfg.name, "version": args.version, "edge_version": edge.__version__,
                  "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "git_sha": _git_sha()},
        "config": cfg.to_dict(),
        "outputs": OUTPUTS,
        "training": {"data": ckpt.get("data"), "split_file": split_file, "counts": counts,
                     "epoch": ckpt.get("epoch"), "val_metrics": ckpt.get("val_metrics"),
                     **({"members": ckpt["members"]} if ckpt.get("members") else {})},
    }


def write_precision(out: Path, cfg, precision: str, net, ov_net, embedded: dict) -> list[dict]:
    """One precision's files: ONNX from `net` (ONNX Runtime, TensorRT, and OpenVINO when `ov_net` is `net`) and,
    when OpenVINO has a network of its own (INT8: the unsigned-activation twin), its IR, converted through a
    temporary ONNX file. OpenVINO reads the ONNX itself otherwise (edge.formats), so the weights ship once."""
    onnx_rel = FORMATS["onnxruntime"].paths(precision)[0]
    write_model_files(net, cfg, out / onnx_rel, None, precision, embedded)
    entries = [artifact_entry(out, onnx_rel, "onnxruntime", precision)]
    if ov_net is not net:
        xml_rel = FORMATS["openvino"].paths(precision)[0]
        with tempfile.TemporaryDirectory() as tmp:
            write_model_files(ov_net, cfg, Path(tmp) / "openvino.onnx", out / xml_rel, precision, embedded)
        entries += [artifact_entry(out, xml_rel, "openvino", precision),
                    artifact_entry(out, str(Path(xml_rel).with_suffix(".bin")), "openvino", precision, "weights")]
    return entries


def int8_model(args, fp32, ckpt, signed: bool):
    """The INT8 network for ONNX (signed activations) or for OpenVINO (signed=False): edge-quantize's output
    when given, else PTQ here. OpenVINO runs signed INT8 wrongly on the CPUs measured (quantize.ptq)."""
    compressed = args.compressed if signed else args.compressed_openvino
    if compressed:
        from quantize.compressed import load_compressed
        net, _cfg, info = load_compressed(compressed)
        _check_activations(compressed, info.get("methods") or [], signed)
        info = {"calibration": info.get("calibration"), "retention": info.get("retention"),
                "compression": info.get("methods")}
    else:
        from quantize.ptq import quantize_ptq
        data = args.calibration_data or ckpt.get("data")
        if not data:
            raise SystemExit("edge-export: INT8 needs --compressed or --calibration-data")
        x, calib = _calibration(data, fp32.cfg.input, args.calibration_size, ckpt.get("split"))
        net, info = quantize_ptq(fp32, x, signed=signed), {"calibration": calib}
    return net, info | ({} if signed else {"activations": "unsigned"})


@functools.lru_cache(maxsize=1)
def _calibration(data, spec, size: int, split):
    """Calibration images, read once for both INT8 models (signed and unsigned: the same images)."""
    from quantize.ptq import calibration_arrays
    return calibration_arrays(data, spec, size, split)


def _check_activations(path, methods: list[dict], signed: bool) -> None:
    """Refuse an INT8 model whose activations are not what its file needs (TensorRT rejects unsigned ones).
    edge-quantize records `signed_activations`; models made before it existed are signed."""
    int8 = [m for m in methods if str(m.get("method", "")).startswith("int8")]
    if any(m.get("signed_activations", True) != signed for m in int8):
        want = "signed (--compressed)" if signed else "unsigned (--compressed-openvino)"
        raise SystemExit(f"edge-export: {path}: its activations are not {want}; see edge-quantize --activations")


def ship_samples(fp32, samples, out: Path) -> list[dict]:
    """Copy sample radiographs into the bundle with the FP32 model's outputs for them (the self-test)."""
    from edge.preprocess import preprocess
    from models.train import predict_outputs

    entries = []
    (out / "samples").mkdir(exist_ok=True)
    notes = {Path(s).parent / "README.md" for s in samples}
    for note in notes:
        if note.exists():
            shutil.copyfile(note, out / "samples" / "README.md")  # the samples' source and terms
    for src in samples:
        rel = f"samples/{Path(src).name}"
        shutil.copyfile(src, out / rel)
        outputs = predict_outputs(fp32, preprocess(out / rel, fp32.cfg.input)[None])
        entries.append({"file": rel, **{name: value[0].tolist() for name, value in outputs.items()}})
    return entries


def test_metrics(fp32, data, ckpt) -> dict:
    from edge.metrics import evaluate
    from models.data import load_images, load_split_labels
    from models.train import predict_arrays

    labels = load_split_labels(data, ckpt["split"], "test")
    age, p = predict_arrays(fp32, load_images(labels.paths(), fp32.cfg.input, progress=False))
    return {"split": "test", **evaluate(labels.age, age, labels.male, p)}


def _git_sha() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


if __name__ == "__main__":
    sys.exit(main())
