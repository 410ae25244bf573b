"""Real hand-radiograph DICOM objects built from the bundle's sample PNGs (pydicom), for the DICOM node's tests
and benchmarks/load_serve.py."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation,
                         ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid)

SOP_CLASSES = {"DX": DigitalXRayImageStorageForPresentation, "CR": ComputedRadiographyImageStorage,
               "OT": SecondaryCaptureImageStorage}


def radiograph_dataset(png: Path, modality: str = "DX", patient_id: str = "TEST-0001",
                       patient_name: str = "Test^Hand", sex: str = "M", study_uid: str | None = None,
                       bits: int = 8) -> Dataset:
    """A DX/CR/Secondary Capture image of one hand: the PNG's pixels as 8-bit MONOCHROME2 (bits=12: scaled to
    12 bits stored in 16, as most CR/DX detectors write), with patient, study, series and equipment attributes
    a PACS would send."""
    pixels = np.asarray(Image.open(png).convert("L"), dtype=np.uint8)
    sop_class = SOP_CLASSES[modality]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientSex, ds.PatientBirthDate = patient_name, patient_id, sex, "20140102"
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260115", "101500", "1", "ACC1"
    ds.ReferringPhysicianName = ""
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, 1, 1
    ds.Manufacturer = "test"
    ds.BodyPartExamined = "HAND"
    ds.ImageLaterality = "L"
    ds.PatientOrientation = ["A", "R"] if modality != "OT" else ""
    if modality == "CR":
        ds.ViewPosition = "PA"
    if modality == "OT":
        ds.ConversionType = "WSD"
    if modality == "DX":
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.PresentationLUTShape = "IDENTITY"
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
        ds.DetectorType = "DIRECT"
        ds.BurnedInAnnotation = "NO"
        ds.PixelIntensityRelationship, ds.PixelIntensityRelationshipSign = "LIN", 1
        ds.ImagerPixelSpacing = ds.PixelSpacing = [0.1, 0.1]
        ds.WindowCenter, ds.WindowWidth = (128, 256) if bits == 8 else (2048, 4096)
        ds.AcquisitionContextSequence = []
        ds.LossyImageCompression = "00"
        region = Dataset()
        region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning = "85562004", "SCT", "Hand"
        ds.AnatomicRegionSequence = [region]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    if bits == 8:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = pixels.tobytes()
    else:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
        ds.PixelData = (pixels.astype(np.uint16) << (bits - 8)).astype("<u2").tobytes()
    return ds


def write(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


# ---------------------------------------------------------------- sources as modalities write them, and dcmtk

# Patient and study attributes a modality may leave out (each Type 2 but the UIDs), for the node's SR tests.
OPTIONAL_SOURCE_ATTRIBUTES = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                              "AccessionNumber", "StudyID", "ReferringPhysicianName", "SeriesNumber", "InstanceNumber",
                              "StudyInstanceUID", "SeriesInstanceUID")


def without(ds: Dataset, *keywords: str) -> Dataset:
    """ds with these attributes removed (the dataset itself, changed)."""
    for keyword in keywords:
        if keyword in ds:
            del ds[keyword]
    return ds


def dcmtk(tool: str) -> str | None:
    """dcmtk's tool, not pynetdicom's app of the same name that a virtualenv puts first on PATH."""
    import subprocess

    for folder in ("/usr/bin", "/usr/local/bin"):
        path = Path(folder) / tool
        if path.is_file():
            out = subprocess.run([str(path), "--version"], capture_output=True, text=True)
            if "dcmtk" in (out.stdout + out.stderr).lower():
                return str(path)
    return None


def require_tool(path: str | None, name: str, package: str) -> str:
    """The tool's path; where it is missing, skip, or fail where CI must have it (BONEAGE_DATA_REQUIRED / CI)."""
    import pytest

    from conftest import data_required

    if path:
        return path
    message = f"{name} not installed (Debian package {package})"
    if data_required():
        pytest.fail(message + "; BONEAGE_DATA_REQUIRED=1 or CI is set, so this is an error, not a skip",
                    pytrace=False)
    pytest.skip(message)


def dciodvfy_errors(path: Path) -> list[str]:
    """dciodvfy's (dicom3tools) Error lines for a file; a missing dciodvfy skips, or fails under CI."""
    import shutil
    import subprocess

    tool = require_tool(shutil.which("dciodvfy"), "dciodvfy", "dicom3tools")
    out = subprocess.run([tool, str(path)], capture_output=True, text=True)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


# transfer syntax: the dcmtk command that writes a file in it (input and output appended)
DCMTK_ENCODERS = {
    "1.2.840.10008.1.2": ["dcmconv", "+ti"],  # implicit VR little endian
    "1.2.840.10008.1.2.1.99": ["dcmconv", "+td"],  # deflated explicit VR little endian
    "1.2.840.10008.1.2.2": ["dcmconv", "+tb"],  # explicit VR big endian
    "1.2.840.10008.1.2.4.50": ["dcmcjpeg", "+eb"],  # JPEG baseline
    "1.2.840.10008.1.2.4.51": ["dcmcjpeg", "+ee"],  # JPEG extended
    "1.2.840.10008.1.2.4.57": ["dcmcjpeg", "+el"],  # JPEG lossless
    "1.2.840.10008.1.2.4.70": ["dcmcjpeg", "+e1"],  # JPEG lossless, first-order prediction
    "1.2.840.10008.1.2.4.80": ["dcmcjpls", "+el"],  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": ["dcmcjpls", "+en"],  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.5": ["dcmcrle"],  # RLE lossless
}
JPEG2000 = {"1.2.840.10008.1.2.4.90": False, "1.2.840.10008.1.2.4.91": True}  # syntax: lossy (irreversible)


def encoded(source: Path, syntax: str, out: Path) -> Path | None:
    """source (an uncompressed DX/CR/SC file) rewritten in `syntax`: by dcmtk, or JPEG 2000 by Pillow (dcmtk has
    no JPEG 2000 encoder); None where no installed tool writes it."""
    import subprocess

    if syntax in JPEG2000:
        return _jpeg2000(source, JPEG2000[syntax], syntax, out)
    tool = dcmtk(DCMTK_ENCODERS[syntax][0])
    if not tool:
        return None
    subprocess.run([tool, *DCMTK_ENCODERS[syntax][1:], str(source), str(out)], check=True, capture_output=True)
    return out


def _jpeg2000(source: Path, lossy: bool, syntax: str, out: Path) -> Path | None:
    import io

    import pydicom
    from PIL import features
    from pydicom.encaps import encapsulate

    if not features.check_codec("jpg_2000"):
        return None
    ds = pydicom.dcmread(source)
    stream = io.BytesIO()
    Image.fromarray(ds.pixel_array).save(stream, format="JPEG2000", no_jp2=True, irreversible=lossy,
                                         quality_mode="rates", quality_layers=[10] if lossy else None)
    ds.PixelData = encapsulate([stream.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = syntax
    if lossy:
        ds.LossyImageCompression, ds.LossyImageCompressionRatio, ds.LossyImageCompressionMethod = \
            "01", 10, "ISO_15444_1"
    ds.save_as(out, enforce_file_format=True)
    return out
