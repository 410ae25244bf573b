"""Small files for input tests, made on the fly: good radiographs in every supported format and the bad
files a clinic user may hand over."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from models.phantoms import render_phantom


def phantom(size: int = 96, age: float = 120, male: bool = True) -> np.ndarray:
    return render_phantom(age, male, size, np.random.default_rng(0))


def write_png8(path: Path, arr=None) -> Path:
    Image.fromarray(phantom() if arr is None else arr).save(path)
    return path


def write_png16(path: Path) -> Path:
    a = phantom().astype(np.uint16) * 257
    Image.fromarray(a).save(path)  # numpy uint16 -> Pillow "I;16"
    return path


def write_jpeg_rotated(path: Path) -> Path:
    """A JPEG stored rotated, with EXIF orientation 6 (display rotated 90 degrees clockwise)."""
    img = Image.fromarray(np.rot90(phantom(), 1).copy())
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(path, exif=exif, quality=95)
    return path


def write_dicom(path: Path, arr16: np.ndarray, monochrome1=False, slope=1.0, intercept=0.0, window=None,
                pixel_data=True, transfer_syntax=None, voi_lut=None) -> Path:
    """A CR DICOM of `arr16`: (H, W) or (frames, H, W); a signed integer array is stored signed
    (PixelRepresentation 1). voi_lut: (first stored value mapped, 16-bit LUT entries) as a VOI LUT Sequence."""
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    signed = np.issubdtype(arr16.dtype, np.signedinteger)
    if arr16.ndim == 3:
        ds.NumberOfFrames = arr16.shape[0]
    ds.Rows, ds.Columns = arr16.shape[-2:]
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 16, 12, 11
    ds.PixelRepresentation = int(signed)
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_lut is not None:
        first, entries = voi_lut
        item = Dataset()
        item.LUTDescriptor = [len(entries), int(first), 16]
        item.LUTData = [int(v) for v in entries]
        item["LUTData"].VR = "US"
        ds.VOILUTSequence = [item]
    if pixel_data:
        ds.PixelData = arr16.astype(np.int16 if signed else np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def dicom_pixels(monochrome1=False) -> np.ndarray:
    """12-bit data from the phantom (bone bright); MONOCHROME1 stores it inverted."""
    a = phantom().astype(np.float32) / 255 * 4095
    return (4095 - a if monochrome1 else a).astype(np.uint16)


def bad_files(tmp: Path) -> dict[str, Path]:
    """name -> file that must fail with a one-line error naming it."""
    tmp.mkdir(parents=True, exist_ok=True)
    files = {}
    files["empty"] = tmp / "empty.png"
    files["empty"].write_bytes(b"")
    good = io.BytesIO()
    Image.fromarray(phantom()).save(good, format="PNG")
    files["truncated"] = tmp / "truncated.png"
    files["truncated"].write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    files["text"] = tmp / "notes.png"
    files["text"].write_text("this is not an image\n")
    files["tiny"] = write_png8(tmp / "tiny.png", np.zeros((1, 1), np.uint8))
    files["bomb"] = _png_header_only(tmp / "bomb.png", 30000, 30000)
    files["dicom_no_pixels"] = write_dicom(tmp / "nopixels.dcm", dicom_pixels(), pixel_data=False)
    from pydicom.uid import JPEG2000Lossless
    files["dicom_unsupported"] = _dicom_encapsulated(tmp / "j2k.dcm", JPEG2000Lossless)
    return files


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares width x height (900 MP here) and holds next to no data: a decompression bomb's
    header is all the guard needs to see."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1024))
                     + chunk(b"IEND", b""))
    return path


def _dicom_encapsulated(path: Path, syntax) -> Path:
    """A DICOM claiming a compressed transfer syntax whose frame no installed decoder can read."""
    from pydicom.encaps import encapsulate

    write_dicom(path, dicom_pixels(), transfer_syntax=syntax, pixel_data=False)
    import pydicom
    ds = pydicom.dcmread(path)
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\0" * 64])
    ds["PixelData"].VR = "OB"
    ds.save_as(path)
    return path
