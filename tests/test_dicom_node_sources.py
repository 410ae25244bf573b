"""The DICOM node answers hand images as modalities write them: with patient and study attributes left out (each
alone, and all of them), and in every transfer syntax the reader decodes here. Each is stored by dcmtk's
storescu; every SR is validated by dciodvfy (a missing dcmtk or dicom3tools skips, and fails under CI)."""
from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("pynetdicom")
pytest.importorskip("highdicom")

import pydicom  # noqa: E402
from pydicom.uid import UID  # noqa: E402

from edge.runtime import default_bundle_path  # noqa: E402
from edge.serve.dicom_node import DicomNode, readable_transfer_syntaxes  # noqa: E402
from edge.serve.service import Service  # noqa: E402
from edge.serve.sr import SOURCE_TYPE2, build_sr, read_sr  # noqa: E402
from dicom_fixtures import (DCMTK_ENCODERS, JPEG2000, OPTIONAL_SOURCE_ATTRIBUTES, dciodvfy_errors, dcmtk,  # noqa: E402
                            encoded, radiograph_dataset, require_tool, without, write)

SAMPLE = sorted((default_bundle_path() / "samples").glob("*.png"))[1]
TIMEOUT_S = 60


@pytest.fixture(scope="module")
def service() -> Service:
    return Service.load()


@pytest.fixture
def node(service, tmp_path):
    n = DicomNode(service, sr_dir=tmp_path / "sr").start("127.0.0.1", 0)
    yield n
    n.stop()


def _storescu(node, files: list[Path], *options: str) -> subprocess.CompletedProcess:
    storescu = require_tool(dcmtk("storescu"), "dcmtk's storescu", "dcmtk")
    return subprocess.run([storescu, *options, "-aec", "BONEAGE", "127.0.0.1", str(node.port), *map(str, files)],
                          capture_output=True, text=True, timeout=TIMEOUT_S)


def _proposing(syntax: str, sop_class: str, folder: Path) -> list[str]:
    """storescu options that propose only this transfer syntax for this SOP class (a dcmtk profile file): the
    image then goes in that syntax or not at all (storescu itself has no decoder to fall back on)."""
    cfg = folder / "storescu.cfg"
    cfg.write_text(f"[[TransferSyntaxes]]\n[Only]\nTransferSyntax1 = {syntax}\n[[PresentationContexts]]\n[Image]\n"
                   f"PresentationContext1 = {sop_class}\\Only\n[[Profiles]]\n[Test]\nPresentationContexts = Image\n")
    return ["-xf", str(cfg), "Test"]


def _reports(folder: Path) -> dict:
    """{source SOP Instance UID: (SR dataset, path)} of the SRs the node wrote."""
    out = {}
    for path in folder.glob("*.dcm"):
        sr = pydicom.dcmread(path)
        out[read_sr(sr)["source"]] = (sr, path)
    return out


def test_every_source_lacking_attributes_gets_a_valid_sr(node, service, tmp_path):
    """DX images as many modalities write them: each optional attribute absent alone, then all absent. Every
    one is answered (storescu: no failure status), with an SR that dciodvfy passes, carrying what the image has
    and empty what it lacks."""
    cases = {name: (name,) for name in OPTIONAL_SOURCE_ATTRIBUTES} | {"all": OPTIONAL_SOURCE_ATTRIBUTES}
    sources = {name: without(radiograph_dataset(SAMPLE, "DX"), *gone) for name, gone in cases.items()}
    files = [write(ds, tmp_path / f"{name}.dcm") for name, ds in sources.items()]
    out = _storescu(node, files)
    assert out.returncode == 0 and "Status" not in out.stdout + out.stderr, out.stdout + out.stderr
    reports = _reports(tmp_path / "sr")
    assert len(reports) == len(cases)
    for name, ds in sources.items():
        sr, path = reports[ds.SOPInstanceUID]
        assert not dciodvfy_errors(path), (name, dciodvfy_errors(path))
        for keyword in SOURCE_TYPE2:
            assert keyword in sr and sr.get(keyword) == ds.get(keyword, ""), (name, keyword)
        if "StudyInstanceUID" in ds:
            assert sr.StudyInstanceUID == ds.StudyInstanceUID
        fields = read_sr(sr)
        want = service.model.predict(tmp_path / f"{name}.dcm", sex=ds.get("PatientSex") or None)
        assert fields["Bone age"][0] == pytest.approx(want.bone_age_months, abs=0.005), name
        assert ("Sex the bone age was read against" in fields) == ("PatientSex" in ds), name
        assert ("Age" in fields) == ("PatientBirthDate" in ds and "StudyDate" in ds), name


def test_the_stored_image_is_never_changed():
    """highdicom is given a copy with the empty Type 2 attributes: the image the node received keeps its own."""
    from edge.runtime import Prediction

    ds = without(radiograph_dataset(SAMPLE, "DX"), *OPTIONAL_SOURCE_ATTRIBUTES)
    before = {e.tag: e.value for e in ds}
    record = Prediction("hand.dcm", 150.0, 0.9, "male", "openvino", "int8", 1.0)
    sr = build_sr(record, ds, {"name": "test", "version": "1"})
    assert {e.tag: e.value for e in ds} == before
    assert sr.PatientName == "" and sr.StudyInstanceUID and sr.StudyInstanceUID == build_sr(
        record, ds, {"name": "test", "version": "1"}).StudyInstanceUID  # made up, the same each time


@pytest.mark.parametrize("syntax", sorted(DCMTK_ENCODERS.keys() | JPEG2000.keys()), ids=lambda u: UID(u).keyword)
def test_every_readable_transfer_syntax_is_accepted(node, service, tmp_path, syntax, caplog):
    """An 8-bit and a 12-bit DX written in this transfer syntax (dcmtk's dcmconv/dcmcjpeg/dcmcjpls/dcmcrle, or
    Pillow for JPEG 2000) and sent by storescu proposing only that syntax: accepted and answered, with the SR the runtime gives
    the same file, exactly where the reader decodes it here; refused at association where it does not, and the
    refusal logged with the SOP class and the transfer syntax."""
    paths = []
    for bits in (8, 12):
        source = write(radiograph_dataset(SAMPLE, "DX", bits=bits), tmp_path / f"source-{bits}.dcm")
        paths.append(encoded(source, syntax, tmp_path / f"encoded-{bits}.dcm"))
        if paths[-1] is None:
            pytest.skip(f"no installed tool writes {UID(syntax).name}")
        assert pydicom.dcmread(paths[-1], stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax
    with caplog.at_level(logging.WARNING, logger="edge.serve.dicom"):
        out = _storescu(node, paths, *_proposing(syntax, pydicom.dcmread(paths[0]).SOPClassUID, tmp_path))
    reports = _reports(tmp_path / "sr")
    if syntax not in readable_transfer_syntaxes():
        assert out.returncode != 0 and "no acceptable presentation contexts" in out.stderr.lower(), out.stderr
        assert not reports
        logged = [r.getMessage() for r in caplog.records if "no presentation context" in r.getMessage()]
        assert logged and f"Digital X-Ray Image Storage - For Presentation in {UID(syntax).name}" in logged[0]
        return
    assert not any("no presentation context" in r.getMessage() for r in caplog.records)
    assert out.returncode == 0 and "Failed" not in out.stderr, out.stdout + out.stderr
    assert len(reports) == 2
    for path in paths:
        sr, sr_path = reports[pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID]
        want = service.model.predict(path, sex="M")
        assert read_sr(sr)["Bone age"][0] == pytest.approx(want.bone_age_months, abs=0.005), path.name
        assert not dciodvfy_errors(sr_path)
