"""RSNA labels in every distributed layout, and split files: torch-free, shared by training and edge-verify."""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Header variants as RSNA distributed them: (id column, age column, sex column).
_LABEL_LAYOUTS = [
    ("id", "boneage", "male"),  # training CSV (and ../shared/data/rsna-boneage)
    ("Image ID", "Bone Age (months)", "male"),  # validation CSV
    ("Case ID", "Ground truth bone age (months)", "Sex"),  # test CSV ("M"/"F")
]
SPLIT_NAMES = ("train", "val", "test")


@dataclass
class Labels:
    ids: list[str]
    age: np.ndarray  # months, float32
    male: np.ndarray  # 0/1, float32
    image_dir: Path

    def __len__(self):
        return len(self.ids)

    def subset(self, ids: list[str]) -> "Labels":
        index = {i: k for k, i in enumerate(self.ids)}
        rows = [index[i] for i in ids]
        return Labels([self.ids[r] for r in rows], self.age[rows], self.male[rows], self.image_dir)

    def paths(self) -> list[Path]:
        """Each id's image: <id>.png, else <id>.jpg / <id>.jpeg (train-299 holds JPEGs)."""
        return [image_path(self.image_dir, i) for i in self.ids]


# In this order: RSNA's sets are PNG (train-299: JPEG); a clinic's own labelled images are often DICOM.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")


def image_path(image_dir: Path, image_id: str) -> Path:
    """The file holding image `image_id` in `image_dir`; the .png name when none exists (its error names it)."""
    for suffix in IMAGE_SUFFIXES:
        path = image_dir / f"{image_id}{suffix}"
        if path.is_file():
            return path
    return image_dir / f"{image_id}.png"


def read_labels(data: str | os.PathLike, csv_path: str | os.PathLike | None = None) -> Labels:
    """A data folder (labels.csv + images/, or an RSNA CSV + folder of <id>.png) -> Labels."""
    data = Path(data)
    csv_path = Path(csv_path) if csv_path else _find_csv(data)
    image_dir = data / "images" if (data / "images").is_dir() else data
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{csv_path}: no rows")
    id_col, age_col, sex_col = _layout(csv_path, rows[0].keys())
    ids = [str(r[id_col]).strip() for r in rows]
    age = np.array([float(r[age_col]) for r in rows], dtype=np.float32)
    male = np.array([_parse_sex(r[sex_col], csv_path) for r in rows], dtype=np.float32)
    return Labels(ids, age, male, image_dir)


def _find_csv(data: Path) -> Path:
    for name in ("labels.csv", "boneage-training-dataset.csv"):
        if (data / name).is_file():
            return data / name
    found = sorted(data.glob("*.csv"))
    if len(found) == 1:
        return found[0]
    raise FileNotFoundError(f"{data}: expected labels.csv (id,boneage,male) or one RSNA CSV, found {len(found)} CSVs")


def _layout(csv_path: Path, header) -> tuple[str, str, str]:
    header = set(header)
    for layout in _LABEL_LAYOUTS:
        if set(layout) <= header:
            return layout
    raise ValueError(f"{csv_path}: unknown label columns {sorted(header)}; expected one of "
                     + "; ".join(",".join(layout) for layout in _LABEL_LAYOUTS))


def _parse_sex(value: str, where) -> float:
    v = str(value).strip().lower()
    if v in ("true", "1", "m", "male"):
        return 1.0
    if v in ("false", "0", "f", "female"):
        return 0.0
    raise ValueError(f"{where}: cannot read sex value {value!r}")


def read_split(path: str | os.PathLike) -> dict[str, list[str]]:
    d = json.loads(Path(path).read_text())
    return {name: d[name] for name in SPLIT_NAMES}


def load_split_labels(data, split_file, part: str) -> Labels:
    labels = read_labels(data)
    return labels.subset(read_split(split_file)[part])
