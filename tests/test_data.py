"""edge.labels and models.data: RSNA label layouts, the seeded stratified 7:2:1 split, and its file format."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from edge.labels import SPLIT_NAMES, Labels, load_split_labels, read_labels, read_split
from models.data import AGE_BANDS_MONTHS, load_images, make_split, write_split


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


# ---------------------------------------------------------------- label layouts

def test_read_labels_training_layout(tmp_path):
    (tmp_path / "images").mkdir()
    _write_csv(tmp_path / "boneage-training-dataset.csv", ["id", "boneage", "male"],
               [(1377, 180, "False"), (1378, 12, "False"), (1379, 94, "True")])
    labels = read_labels(tmp_path)
    assert labels.ids == ["1377", "1378", "1379"]
    np.testing.assert_array_equal(labels.age, [180, 12, 94])
    np.testing.assert_array_equal(labels.male, [0, 0, 1])
    assert labels.age.dtype == np.float32 and labels.male.dtype == np.float32
    assert labels.image_dir == tmp_path / "images"
    assert labels.paths()[0] == tmp_path / "images" / "1377.png"


def test_read_labels_validation_layout(tmp_path):
    # RSNA's validation CSV: column order differs, sex is TRUE/FALSE, images sit beside the CSV.
    _write_csv(tmp_path / "Validation Dataset.csv", ["Image ID", "male", "Bone Age (months)"],
               [(1386, "FALSE", 30), (1392, "TRUE", 162), (1397, "FALSE", 18.5)])
    labels = read_labels(tmp_path)
    assert labels.ids == ["1386", "1392", "1397"]
    np.testing.assert_array_equal(labels.age, np.array([30, 162, 18.5], np.float32))
    np.testing.assert_array_equal(labels.male, [0, 1, 0])
    assert labels.image_dir == tmp_path


def test_read_labels_test_layout_with_m_f(tmp_path):
    _write_csv(tmp_path / "test.csv", ["Case ID", "Sex", "Ground truth bone age (months)"],
               [(4360, "M", 168.93), (4361, "F", 169.65), (4362, "M", 73.26)])
    labels = read_labels(tmp_path)
    assert labels.ids == ["4360", "4361", "4362"]
    np.testing.assert_allclose(labels.age, [168.93, 169.65, 73.26], rtol=1e-6)
    np.testing.assert_array_equal(labels.male, [1, 0, 1])


def test_read_labels_explicit_csv_path_and_labels_csv_preferred(tmp_path):
    _write_csv(tmp_path / "labels.csv", ["id", "boneage", "male"], [(1, 10, "True")])
    other = _write_csv(tmp_path / "other.csv", ["Case ID", "Sex", "Ground truth bone age (months)"],
                       [(2, "F", 20)])
    assert read_labels(tmp_path).ids == ["1"]  # two CSVs, but labels.csv wins
    assert read_labels(tmp_path, other).ids == ["2"]


def test_read_labels_rejects_unknown_columns_and_sex(tmp_path):
    _write_csv(tmp_path / "labels.csv", ["image", "age", "sex"], [(1, 10, "M")])
    with pytest.raises(ValueError, match="unknown label columns"):
        read_labels(tmp_path)
    _write_csv(tmp_path / "labels.csv", ["id", "boneage", "male"], [(1, 10, "maybe")])
    with pytest.raises(ValueError, match="sex"):
        read_labels(tmp_path)


def test_labels_subset_keeps_rows_aligned(tmp_path):
    labels = Labels(["a", "b", "c", "d"], np.array([1, 2, 3, 4], np.float32),
                    np.array([0, 1, 0, 1], np.float32), tmp_path)
    sub = labels.subset(["d", "b"])
    assert sub.ids == ["d", "b"] and len(sub) == 2
    np.testing.assert_array_equal(sub.age, [4, 2])
    np.testing.assert_array_equal(sub.male, [1, 1])


# ---------------------------------------------------------------- split

def _synthetic_labels(n=2000, seed=0, tmp=None):
    rng = np.random.default_rng(seed)
    ids = [str(i) for i in rng.permutation(np.arange(1000, 1000 + n))]
    age = rng.integers(1, 229, n).astype(np.float32)
    male = (rng.random(n) < 0.54).astype(np.float32)
    return Labels(ids, age, male, tmp)


def test_make_split_is_721_disjoint_and_complete():
    labels = _synthetic_labels()
    split = make_split(labels, seed=0)
    assert tuple(split) == SPLIT_NAMES
    n = len(labels)
    parts = [set(split[k]) for k in SPLIT_NAMES]
    assert sum(map(len, parts)) == n
    assert set().union(*parts) == set(labels.ids)
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    for name, frac in zip(SPLIT_NAMES, (0.7, 0.2, 0.1)):
        assert abs(len(split[name]) - frac * n) <= 0.01 * n, (name, len(split[name]))


def test_make_split_is_deterministic_by_seed():
    labels = _synthetic_labels()
    assert make_split(labels, seed=3) == make_split(labels, seed=3)
    assert make_split(labels, seed=3)["test"] != make_split(labels, seed=4)["test"]


def test_make_split_is_stratified_by_sex_and_age():
    labels = _synthetic_labels(seed=1)
    split = make_split(labels, seed=0)
    overall_male = labels.male.mean()
    band = np.digitize(labels.age, AGE_BANDS_MONTHS[1:-1])
    overall_band = np.bincount(band, minlength=len(AGE_BANDS_MONTHS) - 1) / len(labels)
    for name in SPLIT_NAMES:
        sub = labels.subset(split[name])
        assert abs(sub.male.mean() - overall_male) < 0.02, name
        sub_band = np.bincount(np.digitize(sub.age, AGE_BANDS_MONTHS[1:-1]),
                               minlength=len(AGE_BANDS_MONTHS) - 1) / len(sub)
        assert np.abs(sub_band - overall_band).max() < 0.02, name


def test_make_split_balances_sex_when_ids_are_sorted_by_sex():
    # The first 30% of ids are all boys: every part must still hold 30% boys.
    n = 1000
    labels = Labels([str(i) for i in range(n)], np.full(n, 100, np.float32),
                    (np.arange(n) < 300).astype(np.float32), None)
    split = make_split(labels, seed=0)
    for name in SPLIT_NAMES:
        assert labels.subset(split[name]).male.mean() == pytest.approx(0.3, abs=0.01), name


def test_split_round_trip(tmp_path):
    labels = _synthetic_labels(n=300)
    split = make_split(labels, seed=2)
    path = tmp_path / "split.json"
    write_split(split, path, seed=2, source="synthetic")
    assert read_split(path) == split
    raw = json.loads(path.read_text())
    assert raw["seed"] == 2 and raw["source"] == "synthetic"
    assert raw["counts"] == {k: len(v) for k, v in split.items()}


def test_load_split_labels(tmp_path):
    _write_csv(tmp_path / "labels.csv", ["id", "boneage", "male"], [(i, 10 * i, i % 2) for i in range(1, 41)])
    labels = read_labels(tmp_path)
    split = make_split(labels, seed=0)
    write_split(split, tmp_path / "split.json", seed=0, source="t")
    val = load_split_labels(tmp_path, tmp_path / "split.json", "val")
    assert val.ids == split["val"]
    np.testing.assert_array_equal(val.age, [10 * int(i) for i in split["val"]])


def test_split_ids_sorted_numerically():
    labels = Labels(["10", "9", "100", "2", "x"], np.full(5, 50, np.float32), np.zeros(5, np.float32), None)
    split = make_split(labels, seed=0, fractions=(1.0, 0.0, 0.0))
    assert split["train"] == ["2", "9", "10", "100", "x"]


def test_load_images_goes_through_preprocess(tmp_path):
    from PIL import Image

    from edge.config import InputSpec
    from edge.preprocess import preprocess

    rng = np.random.default_rng(0)
    paths = []
    for k in range(3):
        p = tmp_path / f"{k}.png"
        Image.fromarray(rng.integers(0, 256, (120 + k, 90), dtype=np.uint8)).save(p)
        paths.append(p)
    spec = InputSpec(height=80, width=76)
    x = load_images(paths, spec, progress=False)
    assert x.shape == (3, 1, 80, 76) and x.dtype == np.float32
    for k, p in enumerate(paths):
        np.testing.assert_array_equal(x[k], preprocess(p, spec))


def test_edge_train_refuses_a_split_file_that_does_not_exist(tmp_path):
    # A typo in --split-file once trained on a fresh split: test ids the bundle's split.json calls unseen were
    # in training. It must stop before any split or checkpoint is written.
    from models.phantoms import write_phantom_dataset
    from models.train import main

    data = write_phantom_dataset(tmp_path / "data", 20, size=96)
    out = tmp_path / "run"
    with pytest.raises(SystemExit, match=r"--split-file .*splt\.json: no such file"):
        main(["--out", str(out), "--data", str(data), "--split-file", str(tmp_path / "splt.json"), "--epochs", "1",
              "--model", "w035-100", "--no-progress"])
    assert not (out / "split.json").exists() and not (tmp_path / "splt.json").exists()
    assert not list(out.glob("*.pt"))


# ---------------------------------------------------------------- real data (skipped without it)

def test_committed_split_reproduces_from_rsna_labels(rsna_root, repo_root):
    """models/splits/rsna-train-100px-seed0.json is make_split(train-100px labels, seed 0)."""
    labels = read_labels(rsna_root / "train-100px")
    committed = read_split(repo_root / "models" / "splits" / "rsna-train-100px-seed0.json")
    assert make_split(labels, seed=0) == committed
