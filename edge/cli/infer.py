"""edge-infer: bone age and sex for radiographs (PNG, JPEG, 16-bit PNG, DICOM): files, folders, globs.

Exit code 0 only when every input was processed; a bad input is reported and the batch goes on.
"""
from __future__ import annotations

import argparse
import sys

from edge.cli.clinical import add_clinical_args, in_context, with_patients
from edge.cli.common import Progress, add_model_args, arg_type, number_in, run_cli

# Inputs decoded ahead of the network: enough to keep the decode workers busy while the model compiles (about a
# second: 20-40 full-resolution radiographs on one core), small in memory (a 299 px input is 0.36 MB).
PREFETCH = 32


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="edge-infer", description=__doc__.splitlines()[0])
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    add_model_args(p)
    given = p.add_mutually_exclusive_group()
    given.add_argument("--sex", type=arg_type(_sex, "sex"), metavar="F|M",
                       help="the patient's sex, for every input: bone age is then read against that sex (bone age "
                            "standards are sex-specific); without it the network's sex-blind estimate is given")
    given.add_argument("--sexes", metavar="CSV",
                       help="each patient's sex, for a batch: a CSV with columns file and sex (F/M; empty: not "
                            "known), matched to each input by its path as given, else by its file name; inputs "
                            "it does not list get the sex-blind estimate")
    add_clinical_args(p, given)
    out = p.add_argument_group("output (rows are written as each result arrives: an interrupted run keeps them)")
    out.add_argument("--json", action="store_true",
                     help="print a JSON list on stdout instead of the table, one object per input (closed properly "
                          "on Ctrl-C or SIGTERM)")
    out.add_argument("--jsonl", metavar="FILE", help="write JSON Lines to FILE ('-' for stdout): one object per "
                                                     "line, each complete on its own; what --resume reads best")
    out.add_argument("--csv", metavar="FILE", help="write CSV to FILE ('-' for stdout); with --json or the table")
    out.add_argument("--parquet", metavar="FILE",
                     help="write Apache Parquet to FILE (typed columns, the CSV's; needs pyarrow), readable once the "
                          "run ends or is stopped with Ctrl-C/SIGTERM; --resume reads --csv/--jsonl, not this")
    out.add_argument("--resume", action="store_true",
                     help="continue an interrupted run: skip the inputs already in the --csv/--jsonl FILE and "
                          "append the rest (a missing FILE starts afresh)")
    p.add_argument("--batch-size", type=number_in(int, 1), default=1, metavar="N",
                   help="images per call to the runtime (default 1); larger compiles another model at start (OpenVINO) "
                        "and uses more memory, and paid only for small inputs on an idle CPU (docs/THROUGHPUT.md)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress line on stderr (it is shown only when the results do not go to the terminal)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="threads that decode and preprocess images while the network runs (default: one per core, "
                        "at most 4; 0: none, one image after another)")
    p.add_argument("--no-quality-check", action="store_true",
                   help="estimate every image as it is: skip the input check that refuses images it cannot read (not "
                        "a hand radiograph, inverted, too dark, too blurred...) and turns or crops others "
                        "(docs/QUALITY.md); results say 'unchecked'")
    ray = p.add_argument_group("Ray (pip install 'boneage-edge[cluster]'; docs/THROUGHPUT.md)")
    ray.add_argument("--ray", metavar="ADDRESS|local",
                     help="run on a Ray cluster through Ray Data, one loaded model per worker: 'local' starts one on "
                          "this machine (127.0.0.1), else a cluster address such as auto or HOST:6379; every worker "
                          "reads the inputs at the paths given and the bundle at the same path (or its own default)")
    ray.add_argument("--ray-workers", type=number_in(int, 1), default=1, metavar="N", help="Ray workers (default 1)")
    ray.add_argument("--ray-cpus", type=float, default=1.0, metavar="C",
                     help="CPUs Ray reserves for each worker, also its runtime's threads (default 1)")
    args = p.parse_args(argv)
    to_stdout = [flag for flag, on in (("--json", args.json), ("--csv -", args.csv == "-"),
                                       ("--jsonl -", args.jsonl == "-")) if on]
    if len(to_stdout) > 1:
        p.error(f"{' and '.join(to_stdout)} would both write to stdout: send one of them to a file")
    if args.parquet == "-":
        p.error("--parquet needs a file name: Parquet is binary and is not written to stdout")
    if args.resume and args.parquet:
        p.error("--resume cannot append to a Parquet file: resume from --csv FILE or --jsonl FILE and write "
                "--parquet to a new file")
    if args.resume and not any(f and f != "-" for f in (args.csv, args.jsonl)):
        p.error("--resume needs an output file to resume: --csv FILE or --jsonl FILE")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be at least 1 (got {args.threads}); leave it out to use all cores")
    if args.workers is not None and args.workers < 0:
        p.error(f"--workers must be 0 or more (got {args.workers})")
    if args.ray_cpus <= 0:
        p.error(f"--ray-cpus must be more than 0 (got {args.ray_cpus})")
    return args


def _sex(text: str) -> str:
    from edge.runtime import parse_sex

    return parse_sex(text)


def _main(argv=None) -> int:
    from edge.imaging import expand_inputs
    from edge.output import check_writable, model_info, table_header

    args = parse_args(argv)
    _stop_on_sigterm()
    if hasattr(sys.stdout, "reconfigure"):  # whatever the terminal's encoding, a file name never aborts the table
        sys.stdout.reconfigure(errors="backslashreplace")
    entries = expand_inputs(args.inputs)
    files = [path for path, why in entries if why is None]
    entries, files, sexes, patients = with_patients(entries, files, args)  # --sex/--sexes/--patients/--age, DICOM tags
    for path in (args.csv, args.jsonl, args.parquet):  # a bad output path is said now, not after the model loads
        if path:
            check_writable(path)
    bundle = _bundle(args)
    info = model_info(bundle)
    existing = _read_outputs(args, info)
    entries, files, sexes = _skip_done(entries, files, sexes, existing)
    model, prepared = _load_model(args, files, bundle)
    try:  # only now, with a model to fill them, are the output files started (an old one emptied)
        sinks = _open_sinks(args, info, existing)
    except BaseException:
        if prepared is not None:
            prepared.close()
        raise
    if args.no_quality_check:
        print("edge-infer: input quality check OFF (--no-quality-check): every image gets a bone age, even one that "
              "is not a usable hand radiograph; results are marked 'unchecked'", file=sys.stderr)
    table = not any(s.path == "-" for s in sinks)
    if table:
        print(table_header(info, model.backend_name, model.precision), flush=True)
    # Rows on the terminal are progress enough; the progress line is for output going elsewhere.
    show = not args.no_progress and not (table and sys.stdout.isatty())
    progress = Progress(len(files), "edge-infer: image files", enabled=show)
    done = failed = rejected = 0
    try:
        for result in in_context(_results(model, entries, files, sexes, args, progress, prepared), model,
                                 patients, args):
            _emit(result, info, sinks, table)
            done, failed = done + 1, failed + (getattr(result, "error", None) is not None)
            rejected += getattr(result, "status", "") == "rejected"
    except (KeyboardInterrupt, SystemExit):
        written = [s.path for s in sinks if s.path != "-"]
        print(f"\nedge-infer: stopped after {done} of {len(entries)} input(s)"
              + (f"; their rows are in {', '.join(written)} (rerun with --resume to finish)" if written else ""),
              file=sys.stderr)
        raise
    finally:
        for s in sinks:
            s.close()
    if failed and not args.json:
        print(f"{failed} of {done} input(s) failed"
              + (f" ({rejected} refused by the input check: see each one's reason)" if rejected else ""), file=sys.stderr)
    return 1 if failed or not entries and not args.resume else 0


def _bundle(args):
    from edge.bundle import load_bundle
    from edge.runtime import default_bundle_path

    return load_bundle(args.bundle if args.bundle is not None else default_bundle_path())


def _load_model(args, files: list[str], bundle):
    """(model, inputs already being prepared or None). The files start decoding before the model loads: OpenVINO's
    compile (about a second) and the first decodes then share the two cores instead of following each other."""
    if args.ray:  # the workers load the model; this process reads the bundle for the header and context only
        from edge.distributed import RayModel

        return RayModel(args.ray, args.bundle, backend=args.backend, precision=args.precision, threads=args.threads,
                        workers=args.ray_workers, cpus_per_worker=args.ray_cpus,
                        quality_check=not args.no_quality_check), None
    from edge.runtime import BoneAgeModel, InputPreparer

    prepared = InputPreparer.for_bundle(bundle, not args.no_quality_check).start(
        files, args.workers, ahead=max(PREFETCH, args.batch_size + (args.workers or 0))) if files else None
    try:
        return BoneAgeModel.load(bundle, backend=args.backend, precision=args.precision, threads=args.threads,
                                 quality_check=not args.no_quality_check, inputs=_network_passes(args, files)), prepared
    except BaseException:
        if prepared is not None:
            prepared.close()
        raise


def _network_passes(args, files: list[str]) -> int:
    """How many images the network will see: a heatmap (also in a report) runs it GRID^2 + 1 times an input."""
    if args.heatmap or args.report:
        from edge.clinical.heatmap import GRID

        return len(files) * (GRID * GRID + 1)
    return len(files)


def _wanted_outputs(args) -> list[tuple[str, str]]:
    wanted = [("json", "-")] if args.json else []
    return wanted + [(kind, path) for kind, path in (("csv", args.csv), ("jsonl", args.jsonl),
                                                     ("parquet", args.parquet)) if path]


def _read_outputs(args, info) -> dict:
    """With --resume: {path: (inputs it already holds, its CSV header)} for each output file, read before any
    image is; nothing is written to them yet."""
    from edge.output import read_existing

    if not args.resume:
        return {}
    return {path: read_existing(kind, path, info) for kind, path in _wanted_outputs(args) if path != "-"}


def _open_sinks(args, info, existing: dict) -> list:
    """The requested output streams, opened once the model has loaded (a run that cannot start leaves an
    existing file as it was)."""
    from edge.output import open_sink

    sinks = []
    try:
        for kind, path in _wanted_outputs(args):
            sinks.append(open_sink(kind, path, info, existing=existing.get(path, (set(), None))))
    except BaseException:
        for s in sinks:
            s.close()
        raise
    for s in sinks:
        if getattr(s, "missing", None):
            print(f"edge-infer: {s.path} has no column for {', '.join(s.missing)} (written by an older version): "
                  "the appended rows leave them out", file=sys.stderr)
    return sinks


def _skip_done(entries, files, sexes, existing: dict):
    """With --resume: leave out the inputs every output file already holds (by the file name as written)."""
    from edge.output import safe_text

    if not existing or not any(done for done, _ in existing.values()):
        return entries, files, sexes
    skip = {path for path, _ in entries if all(safe_text(path) in done for done, _ in existing.values())}
    per_file = isinstance(sexes, list)
    kept = [(f, x) for f, x in zip(files, sexes if per_file else [sexes] * len(files)) if f not in skip]
    print(f"edge-infer: resuming: {len(skip)} of {len(entries)} input(s) already in "
          f"{', '.join(existing)}, skipped", file=sys.stderr)
    return ([e for e in entries if e[0] not in skip], [f for f, _ in kept],
            [x for _, x in kept] if per_file else sexes)


def _results(model, entries, files, sexes, args, progress, prepared=None):
    """Each input's Prediction or Failure, in input order, as soon as it is done (so it is written at once)."""
    from edge.runtime import Failure

    extra = {"prepared": prepared} if prepared is not None else {}  # RayModel prepares on its workers
    found = (model.predict_iter(files, batch_size=args.batch_size, sex=sexes, workers=args.workers, **extra)
             if files else iter(()))
    n = 0
    for path, why in entries:
        if why is None:
            n += 1
            result = next(found)
            progress(n)
            yield result
        else:
            yield Failure(path, why)


def _emit(result, info, sinks, table: bool) -> None:
    from edge.output import record, table_rows

    rec = record(result, info)
    for s in sinks:
        s.write(rec)
    if table:
        print(table_rows(result), flush=True)


def _stop_on_sigterm() -> None:
    """SIGTERM (a service stop, `kill`) ends the run as Ctrl-C does: the output files are closed properly.
    Only the main thread can set a handler; called from another thread, SIGTERM keeps its default."""
    import signal
    import threading

    def stop(signum, frame):
        raise SystemExit(128 + signum)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)


def main(argv=None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
