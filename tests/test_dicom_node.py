"""The DICOM node end to end on loopback: a real hand radiograph DICOM (built from a bundled sample) is stored
to the node by real clients (pynetdicom, and dcmtk's storescu where installed); the Structured Report arrives at
a test SCP and is read back field by field (and validated by dciodvfy). Access and resilience: the AE titles
checked, refusals logged, idle connections timed out without blocking C-ECHO. Sources lacking attributes and
compressed transfer syntaxes: test_dicom_node_sources.py; the outbound queue: test_dicom_node_outbox.py."""
from __future__ import annotations

import json
import logging
import queue
import socket
import subprocess
import sys
import time

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
from edge.serve.outbox import Outbox  # noqa: E402
from edge.serve.service import Service  # noqa: E402
from edge.serve.sr import read_sr  # noqa: E402
from dicom_fixtures import dciodvfy_errors, dcmtk, radiograph_dataset, require_tool, write  # noqa: E402

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
                  sr_dir=tmp_path / "sr", queue_dir=tmp_path / "outbox").start("127.0.0.1", 0)
    yield n
    n.stop()


def _associate(node, calling="MODALITY", contexts=IMAGE_CLASSES, called="BONEAGE"):
    ae = AE(ae_title=calling)
    for uid in contexts:
        ae.add_requested_context(uid, ExplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    return ae.associate("127.0.0.1", node.port, ae_title=called)


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
    assert not dciodvfy_errors(on_disk[0])


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
    # The summary says the same numbers in words; the warnings are the record's (none for this sample).
    bone_age = f"({fields['Bone age'][0]:.0f} mo)"
    assert fields["Summary"].startswith("Bone age ") and bone_age in fields["Summary"]
    assert f"read against sex {want.given_sex}" in fields["Summary"] if want.given_sex else "sex-blind" in \
        fields["Summary"]
    assert (want.warning in fields["Warning"]) if want.warning else not any(
        w.startswith("given sex") for w in fields.get("Warning", []))


def test_dcmtk_storescu(node, receiver, service, tmp_path):
    storescu = require_tool(dcmtk("storescu"), "dcmtk's storescu", "dcmtk")
    source = write(radiograph_dataset(SAMPLE, "DX"), tmp_path / "hand.dcm")
    out = subprocess.run([storescu, "-aet", "STORESCU", "-aec", "BONEAGE", "127.0.0.1", str(node.port), str(source)],
                         capture_output=True, text=True, timeout=WAIT_S)
    assert out.returncode == 0, out.stdout + out.stderr
    _, sr = receiver[1].get(timeout=WAIT_S)
    _check_sr(sr, pydicom.dcmread(source), service.model.predict(source, sex="M"), service.model.bundle.meta)
    echoscu = dcmtk("echoscu")
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


def test_refused_image_gets_the_reason(node, receiver, caplog):
    """The reason goes back to the sender and, being about the pixels, to the log; nothing about the patient."""
    if not hasattr(edge.runtime, "Rejected"):
        pytest.skip("the runtime has no input check (edge.quality) yet")
    import numpy as np
    from PIL import Image, ImageFilter

    blurred = radiograph_dataset(SAMPLE, "DX")
    pixels = np.frombuffer(blurred.PixelData, np.uint8).reshape(blurred.Rows, blurred.Columns)
    blurred.PixelData = Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(16)).tobytes()
    with caplog.at_level(logging.WARNING, logger="edge.serve.dicom"):
        status = _store(node, blurred)
    assert status.Status == 0xC000 and status.ErrorComment.startswith("too blurred")
    assert receiver[1].empty()
    [line] = [r.getMessage() for r in caplog.records if "refused by the input check" in r.getMessage()]
    assert line.startswith("C-STORE from MODALITY: image refused by the input check: too blurred")
    assert not any(v in line for v in ("Test", "TEST-0001", "20140102", "ACC1", blurred.SOPInstanceUID))


def test_send_to_is_parsed_and_checked():
    assert Peer.parse("PACS@10.0.0.5:104") == Peer("PACS", "10.0.0.5", 104)
    for bad in ("PACS", "PACS@host", "@host:104", "PACS@host:0", "A" * 17 + "@host:104"):
        with pytest.raises(ValueError, match="send-to"):
            Peer.parse(bad)


def test_node_needs_a_destination(service):
    with pytest.raises(ValueError, match="--sr-dir"):
        DicomNode(service)


def test_absent_destination_does_not_stop_the_node(service, tmp_path):
    """The PACS is down: the image is still answered (the SR is in --sr-dir and queued) and the node carries on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    n = DicomNode(service, send_to=Peer("DOWN", "127.0.0.1", closed), sr_dir=tmp_path / "sr",
                  queue_dir=tmp_path / "q").start("127.0.0.1", 0)
    try:
        for _ in range(2):
            assert _store(n, radiograph_dataset(SAMPLE, "DX")).Status == 0x0000
        assert len(list((tmp_path / "sr").glob("*.dcm"))) == 2
        assert len(n.outbox.items()) == 2
    finally:
        n.stop()


def test_edge_serve_runs_the_node(tmp_path, receiver):
    """`edge-serve --dicom-port N --dicom-host 0.0.0.0 --sr-dir D --allow-ae A --send-to P --queue-dir Q` as a
    clinic would start it (the node reachable by modalities, the page on 127.0.0.1), with its PACS down: the
    report waits in the queue, /v1/health says so, and it is sent once the PACS is up, after edge-serve was
    stopped and the queue picked up again (a restart)."""
    from conftest import REPO, repo_env

    ports = []
    for _ in range(3):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    port, down, web = ports
    log = tmp_path / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli.serve", "--port", str(web), "--dicom-port", str(port),
                             "--dicom-host", "0.0.0.0", "--ae-title", "HANDS", "--allow-ae", "MODALITY",
                             "--sr-dir", str(tmp_path / "sr"), "--send-to", f"TESTPACS@127.0.0.1:{down}",
                             "--queue-dir", str(tmp_path / "q")],
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
        queued = list((tmp_path / "q").iterdir())
        assert len(queued) == 1 and queued[0].suffix == ".dcm"
        while "dicom_outbox" not in (health := _get_json(f"http://127.0.0.1:{web}/v1/health")):  # page starting
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        assert health["dicom_outbox"]["queued"] == 1
        text = log.read_text()
        assert "DICOM node HANDS on 0.0.0.0" in text and "the DICOM node listens on 0.0.0.0" in text
        assert f"http://127.0.0.1:{web}/" in text
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    outbox = Outbox(tmp_path / "q", receiver[0], "HANDS").start()  # the next start, the PACS now up
    try:
        caller, got = receiver[1].get(timeout=WAIT_S)
        assert caller == "HANDS" and got.SOPInstanceUID == sr.SOPInstanceUID
    finally:
        outbox.stop()
    assert not list((tmp_path / "q").iterdir())
    bad = subprocess.run([sys.executable, "-m", "edge.cli.serve", "--dicom-port", "0"], cwd=REPO, env=repo_env(),
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--sr-dir" in bad.stderr and "Traceback" not in bad.stderr


def _get_json(url: str) -> dict:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read())
    except OSError:  # not listening yet
        return {}


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


def test_sr_carries_the_warnings(node, receiver, service, tmp_path):
    """A boy's radiograph sent as a girl's: the SR says so, as edge-infer does; a sample the network reads with
    P(male) near 0.5: the SR says the sex call is uncertain (where the bundle's calibration says so)."""
    boy = radiograph_dataset(SAMPLE, "DX", sex="F")
    assert _store(node, boy).Status == 0x0000
    fields = read_sr(receiver[1].get(timeout=WAIT_S)[1])
    want = service.model.predict(write(boy, tmp_path / "boy.dcm"), sex="F")
    assert want.warning.startswith("given sex female, but the image reads as male")
    assert want.warning in fields["Warning"]
    assert fields["Sex the bone age was read against"] == "Female" and fields["Sex as seen in the image"] == "Male"
    assert "read against sex female" in fields["Summary"] and "reads as male" in fields["Summary"]

    unsure = radiograph_dataset(sorted(SAMPLE.parent.glob("*.png"))[0], "DX", sex="F")
    data = write(unsure, tmp_path / "unsure.dcm").read_bytes()
    record = service.predict([("unsure.dcm", data)])[0]  # in clinical context, as the node reads it
    assert _store(node, unsure).Status == 0x0000
    fields = read_sr(receiver[1].get(timeout=WAIT_S)[1])
    assert any("uncertain" in w for w in fields.get("Warning", [])) == record.sex_uncertain
    assert not any(w.startswith("given sex") for w in fields.get("Warning", []))


# ---------------------------------------------------------------- access and resilience


def test_wrong_called_ae_title_is_refused_and_logged(node, caplog):
    """A refusal leaves one log line: calling AE, peer address, reason; never anything about a patient."""
    with caplog.at_level(logging.WARNING, logger="edge.serve.dicom"):
        assert _associate(node, called="OTHERNODE").is_rejected
        assert _associate(node, calling="INTRUDER").is_rejected
        assert _associate(node).is_established  # the right titles still get in (released by the server's end)
    lines = [r.getMessage() for r in caplog.records if "association refused" in r.getMessage()]
    assert len(lines) == 2, lines
    assert "'MODALITY' from 127.0.0.1:" in lines[0] and "called AE title 'OTHERNODE' is not this node's" in lines[0]
    assert "'INTRUDER' from 127.0.0.1:" in lines[1] and "calling AE title not allowed" in lines[1]


def test_idle_connections_neither_block_echo_nor_linger(service, tmp_path):
    """Twelve raw TCP connections that never send a byte (a port scanner, a half-open peer) and an association
    that goes quiet: C-ECHO by dcmtk's echoscu still answers at once, and the node drops them after its timeout.
    Over the association limit a request is refused at once, never left waiting."""
    echoscu = require_tool(dcmtk("echoscu"), "dcmtk's echoscu", "dcmtk")
    n = DicomNode(service, sr_dir=tmp_path / "sr", timeout_s=3, max_associations=14).start("127.0.0.1", 0)
    idle = [socket.create_connection(("127.0.0.1", n.port)) for _ in range(12)]
    quiet = _associate(n)  # an association that then says nothing (a modality that hung)
    try:
        assert quiet.is_established
        t0 = time.monotonic()
        echo = subprocess.run([echoscu, "-to", "10", "-aec", "BONEAGE", "127.0.0.1", str(n.port)],
                              capture_output=True, text=True, timeout=WAIT_S)
        assert echo.returncode == 0 and time.monotonic() - t0 < 3, echo.stderr
        more = [socket.create_connection(("127.0.0.1", n.port)) for _ in range(3)]  # now 15 > 14
        idle += more
        over = subprocess.run([echoscu, "-to", "10", "-aec", "BONEAGE", "127.0.0.1", str(n.port)],
                              capture_output=True, text=True, timeout=WAIT_S)
        assert over.returncode != 0 and "Local Limit Exceeded" in over.stdout + over.stderr
        idle[0].settimeout(10)
        t0 = time.monotonic()
        assert idle[0].recv(1) == b""  # closed by the node (ACSE timeout), not by this end
        assert time.monotonic() - t0 < 6
        while quiet.is_established:  # aborted by the node (network timeout)
            assert time.monotonic() - t0 < 8
            time.sleep(0.1)
        assert quiet.is_aborted
        time.sleep(0.5)
        assert subprocess.run([echoscu, "-to", "10", "-aec", "BONEAGE", "127.0.0.1", str(n.port)],
                              capture_output=True, timeout=WAIT_S).returncode == 0
    finally:
        for s in idle:
            s.close()
        n.stop()


def test_health_shows_the_queue(service, tmp_path):
    """/v1/health: the outbound queue's length, its oldest report's age, the last error; no patient data."""
    from fastapi.testclient import TestClient

    from edge.serve.web import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    n = DicomNode(service, send_to=Peer("DOWN", "127.0.0.1", closed), queue_dir=tmp_path / "q", timeout_s=2)
    n.outbox.first_retry_s = 0.2
    n.start("127.0.0.1", 0)
    try:
        ds = radiograph_dataset(SAMPLE, "DX", patient_name="Doe^Jane", patient_id="PID-77")
        assert _store(n, ds).Status == 0x0000
        client = TestClient(create_app(service, token="secret", outbox_status=n.outbox.status))
        deadline = time.monotonic() + WAIT_S
        while not (health := client.get("/v1/health").json())["dicom_outbox"]["last_error"]:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        queue_ = health["dicom_outbox"]
        assert queue_["queued"] == 1 and 0 <= queue_["oldest_age_s"] < WAIT_S and queue_["sent"] == 0
        assert f"127.0.0.1:{closed}" in queue_["last_error"]
        text = json.dumps(health)
        assert not any(v in text for v in ("Doe", "PID-77", "20140102", "ACC1", ds.StudyInstanceUID))
    finally:
        n.stop()
    assert TestClient(create_app(service)).get("/v1/health").json() == {"status": "ok"}
