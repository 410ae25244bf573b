"""One loaded model shared by the web page, the JSON API and the DICOM node.

Uploads and received datasets are decoded from memory: on Linux they are handed to the runtime as an anonymous
in-memory file (memfd), so the runtime's one decoding path (edge.imaging, DICOM tags included) reads them and
nothing touches the disk. Elsewhere a private temporary folder holds the file for the duration of the call.
"""
from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

from edge import output
from edge.clinical import heatmap, report
from edge.imaging import to_unit
from edge.preprocess import to_model_input
from edge.runtime import BoneAgeModel, Failure, Prediction
from edge.serve import given
from edge.serve.given import Given


THUMB_PX = 160  # a card's thumbnail on the page, longer side


class Service:
    """Concurrent requests call one BoneAgeModel from many threads: every backend is safe for that (OpenVINO
    keeps a pool of infer requests; tests/test_hardening.py), so nothing here serialises them."""

    def __init__(self, model: BoneAgeModel):
        self.model = model
        self.output_info = output.model_info(model.bundle)  # model and model_version, on every record

    @classmethod
    def load(cls, bundle=None, backend="auto", precision="auto", threads=None) -> "Service":
        return cls(BoneAgeModel.load(bundle, backend=backend, precision=precision, threads=threads))

    def predict(self, uploads: list[tuple[str, bytes]], sex=None, age=None,
                per_file: list[Given] | None = None, thumbnails: bool = False):
        """[(file name as the user named it, file bytes)] -> one record each, in order, named by that name, in
        clinical context (edge.clinical). per_file: what the form gives for each upload; sex, age: for the whole
        batch, filling only what neither per_file nor a DICOM's own tags give (edge.serve.given). A bad
        batch-wide value is a ValueError. thumbnails: (records, [a small PNG data: URI of each image as the model
        read it, None where it could not be decoded]), from the image the estimate decoded (no second decode)."""
        names = [safe_name(name) for name, _ in uploads]
        decoded: dict[int, object] = {}
        with memory_files([data for _, data in uploads]) as paths:
            results = self._predict_paths(paths, sex, age, per_file, decoded.__setitem__ if thumbnails else None)
            records = [_renamed(r, path, name) for r, path, name in zip(results, paths, names)]
        if not thumbnails:
            return records
        return records, [thumbnail(decoded[k]) if k in decoded else None for k in range(len(uploads))]

    def _predict_paths(self, paths: list[str], sex, age, per_file=None,
                       on_decoded=None) -> list[Prediction | Failure]:
        # One rule for the patient (edge.clinical.patient.resolve, via edge.serve.given), resolved once here and
        # handed to the runtime as it is: the runtime reads no tag again.
        patients = given.patients(paths, per_file, Given(sex or "", age or ""))
        # Batch 1 in the calling thread: a request's files are few, and a pool of decode threads per request
        # would only compete with the other requests' threads.
        return self.model.predict_many(paths, batch_size=1, patients=patients, workers=0, on_decoded=on_decoded)

    def report(self, upload: tuple[str, bytes], sex=None, age=None, per_file: Given | None = None) -> str:
        """One upload -> the printable HTML page of edge.clinical.report (radiograph, occlusion heatmap, context,
        the patient and study a DICOM names). A file that gives no estimate is a ValueError naming it."""
        name = safe_name(upload[0])
        decoded: dict[int, object] = {}  # the image as the estimate decoded it: the map explains that very input
        with memory_files([upload[1]]) as [path]:
            result = self._predict_paths([path], sex, age, per_file and [per_file], decoded.__setitem__)[0]
            result = _renamed(result, path, name)
            if isinstance(result, Failure):
                raise ValueError(f"{name}: {result.error}")
            decoded = decoded[0]
            patient = report.identity(path)
        heat = heatmap.occlusion_map(self.model, to_model_input(decoded, self.model.spec), result.given_sex)
        image = to_unit(decoded)
        return report.render(result, self.model.bundle, image, heatmap.overlay(image, heat, self.model.spec),
                             patient=patient)

    def model_info(self) -> dict:
        """Bundle name, version, backend, input spec and the measured accuracy stored in bundle.json."""
        meta = self.model.bundle.meta
        spec = self.model.spec
        return {"name": meta.get("model", {}).get("name", ""), "version": meta.get("model", {}).get("version", ""),
                "backend": self.model.backend_name, "precision": self.model.precision,
                "input": {"height": spec.height, "width": spec.width, "channels": spec.channels},
                "uses_sex": self.model.uses_sex, "reference_metrics": meta.get("reference_metrics", {})}


def thumbnail(decoded) -> str:
    """A small PNG (data: URI) of a decoded radiograph (a DICOM windowed as for the estimate), longer side
    THUMB_PX."""
    return report.png_uri(report.picture(to_unit(decoded), THUMB_PX))


def safe_name(name: str | None) -> str:
    """A client's file name as a plain base name: no folders, no control characters, bounded length."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = re.sub(r"[\x00-\x1f\x7f]", "", base).strip()
    return base[:200] or "upload"


def _renamed(result, path: str, name: str):
    """The runtime names a result by the path it read; the user knows the upload's name."""
    if isinstance(result, Failure):
        return dataclasses.replace(result, file=name, error=result.error.replace(path, name))
    return dataclasses.replace(result, file=name)


@contextmanager
def memory_files(blobs: list[bytes]):
    """Paths the runtime can open, one per blob, gone when the block exits."""
    if hasattr(os, "memfd_create"):
        fds = []
        try:
            for data in blobs:
                fds.append(os.memfd_create("edge-serve-upload", os.MFD_CLOEXEC))
                with open(fds[-1], "wb", closefd=False) as f:
                    f.write(data)
            yield [f"/proc/self/fd/{fd}" for fd in fds]
        finally:
            for fd in fds:
                os.close(fd)
    else:  # not Linux: a private folder, removed with its files when the call ends
        with tempfile.TemporaryDirectory(prefix="edge-serve-") as tmp:
            paths = [Path(tmp) / f"upload-{k}" for k in range(len(blobs))]
            for p, data in zip(paths, blobs):
                p.write_bytes(data)
            yield [str(p) for p in paths]
