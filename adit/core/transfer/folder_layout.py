"""Where a transferred instance goes inside a destination folder.

Layout (as users know it from the original ADIT)::

    <folder>/<job folder>/<patient>/<StudyDate-StudyTime-modalities>/<series>/<SOPInstanceUID>.dcm

Every part comes from outside data (a PACS, a spreadsheet, a user), so each one is sanitized
and the final path is checked to stay inside the destination folder.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydicom import Dataset

# Characters Windows, macOS or Linux refuse or treat specially in file names, plus controls.
_UNSAFE = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f]')
_RESERVED_WINDOWS_NAMES = {
    "CON", "PRN", "AUX", "NUL",
    *(f"COM{number}" for number in range(1, 10)),
    *(f"LPT{number}" for number in range(1, 10)),
}  # fmt: skip
MAX_PART_LENGTH = 100


class UnsafePathError(ValueError):
    """A computed path would leave its destination folder."""


def sanitize_part(value: str, fallback: str = "unknown") -> str:
    """One safe path component: no separators, no unsafe characters, no '.'/'..', bounded."""
    text = unicodedata.normalize("NFC", str(value)).strip()
    text = _UNSAFE.sub("_", text)
    text = text.strip(" .")  # trailing dots and spaces vanish on Windows shares
    if not text or set(text) <= {"_"}:
        text = fallback
    if text.upper().split(".")[0] in _RESERVED_WINDOWS_NAMES:
        text = f"_{text}"
    return text[:MAX_PART_LENGTH]


def job_folder_name(app_label: str, job_id: int, created: date, username: str) -> str:
    return sanitize_part(f"adit_{app_label}_{job_id}_{created:%Y%m%d}_{username}")


def study_folder_name(study_date: str, study_time: str, modalities: Iterable[str]) -> str:
    time_part = (study_time or "").split(".")[0][:6]
    joined = ",".join(sorted({modality for modality in modalities if modality}))
    return sanitize_part(f"{study_date or 'nodate'}-{time_part or 'notime'}-{joined or 'none'}")


def series_folder_name(series_number: str | int | None, description: str, series_uid: str) -> str:
    if series_number in (None, ""):
        return sanitize_part(series_uid)
    name = f"{series_number}-{description}" if description else str(series_number)
    return sanitize_part(name, fallback=sanitize_part(series_uid))


def study_folder_of(first_instance: Dataset, modalities: Iterable[str]) -> str:
    """The study folder, named from an instance as it is stored (so that shifted dates name
    the folder, not the original ones); ``modalities`` default to the instance's own."""
    return study_folder_name(
        str(first_instance.get("StudyDate", "")),
        str(first_instance.get("StudyTime", "")),
        list(modalities) or [str(first_instance.get("Modality", ""))],
    )


def series_folder_of(dataset: Dataset) -> str:
    return series_folder_name(
        dataset.get("SeriesNumber"),
        str(dataset.get("SeriesDescription", "")),
        str(dataset.SeriesInstanceUID),
    )


def instance_file_name(dataset: Dataset) -> str:
    return f"{sanitize_part(str(dataset.SOPInstanceUID))}.dcm"


def instance_path(
    destination: Path,
    job_folder: str,
    patient: str,
    study_folder: str,
    series_folder: str | None,
    sop_instance_uid: str,
) -> Path:
    """The file an instance is written to; raises UnsafePathError if it would escape."""
    parts = [job_folder, sanitize_part(patient), study_folder]
    if series_folder:
        parts.append(series_folder)
    path = destination.joinpath(*parts, f"{sanitize_part(sop_instance_uid)}.dcm")
    root = destination.resolve()
    if not path.resolve().is_relative_to(root):
        raise UnsafePathError(f"{path} lies outside the destination folder {root}.")
    return path


class StudyLayout:
    """The path of each instance of one study below the job folder (or in a download):
    ``<patient>/<study folder>/<series folder>/<SOPInstanceUID>.dcm``.

    The one place that names these parts: folder, ZIP and NIfTI destinations and the study
    download all ask it. The study folder is named from the first instance as it is stored,
    so pseudonymized (shifted) dates name it, not the original ones.
    """

    def __init__(self, patient: str, modalities: Iterable[str] = ()):
        """Args:
        patient: The pseudonym, or the PatientID; "" takes the first instance's PatientID.
        modalities: Those of the study's series that go (the study folder's name lists
            them); empty: the first instance's.
        """
        self._patient = patient.strip()
        self.modalities = list(modalities)
        self.study_folder = ""
        self.study_date = ""  # of the first instance, as stored

    @property
    def patient(self) -> str:
        return sanitize_part(self._patient)

    def study_parts(self, first_instance: Dataset) -> tuple[str, str]:
        """(patient folder, study folder), fixed by the first instance."""
        if not self.study_folder:
            self.study_date = str(first_instance.get("StudyDate", ""))
            self.study_folder = study_folder_of(first_instance, self.modalities)
            if not self._patient:
                self._patient = str(first_instance.get("PatientID", "")).strip()
        return self.patient, self.study_folder

    def parts(self, dataset: Dataset) -> tuple[str, str, str, str]:
        """(patient folder, study folder, series folder, file name) of an instance."""
        patient, study = self.study_parts(dataset)
        return patient, study, series_folder_of(dataset), instance_file_name(dataset)

    def entry(self, dataset: Dataset) -> str:
        """The instance's path as a ZIP entry or below a job folder, with "/" separators."""
        return "/".join(self.parts(dataset))
