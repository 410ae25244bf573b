"""Validation on a clinic's own labelled folder: edge-verify --data and edge-eval evaluate every image the model
neither trained nor was selected on, say which, and break the errors down; generated images, real runtimes."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import repo_env
from edge.config import InputSpec
from edge.labels import read_labels
from edge.preprocess import preprocess
from edge.verify import breakdown, held_out
from tiny_bundle import SPEC, make_tiny_bundle, reference_outputs

SPLIT = {"train": ["t1", "t2"], "val": ["v1"], "test": ["s1", "s2"]}
CLINIC = [f"clinic-{k}" for k in range(1, 7)]  # ids the model's split does not name
NOISE = {"s1": 1.0, "s2": -2.0, "clinic-1": 3.0, "clinic-2": -4.0, "clinic-3": 0.5, "clinic-4": -0.5,
         "clinic-5": 12.0, "clinic-6": 2.0, "t1": 40.0, "t2": -40.0, "v1": 40.0}


def _cli(*args, guard=""):
    module, rest = args[0], [str(a) for a in args[1:]]
    code = f"{guard}import sys; from {module} import main; sys.exit(main({rest!r}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=repo_env())


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, tiny_images) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("split-bundle"), tiny_images[:3], SPLIT)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, tiny_images) -> Path:
    """labels.csv + images/: each label the tiny FP32 graph's own age plus NOISE (so its MAE on any subset is the
    mean |noise| there) and its own sex reading; images of ids in SPLIT and of ids it does not name."""
    out = tmp_path_factory.mktemp("clinic-folder")
    (out / "images").mkdir()
    rows = []
    for src, (image_id, noise) in zip(tiny_images, NOISE.items()):
        ref = reference_outputs(preprocess(src, InputSpec(**SPEC))[None])
        (out / "images" / f"{image_id}.png").write_bytes(src.read_bytes())
        rows.append((image_id, float(ref["bone_age_months"][0]) + noise, str(bool(ref["p_male"][0] >= 0.5))))
    with open(out / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([("id", "boneage", "male"), *rows])
    return out


def _mae(ids) -> float:
    return float(np.mean([abs(NOISE[i]) for i in ids]))


def test_held_out_takes_the_test_split_and_unknown_ids_never_training_ones(folder):
    labels = read_labels(folder)
    kept, sel = held_out(labels, SPLIT, "test")
    assert sorted(kept.ids) == sorted(["s1", "s2", *CLINIC])
    assert sel["found"] == {"train": 2, "val": 1, "test": 2, "none": 6} and sel["evaluated"] == 8
    assert len(held_out(labels, SPLIT, "all")[0]) == 11 and held_out(labels, SPLIT, "val")[0].ids == ["v1"]
    kept, sel = held_out(labels, None, "test")  # no split known: everything, and the output says so
    assert len(kept) == 11 and not sel["split_known"]
    with pytest.raises(ValueError, match="none of its 3 labelled images"):
        held_out(labels.subset(["t1", "t2", "v1"]), SPLIT, "test")


def test_breakdown_by_age_and_sex_and_the_largest_errors():
    true = np.array([10.0, 30, 80, 130, 200, 220])
    pred = true + np.array([1.0, -2, 9, 0.5, -30, 3])
    male = np.array([1, 0, 1, 0, 1, 0])
    b = breakdown(["a", "b", "c", "d", "e", "f"], true, pred, male, worst=2)
    assert [r["years"] for r in b["by_age"]] == ["0-2", "2-6", "6-10", "10-14", "14+"]
    assert sum(r["n"] for r in b["by_age"]) == 6 and b["by_age"][-1]["n"] == 2
    assert b["by_age"][-1]["mae"] == pytest.approx(16.5) and b["by_age"][-1]["bias"] == pytest.approx(-13.5)
    assert b["by_sex"]["male"]["mae"] == pytest.approx(40 / 3) and b["by_sex"]["female"]["n"] == 3
    assert [r["id"] for r in b["largest_errors"]] == ["e", "c"] and b["largest_errors"][0]["error"] == -30
    err = pred - true
    assert b["agreement"]["bias"] == pytest.approx(err.mean())
    assert b["agreement"]["loa"][1] == pytest.approx(err.mean() + 1.96 * err.std(ddof=1))


def test_edge_verify_on_a_clinic_folder(bundle, folder, tmp_path):
    plot = tmp_path / "agreement.png"
    out = _cli("edge.cli.verify", "--bundle", bundle, "--data", folder, "--backends", "onnxruntime", "--json",
               "--plot", plot, "--worst", "3")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    evaluated = ["s1", "s2", *CLINIC]
    assert r["n"] == 8 and r["selection"]["found"]["none"] == 6 and r["unreadable"] == []
    fp32 = r["backends"]["onnxruntime/fp32"]["metrics"]
    assert fp32["mae"] == pytest.approx(_mae(evaluated), abs=1e-3) and fp32["accuracy"] == 1.0
    assert "ci" in fp32 and fp32["ci"]["mae"][0] <= fp32["mae"] <= fp32["ci"]["mae"][1]
    main = r["primary"]
    b = r["backends"][main]["breakdown"]
    assert b["largest_errors"][0]["id"] == "clinic-5" and len(b["largest_errors"]) == 3
    assert sum(x["n"] for x in b["by_sex"].values()) == 8
    assert Path(r["backends"][main]["plot"]).stat().st_size > 10_000
    assert Path(r["sex_given"][main]["plot"]).name == "agreement-sex-given.png"
    text = _cli("edge.cli.verify", "--bundle", bundle, "--data", folder, "--backends", "onnxruntime").stdout
    assert "8 of 11 labelled images evaluated: 6 not in the model's split" in " ".join(text.split())
    assert "3 left out (2 training, 1 validation" in text and "largest errors" in text and "clinic-5" in text
    every = json.loads(_cli("edge.cli.verify", "--bundle", bundle, "--data", folder, "--backends", "onnxruntime",
                            "--split", "all", "--json").stdout)
    assert every["n"] == 11 and every["backends"]["onnxruntime/fp32"]["metrics"]["mae"] == pytest.approx(
        _mae(NOISE), abs=1e-3)


def test_a_clinic_folder_of_dicom_files_is_evaluated(bundle, folder, tmp_path):
    """A clinic's labelled images are often DICOM: images/<id>.dcm is found and read like the PNGs."""
    from PIL import Image

    from imaging_fixtures import write_dicom

    dicoms = tmp_path / "dicoms"
    (dicoms / "images").mkdir(parents=True)
    (dicoms / "labels.csv").write_text((folder / "labels.csv").read_text())
    for p in (folder / "images").iterdir():
        pixels = np.asarray(Image.open(p).convert("L"), np.uint16) * 16  # 12-bit, as a CR stores it
        write_dicom(dicoms / "images" / f"{p.stem}.dcm", pixels)
    out = _cli("edge.cli.verify", "--bundle", bundle, "--data", dicoms, "--backends", "onnxruntime", "--json")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["n"] == 8 and r["unreadable"] == []
    assert r["backends"]["onnxruntime/fp32"]["metrics"]["mae"] == pytest.approx(_mae(["s1", "s2", *CLINIC]), abs=0.3)


def test_an_unreadable_labelled_image_is_named_and_left_out(bundle, folder, tmp_path):
    broken = tmp_path / "broken"
    (broken / "images").mkdir(parents=True)
    for p in (folder / "images").iterdir():
        (broken / "images" / p.name).write_bytes(p.read_bytes())
    (broken / "labels.csv").write_text((folder / "labels.csv").read_text())
    (broken / "images" / "clinic-5.png").write_bytes(b"not an image at all")
    (broken / "images" / "clinic-6.png").unlink()
    out = _cli("edge.cli.verify", "--bundle", bundle, "--data", broken, "--backends", "onnxruntime", "--json")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["n"] == 6 and len(r["unreadable"]) == 2
    assert any("clinic-5.png" in u for u in r["unreadable"]) and any("clinic-6.png" in u for u in r["unreadable"])
    assert r["backends"]["onnxruntime/fp32"]["metrics"]["mae"] == pytest.approx(
        _mae(["s1", "s2", *CLINIC[:4]]), abs=1e-3)


def test_a_folder_of_training_images_only_is_one_line(bundle, folder, tmp_path):
    train_only = tmp_path / "train-only"
    (train_only / "images").mkdir(parents=True)
    rows = [r for r in csv.reader(open(folder / "labels.csv")) if r[0] in ("id", "t1", "t2", "v1")]
    with open(train_only / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    for i in ("t1", "t2", "v1"):
        (train_only / "images" / f"{i}.png").write_bytes((folder / "images" / f"{i}.png").read_bytes())
    out = _cli("edge.cli.verify", "--bundle", bundle, "--data", train_only)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "none of its 3 labelled images" in out.stderr and "--split all" in out.stderr


def test_verify_plot_without_matplotlib_fails_before_any_work(bundle, folder):
    out = _cli("edge.cli.verify", "--bundle", bundle, "--data", folder, "--plot", "x.png",
               guard="import sys; sys.modules['matplotlib'] = None; ")
    assert out.returncode == 2 and "needs matplotlib" in out.stderr and out.stdout == ""


def test_edge_eval_on_a_folder_outside_the_checkpoint_split(folder, tmp_path):
    pytest.importorskip("torch")
    from models.checkpoint import save_weights
    from models.inception import create_model

    split = tmp_path / "split.json"
    split.write_text(json.dumps(SPLIT))
    ckpt = tmp_path / "random.pt"
    save_weights(ckpt, create_model("w035-100"), {"split": str(split)})  # random weights: the numbers don't matter
    plot = tmp_path / "eval.png"
    out = _cli("models.evaluate", "--checkpoint", ckpt, "--data", folder, "--n-boot", "50", "--json", "--plot", plot)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["n"] == 8 and r["selection"]["found"] == {"train": 2, "val": 1, "test": 2, "none": 6}
    assert {"mae", "icc", "accuracy", "auc", "kappa", "ci", "breakdown"} <= set(r) and plot.stat().st_size > 10_000
    text = _cli("models.evaluate", "--checkpoint", ckpt, "--data", folder, "--n-boot", "20").stdout
    assert "not in the model's split" in text and "largest errors" in text and "Traceback" not in text
    gone = _cli("models.evaluate", "--checkpoint", tmp_path / "nope.pt", "--data", folder)
    assert gone.returncode == 2 and gone.stderr.count("\n") == 1 and "no such checkpoint" in gone.stderr


def test_edge_quantize_on_a_folder_outside_the_split_is_one_line(folder, tmp_path):
    """edge-quantize needs the checkpoint's own training data: another folder is refused in one line (it was a
    KeyError traceback), before anything is written."""
    pytest.importorskip("nncf")
    from models.checkpoint import save_weights
    from models.inception import create_model

    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["t1", "t2", "x9"], "val": ["v1", "x8"], "test": ["s1"]}))
    ckpt = tmp_path / "random.pt"
    save_weights(ckpt, create_model("w035-100"), {"split": str(split)})
    out = _cli("quantize.cli", "--checkpoint", ckpt, "--data", folder, "--out", tmp_path / "q", "--int8", "ptq")
    assert out.returncode == 1 and "Traceback" not in out.stderr and "KeyError" not in out.stderr, out.stderr
    assert "lacks 1 training and 1 validation images" in out.stderr and "edge-eval or edge-verify" in out.stderr
    assert not (tmp_path / "q" / "compressed.pt").exists()


def test_split_files_with_numeric_ids_match_and_malformed_ones_are_one_line(tmp_path):
    from edge.verify import read_split_file

    path = tmp_path / "split.json"
    path.write_text(json.dumps({"train": [1437, 1440], "val": [2], "test": [3]}))
    assert read_split_file(path)["train"] == ["1437", "1440"]  # labels.csv ids are text: ints must still match
    assert read_split_file(tmp_path / "none.json") is None
    path.write_text(json.dumps({"train": [1]}))
    with pytest.raises(ValueError, match="not a split file"):
        read_split_file(path)
