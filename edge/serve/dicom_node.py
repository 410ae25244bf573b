"""A DICOM node (pynetdicom): C-ECHO, and C-STORE of CR / DX / Secondary Capture hand images in every transfer
syntax the reader decodes here, each answered with a Structured Report (edge.serve.sr) queued on disk and sent
by C-STORE to a destination (edge.serve.outbox), and/or written to a folder.

A dataset the node cannot read, or an image the runtime cannot assess, gets a failure status (0xC000, with the
reason in Error Comment) on the storing association; the node itself carries on. The called AE title is checked,
refused associations are logged (calling AE, peer address, reason), and timeouts with a cap on concurrent
associations keep idle or half-open connections from blocking the others.
"""
from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import UID, AllTransferSyntaxes, JPEGExtended12Bit
from pynetdicom import AE, evt
from pynetdicom.sop_class import (ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation,
                                  DigitalXRayImageStorageForProcessing, SecondaryCaptureImageStorage, Verification)

from edge.runtime import Failure, Rejected
from edge.serve.outbox import Outbox
from edge.serve.service import Service
from edge.serve.sr import build_sr

IMAGE_CLASSES = (ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation,
                 DigitalXRayImageStorageForProcessing, SecondaryCaptureImageStorage)
CANNOT_UNDERSTAND = 0xC000
TIMEOUT_S = 30  # the longest wait for a peer's next message (ACSE, DIMSE, network idle) before giving it up
MAX_ASSOCIATIONS = 32  # concurrent; beyond it a request is refused at once ("local limit exceeded")
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


# Plugins that decode only part of what a transfer syntax carries: Pillow reads 8-bit JPEG Extended, not the
# 12-bit images the syntax exists for. With nothing else installed the syntax is refused at association, so a
# modality sends the image uncompressed instead of having it accepted and then failed.
PARTIAL_PLUGINS = {JPEGExtended12Bit: {"pillow"}}


def readable_transfer_syntaxes() -> list[str]:
    """The transfer syntaxes the runtime's reader (pydicom, edge.imaging) decodes here: the uncompressed ones and
    each compressed one whose pydicom decoder has an installed plugin (Pillow, pyjpegls, pylibjpeg, GDCM...)."""
    from pydicom.pixels.decoders.base import get_decoder

    readable = []
    for uid in AllTransferSyntaxes:
        try:
            decoder = get_decoder(uid)
        except NotImplementedError:  # no pydicom decoder at all (MPEG, HEVC...)
            continue
        plugins = set(decoder.available_plugins) - PARTIAL_PLUGINS.get(uid, set())
        if decoder.is_available and (decoder.is_native or plugins):
            readable.append(uid)
    return readable


class DicomNode:
    def __init__(self, service: Service, ae_title: str = "BONEAGE", allowed_callers=None,
                 send_to: Peer | None = None, sr_dir=None, queue_dir=None, timeout_s: float = TIMEOUT_S,
                 max_associations: int = MAX_ASSOCIATIONS):
        """queue_dir: the outbound queue's folder (needed with send_to; edge.serve.outbox)."""
        if not send_to and not sr_dir:
            raise ValueError(NO_DESTINATION)
        if send_to and not queue_dir:
            raise ValueError("--send-to needs a folder for the outbound queue (--queue-dir)")
        self.service, self.ae_title, self.allowed = service, ae_title, list(allowed_callers or [])
        self.sr_dir = Path(sr_dir) if sr_dir else None
        if self.sr_dir:
            self.sr_dir.mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox(queue_dir, send_to, ae_title, timeout_s) if send_to else None
        model = service.model_info()
        self.model = {"name": model["name"], "version": model["version"]}
        self.ae = AE(ae_title=ae_title)
        self.ae.add_supported_context(Verification)
        syntaxes = readable_transfer_syntaxes()
        for sop_class in IMAGE_CLASSES:
            self.ae.add_supported_context(sop_class, syntaxes)
        self.ae.require_calling_aet = self.allowed
        self.ae.require_called_aet = True
        self.ae.acse_timeout = self.ae.dimse_timeout = self.ae.network_timeout = timeout_s
        self.ae.maximum_associations = max_associations
        self._server = None

    def start(self, host: str = "127.0.0.1", port: int = 11112):
        if self.outbox:
            self.outbox.start()
        self._server = self.ae.start_server((host, port), block=False, evt_handlers=[
            (evt.EVT_C_ECHO, lambda event: 0x0000), (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_REJECTED, self._on_rejected), (evt.EVT_ACCEPTED, self._on_accepted)])
        return self

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def stop(self) -> None:
        """Stop listening and sending; reports not yet sent stay queued on disk for the next start."""
        if self._server is not None:
            self._server.shutdown()
        if self.outbox:
            self.outbox.stop()

    def _on_rejected(self, event) -> None:
        requestor = event.assoc.requestor
        called = getattr(requestor.primitive, "called_ae_title", "")
        if self.allowed and requestor.ae_title not in self.allowed:
            reason = "calling AE title not allowed (--allow-ae)"
        elif called != self.ae_title:
            reason = f"called AE title {called!r} is not this node's ({self.ae_title})"
        else:
            reason = f"more than {self.ae.maximum_associations} associations at once"
        log.warning("association refused: calling AE %r from %s:%s: %s", requestor.ae_title, requestor.address,
                    requestor.port, reason)

    def _on_accepted(self, event) -> None:
        """An association with nothing this node serves (another SOP class, a transfer syntax no installed decoder
        reads) is logged, so an administrator sees why a modality's images never come."""
        assoc = event.assoc
        if assoc.accepted_contexts or not assoc.rejected_contexts:
            return
        asked = sorted({f"{UID(cx.abstract_syntax).name} in {' / '.join(UID(ts).name for ts in cx.transfer_syntax)}"
                        for cx in assoc.rejected_contexts})
        log.warning("association from calling AE %r at %s:%s: no presentation context served here (%s%s)",
                    assoc.requestor.ae_title, assoc.requestor.address, assoc.requestor.port, "; ".join(asked[:3]),
                    f"; and {len(asked) - 3} more" if len(asked) > 3 else "")

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
        except Exception as e:  # unforeseen (a full disk for the queue or --sr-dir...): a failure, the node goes on
            log.error("C-STORE from %s: %s", event.assoc.requestor.ae_title, type(e).__name__)
            return _failure(f"cannot answer the image ({type(e).__name__})")

    def _answer(self, ds: Dataset, data: bytes, caller: str) -> int | Dataset:
        result = self.service.predict([(f"{ds.get('SOPInstanceUID', 'image')}.dcm", data)])[0]
        if isinstance(result, Rejected):  # the input check's reason is about the pixels, never the patient
            log.warning("C-STORE from %s: image refused by the input check: %s", caller, result.error)
            return _failure(result.error)
        if isinstance(result, Failure):  # unreadable, or a bad tag
            # The reason is about the file (it names a bad tag, never its value): it goes back to the sender only.
            log.warning("C-STORE from %s: image not assessed (reason in the response's Error Comment)", caller)
            return _failure(result.error)
        sr = build_sr(result, ds, self.model)
        if self.sr_dir:
            _write_atomic(sr, self.sr_dir / f"{sr.SOPInstanceUID}.dcm")
        if self.outbox:
            self.outbox.put(sr)  # on disk before the modality hears Success
        return 0x0000


def _failure(reason: str) -> Dataset:
    status = Dataset()
    status.Status = CANNOT_UNDERSTAND
    status.ErrorComment = reason.replace("\\", "/")[:64]  # LO: at most 64 characters, no backslash
    return status


def _write_atomic(sr: Dataset, path: Path) -> None:
    tmp = path.with_suffix(".part")
    sr.save_as(tmp, enforce_file_format=True)
    os.replace(tmp, path)
