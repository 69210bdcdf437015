"""Small studies of real-world DICOM variety, for tests and the demo PACS: compressed transfer
syntaxes, object types beyond images, multi-frame images.

They are made of the sample files that ship with pydicom (real files from many vendors and
tools), each given the study's patient, study and a series of its own, with new UIDs derived
from the seed. Pixel data and transfer syntax stay exactly as in the sample file.
"""

from __future__ import annotations

import datetime

import numpy as np
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

_UID_NAMESPACE = "adit-samples-v1"

# One instance in each transfer syntax a hospital archive commonly holds.
SYNTAX_FILES = (
    "JPEG2000.dcm",  # JPEG 2000
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
    "MR_small_RLE.dcm",  # RLE lossless
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline, colour
    "JPGExtended.dcm",  # JPEG extended, 12 bit
    "CT_small.dcm",  # explicit VR little endian
)
# Objects other than plain images, and the rarer encodings.
MIXED_OBJECT_FILES = (
    "rtdose.dcm",  # RT dose, 15 frames, implicit VR
    "rtplan.dcm",  # RT plan, no pixels
    "rtstruct.dcm",  # RT structure set, no file meta in the sample
    "waveform_ecg.dcm",  # 12-lead ECG waveform
    "reportsi.dcm",  # basic text SR
    "test-SR.dcm",  # comprehensive SR
    "examples_palette.dcm",  # ultrasound, palette colour
    "image_dfl.dcm",  # deflated explicit VR little endian
    "MR_small_bigendian.dcm",  # explicit VR big endian
)
SEGMENTATION_STORAGE = UID("1.2.840.10008.5.1.4.1.1.66.4")
MULTIFRAME_GRAYSCALE_WORD_SC = UID("1.2.840.10008.5.1.4.1.1.7.3")


def _uid(*parts: object) -> str:
    return generate_uid(entropy_srcs=[_UID_NAMESPACE, *map(str, parts)])


class _SampleStudy:
    """Gives instances one patient and study, a series each, and fresh instance UIDs."""

    def __init__(self, kind: str, seed: int):
        self.kind = kind
        self.seed = seed
        self.patient_id = f"SAMPLE-{kind.upper()}-{seed}"
        self.study_uid = _uid(kind, seed, "study")
        self.instances: list[Dataset] = []

    def add(self, dataset: Dataset, syntax: UID | None = None) -> None:
        number = len(self.instances) + 1
        dataset.PatientID = self.patient_id
        dataset.PatientName = f"Sample^{self.kind.title()}"
        dataset.PatientBirthDate = "19700101"
        dataset.StudyInstanceUID = self.study_uid
        dataset.StudyDate = dataset.SeriesDate = "20240115"
        dataset.StudyTime = "101500"
        dataset.StudyID = f"S{self.seed}"
        dataset.AccessionNumber = f"ACC-{self.kind.upper()}-{self.seed}"
        dataset.SeriesInstanceUID = _uid(self.kind, self.seed, "series", number)
        dataset.SeriesNumber = number
        dataset.InstanceNumber = 1
        instance_uid = UID(_uid(self.kind, self.seed, "instance", number))
        dataset.SOPInstanceUID = instance_uid
        meta = getattr(dataset, "file_meta", None) or FileMetaDataset()
        meta.MediaStorageSOPClassUID = dataset.SOPClassUID
        meta.MediaStorageSOPInstanceUID = instance_uid
        if syntax or "TransferSyntaxUID" not in meta:
            meta.TransferSyntaxUID = syntax or ImplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        dataset.file_meta = meta
        self.instances.append(dataset)


def _sample(name: str) -> Dataset:
    path = get_testdata_file(name)
    assert isinstance(path, str), f"pydicom's sample file {name} is missing"
    return dcmread(path, force=True)


def syntax_study(seed: int = 1) -> list[Dataset]:
    """Six images, one in each common transfer syntax (JPEG 2000, JPEG-LS, RLE, JPEG baseline
    and extended, explicit VR little endian)."""
    study = _SampleStudy("syntax", seed)
    for name in SYNTAX_FILES:
        study.add(_sample(name))
    return study.instances


def mixed_object_study(seed: int = 2) -> list[Dataset]:
    """RT dose, plan and structure set, an ECG waveform, two SR, a segmentation, a palette
    ultrasound image, a deflated and a big endian image."""
    study = _SampleStudy("mixed", seed)
    for name in MIXED_OBJECT_FILES:
        study.add(_sample(name))
    study.add(_segmentation())
    return study.instances


def multiframe_study(seed: int = 3, frames: int = 16) -> list[Dataset]:
    """One multi-frame image three times: uncompressed, RLE and JPEG 2000 lossless."""
    study = _SampleStudy("multiframe", seed)
    for syntax in (ExplicitVRLittleEndian, RLELossless, JPEG2000Lossless):
        dataset = _multiframe(frames)
        if syntax != ExplicitVRLittleEndian:
            dataset.compress(syntax, generate_instance_uid=False)
        study.add(dataset, syntax)
    return study.instances


def _multiframe(frames: int) -> Dataset:
    ct = _sample("CT_small.dcm")
    pixels = ct.pixel_array.astype(np.uint16)
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.SOPClassUID = MULTIFRAME_GRAYSCALE_WORD_SC
    dataset.Modality = "OT"
    dataset.ContentDate = datetime.date(2024, 1, 15).strftime("%Y%m%d")
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.NumberOfFrames = frames
    dataset.BitsAllocated = dataset.BitsStored = 16
    dataset.HighBit = 15
    dataset.PixelRepresentation = 0
    dataset.FrameIncrementPointer = 0x00181063  # Frame Time
    dataset.FrameTime = 40
    stack = np.stack([np.roll(pixels, shift * 4, axis=1) for shift in range(frames)])
    dataset.PixelData = stack.tobytes()
    return dataset


def _segmentation() -> Dataset:
    """A minimal binary segmentation: one 8x8 frame of one segment."""
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.SOPClassUID = SEGMENTATION_STORAGE
    dataset.Modality = "SEG"
    dataset.SegmentationType = "BINARY"
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.Rows = dataset.Columns = 8
    dataset.NumberOfFrames = 1
    dataset.BitsAllocated = dataset.BitsStored = 1
    dataset.HighBit = 0
    dataset.PixelRepresentation = 0
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[2:6, 2:6] = 1
    dataset.PixelData = np.packbits(mask.ravel(), bitorder="little").tobytes()
    segment = Dataset()
    segment.SegmentNumber = 1
    segment.SegmentLabel = "Lesion"
    segment.SegmentAlgorithmType = "MANUAL"
    dataset.SegmentSequence = [segment]
    return dataset
