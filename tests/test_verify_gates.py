"""edge-verify's gates on real data (issue 33): 200 good test-split radiographs with the shipped bundle must pass
(a few images' noise is a note, not a FAIL); the damaged-INT8 twin of the tiny bundle must fail
(tests/test_runtime.py::test_edge_verify_fails_a_backend_that_lost_accuracy, fast)."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from conftest import REPO, repo_env

N_GOOD = 200


def _test_split_folder(rsna_root, out, n: int):
    """labels.csv + images/ (symlinks, nothing copied) of the first n ids of the shipped bundle's test split."""
    src = rsna_root / "train-299"
    if not (src / "labels.csv").is_file():
        pytest.skip(f"{src}: no labels.csv (the RSNA train-299 folder)")
    test = [str(i) for i in json.loads((REPO / "edge" / "default_bundle" / "split.json").read_text())["test"]][:n]
    rows = {r["id"]: r for r in csv.DictReader(open(src / "labels.csv", newline=""))}
    (out / "images").mkdir(parents=True)
    for i in test:
        image = next((src / "images").glob(f"{i}.*"))
        (out / "images" / image.name).symlink_to(image)
    with open(out / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([("id", "boneage", "male"), *((i, rows[i]["boneage"], rows[i]["male"]) for i in test)])
    return out


@pytest.mark.slow
def test_edge_verify_passes_200_good_test_split_images(rsna_root, tmp_path):
    folder = _test_split_folder(rsna_root, tmp_path / "good", N_GOOD)
    out = subprocess.run([sys.executable, "-m", "edge.cli.verify", "--data", str(folder), "--json"],
                         capture_output=True, text=True, timeout=1200, env=repo_env(), cwd=REPO)
    r = json.loads(out.stdout)
    failures = {f"{k}/{n}": v["retention"]["failures"] for k in ("backends", "sex_given")
                for n, v in r.get(k, {}).items() if "retention" in v and not v["retention"]["passed"]}
    assert out.returncode == 0 and r["passed"], (failures, r.get("clinical", {}).get("intervals"))
    assert r["n"] == N_GOOD and len(r["backends"]) >= 2
    for name, v in r["backends"].items():
        ci = v["retention"]["paired"]["ci"]
        assert ci["mae"][0] <= v["retention"]["delta"]["mae"] <= ci["mae"][1], name
    if "clinical" in r:
        assert all(c["passed"] for c in r["clinical"]["intervals"].values())
