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
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.multival import MultiValue

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
    # Keys asked for beyond RETURN_KEYS (QIDO-RS includefield), by keyword.
    include: tuple[str, ...] = ()

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
            if key in _UID_KEYS:
                filters[key] = _uid_list(text)
                continue
            validators.validate_query_value(text)
            if ("*" in text or "?" in text) and key not in _WILDCARD_KEYS:
                raise ValidationError(f"{key} does not allow wildcards: {validators.shown(text)}.")
            filters[key] = text
        return cls(level=level, filters=filters, modalities=modalities)

    @classmethod
    def from_attributes(
        cls, level: Level | str, values: dict[str, str], include: Iterable[str] = ()
    ) -> Query:
        """A query by any attribute a PACS can match, as a DICOMweb client may send it: the
        keys ``create`` knows are checked as there; any other keyword of the data dictionary
        is matched as its VR allows (PS3.4 C.2.2.2) and ``include`` is asked for as well.

        Raises:
            ValidationError: If a key is no keyword, cannot be matched or its value is
                malformed for its VR.
        """
        level = Level(level)
        known = set(RETURN_KEYS[level]) | _DATE_KEYS | {"StudyTime"}
        known_values: dict[str, object] = {
            key: value for key, value in values.items() if key in known
        }
        if "ModalitiesInStudy" in known_values:  # a list, as QIDO-RS writes it: CT,MR or CT\MR
            text = str(known_values["ModalitiesInStudy"])
            known_values["ModalitiesInStudy"] = [m for m in re.split(r"[,\\]", text) if m]
        query = cls.create(level, **known_values)
        for key, value in values.items():
            if key in known or value == "":
                continue
            query.filters[key] = _attribute_filter(key, value)
        query.include = tuple(
            keyword
            for keyword in dict.fromkeys(include)
            if _returnable_keyword(keyword) not in RETURN_KEYS[level]
        )
        return query

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
            key: re.sub(r"[^\x00-\x7f]+\**", "*", value) if _matched_here(key) else value
            for key, value in self.filters.items()
        }

    def to_dataset(self) -> Dataset:
        dataset = Dataset()
        dataset.QueryRetrieveLevel = self.level.value
        for key in (*RETURN_KEYS[self.level], *self.include):
            setattr(dataset, key, None)
        for key, value in self.pacs_filters().items():
            setattr(dataset, key, value)
        if len(self.modalities) == 1:
            dataset.ModalitiesInStudy = self.modalities[0]
        return dataset

    def qido_filters(self) -> dict[str, str]:
        # QIDO-RS lists values with commas (PS3.18 8.3.4.1), DICOM with backslashes.
        filters = {
            key: value.replace("\\", ",") if _vr_of(key) == "UI" else value
            for key, value in self.pacs_filters().items()
        }
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
                if str(dataset.get(key, "")) not in self.filters[key].split("\\"):
                    return False
        for key in self.filters:
            if not _matched_here(key) or key not in dataset:
                continue
            pattern = self.filters[key].upper()
            # A multi-valued attribute matches when one of its values does.
            values = [value.strip() for value in as_list(dataset.get(key))] or [""]
            if not any(fnmatchcase(value.upper(), pattern) for value in values):
                return False
        return True


# VRs a C-FIND can match on, and those of them whose values may hold wildcards (PS3.4
# C.2.2.2.1-4); the others (binary, long texts, sequences) are only returned.
_MATCHABLE_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "PN", "SH", "TM", "UC", "UI"}
_WILDCARD_VRS = {"AE", "CS", "LO", "PN", "SH", "UC"}
# Never a key of a query's identifier: command and file meta elements, items, and what says
# how the query is asked.
_NOT_QUERY_KEYS = {"QueryRetrieveLevel", "SpecificCharacterSet"}
_NOT_QUERY_GROUPS = {0x0000, 0x0002, 0xFFFE}
_BULK_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW", "US or SS or OW"}
_ONE_VALUE = {
    "DA": r"\d{8}",
    "TM": r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?",
    "DT": r"\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?",
}
# A value or a range of them (PS3.4 C.2.2.2.5): "a", "a-b", "a-", "-b".
_RANGES = {vr: re.compile(f"({one})?(-({one})?)?") for vr, one in _ONE_VALUE.items()}
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _checked_keyword(keyword: str) -> str:
    if _vr_of(keyword) is None:
        raise ValidationError(f"{validators.shown(keyword)} is not a DICOM keyword.")
    tag = tag_for_keyword(keyword)
    assert tag is not None
    if keyword in _NOT_QUERY_KEYS or (tag >> 16) in _NOT_QUERY_GROUPS:
        raise ValidationError(f"{keyword} cannot be part of a query.")
    return keyword


def _returnable_keyword(keyword: str) -> str:
    """A keyword a search may return (QIDO-RS includefield): no bulk data."""
    if _vr_of(_checked_keyword(keyword)) in _BULK_VRS:
        raise ValidationError(f"{keyword} holds bulk data, which a search does not return.")
    return keyword


def _matched_here(key: str) -> bool:
    """Whether ADIT applies the key's pattern itself (see ``Query.pacs_filters``): the text
    keys that may hold wildcards."""
    return key in _WILDCARD_KEYS or _vr_of(key) in _WILDCARD_VRS


def _uid_list(text: str) -> str:
    """One UID or a list of them (``a,b`` as QIDO-RS writes it, or ``a\\b``), checked, as a
    DICOM value (PS3.4 C.2.2.2.2)."""
    uids = re.split(r"[,\\]", text)
    for uid in uids:
        validators.validate_uid(uid)
    return "\\".join(uids)


def _attribute_filter(keyword: str, value: str) -> str:
    vr = _vr_of(_checked_keyword(keyword))
    if vr not in _MATCHABLE_VRS:
        raise ValidationError(f"{keyword} ({vr}) cannot be used to match.")
    if vr == "UI":
        return _uid_list(value)
    validators.validate_query_value(value)
    if vr in _RANGES:
        if value.strip("-") == "" or not _RANGES[vr].fullmatch(value):
            raise ValidationError(
                f"{keyword}: {validators.shown(value)} is not a {vr} value or range."
            )
        return value
    if ("*" in value or "?" in value) and vr not in _WILDCARD_VRS:
        raise ValidationError(f"{keyword} does not allow wildcards: {validators.shown(value)}.")
    if vr in ("DS", "IS") and not _NUMBER.fullmatch(value.strip()):
        raise ValidationError(f"{keyword}: {validators.shown(value)} is not a number.")
    return value


def _vr_of(keyword: str) -> str | None:
    tag = tag_for_keyword(keyword)
    if tag is None:
        return None
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


def as_list(value) -> list[str]:
    """A DICOM multi-value (a backslash-joined string, a MultiValue, None) as a list."""
    if value is None:
        return []
    if isinstance(value, str):
        return [item for item in value.split("\\") if item]
    if isinstance(value, MultiValue | list | tuple):
        return [str(item) for item in value]
    return [str(value)]  # one value of another type (a PersonName iterates its letters)


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
