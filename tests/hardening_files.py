"""Hostile files for the hardening tests and benchmarks/fuzz_campaign.py, made on the fly from a phantom radiograph:
headers that lie about the size, decompression bombs, a PostScript file named .png, DICOM text with escape codes."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from imaging_fixtures import dicom_pixels, phantom, write_dicom


def png_bytes(a: np.ndarray | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(phantom(128) if a is None else a).save(buf, "PNG")
    return buf.getvalue()


def jpeg_bytes(a: np.ndarray | None = None, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(phantom(128) if a is None else a).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def png_with_size(data: bytes, width: int | None = None, height: int | None = None) -> bytes:
    """The PNG with IHDR's width/height replaced and its CRC fixed: a header that lies, and a valid chunk."""
    p = bytearray(data)
    w, h = struct.unpack(">II", p[16:24])
    p[16:24] = struct.pack(">II", width or w, height or h)
    p[29:33] = struct.pack(">I", zlib.crc32(bytes(p[12:29])))
    return bytes(p)


def jpeg_with_size(data: bytes, width: int | None = None, height: int | None = None) -> bytes:
    """The JPEG with its frame header (SOF0 baseline, SOF1, SOF2 progressive) claiming another size."""
    p = bytearray(data)
    i = next(i for i in range(len(p) - 1) if p[i] == 0xFF and p[i + 1] in (0xC0, 0xC1, 0xC2))
    h, w = struct.unpack(">HH", p[i + 5:i + 9])
    p[i + 5:i + 9] = struct.pack(">HH", height or h, width or w)
    return bytes(p)


def dicom_rows_cut(path: Path) -> Path:
    """A DICOM whose Rows is half the image's: pydicom then sees two frames of half height."""
    import pydicom
    raw = dicom_pixels()
    write_dicom(path, raw)
    ds = pydicom.dcmread(path)
    ds.Rows = raw.shape[0] // 2
    ds.save_as(path)
    return path


def dicom_declaring(path: Path, rows: int, cols: int, deflated: bool = False, with_pixels: bool = True) -> Path:
    """A DICOM declaring rows x cols 16-bit pixels whose data is all zero. Deflated, a 12000x12000 one is a few
    hundred KB on disk and 288 MB inflated; the zeros are streamed through zlib, never held in memory."""
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian
    small = dicom_pixels()
    write_dicom(path, small, pixel_data=False, transfer_syntax=DeflatedExplicitVRLittleEndian if deflated else None)
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = rows, cols
    ds.save_as(path)
    if not with_pixels:
        return path
    raw = path.read_bytes()
    with open(path, "rb") as f:
        from edge.imaging import _dicom_meta_end
        start = _dicom_meta_end(f)
    body = zlib.decompress(raw[start:], -zlib.MAX_WBITS) if deflated else raw[start:]
    n = rows * cols * 2
    pixel_head = b"\xe0\x7f\x10\x00OW\x00\x00" + struct.pack("<I", n)
    with open(path, "wb") as f:
        f.write(raw[:start])
        if deflated:
            z = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
            f.write(z.compress(body + pixel_head))
            zeros = bytes(1 << 20)
            for _ in range(n >> 20):
                f.write(z.compress(zeros))
            f.write(z.compress(bytes(n & ((1 << 20) - 1))) + z.flush())
        else:
            f.write(body + pixel_head)
            f.truncate(start + len(body) + len(pixel_head) + n)  # sparse zeros
    return path


def dicom_with_transfer_syntax(path: Path, uid: str) -> Path:
    """A DICOM whose file meta names a transfer syntax UID with the given (hostile) text."""
    import pydicom
    write_dicom(path, dicom_pixels())
    raw = path.read_bytes()
    ds = pydicom.dcmread(path)
    old = str(ds.file_meta.TransferSyntaxUID).encode()
    new = uid.encode("latin-1")
    new += b"\0" * (len(new) % 2)
    i = raw.find(old + b"\0") if (raw.find(old + b"\0") > 0) else raw.find(old)
    old_len = len(old) + len(old) % 2
    head = raw[:i - 2] + struct.pack("<H", len(new)) + new + raw[i + old_len:]
    group_length_at = head.find(b"\x02\x00\x00\x00UL")  # (0002,0000) UL 4: fix the meta group's length
    length = struct.unpack("<I", head[group_length_at + 8:group_length_at + 12])[0] + len(new) - old_len
    path.write_bytes(head[:group_length_at + 8] + struct.pack("<I", length) + head[group_length_at + 12:])
    return path


EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n%%EndComments\n"
       b"newpath 0 0 moveto 64 64 lineto stroke\nshowpage\n%%EOF\n")
