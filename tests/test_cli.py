"""The command line as a user meets it: the 80-column table, JSON/CSV rows (rounded, with the model's name and
version), output streamed so an interrupted batch keeps its rows, --resume, help texts and one-line refusals."""
from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, repo_env
from edge.output import (WIDTH, columns, open_sink, read_existing, record, safe_text, shorten,
                         table_header, table_rows, years_months)
from edge.runtime import Failure, Prediction
from imaging_fixtures import phantom, write_png8

DEFAULT_BUNDLE = REPO / "edge" / "default_bundle"
INFO = {"model": "tiny-test-graph", "model_version": "0.0.0"}


def _cli(*args, timeout=300):
    module, rest = args[0], [os.fsdecode(a) if isinstance(a, bytes) else str(a) for a in args[1:]]
    code = f"import sys; from edge.cli.{module} import main; sys.exit(main({rest!r}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env=repo_env(), errors="replace")


def _prediction(**kw) -> Prediction:
    base = dict(file="scans/2026/ward-7/patient-00001234/left-hand-radiograph-final.png",
                bone_age_months=164.84999, p_male=0.87345678, sex="male", backend="openvino", precision="int8",
                ms=8.61234, given_sex="female")
    return Prediction(**(base | kw))


# ---- rendering (no model) -----------------------------------------------------------------------------------

def test_table_fits_80_columns_with_aligned_columns_units_and_years():
    rows = [_prediction(), _prediction(file="a.png", bone_age_months=7.6, p_male=0.01, given_sex=""),
            _prediction(warning="given sex female, but the image reads as male (P(male) 0.95): check that the "
                                "file is this patient's, and that the form and the image belong together"),
            Failure("x" * 200 + ".dcm", "DICOM file without pixel data " * 5)]
    text = "\n".join([table_header(INFO, "openvino", "int8"), *map(table_rows, rows)])
    lines = text.splitlines()
    assert max(map(len, lines)) <= WIDTH, "\n".join(line for line in lines if len(line) > WIDTH)
    head = next(line for line in lines if line.startswith("file"))
    assert "age mo" in head and "P(male)" in head and "ms/img" in head and "status" in head
    assert "openvino int8" in text and "tiny-test-graph 0.0.0" in text and "model time per image" in text
    data = [line for line in lines if line.endswith((" ok", " failed"))]
    assert len(data) == 4 and len({len(line) for line in data}) == 1  # every row the same width: aligned
    assert "164.8" in data[0] and "13y 9m" in data[0] and " F " in data[0] and "0.873" in data[0]
    assert "7.6" in data[1] and "0y 8m" in data[1]
    assert "..." in data[0] and data[0].split()[0].endswith("final.png")  # shortened in the middle
    assert any("DICOM file without pixel data" in line for line in lines) and lines[-1].startswith("    ")
    assert any(line.startswith("  given sex female") for line in lines)


def test_a_status_and_missing_values_render_in_the_table():
    @dataclasses.dataclass
    class Checked(Prediction):  # a status field as a quality check may add: no edit of edge.output needed
        status: str = ""

    rejected = Checked(file="foot.png", bone_age_months=None, p_male=None, sex="", backend="openvino",
                       precision="int8", ms=3.0, status="rejected")
    line = table_rows(rejected)
    assert line.endswith("rejected") and len(line) == WIDTH and " - " in line
    assert record(rejected, INFO)["status"] == "rejected" and record(rejected, INFO)["bone_age_months"] is None


def test_years_months_and_shorten():
    assert years_months(167.6) == "14y 0m" and years_months(0.2) == "0y 0m" and years_months(12) == "1y 0m"
    assert shorten("abc", 10) == "abc"
    s = shorten("/very/long/folder/name/and/more/hand.png", 20)
    assert len(s) == 20 and s.startswith("/very") and s.endswith("hand.png")


def test_records_round_by_field_and_carry_the_model():
    rec = record(_prediction(), INFO)
    assert rec["bone_age_months"] == 164.8 and rec["p_male"] == 0.873 and rec["ms"] == 8.61
    assert rec["model"] == "tiny-test-graph" and rec["model_version"] == "0.0.0"
    assert set(rec) == {f.name for f in dataclasses.fields(Prediction)} | {"model", "model_version"}
    fail = record(Failure("b.png", "empty file"), INFO)
    assert fail["error"] == "empty file" and "bone_age_months" not in fail and fail["model"] == "tiny-test-graph"
    assert columns()[:4] == ["file", "bone_age_months", "p_male", "sex"] and columns()[-2:] == ["model",
                                                                                                 "model_version"]
    assert "error" in columns() and set(columns()) >= {f.name for f in dataclasses.fields(Prediction)}


def test_a_new_result_field_flows_to_records_rounded():
    @dataclasses.dataclass
    class Later(Prediction):  # a field another output adds later: no edit of edge.output needed
        interval_months: tuple = (150.04999, 180.1234)
        p_other: float = 0.123456

    rec = record(Later(**dataclasses.asdict(_prediction())), INFO)
    assert rec["interval_months"] == [150.0, 180.1] and rec["p_other"] == 0.123


def test_undecodable_names_are_escaped_not_fatal(tmp_path):
    name = os.fsdecode(b"scan-\xff\xfe.png")  # what os.listdir gives for a name that is not UTF-8
    assert safe_text(name) == "scan-\\xff\\xfe.png"
    sink = open_sink("csv", str(tmp_path / "o.csv"), INFO)
    sink.write(record(_prediction(file=name), INFO))
    sink.close()
    assert "scan-\\xff\\xfe.png" in (tmp_path / "o.csv").read_text(encoding="utf-8")
    assert "\\xff" in table_rows(_prediction(file=name)) and "\x1b" not in table_rows(_prediction(file="a\x1b[2J.png"))


def test_resume_reading_drops_a_cut_last_line_and_refuses_another_model(tmp_path):
    path = tmp_path / "o.csv"
    sink = open_sink("csv", str(path), INFO)
    for k in range(3):
        sink.write(record(_prediction(file=f"{k}.png"), INFO))
    sink.close()
    with open(path, "a") as f:
        f.write("3.png,12")  # a power cut in the middle of a row
    done, header = read_existing("csv", str(path), INFO)
    assert done == {"0.png", "1.png", "2.png"} and header == columns()
    assert path.read_text().endswith("\n")
    with pytest.raises(ValueError, match="holds results of model tiny-test-graph 0.0.0"):
        read_existing("csv", str(path), {"model": "tiny-test-graph", "model_version": "9.9.9"})
    (tmp_path / "bad.jsonl").write_text('{"file": "a.png"}\nnot json\n{"file": "b.png"}\n')
    with pytest.raises(ValueError, match="bad.jsonl, line 2"):
        read_existing("jsonl", str(tmp_path / "bad.jsonl"), INFO)


# ---- edge-infer end to end (real runtimes on the tiny bundle) -----------------------------------------------

def test_json_and_csv_together_with_the_model_in_every_row(tiny_bundle, tiny_images, tmp_path):
    out_csv = tmp_path / "out.csv"
    inputs = [*tiny_images[:3], tmp_path / "missing.png"]
    out = _cli("infer", *inputs, "--bundle", tiny_bundle, "--json", "--csv", out_csv)
    assert out.returncode == 1, out.stderr
    rows = json.loads(out.stdout)
    with open(out_csv, newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["file"] for r in rows] == [r["file"] for r in table] == list(map(str, inputs))
    assert all(r["model"] == "tiny-test-graph" and r["model_version"] == "0.0.0" for r in rows + table)
    for r in rows[:3]:
        assert round(r["bone_age_months"], 1) == r["bone_age_months"] and round(r["p_male"], 3) == r["p_male"]
    assert rows[3]["error"] == table[3]["error"] != "" and table[3]["bone_age_months"] == ""


def test_parquet_holds_the_csv_rows_typed(tiny_bundle, tiny_images, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is not installed: pip install '.[cluster]'")
    out_csv, out_pq = tmp_path / "out.csv", tmp_path / "out.parquet"
    inputs = [*tiny_images[:3], tmp_path / "missing.png"]
    out = _cli("infer", *inputs, "--bundle", tiny_bundle, "--csv", out_csv, "--parquet", out_pq, "--no-progress")
    assert out.returncode == 1, out.stderr
    with open(out_csv, newline="") as f:
        want = list(csv.DictReader(f))
    table = pq.read_table(out_pq)
    assert table.column_names == columns()
    assert str(table.schema.field("bone_age_months").type) == "double"
    assert str(table.schema.field("sex_uncertain").type) == "bool"
    got = table.to_pylist()
    # Every cell is the CSV's, typed: the CSV writes str(value), and "" for a missing value (Parquet: null).
    assert [{k: "" if v is None else str(v) for k, v in row.items()} for row in got] == want
    assert isinstance(got[0]["bone_age_months"], float) and got[3]["bone_age_months"] is None
    assert got[3]["error"] == want[3]["error"] != ""
    refused = _cli("infer", *inputs, "--bundle", tiny_bundle, "--parquet", out_pq, "--resume")
    assert refused.returncode == 2 and "--resume cannot append to a Parquet file" in refused.stderr


def test_table_on_stdout_fits_80_columns(tiny_bundle, tiny_images, tmp_path):
    deep = tmp_path / ("a-very-long-folder-name-" * 4) / "radiographs"
    deep.mkdir(parents=True)
    for p in tiny_images[:2]:
        (deep / p.name).write_bytes(p.read_bytes())
    out = _cli("infer", deep, "--bundle", tiny_bundle, "--no-progress")
    assert out.returncode == 0, out.stderr
    assert max(map(len, out.stdout.splitlines())) <= 80 and "ms/img" in out.stdout and "tiny-test-graph" in out.stdout


def test_two_outputs_on_stdout_are_refused(tiny_bundle, tiny_images):
    out = _cli("infer", tiny_images[0], "--bundle", tiny_bundle, "--json", "--csv", "-")
    assert out.returncode == 2 and "both write to stdout" in out.stderr and "Traceback" not in out.stderr


def test_resume_skips_what_the_file_has_and_appends_the_rest(tiny_bundle, tiny_images, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for p in tiny_images[:3]:
        (folder / p.name).write_bytes(p.read_bytes())
    out_csv, out_jsonl = tmp_path / "out.csv", tmp_path / "out.jsonl"
    first = _cli("infer", folder, "--bundle", tiny_bundle, "--csv", out_csv, "--jsonl", out_jsonl, "--no-progress")
    assert first.returncode == 0, first.stderr
    before = out_csv.read_text()
    for p in tiny_images[3:5]:
        (folder / p.name).write_bytes(p.read_bytes())
    again = _cli("infer", folder, "--bundle", tiny_bundle, "--csv", out_csv, "--jsonl", out_jsonl, "--resume",
                 "--no-progress")
    assert again.returncode == 0, again.stderr
    assert "3 of 5 input(s) already in" in again.stderr
    assert out_csv.read_text().startswith(before)  # the earlier rows untouched
    with open(out_csv, newline="") as f:
        files = [r["file"] for r in csv.DictReader(f)]
    lines = [json.loads(line)["file"] for line in out_jsonl.read_text().splitlines()]
    assert sorted(files) == sorted(lines) == sorted(str(folder / p.name) for p in tiny_images[:5])
    assert again.stdout.count(" ok") == 2  # only the new inputs were run
    out = _cli("infer", folder, "--bundle", tiny_bundle, "--resume")
    assert out.returncode == 2 and "--resume needs an output file" in out.stderr


def test_resume_from_an_older_versions_csv(tiny_bundle, tiny_images, tmp_path):
    """A CSV written before the model columns existed: its inputs are skipped, its header kept, and the user told
    which fields the appended rows leave out."""
    out_csv = tmp_path / "old.csv"
    out_csv.write_text("file,bone_age_months,p_male,sex,backend,precision,ms,given_sex,warning,error\n"
                       f"{tiny_images[0]},100.0,0.5,male,onnxruntime,fp32,1.0,,,\n")
    out = _cli("infer", *tiny_images[:2], "--bundle", tiny_bundle, "--csv", out_csv, "--resume", "--no-progress")
    assert out.returncode == 0, out.stderr
    assert "1 of 2 input(s) already in" in out.stderr and "has no column for" in out.stderr and "model" in out.stderr
    rows = list(csv.DictReader(open(out_csv, newline="")))
    assert [r["file"] for r in rows] == [str(p) for p in tiny_images[:2]] and rows[1]["bone_age_months"] != ""


def test_undecodable_file_name_end_to_end(tiny_bundle, tiny_images, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    odd = os.fsencode(folder) + b"/hand-\xff.png"
    with open(odd, "wb") as f:
        f.write(tiny_images[0].read_bytes())
    (folder / "plain.png").write_bytes(tiny_images[1].read_bytes())
    out_csv = tmp_path / "out.csv"
    out = _cli("infer", folder, "--bundle", tiny_bundle, "--csv", out_csv, "--no-progress")
    assert out.returncode == 0, out.stderr
    text = out_csv.read_text(encoding="utf-8")
    assert "hand-\\xff.png" in text and "plain.png" in text and len(text.splitlines()) == 3
    again = _cli("infer", folder, "--bundle", tiny_bundle, "--csv", out_csv, "--resume", "--no-progress")
    assert again.returncode == 0 and "2 of 2 input(s) already in" in again.stderr, again.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_batch_keeps_every_finished_row(sig, tmp_path):
    """The bundled model on 150 small images one at a time, stopped once rows are written: CSV, JSON Lines and the
    JSON list on stdout are all valid and hold the same finished rows; --resume then finishes the batch."""
    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(150):
        write_png8(folder / f"h{k:03d}.png", phantom(64, 10 + k % 200, k % 2 == 0))
    out_csv, out_jsonl = tmp_path / "out.csv", tmp_path / "out.jsonl"
    args = [str(folder), "--bundle", str(DEFAULT_BUNDLE), "--json", "--csv", str(out_csv), "--jsonl", str(out_jsonl),
            "--batch-size", "1"]
    # A suite started in the background (`cmd &`) inherits SIGINT ignored, and Python keeps it so: Ctrl-C's handler
    # is set here as an interactive shell would leave it.
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from edge.cli.infer import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=repo_env())
    deadline = time.time() + 120
    while time.time() < deadline and (not out_csv.exists() or len(out_csv.read_text().splitlines()) < 4):
        time.sleep(0.05)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == (130 if sig == signal.SIGINT else 128 + signal.SIGTERM), stderr
    assert "Traceback" not in stderr and "--resume" in stderr
    with open(out_csv, newline="") as f:
        csv_files = [r["file"] for r in csv.DictReader(f)]
    jsonl_files = [json.loads(line)["file"] for line in out_jsonl.read_text().splitlines()]
    listed = [r["file"] for r in json.loads(stdout)]  # the list was closed properly
    assert 3 <= len(csv_files) < 150
    assert csv_files == jsonl_files == listed == [str(folder / f"h{k:03d}.png") for k in range(len(csv_files))]
    if sig == signal.SIGTERM:  # finish it: nothing is run twice, nothing is lost
        out = _cli("infer", folder, "--bundle", DEFAULT_BUNDLE, "--csv", out_csv, "--resume", "--batch-size", "8",
                   "--no-progress", timeout=600)
        assert out.returncode == 0, out.stderr
        with open(out_csv, newline="") as f:
            files = [r["file"] for r in csv.DictReader(f)]
        assert sorted(files) == sorted(str(p) for p in folder.glob("*.png"))


# ---- help texts and one-line refusals -----------------------------------------------------------------------

def test_help_texts_are_complete():
    infer = " ".join(_cli("infer", "--help").stdout.split())
    for text in ("--batch-size N images per call to the runtime", "--no-progress no progress line",
                 "--resume continue an interrupted run", "--jsonl FILE write JSON Lines", "--csv FILE write CSV",
                 "--json print a JSON list"):
        assert text in infer, text
    bench = _cli("bench", "--help").stdout
    description = bench.split("\n\n")[1]
    assert description.rstrip().endswith(".") and "latency" in description and "memory" in description


@pytest.mark.parametrize("tool", ["infer", "bench"])
def test_threads_zero_is_refused(tool, tiny_bundle, tiny_images):
    args = [tiny_images[0]] if tool == "infer" else []
    out = _cli(tool, *args, "--bundle", tiny_bundle, "--threads", "0")
    assert out.returncode == 2 and "--threads must be at least 1" in out.stderr and "Traceback" not in out.stderr


def test_sexes_naming_a_missing_file_is_one_line(tiny_bundle, tiny_images, tmp_path):
    out = _cli("infer", tiny_images[0], "--bundle", tiny_bundle, "--sexes", tmp_path / "nope.csv")
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "nope.csv" in out.stderr and "no such file" in out.stderr and "Errno" not in out.stderr


def test_bench_plot_without_matplotlib_fails_before_measuring(tiny_bundle):
    code = ("import sys; sys.modules['matplotlib'] = None; from edge.cli.bench import main; "
            f"sys.exit(main(['--bundle', {str(tiny_bundle)!r}, '--plot', 'x.png', '--rounds', '500']))")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=repo_env(), timeout=120)
    assert out.returncode == 2 and "needs matplotlib" in out.stderr and "Traceback" not in out.stderr
    assert out.stdout == "" and time.perf_counter() - t0 < 30  # nothing measured


def test_unavailable_tensorrt_is_said_once(tiny_bundle, tiny_images):
    pytest.importorskip("onnxruntime")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    out = _cli("infer", tiny_images[0], "--bundle", tiny_bundle, "--backend", "tensorrt")
    assert out.returncode != 0 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.count("needs the 'tensorrt' package") == 1, out.stderr


def test_a_run_that_cannot_load_a_model_leaves_earlier_results_as_they_were(tiny_bundle, tiny_images, tmp_path):
    """The output files are started only once a model has loaded: a failed start (here TensorRT, absent) must
    not empty last week's results, with or without --resume."""
    pytest.importorskip("onnxruntime")
    if importlib.util.find_spec("tensorrt"):
        pytest.skip("TensorRT is installed here")
    old_csv, old_jsonl = tmp_path / "old.csv", tmp_path / "old.jsonl"
    out = _cli("infer", tiny_images[0], "--bundle", tiny_bundle, "--csv", old_csv, "--jsonl", old_jsonl)
    assert out.returncode == 0, out.stderr
    before = old_csv.read_bytes(), old_jsonl.read_bytes()
    for extra in ([], ["--resume"]):
        out = _cli("infer", *tiny_images, "--bundle", tiny_bundle, "--backend", "tensorrt", "--csv", old_csv,
                   "--jsonl", old_jsonl, *extra)
        assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
        assert (old_csv.read_bytes(), old_jsonl.read_bytes()) == before
    fresh = tmp_path / "never.csv"
    assert _cli("infer", tiny_images[0], "--bundle", tiny_bundle, "--backend", "tensorrt", "--csv",
                fresh).returncode != 0
    assert not fresh.exists()


def test_readme_starts_with_the_two_setup_commands_and_research_use():
    text = (REPO / "README.md").read_text()
    head = text.split("\n## ")[0]
    assert "pip install . && edge-infer edge/default_bundle/samples/" in head
    assert 'pip install -e ".[dev]" && python -m pytest -q' in head
    assert "not a medical device" in head.lower()
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "export" / "model_card.py"]:
        found = re.findall(r"\bsessions?[- ]\d+", doc.read_text(), flags=re.IGNORECASE)
        assert not found, f"{doc.name} dates work by session: {found[:3]}"


def test_progress_into_a_log_is_plain_lines(monkeypatch):
    import io

    from edge.progress import Progress

    log = io.StringIO()  # not a terminal
    monkeypatch.setattr(sys, "stderr", log)
    p = Progress(50, "edge-infer: image files")
    for k in range(1, 51):
        p(k)
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and lines[0].startswith("edge-infer: image files: 1/50")
    assert lines[-1].startswith("edge-infer: image files: 50/50") and len(lines) == 2


def test_a_bad_output_path_is_refused_before_the_model_loads(tiny_images, tmp_path):
    existing = tmp_path / "old.csv"
    existing.write_text("file\nkeep-me.png\n")
    for bad, words in ((tmp_path / "no-such-folder" / "o.csv", "no such folder"), (tmp_path, "is a folder")):
        # The bundle does not exist either: the output path is checked first, so the message is about it.
        out = _cli("infer", tiny_images[0], "--bundle", tmp_path / "no-bundle", "--csv", bad)
        assert out.returncode == 2 and words in out.stderr and out.stderr.count("\n") == 1, out.stderr
    out = _cli("infer", tiny_images[0], "--bundle", tmp_path / "no-bundle", "--csv", existing)
    assert out.returncode == 3 and existing.read_text() == "file\nkeep-me.png\n"  # a run that never started keeps it
