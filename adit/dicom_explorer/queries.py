"""What the explorer asks a PACS, answered within the explorer's timeout or not at all.

The keys of a page's query string are DICOM keywords of the level the page lists; each is
checked (an unknown keyword or a malformed value is a ``BadQuery``), then passed into the
C-FIND or QIDO-RS of the core's operator. Answers come back as plain ``Dataset``s; a person
reads what went wrong as an ``ExplorerError``, with the messages upstream's users know.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from pydicom import Dataset

from adit.core import validators
from adit.core.dicom.errors import AssociationLimitError, DicomError, DicomTimeoutError
from adit.core.dicom.operator import DicomOperator
from adit.core.dicom.query import RETURN_KEYS, Level, Query
from adit.core.models import DicomServer

# A page shows this many; one more answer tells that there are more.
MAX_RESULTS = 100
TIMED_OUT = "Connection to server timed out. Please try again later."

# The keys a page of each level accepts: what its answers carry, dates as ranges.
_KEYS = {
    Level.PATIENT: set(RETURN_KEYS[Level.PATIENT]) - {"NumberOfPatientRelatedStudies"},
    Level.STUDY: (set(RETURN_KEYS[Level.STUDY]) | {"StudyTime"})
    - {"NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"},
    Level.SERIES: set(RETURN_KEYS[Level.SERIES]) - {"NumberOfSeriesRelatedInstances"},
    Level.IMAGE: set(RETURN_KEYS[Level.IMAGE]),
}


class ExplorerError(Exception):
    """What a person reads instead of the page, with its HTTP status."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.message = message
        self.status = status


class BadQuery(ExplorerError):
    def __init__(self, message: str):
        super().__init__(message, 400)


class NotFound(ExplorerError):
    def __init__(self, message: str):
        super().__init__(message, 404)


@dataclass
class Results:
    items: list[Dataset]
    more: bool  # the PACS has more than the page shows


def query_filters(parameters: Mapping[str, str], level: Level) -> dict[str, str]:
    """The DICOM filters of a page's query string (``page`` and ``per_page`` are the page's
    own); BadQuery names an unknown keyword."""
    filters: dict[str, str] = {}
    for key, value in parameters.items():
        if key in ("page", "per_page"):
            continue
        if key not in _KEYS[level]:
            allowed = ", ".join(sorted(_KEYS[level]))
            raise BadQuery(
                f"{validators.shown(key)} is not a DICOM keyword this page can search by "
                f"(one of {allowed})."
            )
        if value:
            filters[key] = value
    return filters


class Explorer:
    """The queries of the explorer's pages at one server."""

    def __init__(self, server: DicomServer):
        self.server = server
        self.operator = DicomOperator(server, answer_within=settings.DICOM_EXPLORER_TIMEOUT)

    # -- lists --------------------------------------------------------------------------------

    def patients(self, **filters) -> Results:
        return self._results(Level.PATIENT, filters)

    def studies(self, **filters) -> Results:
        results = self._results(Level.STUDY, filters)
        results.items.sort(key=_newest_first, reverse=True)
        return results

    def series(self, study_uid: str, **filters) -> Results:
        results = self._results(Level.SERIES, {**filters, "StudyInstanceUID": study_uid})
        results.items.sort(key=_series_number)
        return results

    def instances(self, study_uid: str, series_uid: str) -> Results:
        filters = {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid}
        results = self._results(Level.IMAGE, filters)
        results.items.sort(key=_instance_number)
        return results

    # -- one of each --------------------------------------------------------------------------

    def patient(self, patient_id: str) -> Dataset:
        self.check_id(patient_id, "Patient ID")
        return self._one(
            self._results(Level.PATIENT, {"PatientID": patient_id}, limit=2),
            f"No patient found with Patient ID {patient_id}.",
            f"Multiple patients found with Patient ID {patient_id}.",
        )

    def study(self, study_uid: str) -> Dataset:
        self.check_uid(study_uid, "Study Instance UID")
        return self._one(
            self._results(Level.STUDY, {"StudyInstanceUID": study_uid}, limit=2),
            f"No study found with Study Instance UID {study_uid}.",
            f"Multiple studies found with Study Instance UID {study_uid}.",
        )

    def one_series(self, study_uid: str, series_uid: str) -> Dataset:
        self.check_uid(study_uid, "Study Instance UID")
        self.check_uid(series_uid, "Series Instance UID")
        filters = {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid}
        return self._one(
            self._results(Level.SERIES, filters, limit=2),
            f"No series found with Series Instance UID {series_uid}.",
            f"Multiple series found with Series Instance UID {series_uid}.",
        )

    def instance(self, patient_id: str, study_uid: str, series_uid: str, sop_uid: str) -> Dataset:
        """The instance itself, fetched; its large values (pixel data) stay on disk."""
        for value, name in ((series_uid, "Series Instance UID"), (sop_uid, "SOP Instance UID")):
            self.check_uid(value, name)
        filters = {
            "StudyInstanceUID": study_uid,
            "SeriesInstanceUID": series_uid,
            "SOPInstanceUID": sop_uid,
        }
        self._one(
            self._results(Level.IMAGE, filters, limit=2),
            f"No instance found with SOP Instance UID {sop_uid}.",
            f"Multiple instances found with SOP Instance UID {sop_uid}.",
        )
        fetched: list[Dataset] = []

        def keep_the_first(dataset: Dataset) -> None:
            if not fetched:
                fetched.append(dataset)

        def fetch():
            self.operator.fetch_image(
                patient_id,
                study_uid,
                series_uid,
                sop_uid,
                keep_the_first,
                spool_above=settings.TRANSFER_PIPELINE_BYTES // 16,
            )
            return iter(())

        list(self._asked(fetch))
        if not fetched:
            raise NotFound(f"No instance found with SOP Instance UID {sop_uid}.")
        return fetched[0]

    # -- helpers ------------------------------------------------------------------------------

    def _results(self, level: Level, filters: dict, limit: int | None = None) -> Results:
        limit = limit or MAX_RESULTS + 1
        try:
            query = Query.create(level, **filters)
        except ValidationError as err:
            raise BadQuery(" ".join(err.messages)) from None
        answers = self.operator.find(query, limit)
        items = list(self._asked(lambda: answers))
        # Cut short: ADIT filtered a bounded number of answers, the PACS may match more.
        more = len(items) > MAX_RESULTS or answers.cut_short
        return Results(items[:MAX_RESULTS], more)

    def _asked(self, start) -> Iterator[Dataset]:
        try:
            yield from start()
        except DicomTimeoutError:
            raise ExplorerError(TIMED_OUT, 504) from None
        except AssociationLimitError:
            raise ExplorerError(
                f"{self.server.name} is busy: all the connections ADIT may open to it are in "
                "use. Please try again later.",
                503,
            ) from None
        except DicomError as err:
            raise ExplorerError(str(err), 502) from None
        except ValidationError as err:  # a value the DICOM layer refuses to put in a query
            raise BadQuery(" ".join(err.messages)) from None

    @staticmethod
    def _one(results: Results, none: str, several: str) -> Dataset:
        if not results.items:
            raise NotFound(none)
        if len(results.items) > 1:
            raise ExplorerError(several, 409)
        return results.items[0]

    @staticmethod
    def check_id(value: str, name: str) -> None:
        if not is_valid_id(value):
            raise BadQuery(f"Invalid {name} {validators.shown(value)}.")

    @staticmethod
    def check_uid(value: str, name: str) -> None:
        if not validators.is_valid_uid(value):
            raise BadQuery(f"Invalid {name} {validators.shown(value)}.")


def is_valid_id(value: str) -> bool:
    """Whether a patient ID can name one patient in a query and in a page's path."""
    try:
        validators.validate_query_value(value)
    except ValidationError:
        return False
    if any(part in (".", "..") for part in value.split("/")):  # a browser would change the path
        return False
    return bool(value) and len(value) <= 64 and "*" not in value and "?" not in value


def _newest_first(study: Dataset) -> str:
    return f"{study.get('StudyDate', '')}{study.get('StudyTime', '')}"


def _series_number(series: Dataset) -> tuple[int, str]:
    return (_number(series.get("SeriesNumber")), str(series.get("SeriesInstanceUID", "")))


def _instance_number(instance: Dataset) -> tuple[int, str]:
    return (_number(instance.get("InstanceNumber")), str(instance.get("SOPInstanceUID", "")))


def _number(value) -> int:
    """A number a PACS sent, for sorting; anything else sorts last."""
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return 2**31
