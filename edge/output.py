"""Every rendering of results, one place: the 80-column table, JSON, JSON Lines, CSV and Parquet.

A result is an `edge.runtime.Prediction` or `Failure`; a record is its dataclass fields (so a field added there
reaches JSON and CSV with no edit here), values rounded by what they measure, file names made writable, and the
model's name and version. The file writers (sinks) write and flush each row as it arrives, so an interrupted
batch keeps every finished row, and can read back what an earlier run wrote (`--resume`).
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import sys
import textwrap
import time
from pathlib import Path

from edge.imaging import printable

WIDTH = 80  # the table fits an 80-column terminal
MODEL_FIELDS = ("model", "model_version")


# ---- records ------------------------------------------------------------------------------------------------

def model_info(bundle) -> dict:
    """The model's name and version as bundle.json states them (every row carries them)."""
    meta = bundle.meta.get("model") or {}
    return {"model": str(meta.get("name") or bundle.config.name), "model_version": str(meta.get("version") or "")}


def safe_text(text) -> str:
    """Text that can be written as UTF-8 whatever it came from: a file name that is not valid UTF-8 (Python
    keeps its bytes as lone surrogates) gets its undecodable bytes as backslash escapes (b'\\xff' -> '\\xff')."""
    text = str(text)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that is not an escaped byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def _digits(key: str) -> int | None:
    """Decimals a float field is rounded to, by what its name says it measures."""
    key = key.lower()
    if key == "p_male" or key.startswith(("p_", "prob")) or key.endswith(("_p", "probability", "_level")):
        return 3  # (interval_level: a coverage such as 0.95, not months)
    if "month" in key or "age" in key or "interval" in key:
        return 1
    if key == "ms" or key.endswith("_ms") or "sds" in key or key.endswith("_z"):
        return 2
    return 3


def rounded(key: str, value):
    """A value ready for JSON/CSV: floats rounded by field name (nested values by their own key, else the
    parent's), NaN/inf as None, text made writable (safe_text)."""
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float) or type(value).__module__ == "numpy":
        value = float(value) if not hasattr(value, "tolist") else value.tolist()
        if isinstance(value, float):
            return round(value, _digits(key)) if math.isfinite(value) else None
        return rounded(key, value)
    if isinstance(value, dict):
        return {safe_text(k): rounded(str(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(key, v) for v in value]
    if dataclasses.is_dataclass(value):
        return rounded(key, dataclasses.asdict(value))
    return safe_text(value)


def record(result, info: dict) -> dict:
    """A Prediction or Failure -> its JSON object: its own fields, rounded, then model and model_version."""
    fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
    return {k: rounded(k, v) for k, v in fields.items()} | info


def columns() -> list[str]:
    """CSV columns: file, every Prediction field, the fields only Failure has, then model and model_version."""
    from edge.runtime import Failure, Prediction

    names = [f.name for f in dataclasses.fields(Prediction)]
    names += [f.name for f in dataclasses.fields(Failure) if f.name not in names]
    return names + list(MODEL_FIELDS)


def column_types() -> dict[str, str]:
    """Each CSV column's type for a typed format (Parquet): "float", "bool" or "str", from the dataclasses'
    annotations (so a field added to Prediction is typed with no edit here)."""
    from edge.runtime import Failure, Prediction

    types = {f.name: str(f.type) for cls in (Prediction, Failure) for f in dataclasses.fields(cls)}
    kind = lambda t: "float" if "float" in t else "bool" if t == "bool" else "str"  # noqa: E731
    return {c: kind(types.get(c, "str")) for c in columns()}


def csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


# ---- the table ----------------------------------------------------------------------------------------------

def years_months(months: float) -> str:
    """164.8 -> '13y 9m' (rounded to the month)."""
    total = int(round(months))
    return f"{total // 12}y {total % 12}m"


def shorten(text: str, width: int) -> str:
    """Shortened in the middle, keeping the start of the path and the file name: 'scans/.../hand-01.png'."""
    if len(text) <= width:
        return text
    tail = (width - 3) * 2 // 3
    return text[:width - 3 - tail] + "..." + text[-tail:]


def _line(text) -> str:
    """One line for the terminal: undecodable bytes escaped (safe_text), control characters (newlines, escape
    sequences from a file) made harmless (edge.imaging.printable; the table shortens, not it)."""
    return printable(safe_text(text), limit=10_000)


_SEX = {"female": "F", "male": "M", "": "-"}
# (header, width, cell) after the file column; the file column takes what is left of WIDTH.
def _number(fmt: str, fn=None):
    """A cell showing a numeric field with `fmt` (or fn(value)), '-' where the field is missing or None."""
    def cell(value) -> str:
        if value is None:
            return "-"
        return fn(value) if fn else format(value, fmt)
    return cell


_COLUMNS = [  # (header, width, field, cell text from the field's value)
    ("age mo", 6, "bone_age_months", _number(".1f")),
    ("y m", 7, "bone_age_months", _number("", years_months)),
    ("given", 5, "given_sex", lambda v: _SEX.get(v or "", v)),
    ("sex", 3, "sex", lambda v: _SEX.get(v or "", v)),
    ("P(male)", 7, "p_male", _number(".3f")),
    ("ms/img", 6, "ms", _number(".1f")),
    ("status", 8, "status", lambda v: str(v or "ok")[:8]),
]
_FILE_WIDTH = WIDTH - sum(w + 1 for _, w, _, _ in _COLUMNS)


def table_header(info: dict, backend: str, precision: str) -> str:
    """The model and backend (the same for every row), what ms/img is, then the column names."""
    model = f"{info['model']} {info['model_version']}, {backend} {precision}"
    note = "ms/img: model time per image"
    title = [f"{model}; {note}"] if len(model) + len(note) + 2 <= WIDTH else [model[:WIDTH], note]
    columns = f"{'file':<{_FILE_WIDTH}}" + "".join(f" {h:>{w}}" for h, w, _, _ in _COLUMNS)
    return "\n".join([*title, columns])


def clinical_summary(result) -> str:
    from edge.clinical.context import summary

    return summary(result)


def table_rows(result) -> str:
    """One result as table lines: its row, then any error or warning indented below (wrapped to WIDTH)."""
    name = f"{shorten(_line(result.file), _FILE_WIDTH):<{_FILE_WIDTH}}"
    error = getattr(result, "error", None)
    if error is not None:
        status = str(getattr(result, "status", "") or "failed")
        lines = [f"{name}{'':>{WIDTH - _FILE_WIDTH - 9}} {status[:8]:>8}"]
        notes = [_line(error)]
    else:
        lines = [name + "".join(f" {cell(getattr(result, field, None)):>{w}}" for _, w, field, cell in _COLUMNS)]
        notes = [_line(result.warning)] if result.warning else []
        if getattr(result, "corrections", ""):  # what the input check fixed before the estimate (edge.quality)
            notes.append(_line(f"input corrected: {result.corrections}"))
        if getattr(result, "status", "") == "unchecked":
            notes.append("input not checked (--no-quality-check): this image may not be a usable hand radiograph")
        notes += [_line(s) for s in [clinical_summary(result)] if s]  # interval, age, delay, SDS (edge.clinical)
    for note in notes:
        lines += textwrap.wrap(note, WIDTH, initial_indent="  ", subsequent_indent="    ")
    return "\n".join(lines)


# ---- streamed files -----------------------------------------------------------------------------------------

class OutputError(ValueError):
    """An output file that cannot be written or resumed: str() is the one-line message."""


class Sink:
    """One output stream. write() renders, writes and flushes a record at once; close() finishes the file."""

    SYNC_EVERY_S = 1.0  # fsync at most this often: rows survive a power cut, and a disk is not hammered

    def __init__(self, path: str, stream, done: set[str] | None = None):
        self.path, self.stream, self.done = path, stream, done or set()
        self.to_file, self.synced = path != "-", time.monotonic()

    def write(self, rec: dict) -> None:
        if rec["file"] in self.done:  # already there from the run being resumed
            return
        self._write(rec)
        self.stream.flush()
        if self.to_file and time.monotonic() - self.synced > self.SYNC_EVERY_S:
            self.sync()

    def sync(self) -> None:
        """Flushed rows to the disk itself (a power cut after this keeps them)."""
        os.fsync(self.stream.fileno())
        self.synced = time.monotonic()

    def close(self) -> None:
        self.stream.flush()
        if self.to_file:
            self.sync()
            self.stream.close()

    def _write(self, rec: dict) -> None:
        raise NotImplementedError


class CsvSink(Sink):
    def __init__(self, path, stream, done=None, header: list[str] | None = None):
        super().__init__(path, stream, done)
        self.fields = header or columns()
        self.missing = [c for c in columns() if c not in self.fields]  # resumed under an older header
        self.writer = csv.writer(stream)
        if header is None:
            self.writer.writerow(self.fields)

    def _write(self, rec: dict) -> None:
        self.writer.writerow([csv_cell(rec.get(k)) for k in self.fields])


class JsonLinesSink(Sink):
    def _write(self, rec: dict) -> None:
        self.stream.write(json.dumps(rec, ensure_ascii=False) + "\n")


class JsonListSink(Sink):
    """A JSON list, written element by element; close() writes the closing bracket, so an interrupted run
    (Ctrl-C, SIGTERM) still leaves a valid list of the finished results."""

    def __init__(self, path, stream, done=None):
        super().__init__(path, stream, done)
        self.count = 0
        stream.write("[")

    def _write(self, rec: dict) -> None:
        self.stream.write(("," if self.count else "") + "\n" + json.dumps(rec, ensure_ascii=False))
        self.count += 1

    def close(self) -> None:
        self.stream.write("\n]\n" if self.count else "]\n")
        super().close()


class ParquetSink(Sink):
    """Apache Parquet, the CSV's columns typed (pyarrow: pip install pyarrow; the cluster extra has it). Rows are
    written as a row group every ROWS rows, and the file becomes readable when close() writes its footer: Ctrl-C
    and SIGTERM close it, a power cut or kill -9 does not. For an archive that must survive those, write --jsonl
    too (and --resume from it)."""

    ROWS = 1000

    def __init__(self, path, stream):
        import pyarrow as pa
        import pyarrow.parquet as pq

        super().__init__(path, stream)
        arrow = {"float": pa.float64(), "bool": pa.bool_(), "str": pa.string()}
        self.schema = pa.schema([(c, arrow[t]) for c, t in column_types().items()])
        self.writer, self.rows, self.to_table = pq.ParquetWriter(stream, self.schema), [], pa.Table.from_pylist

    def _write(self, rec: dict) -> None:
        self.rows.append(rec)
        if len(self.rows) >= self.ROWS:
            self._write_rows()

    def _write_rows(self) -> None:
        if self.rows:
            self.writer.write_table(self.to_table(self.rows, schema=self.schema))
            self.rows = []

    def close(self) -> None:
        self._write_rows()
        self.writer.close()
        super().close()


def check_writable(path: str) -> None:
    """Refuse, before any work, an output path that cannot be written (a folder, a missing or read-only folder),
    without touching an existing file (a run that then fails to start must not have emptied it)."""
    if path == "-":
        return
    p = Path(path)
    folder = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise OutputError(f"{path}: is a folder; give a file name for the results")
    if not folder.is_dir():
        raise OutputError(f"{path}: no such folder {folder}")
    if not os.access(p if p.exists() else folder, os.W_OK):
        raise OutputError(f"{path}: cannot write here (permission denied)")


def open_sink(kind: str, path: str, info: dict, resume: bool = False, existing: tuple | None = None) -> Sink:
    """kind: csv, jsonl, json or parquet; path '-' is stdout. With resume, an existing file is read (rows whose
    input is already there are skipped, the rest appended), or its read_existing() given as `existing`; without
    it, the file is started afresh."""
    if path == "-":
        return {"csv": CsvSink, "jsonl": JsonLinesSink, "json": JsonListSink}[kind](path, sys.stdout)
    if kind == "parquet":
        return _open_parquet(path)
    if existing is None:
        existing = read_existing(kind, path, info) if resume else (set(), None)
    done, header = existing
    try:
        stream = open(path, "a" if done or header else "w", encoding="utf-8", newline="" if kind == "csv" else None)
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
    if kind == "csv":
        return CsvSink(path, stream, done, header)
    return JsonLinesSink(path, stream, done)


def _open_parquet(path: str) -> ParquetSink:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise OutputError(f"{path}: writing Parquet needs pyarrow: pip install pyarrow") from None
    try:
        return ParquetSink(path, open(path, "wb"))
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None


def read_existing(kind: str, path: str, info: dict) -> tuple[set[str], list[str] | None]:
    """(inputs already in the file, the CSV header to append under) for --resume; (empty, None) when the file
    does not exist yet. A last line cut off by a crash or power cut is removed, so that its input runs again."""
    p = Path(path)
    if not p.exists():
        return set(), None
    if kind == "json":
        raise OutputError(f"{path}: --resume needs a CSV or JSON Lines file (--csv, --jsonl), not a JSON list")
    _drop_partial_last_line(p)
    text = p.read_text(encoding="utf-8", errors="surrogateescape")
    if not text.strip():
        return set(), None
    rows = _csv_rows(p, text) if kind == "csv" else _jsonl_rows(p, text)
    header = next(csv.reader([text.splitlines()[0]])) if kind == "csv" else None
    # Rows without a model (an older version's file) are taken as this model's: only a known other one is refused.
    other = {(r.get("model"), r.get("model_version")) for r in rows if r.get("model")} - {
        (info["model"], info["model_version"])}
    if other:
        name, version = sorted(other, key=str)[0]
        raise OutputError(f"{path}: holds results of model {name} {version}, and this run uses {info['model']} "
                          f"{info['model_version']}: write to a new file to keep them apart")
    return {r["file"] for r in rows}, header


def _drop_partial_last_line(p: Path) -> None:
    with open(p, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def _csv_rows(p: Path, text: str) -> list[dict]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if "file" not in (reader.fieldnames or []):
        raise OutputError(f"{p}: not a results CSV (no 'file' column): cannot resume from it")
    return list(reader)


def _jsonl_rows(p: Path, text: str) -> list[dict]:
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise OutputError(f"{p}, line {n}: not JSON: cannot resume from this file") from None
        if not isinstance(row, dict) or "file" not in row:
            raise OutputError(f"{p}, line {n}: not a result record (no 'file'): cannot resume from this file")
        rows.append(row)
    return rows
