"""Numbers that cannot drift (issue 33, item 6): README's measured tables and the default bundle's model card are
exactly what their writers (benchmarks/readme_tables.py, benchmarks/update_model_card.py) make of the results
files; a changed number on either side fails here."""
from __future__ import annotations

import importlib.util
import json
import shutil

import pytest

from conftest import REPO

RESULTS = REPO / "benchmarks" / "results"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tables = _script("readme_tables")


def test_readme_tables_are_what_the_results_files_give():
    readme = (REPO / "README.md").read_text()
    names = [m["name"] for m in tables.BLOCK.finditer(readme)]
    assert sorted(names) == sorted(tables.TABLES)  # every table is in the README, once
    assert tables.differing(readme) == [], "run: python benchmarks/readme_tables.py"


def test_a_number_changed_in_the_readme_or_in_a_results_file_is_caught(tmp_path):
    readme = (REPO / "README.md").read_text()
    fp32 = json.loads((RESULTS / "verify-default-test.json").read_text())
    mae = fp32["backends"][fp32["reference"]]["metrics"]["mae"]
    edited = readme.replace(f"| sex-blind, FP32 | {mae:.2f} (", f"| sex-blind, FP32 | {mae + 0.1:.2f} (")
    assert edited != readme and tables.differing(edited) == ["accuracy"]
    results = tmp_path / "results"
    shutil.copytree(RESULTS, results, ignore=shutil.ignore_patterns("*.png", "mutation", "training"))
    bench = json.loads((results / "bench-default.json").read_text())
    bench[0]["p50_ms"] += 1.0
    (results / "bench-default.json").write_text(json.dumps(bench))
    assert tables.differing(readme, results) == ["speed"]
    with pytest.raises(ValueError, match="no such table"):
        tables.render("<!-- tables:begin nope -->\nx\n<!-- tables:end nope -->\n")


def test_bench_text_tables_are_read_per_run():
    text = (RESULTS / "bench-default-runs.txt").read_text()
    runs = tables.bench_runs(text)
    assert len(runs) == text.count("## run") and all(len(r) == 5 for r in runs)
    assert runs[-1]["openvino/int8"] == (3.54, 512.4)  # the last run's first row, as written


def test_the_model_card_is_what_the_bundle_and_results_give():
    card = _script("update_model_card")
    bundle = REPO / "edge" / "default_bundle"
    args = ["--bundle", str(bundle), "--verify", str(RESULTS / "verify-default-test.json"),
            "--bench", str(RESULTS / "bench-default.json")]
    assert card.main([*args, "--check"]) == 0, "run: python benchmarks/update_model_card.py " + " ".join(args)
    text = (bundle / "MODEL_CARD.md").read_text()
    v = json.loads((RESULTS / "verify-default-test.json").read_text())
    assert f"{v['backends']['openvino/int8']['metrics']['mae']:.3f} [" in text  # each shipped precision's table
    assert card.card_text(bundle, RESULTS / "verify-default-test.json") != text  # without the bench: not the card
