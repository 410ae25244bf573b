"""The DICOM node's outbound queue: each Structured Report is written to a folder before the modality is told
Success, then sent by C-STORE until the destination accepts it.

A report is one file, written atomically (a ".part" file renamed when complete) and named by its arrival time and
a random number, never by anything about the patient. One thread sends the oldest first; a refused association,
a failure status or a peer that does not answer within the timeout is retried after a wait that doubles from
first_retry_s up to max_retry_s. The file is deleted only once the destination answered Success, so a report
survives a crash or a restart of edge-serve: the next Outbox on the same folder sends it.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

log = logging.getLogger("edge.serve.dicom")


class Outbox:
    def __init__(self, folder, peer, calling_ae: str = "BONEAGE", timeout_s: float = 30.0,
                 first_retry_s: float = 2.0, max_retry_s: float = 300.0):
        """peer: edge.serve.dicom_node.Peer; timeout_s: the longest wait for each answer of the destination."""
        self.folder, self.peer, self.calling_ae = Path(folder), peer, calling_ae
        self.timeout_s, self.first_retry_s, self.max_retry_s = timeout_s, first_retry_s, max_retry_s
        self.folder.mkdir(parents=True, exist_ok=True)
        for partial in self.folder.glob("*.part"):  # a write a crash cut short: its image was never answered
            partial.unlink()
        self.sent, self.last_error, self._last_error_at = 0, "", None
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="edge-serve-outbox", daemon=True)

    def start(self) -> "Outbox":
        self._thread.start()
        return self

    def stop(self, wait_s: float = 60.0) -> None:
        """Stop sending (what is queued stays on disk for the next start)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(wait_s)

    def put(self, sr: Dataset) -> None:
        """Queue one report on disk; raises (OSError) when it cannot be written, so the image is not answered."""
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        tmp = self.folder / f"{name}.part"
        with open(tmp, "wb") as f:
            sr.save_as(f, enforce_file_format=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.folder / f"{name}.dcm")
        self._wake.set()

    def items(self) -> list[Path]:
        """Queued reports, oldest first."""
        return sorted(self.folder.glob("*.dcm"))

    def status(self) -> dict:
        """For /v1/health: nothing about a patient (the file names are times, the errors the network's)."""
        items = self.items()
        oldest = _queued_at(items[0]) if items else None
        return {"destination": f"{self.peer.ae_title}@{self.peer.host}:{self.peer.port}", "queued": len(items),
                "oldest_age_s": round(time.time() - oldest, 1) if oldest else None, "sent": self.sent,
                "last_error": self.last_error, "last_error_at": self._last_error_at}

    def _run(self) -> None:
        wait = self.first_retry_s
        while not self._stop.is_set():
            items = self.items()
            if not items:
                self._wake.wait(5.0)  # put() wakes it; the poll also picks up files another process queued
                self._wake.clear()
                continue
            try:
                sr = pydicom.dcmread(items[0])
            except Exception as e:  # damaged on disk: kept aside for a person, never retried forever
                items[0].rename(items[0].with_suffix(".unreadable"))
                log.error("queued report %s cannot be read (%s): set aside as .unreadable", items[0].name,
                          type(e).__name__)
                continue
            try:
                self._send(sr)
            except Exception as e:  # any failure is retried: the report stays queued until it is accepted
                self.last_error = f"{type(e).__name__}: {e}" if not isinstance(e, SendError) else str(e)
                self._last_error_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
                log.warning("report to %s not sent (%s); %d queued, retry in %.0f s", self.peer.ae_title,
                            self.last_error, len(items), wait)
                self._stop.wait(wait)
                wait = min(wait * 2, self.max_retry_s)
                continue
            items[0].unlink()
            self.sent += 1
            wait = self.first_retry_s

    def _send(self, sr: Dataset) -> None:
        ae = AE(ae_title=self.calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = self.timeout_s
        ae.add_requested_context(sr.SOPClassUID, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        t0 = time.monotonic()
        assoc = ae.associate(self.peer.host, self.peer.port, ae_title=self.peer.ae_title)
        if not assoc.is_established:
            how = ("rejected" if assoc.is_rejected else
                   f"not made: no answer within {self.timeout_s:g} s" if time.monotonic() - t0 >= self.timeout_s
                   else "aborted by the peer" if assoc.is_aborted else "refused (nothing listening?)")
            raise SendError(f"association with {self.peer.host}:{self.peer.port} {how}")
        try:
            status = assoc.send_c_store(sr)
        finally:
            if assoc.is_established:
                assoc.release()
            else:
                assoc.abort()
        if "Status" not in status:
            raise SendError(f"no C-STORE answer within {self.timeout_s:g} s")
        if status.Status not in (0x0000, 0xB000, 0xB007, 0xB006):  # Success, or stored with a warning
            raise SendError(f"C-STORE answered {status.Status:#06x}")


def _queued_at(path: Path) -> float | None:
    """When a queued report arrived (its name's nanoseconds), None for a file not named by put()."""
    try:
        return int(path.name.split("-")[0]) / 1e9
    except ValueError:
        return None


class SendError(Exception):
    """What went wrong, in the network's words only (it goes to the log and /v1/health)."""
