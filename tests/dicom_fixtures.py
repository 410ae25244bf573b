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
                       patient_name: str = "Test^Hand", sex: str = "M", study_uid: str | None = None) -> Dataset:
    """A DX/CR/Secondary Capture image of one hand: the PNG's pixels as 8-bit MONOCHROME2, with patient, study,
    series and equipment attributes a PACS would send."""
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
        ds.WindowCenter, ds.WindowWidth = 128, 256
        ds.AcquisitionContextSequence = []
        ds.LossyImageCompression = "00"
        region = Dataset()
        region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning = "85562004", "SCT", "Hand"
        ds.AnatomicRegionSequence = [region]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()
    return ds


def write(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path
