"""edge-infer: bone age and sex for radiographs (PNG, JPEG, 16-bit PNG, DICOM): files, folders, globs.

Exit code 0 only when every input was processed; a bad input is reported and the batch goes on.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys

from edge.cli.common import Progress, add_model_args, run_cli

FIELDS = ("file", "bone_age_months", "p_male", "sex", "given_sex", "backend", "precision", "ms", "warning")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="edge-infer", description=__doc__.splitlines()[0])
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    add_model_args(p)
    given = p.add_mutually_exclusive_group()
    given.add_argument("--sex", type=_sex, metavar="F|M",
                       help="the patient's sex, for every input: bone age is then read against that sex (bone age "
                            "standards are sex-specific); without it the network's sex-blind estimate is given")
    given.add_argument("--sexes", metavar="CSV",
                       help="each patient's sex, for a batch: a CSV with columns file and sex (F/M; empty: not "
                            "known), matched to each input by its path as given, else by its file name; inputs "
                            "it does not list get the sex-blind estimate")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print a JSON list, one object per input")
    out.add_argument("--csv", metavar="FILE", help="also write the results as CSV to FILE ('-' for stdout)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def _sex(text: str) -> str:
    from edge.runtime import parse_sex

    try:
        return parse_sex(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _main(argv=None) -> int:
    from edge.imaging import expand_inputs
    from edge.runtime import BoneAgeModel, Failure

    args = parse_args(argv)
    entries = expand_inputs(args.inputs)
    files = [path for path, why in entries if why is None]
    sexes = args.sex
    if args.sexes:
        entries, files, sexes = _with_listed_sexes(entries, files, args.sexes)
    model = BoneAgeModel.load(args.bundle, backend=args.backend, precision=args.precision, threads=args.threads)
    # Counts image files read; an input that names no file is reported in the table, not here.
    progress = Progress(len(files), "edge-infer: image files", enabled=not args.no_progress and not args.json)
    predictions = iter(model.predict_many(files, batch_size=args.batch_size, progress=progress, sex=sexes)
                       if files else [])
    results = [next(predictions) if why is None else Failure(path, why) for path, why in entries]
    rows = [r.to_dict() for r in results]
    if args.json:
        print(json.dumps(rows, indent=1))
    elif args.csv == "-":
        _write_csv(rows, sys.stdout)
    else:
        print(format_table(rows))
        if args.csv:
            with open(args.csv, "w", newline="") as f:
                _write_csv(rows, f)
    failed = [r for r in results if isinstance(r, Failure)]
    if failed and not args.json:
        print(f"{len(failed)} of {len(results)} input(s) failed", file=sys.stderr)
    return 1 if failed or not results else 0


def _with_listed_sexes(entries, files: list[str], csv_path):
    """Look each file up in the sexes CSV. A file whose row is unusable becomes a failed input (the others
    go on): a wrong or guessed sex must not be used silently."""
    looked_up = sexes_for(files, read_sexes(csv_path))
    bad = {f: str(v) for f, v in zip(files, looked_up) if isinstance(v, ValueError)}
    entries = [(path, bad.get(path) if why is None else why) for path, why in entries]
    kept = [(f, v) for f, v in zip(files, looked_up) if f not in bad]
    if any(not v for _, v in kept):
        print(f"edge-infer: {sum(not v for _, v in kept)} of {len(files)} image file(s) have no sex in {csv_path}: "
              "sex-blind estimates for them", file=sys.stderr)
    return entries, [f for f, _ in kept], [v for _, v in kept]


def read_sexes(path) -> dict[str, str | ValueError]:
    """CSV with columns file and sex -> {file as written: "female"/"male"/"" (not known), or the ValueError
    of an unusable row, naming the CSV line}. Only a CSV without those columns is an error for the batch."""
    from edge.runtime import parse_sex

    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = {c.strip().lower(): c for c in reader.fieldnames or []}
        if "file" not in columns or "sex" not in columns:
            raise ValueError(f"{path}: needs a header with columns file and sex; found {reader.fieldnames}")
        table = {}
        for row in reader:
            name = (row[columns["file"]] or "").strip()
            try:
                sex = parse_sex(row[columns["sex"]])
            except ValueError as e:
                sex = ValueError(f"{path}, line {reader.line_num}: {e}")
            if name in table and str(table[name]) != str(sex):
                sex = ValueError(f"{path}, line {reader.line_num}: {name} is listed twice with different sexes")
            table[name] = sex
    return table


def sexes_for(files: list[str], table: dict) -> list:
    """Each file's entry in read_sexes' table: by the path as given, else by file name; "" when not listed.
    A file name that two inputs share, listed by name alone, is ambiguous: a ValueError for both."""
    from pathlib import Path

    names = [Path(f).name for f in files]
    out = []
    for f, name in zip(files, names):
        if f in table:
            out.append(table[f])
        elif name in table:
            ambiguous = names.count(name) > 1
            out.append(ValueError(f"{name}: more than one input has this file name; give its path in the sexes "
                                  "CSV") if ambiguous else table[name])
        else:
            out.append("")
    return out


def format_table(rows: list[dict]) -> str:
    lines = [f"{'file':<40} {'bone age':>18} {'given':>6} {'sex':>7} {'P(male)':>8} {'backend':>16} {'ms':>7}"]
    for r in rows:
        if "error" in r:
            lines.append(f"{_short(r['file']):<40} FAILED: {r['error']}")
            continue
        months = r["bone_age_months"]
        age = f"{months:6.1f} mo ({int(months // 12)}y {months % 12:4.1f}m)"
        lines.append(f"{_short(r['file']):<40} {age:>18} {r['given_sex'] or '-':>6} {r['sex']:>7} "
                     f"{r['p_male']:>8.3f} {r['backend'] + ' ' + r['precision']:>16} {r['ms']:>7.1f}")
        if r["warning"]:
            lines.append(f"{'':<40} WARNING: {r['warning']}")
    return "\n".join(lines)


def _write_csv(rows: list[dict], f) -> None:
    w = csv.DictWriter(f, fieldnames=[*FIELDS, "error"], extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)


def _short(path: str, width: int = 40) -> str:
    return path if len(path) <= width else "..." + path[-(width - 3):]


def main(argv=None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
