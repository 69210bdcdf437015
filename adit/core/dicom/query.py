"""Validated query keys for C-FIND and QIDO-RS, and the filters a PACS may not apply itself."""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from fnmatch import fnmatchcase

from django.core.exceptions import ValidationError
from pydicom import Dataset

from adit.core import validators


class Level(StrEnum):
    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"


# Keys every answer carries at each level (PS3.4 C.6.1.1 / C.6.2.1), requested even when empty.
RETURN_KEYS: dict[Level, tuple[str, ...]] = {
    Level.PATIENT: (
        "PatientID",
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "NumberOfPatientRelatedStudies",
    ),
    Level.STUDY: (
        "PatientID",
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyDescription",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ),
    Level.SERIES: (
        "PatientID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "Modality",
        "SeriesNumber",
        "SeriesDescription",
        "NumberOfSeriesRelatedInstances",
    ),
    Level.IMAGE: (
        "PatientID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "SOPClassUID",
        "InstanceNumber",
    ),
}

_DATE_KEYS = {"PatientBirthDate", "StudyDate", "SeriesDate"}
_UID_KEYS = {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"}
_WILDCARD_KEYS = {"PatientName", "PatientID", "AccessionNumber", "StudyDescription"}
_WILDCARD_KEYS |= {"SeriesDescription"}

DateValue = datetime.date | tuple[datetime.date | None, datetime.date | None] | str


def _dicom_date(value: datetime.date | None) -> str:
    return value.strftime("%Y%m%d") if value else ""


def _parse_date(text: str, key: str) -> None:
    try:
        datetime.datetime.strptime(text, "%Y%m%d")
    except ValueError:
        raise ValidationError(
            f"{key}: {validators.shown(text)} is not a date of the form YYYYMMDD."
        ) from None


def encode_date(key: str, value: DateValue) -> str:
    """A date or a range as DICOM DA matching: ``20240101``, ``20240101-20241231``, ``-2024…``."""
    if isinstance(value, tuple):
        start, end = value
        if start and end and start > end:
            raise ValidationError(f"{key}: the range starts after it ends ({start} > {end}).")
        return f"{_dicom_date(start)}-{_dicom_date(end)}"
    if isinstance(value, datetime.date):
        return _dicom_date(value)
    for part in value.split("-"):
        if part:
            _parse_date(part, key)
    if value.count("-") > 1:
        raise ValidationError(f"{key}: {validators.shown(value)} is not a date or a date range.")
    return value


@dataclass
class Query:
    """A query at one level with its filter values, encoded and validated.

    ``modalities`` is kept apart: PACS differ in how they match ModalitiesInStudy against
    several values, so several modalities are filtered here ("any of") instead.
    """

    level: Level
    filters: dict[str, str] = field(default_factory=dict)
    modalities: tuple[str, ...] = ()

    @classmethod
    def create(cls, level: Level | str, **values) -> Query:
        level = Level(level)
        allowed = set(RETURN_KEYS[level]) | _DATE_KEYS | {"StudyTime"}
        filters: dict[str, str] = {}
        modalities: tuple[str, ...] = ()
        for key, value in values.items():
            if value in (None, "", [], ()):
                continue
            if key not in allowed:
                raise ValidationError(f"{key} is not a query key at {level} level.")
            if key == "ModalitiesInStudy":
                items = [value] if isinstance(value, str) else list(value)
                for item in items:
                    validators.validate_query_value(item)
                modalities = tuple(sorted({item.upper() for item in items}))
                continue
            if key in _DATE_KEYS:
                filters[key] = encode_date(key, value)
                continue
            text = str(value)
            validators.validate_query_value(text)
            if key in _UID_KEYS:
                validators.validate_uid(text)
            elif ("*" in text or "?" in text) and key not in _WILDCARD_KEYS:
                raise ValidationError(f"{key} does not allow wildcards: {validators.shown(text)}.")
            filters[key] = text
        return cls(level=level, filters=filters, modalities=modalities)

    def has_exact(self, key: str) -> bool:
        value = self.filters.get(key, "")
        return bool(value) and "*" not in value and "?" not in value

    def pacs_filters(self) -> dict[str, str]:
        """The filters as sent to a PACS.

        PACS differ in matching letters outside ASCII (some compare bytes, so ``?`` does not
        match a two-byte UTF-8 letter; others compare case-sensitively), so each run of such
        letters is sent as ``*`` and :meth:`matches` applies the real pattern to the answers.
        """
        return {
            key: re.sub(r"[^\x00-\x7f]+\**", "*", value) if key in _WILDCARD_KEYS else value
            for key, value in self.filters.items()
        }

    def to_dataset(self) -> Dataset:
        dataset = Dataset()
        dataset.QueryRetrieveLevel = self.level.value
        for key in RETURN_KEYS[self.level]:
            setattr(dataset, key, "")
        for key, value in self.pacs_filters().items():
            setattr(dataset, key, value)
        if len(self.modalities) == 1:
            dataset.ModalitiesInStudy = self.modalities[0]
        return dataset

    def qido_filters(self) -> dict[str, str]:
        filters = self.pacs_filters()
        if len(self.modalities) == 1:
            filters["ModalitiesInStudy"] = self.modalities[0]
        return filters

    def matches(self, dataset: Dataset) -> bool:
        """Whether a PACS answer really fits the filters the PACS may have ignored."""
        if self.modalities and self.level == Level.STUDY:
            found = as_list(dataset.get("ModalitiesInStudy", ""))
            if found and not set(self.modalities) & {value.upper() for value in found}:
                return False
        for key in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            if key in self.filters and key in dataset:
                if str(dataset.get(key, "")) != self.filters[key]:
                    return False
        for key in _WILDCARD_KEYS & self.filters.keys():
            if key not in dataset:
                continue
            value = str(dataset.get(key) or "").strip()
            if not fnmatchcase(value.upper(), self.filters[key].upper()):
                return False
        return True


def as_list(value) -> list[str]:
    """A DICOM multi-value (a backslash-joined string, a MultiValue, None) as a list."""
    if value is None:
        return []
    if isinstance(value, str):
        return [item for item in value.split("\\") if item]
    if isinstance(value, Iterable):
        return [str(item) for item in value]
    return [str(value)]


def count_of(dataset: Dataset, keyword: str) -> int | None:
    """A count a PACS answered (NumberOfSeriesRelatedInstances, say), or None if it gave none
    or something that is not one non-negative number."""
    try:
        value = dataset.get(keyword)
    except (ValueError, TypeError):  # pydicom could not read the value as its VR
        return None
    if value is None or isinstance(value, list | tuple) or str(value).strip() == "":
        return None
    try:
        count = int(str(value).strip())
    except ValueError:
        return None
    return count if count >= 0 else None
