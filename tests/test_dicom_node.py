"""The DICOM node end to end on loopback: a real hand radiograph DICOM (built from a bundled sample) is stored
to the node by real clients (pynetdicom, and dcmtk's storescu where installed); the Structured Report arrives at
a test SCP and is read back field by field (and validated by dciodvfy where installed)."""
from __future__ import annotations

import queue
import shutil
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

import edge.runtime

pytest.importorskip("pynetdicom")
pytest.importorskip("highdicom")

import pydicom  # noqa: E402
from pydicom.uid import ComprehensiveSRStorage, ExplicitVRLittleEndian  # noqa: E402
from pynetdicom import AE, evt  # noqa: E402
from pynetdicom.sop_class import DigitalXRayImageStorageForPresentation, Verification  # noqa: E402

from edge.runtime import default_bundle_path  # noqa: E402
from edge.serve.dicom_node import IMAGE_CLASSES, DicomNode, Peer  # noqa: E402
from edge.serve.service import Service  # noqa: E402
from edge.serve.sr import read_sr  # noqa: E402
from dicom_fixtures import radiograph_dataset, write  # noqa: E402

SAMPLE = sorted((default_bundle_path() / "samples").glob("*.png"))[1]
WAIT_S = 30


@pytest.fixture(scope="module")
def service() -> Service:
    return Service.load()


@pytest.fixture
def receiver():
    """A test SCP (stand-in for the PACS) collecting the SRs it is sent."""
    got: queue.Queue = queue.Queue()

    def on_store(event):
        ds = event.dataset
        ds.file_meta = event.file_meta
        got.put((event.assoc.requestor.ae_title, ds))
        return 0x0000

    ae = AE(ae_title="TESTPACS")
    ae.add_supported_context(ComprehensiveSRStorage, ExplicitVRLittleEndian)
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    yield Peer("TESTPACS", "127.0.0.1", server.server_address[1]), got
    server.shutdown()


@pytest.fixture
def node(service, receiver, tmp_path):
    n = DicomNode(service, ae_title="BONEAGE", allowed_callers=["MODALITY", "STORESCU"], send_to=receiver[0],
                  sr_dir=tmp_path / "sr").start("127.0.0.1", 0)
    yield n
    n.stop()


def _associate(node, calling="MODALITY", contexts=IMAGE_CLASSES):
    ae = AE(ae_title=calling)
    for uid in contexts:
        ae.add_requested_context(uid, ExplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    return ae.associate("127.0.0.1", node.port, ae_title="BONEAGE")


def _store(node, ds, calling="MODALITY"):
    assoc = _associate(node, calling)
    assert assoc.is_established
    try:
        return assoc.send_c_store(ds)
    finally:
        assoc.release()


def test_echo(node):
    assoc = _associate(node)
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()


@pytest.mark.parametrize("modality", ["DX", "CR", "OT"])
def test_store_answers_with_a_structured_report(node, receiver, service, tmp_path, modality):
    source = write(radiograph_dataset(SAMPLE, modality), tmp_path / "hand.dcm")
    ds = pydicom.dcmread(source)
    assert _store(node, ds).Status == 0x0000
    caller, sr = receiver[1].get(timeout=WAIT_S)
    assert caller == "BONEAGE"
    want = service.model.predict(source, sex=ds.PatientSex)  # the runtime on the same file, given its sex
    _check_sr(sr, ds, want, service.model.bundle.meta)
    on_disk = list((tmp_path / "sr").glob("*.dcm"))
    assert [p.stem for p in on_disk] == [sr.SOPInstanceUID]
    _dciodvfy_clean(on_disk[0])


def _check_sr(sr, ds, want, meta: dict) -> None:
    """sr answers the image ds; want: BoneAgeModel.predict on the same file; meta: bundle.json."""
    assert sr.SOPClassUID == ComprehensiveSRStorage
    assert sr.Modality == "SR"
    for same in ("PatientID", "PatientName", "PatientSex", "PatientBirthDate", "StudyInstanceUID", "AccessionNumber"):
        assert sr.get(same) == ds.get(same), same
    assert sr.SeriesInstanceUID != ds.SeriesInstanceUID and sr.SOPInstanceUID != ds.SOPInstanceUID
    assert sr.CompletionFlag == "COMPLETE" and sr.VerificationFlag == "UNVERIFIED"
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert evidence.ReferencedSOPInstanceUID == ds.SOPInstanceUID
    fields = read_sr(sr)
    assert fields["source"] == ds.SOPInstanceUID
    assert fields["Bone age"] == (pytest.approx(want.bone_age_months, abs=0.005), "mo")
    assert fields["Probability of male sex"] == (pytest.approx(want.p_male, abs=5e-5), "1")
    assert fields["Sex as seen in the image"] == want.sex.capitalize()
    if want.given_sex:
        assert fields["Sex the bone age was read against"] == want.given_sex.capitalize()
    assert (fields["Algorithm Name"], fields["Algorithm Version"]) == (meta["model"]["name"], meta["model"]["version"])
    assert fields["Finding Site"] == "Hand"
    if "intervals" in (meta.get("clinical") or {}):  # the bundle is calibrated: the SR carries the interval
        low, unit = fields["Bone age prediction interval lower limit"]
        high, _ = fields["Bone age prediction interval upper limit"]
        assert unit == "mo" and low < fields["Bone age"][0] < high
        assert fields["Bone age prediction interval coverage"] == (90.0, "%")
    # The image's own dates give the chronological age (PatientBirthDate 2014-01-02, StudyDate 2026-01-15).
    age, unit = fields["Age"]
    assert unit == "mo" and age == pytest.approx(144.4, abs=0.05)
    assert fields["Bone age minus chronological age"] == (pytest.approx(fields["Bone age"][0] - age, abs=0.02), "mo")
    assert fields["Bone age category"] in ("Delayed", "Within", "Advanced")
    assert "Bone age standard deviation score (Greulich-Pyle)" in fields


def _dciodvfy_clean(path: Path) -> None:
    """dciodvfy (dicom3tools) finds no error; warnings about the local coding scheme are expected."""
    if not shutil.which("dciodvfy"):
        warnings.warn("dciodvfy (Debian dicom3tools) not installed: the SR was not validated by it")
        return
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    errors = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]
    assert not errors, errors


def _dcmtk(tool: str) -> str | None:
    """dcmtk's tool, not pynetdicom's app of the same name that a virtualenv puts first on PATH."""
    for folder in ("/usr/bin", "/usr/local/bin"):
        path = Path(folder) / tool
        if path.is_file():
            out = subprocess.run([str(path), "--version"], capture_output=True, text=True)
            if "dcmtk" in (out.stdout + out.stderr).lower():
                return str(path)
    return None


def test_dcmtk_storescu(node, receiver, service, tmp_path):
    storescu = _dcmtk("storescu")
    if not storescu:
        pytest.skip("dcmtk's storescu not installed (Debian package dcmtk)")
    source = write(radiograph_dataset(SAMPLE, "DX"), tmp_path / "hand.dcm")
    out = subprocess.run([storescu, "-aet", "STORESCU", "-aec", "BONEAGE", "127.0.0.1", str(node.port), str(source)],
                         capture_output=True, text=True, timeout=WAIT_S)
    assert out.returncode == 0, out.stdout + out.stderr
    _, sr = receiver[1].get(timeout=WAIT_S)
    _check_sr(sr, pydicom.dcmread(source), service.model.predict(source, sex="M"), service.model.bundle.meta)
    echoscu = _dcmtk("echoscu")
    assert subprocess.run([echoscu, "-aet", "STORESCU", "-aec", "BONEAGE", "127.0.0.1", str(node.port)],
                          timeout=WAIT_S).returncode == 0


def test_calling_ae_not_allowed_is_rejected(node):
    assoc = _associate(node, calling="INTRUDER")
    assert assoc.is_rejected


def test_bad_dataset_gets_a_failure_status_and_the_node_carries_on(node, receiver):
    ds = radiograph_dataset(SAMPLE, "DX")
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]  # pixel data cut short: unreadable image
    status = _store(node, ds)
    assert status.Status == 0xC000
    assert "ErrorComment" in status and len(status.ErrorComment) <= 64
    blank = radiograph_dataset(SAMPLE, "OT")
    blank.PixelData = bytes(len(blank.PixelData))  # every pixel the same: not a radiograph
    assert _store(node, blank).Status == 0xC000
    assert receiver[1].empty()
    good = radiograph_dataset(SAMPLE, "DX")
    assert _store(node, good).Status == 0x0000
    assert receiver[1].get(timeout=WAIT_S)[1].StudyInstanceUID == good.StudyInstanceUID


def test_refused_image_gets_the_reason(node, receiver):
    if not hasattr(edge.runtime, "Rejected"):
        pytest.skip("the runtime has no input check (edge.quality) yet")
    import numpy as np
    from PIL import Image, ImageFilter

    blurred = radiograph_dataset(SAMPLE, "DX")
    pixels = np.frombuffer(blurred.PixelData, np.uint8).reshape(blurred.Rows, blurred.Columns)
    blurred.PixelData = Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(16)).tobytes()
    status = _store(node, blurred)
    assert status.Status == 0xC000 and status.ErrorComment.startswith("too blurred")
    assert receiver[1].empty()


def test_send_to_is_parsed_and_checked():
    assert Peer.parse("PACS@10.0.0.5:104") == Peer("PACS", "10.0.0.5", 104)
    for bad in ("PACS", "PACS@host", "@host:104", "PACS@host:0", "A" * 17 + "@host:104"):
        with pytest.raises(ValueError, match="send-to"):
            Peer.parse(bad)


def test_node_needs_a_destination(service):
    with pytest.raises(ValueError, match="--sr-dir"):
        DicomNode(service)


def test_absent_destination_does_not_stop_the_node(service, tmp_path):
    """The PACS is down: the image is still answered (the SR is in --sr-dir) and the node carries on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    n = DicomNode(service, send_to=Peer("DOWN", "127.0.0.1", closed), sr_dir=tmp_path / "sr").start("127.0.0.1", 0)
    try:
        for _ in range(2):
            assert _store(n, radiograph_dataset(SAMPLE, "DX")).Status == 0x0000
        assert len(list((tmp_path / "sr").glob("*.dcm"))) == 2
    finally:
        n.stop()


def test_edge_serve_runs_the_node(tmp_path):
    """`edge-serve --no-web --dicom-port N --sr-dir D --allow-ae A` as a clinic would start it."""
    from conftest import REPO, repo_env

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli.serve", "--no-web", "--dicom-port", str(port),
                             "--ae-title", "HANDS", "--allow-ae", "MODALITY", "--sr-dir", str(tmp_path / "sr")],
                            cwd=REPO, env=repo_env(), stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian)
        deadline = time.monotonic() + 120
        while not (assoc := ae.associate("127.0.0.1", port, ae_title="HANDS")).is_established:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        ds = radiograph_dataset(SAMPLE, "DX")
        assert assoc.send_c_store(ds).Status == 0x0000
        assoc.release()
        sr = pydicom.dcmread(next((tmp_path / "sr").glob("*.dcm")))
        assert read_sr(sr)["source"] == ds.SOPInstanceUID
        assert "DICOM node HANDS on 127.0.0.1" in log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    bad = subprocess.run([sys.executable, "-m", "edge.cli.serve", "--dicom-port", "0"], cwd=REPO, env=repo_env(),
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--sr-dir" in bad.stderr and "Traceback" not in bad.stderr


def test_unwritable_report_folder_is_a_failure_status(service, tmp_path):
    n = DicomNode(service, sr_dir=tmp_path / "sr").start("127.0.0.1", 0)
    try:
        (tmp_path / "sr").rmdir()
        (tmp_path / "sr").write_text("a file where the folder was")  # the SR cannot be written (as a full disk)
        status = _store(n, radiograph_dataset(SAMPLE, "DX"))
        assert status.Status == 0xC000 and "cannot answer the image" in status.ErrorComment
        assoc = _associate(n)
        assert assoc.send_c_echo().Status == 0x0000  # still answering
        assoc.release()
    finally:
        n.stop()
