"""A DICOM node (pynetdicom): C-ECHO, and C-STORE of CR / DX / Secondary Capture hand images, each answered with
a Structured Report (edge.serve.sr) sent by C-STORE to a destination and/or written to a folder.

A dataset the node cannot read, or an image the runtime cannot assess, gets a failure status (0xC000, with the
reason in Error Comment) on the storing association; the node itself carries on. SRs are sent by one worker
thread, so a slow or absent destination never holds up a storing modality.
"""
from __future__ import annotations

import io
import logging
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import (ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation,
                                  DigitalXRayImageStorageForProcessing, SecondaryCaptureImageStorage, Verification)

from edge.runtime import Failure
from edge.serve.service import Service
from edge.serve.sr import build_sr

IMAGE_CLASSES = (ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation,
                 DigitalXRayImageStorageForProcessing, SecondaryCaptureImageStorage)
CANNOT_UNDERSTAND = 0xC000
NO_DESTINATION = ("the DICOM node needs somewhere to put its reports: --send-to AE@host:port and/or "
                  "--sr-dir FOLDER")
log = logging.getLogger("edge.serve.dicom")


@dataclass(frozen=True)
class Peer:
    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> "Peer":
        """AE@host:port, e.g. PACS@10.0.0.5:104."""
        try:
            ae_title, address = text.split("@", 1)
            host, port = address.rsplit(":", 1)
            peer = cls(ae_title.strip(), host.strip("[] "), int(port))
        except ValueError:
            raise ValueError(f"--send-to {text!r}: expected AE@host:port, e.g. PACS@10.0.0.5:104") from None
        if not 0 < len(peer.ae_title) <= 16 or not 0 < peer.port < 65536:
            raise ValueError(f"--send-to {text!r}: AE title of 1-16 characters and a port 1-65535 expected")
        return peer


class DicomNode:
    def __init__(self, service: Service, ae_title: str = "BONEAGE", allowed_callers=None,
                 send_to: Peer | None = None, sr_dir=None):
        if not send_to and not sr_dir:
            raise ValueError(NO_DESTINATION)
        self.service, self.ae_title, self.send_to = service, ae_title, send_to
        self.sr_dir = Path(sr_dir) if sr_dir else None
        if self.sr_dir:
            self.sr_dir.mkdir(parents=True, exist_ok=True)
        model = service.model_info()
        self.model = {"name": model["name"], "version": model["version"]}
        self.ae = AE(ae_title=ae_title)
        self.ae.add_supported_context(Verification)
        for sop_class in IMAGE_CLASSES:
            self.ae.add_supported_context(sop_class)
        if allowed_callers:
            self.ae.require_calling_aet = list(allowed_callers)
        self._outbox: queue.Queue = queue.Queue()
        self._sender = threading.Thread(target=self._send_loop, name="edge-serve-sr-sender", daemon=True)
        self._server = None

    def start(self, host: str = "127.0.0.1", port: int = 11112):
        self._sender.start()
        self._server = self.ae.start_server((host, port), block=False, evt_handlers=[
            (evt.EVT_C_ECHO, lambda event: 0x0000), (evt.EVT_C_STORE, self._on_store)])
        return self

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def stop(self) -> None:
        """Stop listening, then send what is still queued."""
        if self._server is not None:
            self._server.shutdown()
        self._outbox.put(None)
        if self._sender.is_alive():
            self._sender.join()

    def _on_store(self, event) -> int | Dataset:
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
            data = io.BytesIO()
            ds.save_as(data, enforce_file_format=True)
        except Exception as e:  # a malformed dataset is this association's failure, never the node's
            return _failure(f"cannot read the dataset ({type(e).__name__})")
        try:
            return self._answer(ds, data.getvalue(), event.assoc.requestor.ae_title)
        except Exception as e:  # unforeseen (a full disk for --sr-dir, ...): a failure status, the node goes on
            log.error("C-STORE from %s: %s", event.assoc.requestor.ae_title, type(e).__name__)
            return _failure(f"cannot answer the image ({type(e).__name__})")

    def _answer(self, ds: Dataset, data: bytes, caller: str) -> int | Dataset:
        result = self.service.predict([(f"{ds.get('SOPInstanceUID', 'image')}.dcm", data)])[0]
        if isinstance(result, Failure):  # unreadable, or refused by the input check (edge.quality)
            # The reason can quote the file's own tags (a birth date): it goes back to the sender, not to the log.
            log.warning("C-STORE from %s: image not assessed (reason in the response's Error Comment)", caller)
            return _failure(result.error)
        sr = build_sr(result, ds, self.model)
        if self.sr_dir:
            _write_atomic(sr, self.sr_dir / f"{sr.SOPInstanceUID}.dcm")
        if self.send_to:
            self._outbox.put(sr)
        return 0x0000

    def _send_loop(self) -> None:
        while (sr := self._outbox.get()) is not None:
            try:
                self._send(sr)
            except Exception as e:  # the node keeps running; the report is still in --sr-dir if given
                log.error("could not send a report to %s: %s", self.send_to.ae_title, e)

    def _send(self, sr: Dataset) -> None:
        ae = AE(ae_title=self.ae_title)
        ae.add_requested_context(sr.SOPClassUID, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        assoc = ae.associate(self.send_to.host, self.send_to.port, ae_title=self.send_to.ae_title)
        if not assoc.is_established:
            raise ConnectionError(f"association with {self.send_to.host}:{self.send_to.port} not established")
        try:
            status = assoc.send_c_store(sr)
        finally:
            assoc.release()
        if not status or status.Status != 0x0000:
            raise ConnectionError(f"C-STORE answered {status.Status:#06x}" if status else "no C-STORE response")


def _failure(reason: str) -> Dataset:
    status = Dataset()
    status.Status = CANNOT_UNDERSTAND
    status.ErrorComment = reason.replace("\\", "/")[:64]  # LO: at most 64 characters, no backslash
    return status


def _write_atomic(sr: Dataset, path: Path) -> None:
    tmp = path.with_suffix(".part")
    sr.save_as(tmp, enforce_file_format=True)
    os.replace(tmp, path)
