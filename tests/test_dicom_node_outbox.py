"""The DICOM node's outbound queue (edge.serve.outbox) against real peers on loopback: a destination down then up
(dcmtk's storescp started late), one answering a failure status, one that accepts TCP and never answers, one
that never answers the C-STORE, one that refuses one report for good, and a restart. No report is lost, none holds
up the others; nothing about the patient is in the queue's file names or its status."""
from __future__ import annotations

import copy
import json
import re
import socket
import subprocess
import threading
import time

import pytest

pytest.importorskip("pynetdicom")
pytest.importorskip("highdicom")

import pydicom  # noqa: E402
from pydicom.uid import ComprehensiveSRStorage  # noqa: E402
from pynetdicom import AE, evt  # noqa: E402

from edge.runtime import Prediction, default_bundle_path  # noqa: E402
from edge.serve.dicom_node import Peer  # noqa: E402
from edge.serve.outbox import Outbox  # noqa: E402
from edge.serve.sr import build_sr  # noqa: E402
from dicom_fixtures import dcmtk, radiograph_dataset, require_tool  # noqa: E402

SAMPLE = sorted((default_bundle_path() / "samples").glob("*.png"))[1]
WAIT_S = 30
QUEUE_NAME = re.compile(r"\d{20}-[0-9a-f]{8}\.dcm")  # arrival time and a random number: nothing else


@pytest.fixture(scope="module")
def sr():
    """A report as the node builds it, for a patient whose details must never leave the report."""
    source = radiograph_dataset(SAMPLE, "DX", patient_name="Doe^Jane", patient_id="PID-4242")
    record = Prediction("hand.dcm", 150.0, 0.9, "male", "openvino", "int8", 1.0, given_sex="male")
    return build_sr(record, source, {"name": "test", "version": "1"})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _until(condition, what: str, wait_s: float = WAIT_S):
    deadline = time.monotonic() + wait_s
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def _scp(port: int, answers: list[int], got: list):
    """A pynetdicom SCP answering each C-STORE with the next status of `answers` (then Success)."""
    def on_store(event):
        got.append(time.monotonic())
        return answers.pop(0) if answers else 0x0000

    ae = AE(ae_title="TESTPACS")
    ae.add_supported_context(ComprehensiveSRStorage)
    return ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])


def _no_patient_data(outbox: Outbox) -> None:
    text = json.dumps(outbox.status()) + " ".join(p.name for p in outbox.folder.iterdir())
    assert not any(v in text for v in ("Doe", "Jane", "PID-4242", "20140102", "ACC1"))
    assert all(QUEUE_NAME.fullmatch(p.name) for p in outbox.items())


def test_destination_down_then_up(sr, tmp_path):
    """The PACS (dcmtk's storescp) is down: the report waits, the error shows; it starts: the report arrives
    and leaves the queue."""
    storescp = require_tool(dcmtk("storescp"), "dcmtk's storescp", "dcmtk")
    port = _free_port()
    outbox = Outbox(tmp_path / "q", Peer("TESTPACS", "127.0.0.1", port), timeout_s=5, first_retry_s=0.2,
                    max_retry_s=0.5).start()
    pacs = None
    try:
        outbox.put(sr)
        status = _until(lambda: (s := outbox.status())["last_error"] and s, "a failed send")
        assert status["queued"] == 1 and status["sent"] == 0 and f"127.0.0.1:{port}" in status["last_error"]
        _no_patient_data(outbox)
        (tmp_path / "pacs").mkdir()
        pacs = subprocess.Popen([storescp, "-aet", "TESTPACS", "-od", str(tmp_path / "pacs"), str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _until(lambda: outbox.status()["sent"] == 1, "the report to arrive")
        assert outbox.items() == []
        [stored] = list((tmp_path / "pacs").iterdir())
        assert pydicom.dcmread(stored).SOPInstanceUID == sr.SOPInstanceUID
    finally:
        outbox.stop()
        if pacs:
            pacs.terminate()
            pacs.wait(timeout=10)


def test_failure_status_is_retried_with_backoff(sr, tmp_path):
    """A PACS answering 0xA700 (out of resources) twice: the report stays queued, is sent again after waits
    that double, and leaves the queue only once the PACS answers Success."""
    got: list = []
    port = _free_port()
    server = _scp(port, [0xA700, 0xA700], got)
    outbox = Outbox(tmp_path / "q", Peer("TESTPACS", "127.0.0.1", port), timeout_s=5, first_retry_s=0.5).start()
    try:
        outbox.put(sr)
        _until(lambda: outbox.status()["sent"] == 1, "the third try to succeed")
        assert len(got) == 3 and outbox.items() == []
        assert outbox.status()["last_error"] == "C-STORE answered 0xa700"
        first, second = got[1] - got[0], got[2] - got[1]  # waits of 0.5 s, then 1 s, each plus one try's time
        assert first >= 0.5 and second >= 1.0 and second - first > 0.3
    finally:
        outbox.stop()
        server.shutdown()


def test_peer_that_never_answers_times_out(sr, tmp_path):
    """A peer that accepts the TCP connection and never says a word: each try gives up after the timeout, the
    report stays queued, and once a real PACS listens there it is delivered."""
    port = _free_port()
    listener = socket.create_server(("127.0.0.1", port))
    held: list = []
    threading.Thread(target=lambda: held.extend(listener.accept() for _ in range(100)), daemon=True).start()
    outbox = Outbox(tmp_path / "q", Peer("TESTPACS", "127.0.0.1", port), timeout_s=1, first_retry_s=0.2,
                    max_retry_s=0.4).start()
    server = None
    try:
        t0 = time.monotonic()
        outbox.put(sr)
        error = _until(lambda: outbox.status()["last_error"], "a timeout", wait_s=10)
        assert "no answer within 1 s" in error and time.monotonic() - t0 < 5
        assert outbox.status()["queued"] == 1 and held
        listener.close()
        for conn, _ in held:
            conn.close()
        got: list = []
        server = _until(lambda: _try_scp(port, got), "the port to be free")
        _until(lambda: outbox.status()["sent"] == 1, "the report to arrive")
        assert len(got) == 1
    finally:
        t0 = time.monotonic()
        outbox.stop()
        assert time.monotonic() - t0 < 5  # stopping never waits on a silent peer for long
        if server:
            server.shutdown()


def test_peer_that_never_answers_the_store_times_out(sr, tmp_path):
    """A PACS that takes the association and the report but gives no C-STORE answer in time: the try is given up
    after the timeout (DIMSE) and the report sent again; the same SOP Instance UID both times, so a PACS that did
    keep the first copy files the second as the same object."""
    got: list = []

    def on_store(event):
        got.append(event.request.AffectedSOPInstanceUID)
        if len(got) == 1:
            time.sleep(2.5)  # longer than the outbox waits
        return 0x0000

    ae = AE(ae_title="TESTPACS")
    ae.add_supported_context(ComprehensiveSRStorage)
    port = _free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    outbox = Outbox(tmp_path / "q", Peer("TESTPACS", "127.0.0.1", port), timeout_s=1, first_retry_s=0.2).start()
    try:
        outbox.put(sr)
        _until(lambda: outbox.status()["sent"] == 1, "the second try to succeed")
        assert outbox.status()["last_error"] == "no C-STORE answer within 1 s"
        assert got == [sr.SOPInstanceUID] * 2 and outbox.items() == []
    finally:
        outbox.stop()
        server.shutdown()


def _try_scp(port, got):
    try:
        return _scp(port, [], got)
    except OSError:
        return None


def test_queue_survives_a_restart(sr, tmp_path):
    """Reports queued while the PACS was down are sent, oldest first, by the next Outbox on the same folder;
    a write a crash cut short (.part) is dropped (its image was never answered Success), a damaged file is set
    aside (.unreadable) instead of blocking the queue."""
    down = Outbox(tmp_path / "q", Peer("TESTPACS", "127.0.0.1", _free_port()), timeout_s=2, first_retry_s=5).start()
    second = copy.deepcopy(sr)  # (Dataset.copy() shares the elements: the UIDs would be one)
    second.SOPInstanceUID = pydicom.uid.generate_uid()
    down.put(sr)
    down.put(second)
    down.stop()
    assert len(down.items()) == 2
    (tmp_path / "q" / "00000000000000000001-deadbeef.part").write_bytes(b"half a report")
    (tmp_path / "q" / "00000000000000000002-cafebabe.dcm").write_bytes(b"damaged on disk")
    order: list = []
    port = _free_port()
    ae = AE(ae_title="TESTPACS")
    ae.add_supported_context(ComprehensiveSRStorage)
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[
        (evt.EVT_C_STORE, lambda event: order.append(event.request.AffectedSOPInstanceUID) or 0x0000)])
    outbox = Outbox(tmp_path / "q", Peer("TESTPACS", "127.0.0.1", port)).start()
    try:
        _until(lambda: outbox.status()["sent"] == 2, "both reports")
        assert order == [sr.SOPInstanceUID, second.SOPInstanceUID]
        assert [p.name for p in (tmp_path / "q").iterdir()] == ["00000000000000000002-cafebabe.unreadable"]
    finally:
        outbox.stop()
        server.shutdown()


def test_a_report_refused_for_good_stays_queued_and_holds_up_none_behind_it(sr, tmp_path):
    """A PACS that refuses one report every time (0xA700 for its SOP Instance UID) and takes the others: the
    reports queued after it arrive while it waits; it stays queued on disk, never dropped, retried with a wait that
    doubles for it alone, its attempts and error in status(); once the PACS takes it, it leaves the queue too."""
    refused = copy.deepcopy(sr)  # (Dataset.copy() shares the elements)
    refused.SOPInstanceUID = pydicom.uid.generate_uid()
    others = []
    for _ in range(3):
        others.append(copy.deepcopy(sr))
        others[-1].SOPInstanceUID = pydicom.uid.generate_uid()
    refuse = {refused.SOPInstanceUID}
    got: list = []

    def on_store(event):
        uid = event.request.AffectedSOPInstanceUID
        got.append((uid, time.monotonic()))
        return 0xA700 if uid in refuse else 0x0000

    ae = AE(ae_title="TESTPACS")
    ae.add_supported_context(ComprehensiveSRStorage)
    port = _free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    outbox = Outbox(tmp_path / "q", Peer("TESTPACS", "127.0.0.1", port), timeout_s=5, first_retry_s=0.5,
                    max_retry_s=1.0)
    try:
        outbox.put(refused)  # the oldest: first in line
        for other in others[:2]:
            outbox.put(other)
        [stuck] = outbox.items()[:1]
        outbox.start()
        _until(lambda: outbox.status()["sent"] == 2, "the two reports behind the refused one")
        outbox.put(others[2])  # queued while the refused one waits: it goes too
        _until(lambda: outbox.status()["sent"] == 3, "a report queued later")
        _until(lambda: sum(uid in refuse for uid, _ in got) >= 4, "the refused report to be tried again")
        status = outbox.status()
        assert outbox.items() == [stuck] and stuck.exists()  # still queued, on disk, never deleted
        assert status["queued"] == 1 and status["sent"] == 3 and status["failing"] == 1
        assert status["destination_failures"] == 0  # the destination is fine: only this report is refused
        [entry] = status["retrying"]
        assert entry["file"] == stuck.name and entry["attempts"] >= 3
        assert entry["last_error"] == "C-STORE answered 0xa700" and entry["state"] in ("waiting to retry",
                                                                                        "retrying now")
        assert 0 <= entry["next_try_in_s"] <= 1.0
        tries = [t for uid, t in got if uid in refuse]
        waits = [b - a for a, b in zip(tries, tries[1:])]
        assert waits[0] >= 0.5 and all(w >= 0.95 for w in waits[1:]), waits  # 0.5 s, then 1 s (its max)
        assert {uid for uid, _ in got} - refuse == {o.SOPInstanceUID for o in others}
        _no_patient_data(outbox)
        refuse.clear()  # the PACS takes it now: the next retry delivers it
        _until(lambda: outbox.status()["sent"] == 4, "the refused report, once accepted")
        assert outbox.items() == [] and outbox.status()["retrying"] == []
    finally:
        outbox.stop()
        server.shutdown()


def test_a_destination_down_is_waited_for_once_not_once_per_report(sr, tmp_path):
    """Nothing listening: the first report's failed association puts every report behind the destination's own
    wait (no knock per report); status says so; once a PACS listens, all of them arrive."""
    port = _free_port()
    outbox = Outbox(tmp_path / "q", Peer("TESTPACS", "127.0.0.1", port), timeout_s=2, first_retry_s=0.3,
                    max_retry_s=0.6)
    reports = []
    for _ in range(3):
        reports.append(copy.deepcopy(sr))
        reports[-1].SOPInstanceUID = pydicom.uid.generate_uid()
        outbox.put(reports[-1])
    outbox.start()
    server = None
    try:
        _until(lambda: outbox.status()["destination_failures"] >= 3, "three failed associations")
        status = outbox.status()
        assert status["queued"] == 3 and status["sent"] == 0
        assert status["failing"] == 1 and status["retrying"][0]["attempts"] >= 3  # the oldest, tried each time
        got: list = []
        server = _until(lambda: _try_scp(port, got), "the port to be free")
        _until(lambda: outbox.status()["sent"] == 3, "all three reports")
        assert outbox.items() == [] and outbox.status()["destination_failures"] == 0
    finally:
        outbox.stop()
        if server:
            server.shutdown()
