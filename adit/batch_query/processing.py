"""Processing one line of a batch query: find the patient, then their studies or series.

The rules and messages are those users know from ADIT's batch query: a patient is looked up
by PatientID (and must then match a given name and birth date) or by PatientName and
PatientBirthDate; a study with any of the line's modalities matches (one query per patient,
matched on ModalitiesInStudy, as a PACS cannot OR several values); a series description or
series numbers ask for series. All C-FINDs of a line share one association.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable
from fnmatch import fnmatchcase

from django.core.exceptions import ValidationError
from pydicom import Dataset

from adit.core import validators
from adit.core.dicom.errors import DicomError
from adit.core.dicom.operator import DicomOperator
from adit.core.dicom.query import Level, Query, as_list, count_of
from adit.core.jobs.processing import TaskOutcome, TaskProcessor
from adit.core.jobs.statuses import TaskStatus
from adit.core.models import DicomServer

from .models import BatchQueryResult, BatchQueryTask

MAX_INTEGER = 2**31 - 1  # what the database's integer columns hold


class LineFailed(Exception):
    """The line cannot be answered: no such patient, or an answer ADIT cannot use."""


class BatchQueryProcessor(TaskProcessor):
    task: BatchQueryTask

    def process(self) -> TaskOutcome:
        source = self.task.source.concrete()
        if not isinstance(source, DicomServer):
            raise DicomError(f"The source {source.name} is not a DICOM server.")
        self.source = source
        self.operator = DicomOperator(source)
        self.queries = 0
        # What an earlier run found goes now: a run that fails must not leave it standing.
        BatchQueryResult.objects.filter(task=self.task).delete()
        try:
            with self.operator.query_session():
                studies = self._matching_studies()
                if self.task.series_query:
                    results = self._series_results(studies)
                else:
                    results = [self._result(study) for study in studies]
        except LineFailed as err:
            self.log.info(str(err))
            self.control.progress(self.queries, self.queries, force=True)
            return TaskOutcome(TaskStatus.FAILURE, str(err))
        self.control.progress(self.queries, self.queries, force=True)
        self._save(results)
        return self._outcome(results)

    # -- queries -------------------------------------------------------------------------------

    def _find(self, level: Level, **filters) -> list[Dataset]:
        self.control.check()
        query = Query.create(level, **filters)
        found = list(self.operator.find(query))
        self.queries += 1
        self.control.progress(self.queries)
        described = ", ".join(f"{key}={value}" for key, value in filters.items() if value)
        self.log.info(f"{level.value} query ({described}): {len(found)} answer(s).")
        return found

    def _matching_studies(self) -> list[Dataset]:
        """The studies the line asks for, once its patient is found and checked.

        A line with a patient ID asks for the studies first: their answers name the patient
        too, so the patient query (which tells "no such patient" from "no such study") is
        needed only when the PACS answered no study at all.
        """
        task = self.task
        if task.patient_id:
            answered: list[Dataset] = []
            studies = [
                study
                for study in self._studies([task.patient_id], answered)
                if _text(study, "PatientID") == task.patient_id  # exact, whatever the PACS did
            ]
            mine = [study for study in answered if _text(study, "PatientID") == task.patient_id]
            answer = mine[0] if mine else None
            # A study answer may leave out the patient's name or birth date (they are optional
            # at study level): then the patient query has them.
            if answer is None or not self._can_check_with(answer):
                answer = self._patient_by_id()
            self._check_patient(answer)
            return studies
        patients = self._find(
            Level.PATIENT, PatientName=task.patient_name, PatientBirthDate=task.patient_birth_date
        )
        patients = [
            patient
            for patient in patients
            if _date(patient, "PatientBirthDate") == task.patient_birth_date
        ]
        if not patients:
            raise LineFailed("No patient found with this PatientName and PatientBirthDate.")
        patient_ids = [_patient_id(patient, self.source.name) for patient in patients]
        return [
            study
            for study in self._studies(patient_ids)
            if _text(study, "PatientID") in patient_ids  # exact, whatever the PACS did
        ]

    def _patient_by_id(self) -> Dataset:
        patient_id = self.task.patient_id
        found = [
            patient
            for patient in self._find(Level.PATIENT, PatientID=patient_id)
            if _text(patient, "PatientID") == patient_id
        ]
        if not found:
            raise LineFailed("No patient found with this PatientID.")
        if len(found) > 1:
            raise LineFailed("Multiple patients found for this PatientID.")
        return found[0]

    def _can_check_with(self, answer: Dataset) -> bool:
        task = self.task
        if task.patient_name and not _text(answer, "PatientName"):
            return False
        return not (task.patient_birth_date and not _text(answer, "PatientBirthDate"))

    def _check_patient(self, answer: Dataset) -> None:
        """The name and birth date of the line must be those of the patient with its ID."""
        task = self.task
        if task.patient_name and not _same_name(_text(answer, "PatientName"), task.patient_name):
            raise LineFailed("PatientName doesn't match found patient by PatientID.")
        if task.patient_birth_date and _date(answer, "PatientBirthDate") != task.patient_birth_date:
            raise LineFailed("PatientBirthDate doesn't match found patient by PatientID.")

    def _studies(
        self, patient_ids: list[str], answered: list[Dataset] | None = None
    ) -> list[Dataset]:
        """The patients' studies that match the line, by date.

        The modalities are matched here, on the studies' ModalitiesInStudy: one query per
        patient instead of one per modality, and PACS differ in how they match that key
        anyway. A PACS that leaves ModalitiesInStudy out of its answers is asked once per
        modality instead. ``answered`` gets every study the PACS answered, matching or not.
        """
        task = self.task
        dates = None
        if task.study_date_start or task.study_date_end:
            dates = (task.study_date_start, task.study_date_end)
        filters = {
            "StudyDate": dates,
            "AccessionNumber": task.accession_number,
            "StudyDescription": task.study_description,
        }
        wanted = set(task.modalities)
        studies: dict[str, Dataset] = {}
        for patient_id in patient_ids:
            found = self._find(Level.STUDY, PatientID=patient_id, **filters)
            if answered is not None:
                answered += found
            if wanted and any(not _modalities(study) for study in found):
                found = [
                    study
                    for modality in task.modalities
                    for study in self._find(
                        Level.STUDY, PatientID=patient_id, ModalitiesInStudy=modality, **filters
                    )
                ]
            elif wanted:
                found = [study for study in found if wanted & _modalities(study)]
            for study in found:
                studies.setdefault(_uid(study, "StudyInstanceUID", self.source.name), study)
        return sorted(
            studies.values(),
            key=lambda study: (
                _date(study, "StudyDate") or datetime.date.min,
                _time(study, "StudyTime") or datetime.time.min,
            ),
        )

    def _series_results(self, studies: Iterable[Dataset]) -> list[BatchQueryResult]:
        task = self.task
        numbers = set(task.series_numbers)
        results: list[BatchQueryResult] = []
        for study in studies:
            study_uid = _uid(study, "StudyInstanceUID", self.source.name)
            found: dict[str, Dataset] = {}
            for series in self._find(
                Level.SERIES,
                PatientID=_patient_id(study, self.source.name),
                StudyInstanceUID=study_uid,
                SeriesDescription=task.series_description,
            ):
                # Compared here as numbers: PACS match IS values as text ("01" is not "1").
                if numbers and _series_number(series) not in numbers:
                    continue
                found.setdefault(_uid(series, "SeriesInstanceUID", self.source.name), series)
            for series in sorted(found.values(), key=lambda item: _series_number(item) or 0):
                results.append(self._result(study, series))
        return results

    # -- results -------------------------------------------------------------------------------

    def _result(self, study: Dataset, series: Dataset | None = None) -> BatchQueryResult:
        name = self.source.name
        result = BatchQueryResult(
            job_id=self.task.job_id,  # pyright: ignore[reportAttributeAccessIssue]
            task=self.task,
            patient_id=_text(study, "PatientID"),
            patient_name=_text(study, "PatientName"),
            patient_birth_date=_date(study, "PatientBirthDate"),
            accession_number=_text(study, "AccessionNumber"),
            study_uid=_uid(study, "StudyInstanceUID", name),
            study_date=_date(study, "StudyDate"),
            study_time=_time(study, "StudyTime"),
            study_description=_text(study, "StudyDescription"),
            modalities=[_printable(item) for item in as_list(_value(study, "ModalitiesInStudy"))],
            image_count=_count(study, "NumberOfStudyRelatedInstances"),
            pseudonym=self.task.pseudonym,
        )
        if series is not None:
            result.series_uid = _uid(series, "SeriesInstanceUID", name)
            result.series_description = _text(series, "SeriesDescription")
            result.series_number = _series_number(series)
            result.modalities = [_text(series, "Modality")] if _text(series, "Modality") else []
        return result

    def _save(self, results: list[BatchQueryResult]) -> None:
        BatchQueryResult.objects.bulk_create(results)

    def _outcome(self, results: list[BatchQueryResult]) -> TaskOutcome:
        count = len(results)
        if self.task.series_query:
            found = f"{count} series found"
        else:
            found = f"{count} {'study' if count == 1 else 'studies'} found"
        self.log.info(f"{found} in {self.queries} queries.")
        if len({result.patient_id for result in results}) > 1:
            return TaskOutcome(
                TaskStatus.WARNING,
                f"{found}. Indistinct patients: studies of multiple patients were found for "
                "this query.",
            )
        return TaskOutcome(TaskStatus.SUCCESS, found)


# -- reading answers (a PACS may send anything) -------------------------------------------------


def _value(dataset: Dataset, keyword: str):
    try:
        return dataset.get(keyword)
    except Exception as err:  # pydicom could not read the value as its VR
        raise LineFailed(f"The PACS answered an unreadable {keyword}: {err}") from err


def _printable(text: str) -> str:
    return "".join(character if character.isprintable() else "\ufffd" for character in text)


def _text(dataset: Dataset, keyword: str) -> str:
    value = _value(dataset, keyword)
    return "" if value is None else _printable(str(value)).strip()


def _uid(dataset: Dataset, keyword: str, server: str) -> str:
    uid = _text(dataset, keyword)
    if not validators.is_valid_uid(uid):
        raise LineFailed(
            f"{server} answered an invalid {keyword} {validators.shown(uid)}; ADIT cannot use "
            "this answer."
        )
    return uid


def _patient_id(dataset: Dataset, server: str) -> str:
    """A patient ID from the PACS that names exactly that patient in the next query: an empty
    one would match everybody, a * or ? others."""
    value = _text(dataset, "PatientID")
    problem = ""
    if not value:
        problem = "an empty PatientID"
    elif "*" in value or "?" in value:
        problem = f"the PatientID {validators.shown(value)}, whose * or ? would match others"
    else:
        try:
            validators.validate_query_value(value)
        except ValidationError:
            problem = f"the PatientID {validators.shown(value)}, which cannot be queried"
    if problem:
        raise LineFailed(f"{server} answered a patient with {problem}; ADIT cannot use it.")
    return value


def _date(dataset: Dataset, keyword: str) -> datetime.date | None:
    text = _text(dataset, keyword).replace(".", "")  # ACR-NEMA wrote 2024.01.31
    if not text:
        return None
    try:
        return datetime.datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise LineFailed(
            f"The PACS answered an invalid {keyword} {validators.shown(text)} (not YYYYMMDD)."
        ) from None


_TIME = re.compile(r"(\d{2})(?::?(\d{2})(?::?(\d{2})(?:\.(\d{1,6}))?)?)?")


def _time(dataset: Dataset, keyword: str) -> datetime.time | None:
    text = _text(dataset, keyword)
    if not text:
        return None
    match = _TIME.fullmatch(text)
    try:
        if match is None:
            raise ValueError
        hour, minute, second, fraction = match.groups()
        return datetime.time(
            int(hour),
            int(minute or 0),
            min(int(second or 0), 59),  # DICOM allows a leap second
            int((fraction or "0").ljust(6, "0")),
        )
    except ValueError:
        raise LineFailed(
            f"The PACS answered an invalid {keyword} {validators.shown(text)} (not HHMMSS)."
        ) from None


def _modalities(study: Dataset) -> set[str]:
    return {item.strip().upper() for item in as_list(_value(study, "ModalitiesInStudy"))}


def _count(dataset: Dataset, keyword: str) -> int | None:
    count = count_of(dataset, keyword)
    return count if count is not None and count <= MAX_INTEGER else None


def _series_number(series: Dataset) -> int | None:
    text = _text(series, "SeriesNumber")
    try:
        number = int(text) if text else None
    except ValueError:
        return None
    return number if number is not None and abs(number) <= MAX_INTEGER else None


def _same_name(found: str, given: str) -> bool:
    """Whether the PACS's name is the one in the file: parts compared without case and
    trailing empty parts; a * or ? in the file is a wildcard."""

    def parts(name: str) -> str:
        return "^".join(part.strip() for part in name.upper().split("^")).rstrip("^")

    # Only * and ? are DICOM wildcards; fnmatch would take [ ] for a set of characters.
    return fnmatchcase(parts(found), parts(given).replace("[", "[[]"))
