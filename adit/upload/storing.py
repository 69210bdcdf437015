"""One uploaded file: read, checked to be pseudonymized as the upload says, and stored.

A file is read with its large values left on disk (Django spools big uploads to a temporary
file), checked with the pseudonymizer's own profile, and stored through the core's
destinations, like a transferred instance.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from django.core.files.uploadedfile import TemporaryUploadedFile, UploadedFile
from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError

from adit.core.dicom.errors import DicomError
from adit.core.dicom.files import read_instance, read_instance_file
from adit.core.jobs.processing import TaskLog
from adit.core.transfer import folder_layout
from adit.core.transfer.destinations import destination_for
from adit.core.transfer.folder_layout import StudyLayout, UnsafePathError
from adit.core.transfer.pseudonymizer import deidentification_problems

from .models import UploadJob

_UNDEFINED_LENGTH = 0xFFFFFFFF
_REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
_MODALITY = re.compile(r"[A-Z0-9_ ]{1,16}")


class FileRefused(ValueError):
    """The file is no pseudonymized DICOM instance of the upload; the message says why."""


@dataclass(frozen=True)
class StoredFile:
    sop_instance_uid: str
    size: int


def store_uploaded_file(
    job: UploadJob, uploaded: UploadedFile, study_modalities: str = ""
) -> StoredFile:
    """Checks the file and stores it at the job's destination.

    Args:
        study_modalities: The modalities of the file's study as the browser saw them,
            comma-separated; they name the study's folder in a folder destination.

    Raises:
        FileRefused: The file is not a DICOM instance pseudonymized for the upload.
        DicomError: The destination did not take it.
    """
    dataset = read_uploaded_file(uploaded)
    problems = deidentification_problems(
        dataset,
        job.pseudonym,
        trial_protocol_id=job.trial_protocol_id,
        trial_protocol_name=job.trial_protocol_name,
    )
    if problems:
        raise FileRefused(
            f"Not pseudonymized as this upload's {job.pseudonym!r} ({'; '.join(problems)})."
        )
    destination = job.task.source.concrete()
    modalities = [
        modality.strip()
        for modality in study_modalities.split(",")
        if _MODALITY.fullmatch(modality.strip())
    ]
    layout = StudyLayout(job.pseudonym, modalities)
    job_folder = folder_layout.job_folder_name(
        "upload", job.pk, job.created, job.owner.get_username()
    )
    try:
        with destination_for(destination, layout, TaskLog(), job_folder=job_folder) as target:
            target.consume([dataset])
    except UnsafePathError as err:
        raise FileRefused(str(err)) from err
    return StoredFile(str(dataset.SOPInstanceUID), uploaded.size or 0)


def read_uploaded_file(uploaded: UploadedFile) -> Dataset:
    """The file's data set, its large values left in the file; FileRefused if it is none."""
    try:
        if isinstance(uploaded, TemporaryUploadedFile):
            dataset = read_instance_file(Path(uploaded.temporary_file_path()))
        else:
            uploaded.seek(0)
            dataset = read_instance(uploaded.read())
        _check_complete(dataset, uploaded.size)
    except InvalidDicomError as err:
        raise FileRefused(
            "Not a DICOM file (no DICOM file header: 'DICM' is missing at byte 128)."
        ) from err
    except (EOFError, OSError, ValueError, KeyError, TypeError) as err:
        raise FileRefused(f"The DICOM file cannot be read, it may be cut off: {err}") from err
    for keyword in _REQUIRED_UIDS:
        if not str(dataset.get(keyword, "")).strip():
            raise FileRefused(f"The file is no DICOM instance: it has no {keyword}.")
    if "PixelData" in dataset and "TransferSyntaxUID" not in dataset.file_meta:
        raise FileRefused("The file's header does not say how its pixel data is encoded.")
    return dataset


def _check_complete(dataset: Dataset, size: int | None) -> None:
    # pydicom reads a file cut off inside a value without complaint: the value comes out
    # short, or (left in the file) would run past its end when read later.
    for element in dataset.values():
        if not isinstance(element, RawDataElement) or element.length == _UNDEFINED_LENGTH:
            continue
        end = element.value_tell + element.length
        short = element.value is not None and len(element.value) < element.length
        if short or (element.value is None and size is not None and end > size):
            raise FileRefused(
                f"The file is cut off: its ({element.tag.group:04X},{element.tag.element:04X}) "
                f"should run to byte {end}, but the file has {size} bytes."
            )


__all__ = ["DicomError", "FileRefused", "StoredFile", "store_uploaded_file"]
