"""The export of a batch query job's results as .xlsx and .csv.

The columns are those users know, in their order (Pseudonym first when any line had one; the
series columns when any line asked for series), so that the file can go to a batch transfer
as it is; Line, Status and Message follow, so that every line of the batch file appears, also
one that found nothing or failed.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.http.response import HttpResponseBase

from adit.core.spreadsheets import table_download

from .models import BatchQueryJob
from .results import ResultRow, rows

STUDY_COLUMNS = (
    "PatientID",
    "PatientName",
    "BirthDate",
    "ModalitiesInStudy",
    "StudyDate",
    "StudyTime",
    "StudyDescription",
    "NumberOfStudyRelatedInstances",
    "AccessionNumber",
    "StudyInstanceUID",
)
SERIES_COLUMNS = ("SeriesInstanceUID", "SeriesDescription", "SeriesNumber")
OUTCOME_COLUMNS = ("Line", "Status", "Message")


class Export:
    """The export's columns and values; ``all_columns`` keeps the Pseudonym and series columns
    also when no line needs them (the REST API's rows all have the same keys)."""

    def __init__(self, job: BatchQueryJob, *, all_columns: bool = False):
        self.job = job
        self.with_pseudonym = all_columns or job.pseudonyms_given()
        self.with_series = all_columns or job.series_queried()

    @property
    def header(self) -> list[str]:
        return [
            *(["Pseudonym"] if self.with_pseudonym else []),
            *STUDY_COLUMNS,
            *(SERIES_COLUMNS if self.with_series else ()),
            *OUTCOME_COLUMNS,
        ]

    def filename(self, suffix: str) -> str:
        return f"batch_query_job_{self.job.pk}_results.{suffix}"

    def values(self) -> Iterator[list]:
        for row in rows(self.job):
            yield self.row_values(row)

    def download(self, suffix: str) -> HttpResponseBase:
        """The export as a file to download ("xlsx" or "csv")."""
        return table_download(suffix, self.filename(suffix), self.header, self.values())

    def row_values(self, row: ResultRow) -> list:
        values: list = [row.pseudonym] if self.with_pseudonym else []
        values += [
            row.patient_id,
            row.readable_name,
            row.patient_birth_date,
            ", ".join(row.modalities),
            row.study_date,
            row.study_time,
            row.study_description,
            row.image_count,
            row.accession_number,
            row.study_uid,
        ]
        if self.with_series:
            values += [row.series_uid, row.series_description, row.series_number]
        return [*values, row.line, row.status, row.message]
