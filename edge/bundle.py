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
        """Path of the main artifact; with check=True, verify sha256 of it and of every file it loads with."""
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
        """The artifact entries of every file a backend reads for `rel`: itself, an IR's .bin, an ONNX file's
        external weights (<file>.data). A file it reads that bundle.json does not list with a sha256 is refused."""
        entries = {a["path"]: a for a in self.meta.get("artifacts", [])}
        needed = [rel, *(r for r in _side_files(rel) if r in entries or (self.root / r).exists())]
        unlisted = [r for r in needed if r not in entries]
        if unlisted:
            raise BundleError(f"{self.root / unlisted[0]}: read with {rel} but not listed in {BUNDLE_FILE} with a "
                              "sha256; refusing to run an unchecked file")
        return [entries[r] for r in needed]


def _side_files(rel: str) -> list[str]:
    """Files a runtime reads beside a model file, by the exporters' naming (export/artifacts.py)."""
    p = Path(rel)
    return [str(p.with_suffix(".bin"))] if p.suffix == ".xml" else [rel + ".data"] if p.suffix == ".onnx" else []


MAX_BUNDLE_JSON = 16 << 20  # bytes; a real bundle.json is a few KB
MAX_INPUT_SIDE = 2048  # px; the network input (299 today), never the radiograph
_ARTIFACT_FIELDS = {"backend": str, "precision": str, "path": str, "sha256": str, "size": int}


def load_bundle(root) -> Bundle:
    """Read and check bundle.json. Every malformed file is a one-line BundleError naming what is wrong, never a
    traceback from deep inside the runtime (docs/HARDENING.md lists the cases)."""
    root = Path(root)
    path = root / BUNDLE_FILE
    if not path.is_file():
        raise BundleError(f"{root}: not a model bundle (no {BUNDLE_FILE})")
    if path.stat().st_size > MAX_BUNDLE_JSON:
        raise BundleError(f"{path}: larger than {MAX_BUNDLE_JSON >> 20} MB; not a bundle.json")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise BundleError(f"{path}: invalid JSON ({e.msg}, line {e.lineno})") from None
    except UnicodeDecodeError:
        raise BundleError(f"{path}: not UTF-8 text") from None
    except RecursionError:
        raise BundleError(f"{path}: nested too deeply to be a bundle.json") from None
    _check_meta(path, meta)
    return Bundle(root, meta)


def _check_meta(path: Path, meta) -> None:
    def refuse(problem: str):
        from edge.imaging import printable
        raise BundleError(f"{path}: {printable(problem)}")

    if not isinstance(meta, dict):
        refuse(f"holds a JSON {type(meta).__name__}; a bundle.json is an object")
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        refuse(f"schema_version {version!r}; this edge reads version {SCHEMA_VERSION}")
    for key, kind in (("config", dict), ("artifacts", list)):
        if key not in meta:
            refuse(f"missing {key!r}")
        if not isinstance(meta[key], kind):
            refuse(f"{key!r} must be a JSON {'object' if kind is dict else 'list'}")
    try:
        spec = ModelConfig.from_dict(meta["config"]).input
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        refuse(f"config: {e}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v <= MAX_INPUT_SIDE
               for v in (spec.channels, spec.height, spec.width)):
        refuse(f"config.input: height and width must be whole numbers up to {MAX_INPUT_SIDE} px")
    for k, entry in enumerate(meta["artifacts"]):
        if not isinstance(entry, dict):
            refuse(f"artifacts[{k}] must be an object")
        for name, kind in _ARTIFACT_FIELDS.items():
            if not isinstance(entry.get(name), kind) or isinstance(entry.get(name), bool):
                refuse(f"artifacts[{k}] needs {name!r} ({kind.__name__})")
        _check_relative(refuse, f"artifacts[{k}].path", entry["path"])
    samples = meta.get("samples", [])
    if not isinstance(samples, list) or not all(isinstance(s, dict) and isinstance(s.get("file"), str)
                                                 for s in samples):
        refuse("'samples' must be a list of objects with a 'file'")
    for k, sample in enumerate(samples):
        _check_relative(refuse, f"samples[{k}].file", sample["file"])


def _check_relative(refuse, what: str, rel: str) -> None:
    """A bundle's files stay inside the bundle: a relative path without '..'."""
    p = Path(rel)
    if not rel or p.is_absolute() or ".." in p.parts:
        refuse(f"{what} {rel!r} must be a path inside the bundle")


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
