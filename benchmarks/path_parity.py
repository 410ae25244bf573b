"""Path-to-path differences: one radiograph through every way in, the same answer (issue 33, docs/ARCHITECTURE.md
"One answer per radiograph"). Not a test: it measures, on the RSNA test split, and writes a table.

  nice -n 10 python benchmarks/path_parity.py                     # the whole test split (1,240 ids)
  nice -n 10 python benchmarks/path_parity.py --limit 200 --out /tmp/parity.md
  nice -n 10 python benchmarks/path_parity.py --folder registered-512 --out benchmarks/results/path-parity-registered-512.md

Each test image (train-299 JPEG, decoded to its 8-bit pixels) is written, outside the repository, as a PNG, a 16-bit
PNG holding them x 257, an 8-bit DX DICOM of the same pixels (window 128/256, rescale 1/0, as a PACS sends it), a
16-bit DICOM holding them x 257 and a 12-bit one holding them x 16 + 8 under a window as wide as its range. With the
patient's true sex given:
- the reference: the API (BoneAgeModel.load(), what a folder, edge-serve and the DICOM node load) on the PNGs;
- the 16-bit PNG and each DICOM through the same model;
- the PNG alone: the model edge-infer loads for one image (inputs=1), one call per image;
- edge-infer on the folder of PNGs (--json, a subprocess) against the API: the CLI's record;
- for scale, what the rule replaced: ONNX Runtime FP32 (the old one-image choice) against the reference.
Compared: bone age (months), the sex call, the warning and the input check's status and corrections.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
from dicom_fixtures import radiograph_dataset, write  # noqa: E402

from edge.labels import read_labels  # noqa: E402
from edge.runtime import BoneAgeModel, Prediction  # noqa: E402

SPLIT = REPO / "models/splits/rsna-train-100px-seed0.json"
FIELDS = ("sex", "warning", "status", "corrections")


def write_inputs(ids, images: dict, sexes: dict, out: Path) -> dict[str, list[Path]]:
    """Each id as PNG, as a 16-bit PNG (x 257) and as three DICOMs of the same pixels (8-bit DX, 16-bit, 12-bit
    windowed)."""
    paths = {k: [] for k in ("png", "png16", "dicom8", "dicom16", "dicom12w")}
    for name in paths:
        (out / name).mkdir(parents=True, exist_ok=True)
    for i in ids:
        png = out / "png" / f"{i}.png"
        pixels = np.asarray(Image.open(images[i]).convert("L"))
        Image.fromarray(pixels).save(png)
        sex = "M" if sexes[i] else "F"
        paths["png"].append(png)
        paths["png16"].append(out / "png16" / f"{i}.png")
        Image.fromarray(pixels.astype(np.uint16) * 257).save(paths["png16"][-1])
        paths["dicom8"].append(write(radiograph_dataset(png, "DX", sex=sex), out / "dicom8" / f"{i}.dcm"))
        wide = pixels.astype(np.uint16)
        for name, stored, bits, window in (("dicom16", wide * 257, 16, None),
                                           ("dicom12w", wide * 16 + 8, 12, (2048, 4096))):
            ds = radiograph_dataset(png, "OT", sex=sex)
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelData = 16, bits, bits - 1, stored.tobytes()
            if window:
                ds.WindowCenter, ds.WindowWidth = window
            paths[name].append(write(ds, out / name / f"{i}.dcm"))
    return paths


def answers(results) -> list[dict | None]:
    return [{"months": r.bone_age_months, **{f: getattr(r, f) for f in FIELDS}} if isinstance(r, Prediction)
            else None for r in results]


def cli_answers(folder: Path, sexes: list[str]) -> list[dict | None]:
    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
        f.write("file,sex\n" + "".join(f"{p.name},{s}\n" for p, s in zip(sorted(folder.iterdir()), sexes)))
    out = subprocess.run([sys.executable, "-m", "edge.cli.infer", str(folder), "--patients", f.name, "--json",
                          "--no-progress"], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    os.unlink(f.name)
    rows = {Path(r["file"]).name: r for r in json.loads(out.stdout)}
    return [{"months": r["bone_age_months"], **{f: r[f] for f in FIELDS}} if r.get("bone_age_months") is not None
            else None for r in (rows[p.name] for p in sorted(folder.iterdir()))]


def compare(name: str, ref: list, got: list, rounded: bool = False) -> dict:
    both = [(a, b) for a, b in zip(ref, got) if a and b]
    d = np.array([abs(a["months"] - b["months"]) for a, b in both]) if both else np.zeros(1)
    return {"pair": name, "n": len(both), "answered differently": sum((a is None) != (b is None) for a, b in zip(ref, got)),
            "max abs diff (months)": float(d.max()), "mean abs diff (months)": float(d.mean()),
            "over 0.1": int((d > 0.1 + (0.05 if rounded else 0)).sum()),
            **{f"{f} differs": sum(a[f] != b[f] for a, b in both) for f in FIELDS}}


def table(rows: list[dict]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
    for r in rows:
        lines.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values()) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.environ.get("BONEAGE_DATA", str(REPO.parent / "shared/data/rsna-boneage")))
    p.add_argument("--limit", type=int, default=0, help="the first N test ids only (0: all)")
    p.add_argument("--folder", help="every labelled image of this folder of the data (e.g. registered-512, fullres) "
                                    "instead of train-299's test split")
    p.add_argument("--out", default=str(REPO / "benchmarks/results/path-parity.md"))
    args = p.parse_args(argv)
    root = Path(args.data) / (args.folder or "train-299")
    read = read_labels(root)
    labels = {i: bool(m) for i, m in zip(read.ids, read.male)}
    images = dict(zip(read.ids, read.paths()))
    ids = read.ids if args.folder else [i for i in json.loads(SPLIT.read_text())["test"] if i in labels]
    ids = ids[:args.limit] if args.limit else ids
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="path-parity-") as tmp:
        paths = write_inputs(ids, images, labels, Path(tmp))
        sexes = ["M" if labels[i] else "F" for i in ids]
        folder = BoneAgeModel.load()
        one = BoneAgeModel.load(inputs=1)
        ort = BoneAgeModel.load(backend="onnxruntime", precision="fp32")
        ref = answers(folder.predict_many(paths["png"], sex=sexes))
        rows = [compare(f"PNG vs {k}, API", ref, answers(folder.predict_many(paths[k], sex=sexes)))
                for k in ("png16", "dicom8", "dicom16", "dicom12w")]
        alone = [one.predict_many([f], sex=s, workers=0)[0] for f, s in zip(paths["png"], sexes)]
        rows.append(compare(f"PNG alone ({one.backend_name} {one.precision}) vs folder", ref, answers(alone)))
        order = np.argsort([p.name for p in paths["png"]])  # edge-infer lists a folder sorted by name
        cli = cli_answers(Path(tmp) / "png", [sexes[k] for k in order])
        rows.append(compare("edge-infer folder vs API", [ref[k] for k in order], cli, rounded=True))
        rows.append(compare("before: ONNX Runtime FP32 (old one-image) vs folder", ref,
                            answers(ort.predict_many(paths["png"], sex=sexes))))
    head = (f"# Path-to-path differences ({time.strftime('%Y-%m-%d')}, benchmarks/path_parity.py)\n\n"
            f"{len(ids)} {args.folder + ' images' if args.folder else 'test-split images (train-299)'} (8-bit), "
            "the patient's true sex given; reference: "
            f"BoneAgeModel.load() ({folder.backend_name} {folder.precision}) on the PNGs. CPU: "
            f"{'INT8 dot products' if folder.precision == 'int8' else 'FP32'}; {time.time() - t0:.0f} s.\n"
            "edge-infer writes one decimal: its row allows 0.05 months of rounding in 'over 0.1'.\n\n")
    text = head + table(rows) + "\n"
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
