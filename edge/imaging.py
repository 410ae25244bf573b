"""Decode a radiograph file to a 2-D float32 array in [0, 1], higher = brighter (bone is bright).

Files are untrusted: every failure becomes an ImageError whose message is one printable line naming the file
and the problem (a clinic user never sees a stack trace, nor a terminal escape sequence from a file). One pixel
limit holds for every format and is checked from the header, before anything is decoded; a header that lies
about the image's size (more rows than its data holds, or fewer) is refused, not decoded into a plausible image.
"""
from __future__ import annotations

import os
import re
import stat
import struct
import unicodedata
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# Hand radiographs are at most a few tens of megapixels; anything larger is refused before decoding.
MAX_PIXELS = 60_000_000
MIN_SIDE = 16

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".tif", ".tiff", ".bmp"}
# The only formats Pillow may identify a file as. Left open, Pillow tries every plugin it has: an EPS file named
# .png would then be handed to Ghostscript, a program run on an untrusted file.
PIL_FORMATS = ("PNG", "JPEG", "TIFF", "BMP")
_FILE_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class ImageError(ValueError):
    """A file that cannot be used as a radiograph. str() is the one-line user message."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = printable(problem)
        super().__init__(f"{printable(self.path)}: {self.problem}")


def printable(text, limit: int = 300) -> str:
    """Text from a file or a file name, safe for a terminal or a log line: control and format characters (newlines,
    escape sequences, bidi overrides) become '?', and it is cut to `limit` characters."""
    text = "".join("?" if unicodedata.category(c)[0] == "C" else c for c in str(text))
    return text if len(text) <= limit else text[:limit - 3] + "..."


def load_radiograph(path) -> np.ndarray:
    """A file -> 2-D float32 in [0, 1]."""
    return to_unit(decode_radiograph(path))


def to_unit(img: np.ndarray) -> np.ndarray:
    """A decoded radiograph (uint8, or float32 in [0, 1]) -> float32 in [0, 1]."""
    return img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img


def decode_radiograph(path) -> np.ndarray:
    """A file -> 2-D uint8 array, whatever its depth (to_8bit: the range the network was trained on), so it is
    checked and resized in Pillow's 8-bit mode, exactly as the RSNA sets were made, and cheaply."""
    path = Path(path)
    check_file(path)
    try:
        img = _decode_dicom(path) if _is_dicom(path) else _decode_pillow(path)
    except PermissionError:
        raise ImageError(path, "permission denied (the file cannot be read)") from None
    return _check_size(path, img)


def check_file(path: Path) -> None:
    """Name what is wrong with a path before anything opens it (opening a FIFO would block)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise ImageError(path, f"broken symbolic link (its target {os.readlink(path)} does not exist)") from None
        raise ImageError(path, "no such file") from None
    except PermissionError:
        raise ImageError(path, "permission denied (a folder on the path cannot be read)") from None
    except OSError as e:  # ELOOP, ENAMETOOLONG, ENOTDIR
        raise ImageError(path, f"cannot open ({e.strerror or type(e).__name__})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(path, "is a folder, not an image file (edge-infer reads every image in a folder it is given)")
    kind = next((name for test, name in _FILE_KINDS if test(st.st_mode)), None)
    if kind or not stat.S_ISREG(st.st_mode):
        raise ImageError(path, f"not a regular file ({kind or 'special file'})")
    if st.st_size == 0:
        raise ImageError(path, "empty file")


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    with open(path, "rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def _check_pixels(path: Path, width: int, height: int, frames: int = 1) -> None:
    """The one pixel limit, applied to what a header declares (before decoding)."""
    if width <= 0 or height <= 0 or frames <= 0:
        raise ImageError(path, f"header declares an empty image ({width}x{height}, {frames} frame(s))")
    if width * height * frames > MAX_PIXELS:
        size = f"{width}x{height}" + (f"x{frames} frames" if frames > 1 else "")
        raise ImageError(path, f"header declares {size}, more than {MAX_PIXELS:,} pixels (decompression bomb guard): "
                               "refused before decoding")


# --- PNG, JPEG, TIFF, BMP (Pillow) ---------------------------------------------------------------------------

def _decode_pillow(path: Path) -> np.ndarray:
    try:
        # Lazy: reads the header only. Pillow's own bomb guard (Image.MAX_IMAGE_PIXELS, left at its default) only
        # refuses far larger images; ours is applied here, per call, without changing anything process-wide.
        with Image.open(path, formats=PIL_FORMATS) as im:
            _check_pixels(path, im.width, im.height)
            im.load()
            if im.format == "PNG" and _png_may_be_short(im):
                _check_png_data(path)
            elif im.format == "JPEG":
                _check_jpeg_filled(path, im)
            ImageOps.exif_transpose(im, in_place=True)  # phone photos and some scanners store rotation in EXIF
            return _pil_to_unit_gray(im)
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(path, f"image is larger than {MAX_PIXELS:,} pixels (decompression bomb guard): refused "
                               "before decoding") from None
    except Image.UnidentifiedImageError:
        raise ImageError(path, "not a readable image (PNG, JPEG, TIFF, BMP or DICOM expected)") from None
    except PermissionError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError, ZeroDivisionError,
            MemoryError) as e:
        raise ImageError(path, f"corrupt or truncated image ({_first_line(e)})") from None


def _pil_to_unit_gray(im: Image.Image) -> np.ndarray:
    """Every file becomes 8 bits, the range the network was trained on (to_8bit): a 16-bit PNG or TIFF by its
    nominal range, so a 16-bit PNG of an 8-bit image's pixels x 257 is that image bit for bit."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im).astype(np.float64)
        bits = 16 if im.mode.startswith("I;16") or a.max() > 255 else 8
        return to_8bit(np.clip(a, 0, None), np.array([0, (1 << bits) - 1]))
    if im.mode == "F":
        return _stretched(np.asarray(im, dtype=np.float32))
    return np.asarray(im if im.mode == "L" else im.convert("L"), dtype=np.uint8)  # RGB(A), P, LA, CMYK, 1: luminance


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # IHDR colour type -> samples per pixel
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _png_may_be_short(im: Image.Image) -> bool:
    """Whether a loaded PNG may hold rows its IDAT stream lacked. Pillow leaves such rows as it allocated them, all
    zero, and says nothing; so a last row with any non-zero byte was decoded and the stream reached it, and only a
    blank last row (or an interlaced image, whose last pass ends elsewhere) needs the second inflate. None of the 14
    full-resolution RSNA PNGs has a blank last row: the check costs one row instead of a second inflate there."""
    if im.info.get("interlace"):
        return True
    return not np.asarray(im.crop((0, im.height - 1, im.width, im.height))).any()


def _check_png_data(path: Path) -> None:
    """The inflated IDAT stream must be exactly as long as IHDR's size needs. Pillow fills rows a short stream
    lacks with zeros (a header lying about the height decodes to a plausible image with a black band) and ignores
    extra rows. One bounded inflate (at most one byte past the size the header allows): half or more of Pillow's
    own decode time on a full-resolution RSNA PNG, so it runs only when `_png_may_be_short`."""
    with open(path, "rb") as f:
        data = f.read()
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    need = _png_stream_size(width, height, depth * _PNG_CHANNELS.get(colour, 1), interlace)
    idat, pos = [], 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            idat.append(data[pos + 8:pos + 8 + length])
        elif kind == b"IEND":
            break
        pos += 12 + length
    got = len(zlib.decompressobj().decompress(b"".join(idat), need + 1))
    if got != need:
        rows = "fewer" if got < need else "more"
        raise ImageError(path, f"PNG pixel data holds {rows} rows than its header's {width}x{height} "
                               "(a wrong or damaged header)")


def _png_stream_size(width: int, height: int, bits_per_pixel: int, interlace: int) -> int:
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    size = 0
    for x0, y0, dx, dy in passes:
        w, h = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if w > 0 and h > 0:
            size += h * (1 + -(-w * bits_per_pixel // 8))  # a filter byte per row
    return size


def _check_jpeg_filled(path: Path, im: Image.Image) -> None:
    """libjpeg decodes blocks its data lacks (a frame header claiming more rows than were coded, a cut file ending
    in a marker) as flat mid-grey, 128 in every channel, and reports success. Missing data is lost from some block
    on to the end, so the last row of 8x8 blocks ends in a run of such blocks (its first blocks can still get garbage
    from the bits left before the end marker: a header 8 rows too tall). Refused when that run covers at least half
    the row. A real image's corner alone can be flat 128: 2 of the 12,411 train-299 JPEGs, a run of 1 block each."""
    a = np.asarray(im)
    rows = a.shape[0] % 8 or 8
    grey = (a[-rows:] == 128).reshape(rows, a.shape[1], -1).all(axis=(0, 2))  # per pixel column
    blocks = [bool(grey[c:c + 8].all()) for c in range(0, a.shape[1], 8)]
    run = next((k for k, flat in enumerate(reversed(blocks)) if not flat), len(blocks))
    if run >= max(2, -(-len(blocks) // 2)):
        raise ImageError(path, f"JPEG data ends before the {im.width}x{im.height} its header declares "
                               "(a truncated file or a wrong header)")


# --- DICOM ---------------------------------------------------------------------------------------------------

def _pydicom(path: Path):
    try:
        import pydicom
    except ImportError:
        raise ImageError(path, "DICOM needs pydicom: pip install pydicom") from None
    # Values are not validated while reading: validation warns with the offending value (a name, an ID) on stderr
    # and in the log, and a radiograph's pixels do not depend on it. Set once, the same for every thread.
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    return pydicom


def _decode_dicom(path: Path) -> np.ndarray:
    pydicom = _pydicom(path)

    head = read_dicom_header(path)
    ts = head.file_meta.get("TransferSyntaxUID")
    frames = _check_dicom_size(path, head)
    try:
        ds = parsed(pydicom.dcmread(path))
    except Exception as e:
        raise ImageError(path, f"not a readable DICOM file ({_first_line(e)})") from None
    if "PixelData" not in ds:
        raise ImageError(path, "DICOM file has no pixel data")
    if not _is_compressed(ts):
        _check_native_length(path, ds, frames)
    try:
        pixels = ds.pixel_array
    except Exception as e:
        hint = (" (compressed DICOM needs pylibjpeg with pylibjpeg-libjpeg/-openjpeg)" if _is_compressed(ts)
                else "")
        raise ImageError(path, f"cannot decode DICOM pixel data in transfer syntax {_ts_name(ts)}{hint}: "
                               f"{_first_line(e)}") from None
    if pixels.ndim == 3 and ds.get("SamplesPerPixel", 1) == 1:
        pixels = pixels[0]  # multi-frame: a radiograph has one frame, take the first
    if pixels.ndim == 3:
        pixels = pixels.mean(axis=-1)
    a = to_8bit(_displayed_values(path, pixels, ds), _displayed_values(path, _stored_range(path, ds), ds))
    if ds.get("PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        a = 255 - a  # MONOCHROME1: high values are dark; bone must be bright as in training
    return a


def _displayed_values(path: Path, pixels: np.ndarray, ds) -> np.ndarray:
    """Stored values -> the values the file says to display: modality LUT (rescale slope/intercept), then the
    VOI LUT, else the first window (pydicom's linear/sigmoid windowing)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        a = apply_modality_lut(pixels, ds)
        if "WindowCenter" in ds or "VOILUTSequence" in ds:
            a = apply_voi_lut(a, ds, prefer_lut=True)
        return np.asarray(a, dtype=np.float64)
    except Exception as e:  # e.g. a RescaleSlope that is no number, a LUT shorter than it says
        raise ImageError(path, f"DICOM rescale or window values are unusable ({_first_line(e)})") from None


def _stored_range(path: Path, ds) -> np.ndarray:
    """Every value BitsStored can hold (its two ends past 16 bits), as stored: what the file's own LUTs map
    onto its nominal display range."""
    try:
        bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 8)
    except (TypeError, ValueError):
        bits = 0
    if not 1 <= bits <= 32:
        raise ImageError(path, f"DICOM BitsStored {printable(ds.get('BitsStored'), 40)} is unusable (1-32 expected)")
    lo = -(1 << (bits - 1)) if ds.get("PixelRepresentation", 0) == 1 else 0
    hi = lo + (1 << bits) - 1
    return np.arange(lo, hi + 1) if bits <= 16 else np.array([lo, hi])


def to_8bit(a: np.ndarray, nominal: np.ndarray) -> np.ndarray:
    """The one mapping of a DICOM's displayed values (and a 16-bit PNG's) onto the 8-bit range the network was
    trained on (RSNA's 8-bit images): the file's nominal display range (what its bits stored can hold, through its own rescale and
    window or VOI LUT: `nominal`) cut into 256 equal levels. An 8-bit DICOM is then its PNG bit for bit, and
    8-bit pixels widened to 12 or 16 bits (shifted, scaled or replicated) come back exactly; a window's output
    range is the nominal one. A header declaring far more bits than its data use (under a quarter of the range)
    is stretched min to max instead, as is a range with no width (docs/ARCHITECTURE.md, "One answer per
    radiograph")."""
    lo, hi = float(np.min(nominal)), float(np.max(nominal))
    step = (hi - lo + 1) / 256  # one grey level, in displayed values
    if not (np.isfinite(lo) and np.isfinite(hi)) or np.ptp(a) < 64 * step:
        return _stretched(a)
    return np.clip(np.floor((a - lo) / step + 1e-6), 0, 255).astype(np.uint8)


def _stretched(a: np.ndarray) -> np.ndarray:
    """Min to max onto 0-255, rounded: for values with no nominal range."""
    return np.round(_minmax(a) * np.float32(255)).astype(np.uint8)


def parsed(ds):
    """`ds` (and its file meta) with every element's value converted now. pydicom converts a value on first
    access, so a damaged value representation (an unknown VR in PatientSex, in the transfer syntax element)
    would raise wherever that tag is first read; converted here, inside the reader's own error handling, it is
    the file's one-line error instead."""
    for part in (getattr(ds, "file_meta", None), ds):
        if part is not None:
            _convert_all(part)
    return ds


def _convert_all(ds) -> None:
    for tag in list(ds.keys()):
        try:
            elem = ds[tag]  # converts the raw value
        except Exception as e:  # pydicom raises NotImplementedError, BytesLengthException, ValueError...
            raise ValueError(f"element {tag} is damaged: {_first_line(e).split(' in tag (')[0]}") from None
        if elem.VR == "SQ":
            for item in elem.value:
                _convert_all(item)


def read_dicom_header(path):
    """A DICOM file's tags without its pixel data (pydicom Dataset), read safely: an untrusted deflated file is
    inflated in bounded pieces first (pydicom inflates the whole file before reading a single tag, and a 283 KB
    file declaring 12000x12000 pixels inflates to 288 MB). Any problem is an ImageError naming the file; use this
    wherever a DICOM's tags are read (edge.clinical reads patient age and sex from them)."""
    path = Path(path)
    pydicom = _pydicom(path)
    if _transfer_syntax(path, pydicom) == pydicom.uid.DeflatedExplicitVRLittleEndian:
        _check_inflated_size(path)
    try:
        return parsed(pydicom.dcmread(path, stop_before_pixels=True))
    except Exception as e:  # pydicom raises many types for malformed files (zlib.error, struct.error, ...)
        raise ImageError(path, f"not a readable DICOM file ({_first_line(e)})") from None


def _transfer_syntax(path: Path, pydicom):
    try:
        return parsed(pydicom.filereader.read_file_meta_info(path)).get("TransferSyntaxUID")
    except pydicom.errors.InvalidDicomError:
        raise ImageError(path, "not a DICOM file (no 'DICM' marker after the 128-byte preamble)") from None
    except Exception as e:
        raise ImageError(path, f"not a readable DICOM file (damaged file meta information: {_first_line(e)})") from None


def _is_compressed(ts) -> bool:
    try:
        return bool(ts.is_compressed)
    except (AttributeError, ValueError):  # absent, or not a transfer syntax pydicom knows
        return False


def _ts_name(ts) -> str:
    return printable(getattr(ts, "name", None) or ts or "(none)", 80)


def _check_dicom_size(path: Path, ds) -> int:
    """Rows x Columns x frames from the header against the pixel limit; returns the number of frames."""
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        raise ImageError(path, "DICOM header lacks a usable Rows, Columns or NumberOfFrames") from None
    _check_pixels(path, cols, rows, frames)
    return frames


def _check_native_length(path: Path, ds, frames: int) -> None:
    """Uncompressed pixel data must be as long as the header's size says (one pad byte allowed). A cut Rows would
    otherwise be read as extra frames, and the first frame, a slice of the image, answered for."""
    try:
        bits, samples = int(ds.BitsAllocated), int(ds.get("SamplesPerPixel", 1))
    except (AttributeError, TypeError, ValueError):
        raise ImageError(path, "DICOM header lacks a usable BitsAllocated") from None
    need = -(-int(ds.Rows) * int(ds.Columns) * frames * samples * bits // 8)
    got = len(ds.PixelData)
    if got not in (need, need + 1):
        raise ImageError(path, f"DICOM pixel data is {got:,} bytes, but its header's {ds.Rows} rows x {ds.Columns} "
                               f"columns x {frames} frame(s) need {need:,} (a wrong or damaged header)")


def _check_inflated_size(path: Path, limit: int = MAX_PIXELS * 2 + (16 << 20)) -> None:
    """Deflated DICOM: inflate in bounded pieces and refuse a stream larger than the pixel limit's 16-bit image plus
    16 MB of tags, before pydicom inflates it whole (a 283 KB file declaring 12000x12000 reached 2.7 GB)."""
    inflate, got = zlib.decompressobj(-zlib.MAX_WBITS), 0
    try:
        with open(path, "rb") as f:
            f.seek(_dicom_meta_end(f))
            while (chunk := f.read(1 << 20)) and not inflate.eof:
                while chunk:
                    got += len(inflate.decompress(chunk, 1 << 22))
                    if got > limit:
                        raise ImageError(path, f"deflated DICOM inflates to more than {limit >> 20} MB, beyond "
                                               f"the {MAX_PIXELS:,}-pixel limit; refused before decoding")
                    chunk = inflate.unconsumed_tail
    except zlib.error as e:
        raise ImageError(path, f"corrupt deflated DICOM ({_first_line(e)})") from None


def _dicom_meta_end(f) -> int:
    """Offset where the dataset starts: after the preamble, 'DICM' and the file meta group (0002,xxxx)."""
    f.seek(132)
    while True:
        pos, head = f.tell(), f.read(8)
        if len(head) < 8 or int.from_bytes(head[:2], "little") != 2:
            return pos
        if head[4:6] in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
            length = int.from_bytes(f.read(4), "little")
        else:
            length = int.from_bytes(head[6:8], "little")
        f.seek(length, 1)


# --- shared checks -------------------------------------------------------------------------------------------

def _minmax(a: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(a)), float(np.max(a))
    if not np.isfinite(lo) or not np.isfinite(hi):
        a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(a.min()), float(a.max())
    return ((a - lo) / (hi - lo)).astype(np.float32) if hi > lo else np.zeros_like(a, dtype=np.float32)


def _check_size(path: Path, img: np.ndarray) -> np.ndarray:
    if img.ndim != 2:
        raise ImageError(path, f"expected a 2-D grayscale image, got shape {img.shape}")
    h, w = img.shape
    if min(h, w) < MIN_SIDE:
        raise ImageError(path, f"image is only {w}x{h} pixels; a hand radiograph needs at least {MIN_SIDE}")
    if float(img.max()) == float(img.min()):
        raise ImageError(path, "image is blank (every pixel has the same value)")
    return img


_BYTES = re.compile(r"""b(['"]).*?(?<!\\)\1""")  # a bytes literal: a file's raw bytes, perhaps a patient's


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return printable(_BYTES.sub("(bytes)", text[0]).rstrip(": "), 160) if text else type(e).__name__


# --- inputs: files, folders, globs ---------------------------------------------------------------------------

def expand_inputs(items) -> list[tuple[str, str | None]]:
    """Files, folders (recursive) and globs -> [(image file, None) or (item, why it gave no file)], in the
    order given, so a report can list every input where the user put it. Folders and '**' are walked following
    symbolic links, each real folder once and each real file once, so a link loop ends."""
    import glob

    entries: list[tuple[str, str | None]] = []
    for item in items:
        item = os.fspath(item)
        if os.path.isdir(item):
            found = [f for f in _walk_files(item) if Path(f).suffix.lower() in IMAGE_SUFFIXES]
            why = "folder holds no PNG, JPEG or DICOM files"
        elif os.path.lexists(item):
            found, why = [item], ""  # a file, or something load_radiograph names (FIFO, broken link)
        elif "**" in item:
            found, why = _recursive_glob(item), "pattern matched no files"
        elif any(ch in item for ch in "*?["):
            found, why = sorted(glob.glob(item)), "pattern matched no files"
        else:
            found, why = [], "no such file"
        entries.extend((f, None) for f in found) if found else entries.append((item, why))
    return entries


def _walk_files(root: str) -> list[str]:
    """Every file under root (sorted), following links to folders but entering each real folder once."""
    seen_dirs, seen_files, found = {_identity(root)}, set(), []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        keep = []
        for d in sorted(dirnames):
            key = _identity(os.path.join(dirpath, d))
            if key is not None and key not in seen_dirs:
                seen_dirs.add(key)
                keep.append(d)
        dirnames[:] = keep
        for name in filenames:
            path = os.path.join(dirpath, name)
            key = _identity(path) or path  # a broken link is kept: load_radiograph names it
            if key not in seen_files:
                seen_files.add(key)
                found.append(path)
    return sorted(found)


def _identity(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _recursive_glob(pattern: str) -> list[str]:
    """glob.glob(pattern, recursive=True) without its walk through symbolic link loops."""
    parts = pattern.split(os.sep)
    fixed = next(i for i, part in enumerate(parts) if any(ch in part for ch in "*?["))
    base = os.sep.join(parts[:fixed]) or ("." if not pattern.startswith(os.sep) else os.sep)
    if not os.path.isdir(base):
        return []
    regex = _glob_regex(pattern)
    files = (f[2:] if base == "." and not pattern.startswith("./") else f for f in _walk_files(base))
    return sorted(f for f in files if regex.match(f))


def _glob_regex(pattern: str) -> re.Pattern:
    out, i, sep = [], 0, re.escape(os.sep)
    while i < len(pattern):
        if pattern.startswith("**" + os.sep, i):
            out.append(f"(?:[^{sep}]*{sep})*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append(f"[^{sep}]*")
            i += 1
        elif pattern[i] == "?":
            out.append(f"[^{sep}]")
            i += 1
        elif pattern[i] == "[" and (j := pattern.find("]", i + 2)) > 0:
            body = pattern[i + 1:j]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]")
            i = j + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")
