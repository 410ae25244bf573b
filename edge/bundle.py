"""The model bundle format, one definition: a directory with bundle.json, artifacts and a model card.

bundle.json keys: schema_version, model {name, version, created, git_sha}, config (edge.config.ModelConfig:
the input spec travels here), outputs, training {data, split_file, counts}, reference_metrics (FP32),
artifacts [{backend, precision, path, sha256, size, role}], calibration, retention, samples (FP32 reference
predictions for the bundled sample radiographs: the installation self-test).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from edge.config import ModelConfig
from edge.formats import get_format

SCHEMA_VERSION = 1
BUNDLE_FILE = "bundle.json"
OUTPUTS = {
    "bone_age_months": {"unit": "months", "description": "estimated bone age (de-standardised in the graph)"},
    "p_male": {"unit": "probability", "description": "P(male) as the network sees it; sex = male if >= 0.5"},
    "bone_age_months_by_sex": {"unit": "months", "shape": "(N, 2): [female, male]",
                               "description": "bone age given the patient's sex (models with config.sex_heads)"},
}


class BundleError(ValueError):
    pass


@dataclass
class Bundle:
    root: Path
    meta: dict = field(repr=False)

    @property
    def config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.meta["config"])

    @property
    def output_names(self) -> list[str]:
        """The graph outputs this bundle's artifacts have (edge.bundle.OUTPUTS)."""
        return [n for n in OUTPUTS if n != "bone_age_months_by_sex" or self.config.sex_heads]

    def available(self) -> list[tuple[str, str]]:
        """(backend, precision) pairs this bundle has artifacts for (TensorRT counts via its ONNX source)."""
        from edge.formats import FORMATS
        return [(b, p) for b in FORMATS for p in FORMATS[b].precisions if self.artifact_path(b, p, check=False)]

    def artifact_path(self, backend: str, precision: str, check: bool = True) -> Path | None:
        """Path of the main artifact; with check=True, verify sha256 of it and its companions first."""
        listed = {a["path"] for a in self.meta.get("artifacts", []) if a["precision"] == precision}
        rel = next((r for r in get_format(backend).paths(precision) if r in listed), None)
        if rel is None:
            if not check:
                return None
            have = ", ".join(f"{b}/{p}" for b, p in self.available()) or "none"
            raise BundleError(f"{self.root}: no {precision} artifact for {backend} (this bundle has: {have})")
        if check:
            for a in self.companions(rel, precision):
                verify_artifact(self.root, a)
        return self.root / rel

    def companions(self, rel: str, precision: str) -> list[dict]:
        """The artifact entries a main file loads with: itself and its weights file (an IR's .bin)."""
        return [a for a in self.meta.get("artifacts", []) if a["precision"] == precision
                and Path(a["path"]).with_suffix("") == Path(rel).with_suffix("")]


def load_bundle(root) -> Bundle:
    root = Path(root)
    path = root / BUNDLE_FILE
    if not path.is_file():
        raise BundleError(f"{root}: not a model bundle (no {BUNDLE_FILE})")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{path}: invalid JSON ({e.msg}, line {e.lineno})") from None
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(f"{path}: schema_version {version!r}; this edge reads version {SCHEMA_VERSION}")
    for key in ("config", "artifacts"):
        if key not in meta:
            raise BundleError(f"{path}: missing {key!r}")
    return Bundle(root, meta)


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_artifact(root: Path, entry: dict) -> None:
    path = root / entry["path"]
    if not path.is_file():
        raise BundleError(f"{path}: artifact listed in {BUNDLE_FILE} is missing")
    if path.stat().st_size != entry["size"] or sha256_file(path) != entry["sha256"]:
        raise BundleError(f"{path}: sha256 does not match {BUNDLE_FILE}; the file was changed or corrupted, "
                          "refusing to run it")


def artifact_entry(root: Path, rel: str, backend: str, precision: str, role: str = "model") -> dict:
    path = Path(root) / rel
    return {"backend": backend, "precision": precision, "path": rel, "role": role,
            "sha256": sha256_file(path), "size": path.stat().st_size}


def write_bundle_json(root, meta: dict) -> Path:
    meta = {"schema_version": SCHEMA_VERSION, **meta}
    path = Path(root) / BUNDLE_FILE
    path.write_text(json.dumps(meta, indent=1, sort_keys=False) + "\n")
    return path
