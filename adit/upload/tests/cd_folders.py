"""Folders as a patient's CD export has them: DICOM files of several series, full of the
patient's data (in several character sets, in nested sequences and private attributes), next
to a DICOMDIR, a viewer and a readme. Built from pydicom's own test files (CT, MR, RLE and
JPEG 2000 compressed), which come with pydicom and need no network."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ImplicitVRLittleEndian, generate_uid


@dataclass(frozen=True)
class Patient:
    name: str
    patient_id: str
    birth_date: str
    accession_number: str
    # Everything identifying that the files hold, as it may be spelled in them.
    identifying: tuple[str, ...] = ()


MUELLER = Patient(
    name="Müller^Jürgen^Karl",
    patient_id="0012345678",
    birth_date="19610412",
    accession_number="ACC-998877",
    identifying=(
        "Müller",
        "Mueller",
        "Jürgen",
        "Juergen",
        "0012345678",
        "12345678",
        "19610412",
        "12.04.1961",
        "ACC-998877",
        "Klinikum Heidelberg",
        "Heidelberg",
        "Schmidt",
        "Weber",
        "Ratched",
        "Holliday",
    ),
)
SCHULZ = Patient(
    name="Schulz^Erika",
    patient_id="0099887766",
    birth_date="19700101",
    accession_number="ACC-111222",
)


@dataclass(frozen=True)
class Series:
    source: str  # pydicom's test file the copies are made of
    modality: str
    files: int
    charset: str | list[str]
    implicit_vr: bool = False  # written in Implicit VR Little Endian


SERIES = (
    Series("CT_small.dcm", "CT", 3, "ISO_IR 100", implicit_vr=True),  # Latin-1, uncompressed
    Series("MR_small.dcm", "MR", 2, "ISO_IR 192"),  # UTF-8, uncompressed
    Series("MR_small_RLE.dcm", "MR", 1, "ISO_IR 192"),  # RLE lossless
    Series("MR_small_jp2klossless.dcm", "MR", 1, "ISO_IR 100"),  # JPEG 2000 lossless
)
NOT_DICOM = ("README.TXT", "DICOMDIR", "VIEWER/viewer.exe")


@dataclass
class CdFolder:
    root: Path
    patient: Patient
    study_uid: str
    # Original SeriesInstanceUID of every DICOM file, and its pixel data.
    series_of_file: dict[Path, str] = field(default_factory=dict)
    pixel_data: list[bytes] = field(default_factory=list)

    @property
    def dicom_files(self) -> list[Path]:
        return sorted(self.series_of_file)


def write_cd_folder(
    root: Path, patient: Patient = MUELLER, series: Iterable[Series] = SERIES, copies: int = 1
) -> CdFolder:
    """A CD export of ``patient`` under ``root``: one study, the series of ``SERIES`` (each
    ``copies`` times as many files), a DICOMDIR, a viewer and a readme."""
    study_uid = generate_uid()
    folder = CdFolder(root, patient, study_uid)
    # Paths on CDs carry the patient's name: it must not travel with the files.
    images = root / "DICOM" / f"PAT_{patient.name.split('^')[0].upper()}"
    for number, kind in enumerate(series, start=1):
        series_uid = generate_uid()
        for index in range(kind.files * copies):
            dataset = dcmread(pydicom_file(kind.source))
            _identify(dataset, patient, kind.charset)
            dataset.Modality = kind.modality
            if kind.implicit_vr:
                dataset.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
            dataset.StudyInstanceUID = study_uid
            dataset.SeriesInstanceUID = series_uid
            dataset.SeriesNumber = number
            dataset.InstanceNumber = index + 1
            dataset.SOPInstanceUID = generate_uid()
            dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
            if not dataset.file_meta.TransferSyntaxUID.is_compressed:
                # Every file its own pixels, so the test can tell them apart.
                pixels = bytearray(dataset.PixelData)
                pixels[:2] = index.to_bytes(2, "little")
                dataset.PixelData = bytes(pixels)
            path = images / f"SE{number:03d}" / f"IM{index:05d}"
            path.parent.mkdir(parents=True, exist_ok=True)
            dataset.save_as(path, enforce_file_format=True)
            folder.series_of_file[path] = series_uid
            folder.pixel_data.append(dataset.PixelData)
    (root / "README.TXT").write_text(f"CD of {patient.name} created by the PACS viewer export.\n")
    shutil.copyfile(pydicom_file("DICOMDIR"), root / "DICOMDIR")
    (root / "VIEWER").mkdir()
    (root / "VIEWER" / "viewer.exe").write_bytes(b"MZ\x90\x00" + bytes(2000))
    return folder


def pydicom_file(name: str) -> str:
    """The path of one of pydicom's test files."""
    path = get_testdata_file(name)
    assert isinstance(path, str), name
    return path


def _identify(dataset: Dataset, patient: Patient, charset: str | list[str]) -> None:
    """Puts the patient's data everywhere a real export has it."""
    family, given = patient.name.split("^")[:2]
    dataset.SpecificCharacterSet = charset
    dataset.PatientName = patient.name
    dataset.PatientID = patient.patient_id
    dataset.PatientBirthDate = patient.birth_date
    dataset.PatientAge = ""
    dataset.AccessionNumber = patient.accession_number
    dataset.InstitutionName = "Klinikum Heidelberg"
    dataset.InstitutionAddress = "Im Neuenheimer Feld 400, Heidelberg"
    dataset.OperatorsName = "Schmidt^Anna"
    dataset.ReferringPhysicianName = "Weber^Hans"
    dataset.StudyDescription = f"CT Thorax {family} {given}"
    dataset.SeriesDescription = f"{given} {family} {patient.patient_id}"
    dataset.ImageComments = f"Patient {family} was nervous"
    dataset.OtherPatientIDs = f"{patient.patient_id}-OLD"
    reference = Dataset()
    reference.ReferencedSOPClassUID = dataset.SOPClassUID
    reference.ReferencedSOPInstanceUID = generate_uid()
    observer = Dataset()
    observer.PersonName = "Ratched^Mildred"
    observer.CodeMeaning = "Anna Schmidt"
    reference.ContentSequence = Sequence([observer])
    dataset.ReferencedImageSequence = Sequence([reference])
    request = Dataset()
    request.RequestingPhysician = "Holliday^Doc"
    request.AccessionNumber = patient.accession_number
    request.RequestedProcedureDescription = f"Thorax {family}"
    dataset.RequestAttributesSequence = Sequence([request])
    block = dataset.private_block(0x0029, "ACME CD EXPORT", create=True)
    block.add_new(0x10, "LO", f"{family}^{given}")
    block.add_new(0x11, "LO", patient.patient_id)
    dataset.add_new(0x00291020, "SQ", Sequence([Dataset()]))
    dataset[0x00291020].value[0].PatientName = patient.name
