"""The results of a batch query job as rows for people: one per study or series found, and
one for each line that found nothing or failed, with its reason. The results page and both
exports show these same rows."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from adit.core.jobs.statuses import TaskStatus

from .models import BatchQueryJob, BatchQueryTask

if TYPE_CHECKING:
    from django.db.models.query import ValuesQuerySet

_TASK_FIELDS = ("pk", "line", "status", "message", "pseudonym", "patient_id", "patient_name")
_TASK_FIELDS += ("patient_birth_date", "accession_number", "modalities")
_RESULT_FIELDS = ("pk", "patient_id", "patient_name", "patient_birth_date", "accession_number")
_RESULT_FIELDS += ("study_uid", "study_date", "study_time", "study_description", "modalities")
_RESULT_FIELDS += ("image_count", "series_uid", "series_description", "series_number")


def result_rows(
    job: BatchQueryJob, *, line: int | None = None, status: str = ""
) -> ValuesQuerySet[BatchQueryTask, dict[str, Any]]:
    """The rows as dicts, ordered by line: a LEFT JOIN of the lines with their results, so a
    line without results is a row of its own (its ``results__pk`` is None)."""
    tasks = BatchQueryTask.objects.filter(job=job)
    if line is not None:
        tasks = tasks.filter(line=line)
    if status:
        tasks = tasks.filter(status=status)
    fields = [*_TASK_FIELDS, *(f"results__{name}" for name in _RESULT_FIELDS)]
    return tasks.order_by("line", "pk", "results__pk").values(*fields)


@dataclass(frozen=True)
class ResultRow:
    """One row: what was found, or (``found`` False) what the line asked for."""

    task_id: int
    line: int
    status: str
    message: str
    found: bool
    pseudonym: str
    patient_id: str
    patient_name: str  # as DICOM writes it, Last^First
    patient_birth_date: datetime.date | None
    modalities: tuple[str, ...]
    study_date: datetime.date | None
    study_time: datetime.time | None
    study_description: str
    image_count: int | None
    accession_number: str
    study_uid: str
    series_uid: str
    series_description: str
    series_number: int | None

    @classmethod
    def from_values(cls, values: dict) -> ResultRow:
        found = values["results__pk"] is not None

        def pick(name: str):
            return values[f"results__{name}"] if found else values[name]

        return cls(
            task_id=values["pk"],
            line=values["line"],
            status=TaskStatus(values["status"]).label,
            message=values["message"],
            found=found,
            pseudonym=values["pseudonym"],
            patient_id=pick("patient_id"),
            patient_name=pick("patient_name"),
            patient_birth_date=pick("patient_birth_date"),
            modalities=tuple(pick("modalities") or ()),
            study_date=values["results__study_date"],
            study_time=values["results__study_time"],
            study_description=values["results__study_description"] or "",
            image_count=values["results__image_count"],
            accession_number=pick("accession_number") or "",
            study_uid=values["results__study_uid"] or "",
            series_uid=values["results__series_uid"] or "",
            series_description=values["results__series_description"] or "",
            series_number=values["results__series_number"],
        )

    @property
    def readable_name(self) -> str:
        """Last^First^Middle as people write it: "Last, First Middle"."""
        family, _, given = self.patient_name.partition("^")
        given = " ".join(part for part in given.split("^") if part)
        return f"{family}, {given}" if given else family


def rows(job: BatchQueryJob, **filters) -> Iterator[ResultRow]:
    for values in result_rows(job, **filters).iterator(chunk_size=2000):
        yield ResultRow.from_values(values)
