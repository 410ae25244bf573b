"""The DICOM node's outbound queue: each Structured Report is written to a folder before the modality is told
Success, then sent by C-STORE until the destination accepts it.

A report is one file, written atomically (a ".part" file renamed when complete) and named by its arrival time and
a random number, never by anything about the patient. One thread sends, oldest first among the reports that are
due. Each report has its own retries: a refused association, a failure status or a peer that does not answer
within the timeout puts that report back after a wait that doubles, per report, from first_retry_s up to
max_retry_s, and the reports behind it go on meanwhile, so one report a PACS refuses for good never holds up the
others. An association that cannot be made at all (nothing listening, rejected, no answer) says the destination is
down for every report: then nothing is tried before the destination's own wait (doubling the same way, reset by
the next association made) is over, so a queue of many reports does not knock once per report. Nothing is ever dropped: the file is deleted only once the destination answered Success, so a report
survives a crash or a restart of edge-serve (the next Outbox on the same folder sends it), and one that keeps
failing stays queued, retried at the longest wait, with its attempts and last error in status().
"""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
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
        self._tries: dict[str, _Tries] = {}  # file name -> its failed attempts (reports never tried or sent: none)
        self._down = _Tries()  # the destination's own failed associations in a row
        self._lock = threading.Lock()  # _tries is read by status() from the web server's threads
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
        """For /v1/health: nothing about a patient (the file names are times, the errors the network's).
        failing / retrying: the queued reports that failed at least once (oldest first, at most 100 listed), each
        with its attempts, its last error and when it is tried next; destination_failures: associations that could
        not be made in a row (0 once the destination answers)."""
        items = self.items()
        oldest = _queued_at(items[0]) if items else None
        now = time.monotonic()
        with self._lock:
            tries = [(p.name, self._tries[p.name]) for p in items if p.name in self._tries]
        retrying = [{"file": name, "state": "waiting to retry" if t.next_at > now else "retrying now",
                     "attempts": t.attempts, "last_error": t.error, "last_error_at": t.at,
                     "next_try_in_s": round(max(t.next_at - now, 0.0), 1)} for name, t in tries[:100]]
        return {"destination": f"{self.peer.ae_title}@{self.peer.host}:{self.peer.port}", "queued": len(items),
                "oldest_age_s": round(time.time() - oldest, 1) if oldest else None, "sent": self.sent,
                "last_error": self.last_error, "last_error_at": self._last_error_at,
                "destination_failures": self._down.attempts, "failing": len(tries), "retrying": retrying}

    def _run(self) -> None:
        while not self._stop.is_set():
            items = self.items()
            now = time.monotonic()
            with self._lock:  # forget the tries of files no longer queued (sent, or moved away by a person)
                names = {p.name for p in items}
                self._tries = {k: t for k, t in self._tries.items() if k in names}
                due = [p for p in items if p.name not in self._tries or self._tries[p.name].next_at <= now]
                soonest = min((t.next_at for t in self._tries.values()), default=now + 5.0)
            if self._down.next_at > now:  # the destination is down: every report waits for it
                due, soonest = [], self._down.next_at
            if not due:
                # put() wakes it; the poll (at most 5 s) also picks up files another process queued
                self._wake.wait(min(max(soonest - now, 0.01), 5.0))
                self._wake.clear()
                continue
            item = due[0]
            try:
                sr = pydicom.dcmread(item)
            except Exception as e:  # damaged on disk: kept aside for a person, never retried forever
                item.rename(item.with_suffix(".unreadable"))
                log.error("queued report %s cannot be read (%s): set aside as .unreadable", item.name,
                          type(e).__name__)
                continue
            try:
                self._send(sr)
            except Exception as e:  # any failure is retried: the report stays queued until it is accepted
                error = f"{type(e).__name__}: {e}" if not isinstance(e, SendError) else str(e)
                self._failed(item, error, len(items), down=isinstance(e, NoAssociation))
                continue
            item.unlink(missing_ok=True)  # (a person may have moved it away meanwhile)
            self.sent += 1
            with self._lock:
                self._tries.pop(item.name, None)

    def _failed(self, item: Path, error: str, queued: int, down: bool) -> None:
        """This report waits (doubling per report); the others are not held up unless the destination is down."""
        at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self._lock:
            tries = self._tries.setdefault(item.name, _Tries())
            wait = self._later(tries, error, at)
            if down:
                self._later(self._down, error, at)
        self.last_error, self._last_error_at = error, at
        log.warning("report %s to %s not sent, attempt %d (%s); %d queued; this one retried in %.0f s", item.name,
                    self.peer.ae_title, tries.attempts, error, queued, wait)

    def _later(self, tries: "_Tries", error: str, at: str) -> float:
        """One more failed attempt: due again after first_retry_s doubled per attempt, at most max_retry_s."""
        tries.attempts += 1
        wait = min(self.first_retry_s * 2 ** min(tries.attempts - 1, 30), self.max_retry_s)
        tries.next_at, tries.error, tries.at = time.monotonic() + wait, error, at
        return wait

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
            raise NoAssociation(f"association with {self.peer.host}:{self.peer.port} {how}")
        self._down = _Tries()  # the destination answers again
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


@dataclass
class _Tries:
    """One queued report's failed attempts: how many, when it is due again (time.monotonic), the last error."""
    attempts: int = 0
    next_at: float = 0.0
    error: str = ""
    at: str = ""


class SendError(Exception):
    """What went wrong, in the network's words only (it goes to the log and /v1/health)."""


class NoAssociation(SendError):
    """The destination could not be reached at all: a failure of every report, not of the one being sent."""
