"""edge-infer's clinical-context options: --age, --patients, --interval-level, --heatmap, --report.

Kept apart from edge/cli/infer.py so the inference command stays one screen: infer.py calls
add_clinical_args, with_patients (before inference: the given sex decides which age head is read) and
in_context (after each result).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge.cli.common import arg_type, number_in


def add_clinical_args(p: argparse.ArgumentParser, given) -> None:
    """given: infer.py's mutually exclusive group of --sex/--sexes, which --patients joins."""
    given.add_argument("--patients", metavar="CSV",
                       help="each patient's details, for a batch: a CSV with column file and any of sex (F/M), age "
                            "(10y3m, 123m, 10.25y), birth_date and study_date (YYYY-MM-DD); matched by path as "
                            "given, else by file name. --sexes is the same with a sex column only")
    g = p.add_argument_group("clinical context (docs/CLINICAL.md)")
    g.add_argument("--age", metavar="AGE", type=arg_type(_age, "age"),
                   help="chronological age for every input (10y3m, 123m or 10.25y): gives the delay (bone age - age) "
                        "and the SDS against Greulich-Pyle's reference. A DICOM file's own PatientBirthDate + "
                        "StudyDate (or PatientAge) is used when no age is given; its PatientSex likewise")
    g.add_argument("--interval-level", metavar="P", type=number_in(float, 0.5, 0.99, "0.9"), default=0.9,
                   help="coverage of the prediction interval around each bone age (default 0.9)")
    g.add_argument("--heatmap", metavar="DIR",
                   help="write DIR/<name>.heatmap.png: what drove each estimate (occlusion, 145 network passes an "
                        "image)")
    g.add_argument("--report", metavar="DIR",
                   help="write DIR/<name>.report.html: one printable page per radiograph (image, heatmap, bone "
                        "age with interval, age, delay, SDS, chart)")


def _age(text: str) -> str:
    """Checked here so a bad --age is a usage error before any work; the text is parsed again per input."""
    from edge.clinical.patient import parse_age

    parse_age(text)
    return text


def with_patients(entries, files: list[str], args):
    """Each image file's Patient (--age/--sex over the CSV row over the DICOM's own tags). A file whose
    information is unusable becomes a failed input, the others go on. Returns (entries, files, sexes,
    {file: Patient})."""
    from edge.clinical.patient import PatientError, patients_for

    csv_path = getattr(args, "patients", None) or getattr(args, "sexes", None)
    if csv_path and not Path(csv_path).is_file():
        raise ValueError(f"{csv_path}: " + ("is a folder, not a CSV file" if Path(csv_path).is_dir() else "no such file"))
    patients = patients_for(files, args.age, args.sex or "", csv_path)
    bad = {f: str(p) for f, p in zip(files, patients) if isinstance(p, PatientError)}
    entries = [(path, bad.get(path) if why is None else why) for path, why in entries]
    kept = {f: p for f, p in zip(files, patients) if f not in bad}
    if csv_path and any(not p.sex for p in kept.values()):
        print(f"edge-infer: {sum(not p.sex for p in kept.values())} of {len(files)} image file(s) have no sex in "
              f"{csv_path} or their DICOM tags: sex-blind estimates for them", file=sys.stderr)
    files = [f for f in files if f not in bad]
    return entries, files, [kept[f].sex for f in files], kept


def in_context(results, model, patients: dict, args):
    """Each result with its clinical fields (edge.clinical.context), its heatmap and report written when
    asked; a heatmap or report that cannot be written is a warning on that result, never the batch's end."""
    from dataclasses import replace

    from edge.clinical.context import annotate, fitted
    from edge.runtime import Prediction

    clinical = fitted(model.bundle)
    used: set[str] = set()
    for r in results:
        if isinstance(r, Prediction):
            r = annotate(r, patients.get(r.file), clinical, args.interval_level)
            if args.heatmap or args.report:
                try:
                    write_pictures(r, model, args.heatmap, args.report, _unique_name(r.file, used))
                except Exception as e:  # noqa: BLE001  (the estimate stands; the picture is extra)
                    r = replace(r, warning="; ".join(filter(None, [r.warning, f"no heatmap/report: {e}"])))
        yield r


def _unique_name(path: str, used: set[str]) -> str:
    """The file's stem, or with a short hash of its path when another input of this run had that stem
    (scans/a/hand.png and scans/b/hand.png must not overwrite each other's report)."""
    import hashlib

    name = Path(path).stem
    if name in used:
        name = f"{name}-{hashlib.sha1(str(path).encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"
    used.add(name)
    return name


def write_pictures(pred, model, heatmap_dir, report_dir, name: str) -> None:
    from edge.clinical import heatmap, report

    image, picture = heatmap.explain(model, pred.file, pred.given_sex)
    if heatmap_dir:
        Path(heatmap_dir).mkdir(parents=True, exist_ok=True)
        picture.save(Path(heatmap_dir) / f"{name}.heatmap.png", optimize=True)
    if report_dir:
        report.write_report(pred, model.bundle, report_dir, image, picture, name)
