"""What became of each line of a batch transfer's file, for the export: the study it named,
what the check found at the source, and how its transfer went. The lines of a batch query
export that named no study are listed too, so that the export accounts for every line."""

from __future__ import annotations

from collections.abc import Iterator

from adit.core.jobs.statuses import TaskStatus

from .models import BatchTransferJob, CheckResult

OUTCOME_COLUMNS = (
    "Line",
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Pseudonym",
    "AtSource",
    "SourcePatientID",
    "StudyDate",
    "Modalities",
    "Instances",
    "Status",
    "Message",
    "PseudonymizedStudyInstanceUID",
)

_FIELDS = (
    "lines",
    "line_series_uids",
    "patient_id",
    "study_uid",
    "pseudonym",
    "check_result",
    "check_message",
    "source_patient_id",
    "study_date",
    "modalities",
    "progress_done",
    "progress_total",
    "checked_instances",
    "status",
    "message",
    "pseudonymized_study_uid",
)


def outcome_rows(job: BatchTransferJob) -> Iterator[list]:
    """One row per line of the file, in the order of the lines."""
    rows: list[list] = [
        [line, "", "", "", "", "", "", None, "", None, "Skipped",
         "The line names no study (its batch query found nothing or failed).", ""]
        for line in job.skipped_lines
    ]  # fmt: skip
    for task in job.tasks.order_by("pk").values(*_FIELDS).iterator(chunk_size=1000):
        series = task["line_series_uids"] or [""] * len(task["lines"])
        status = TaskStatus(task["status"]).label
        if job.is_being_checked:
            status = "Not started"
        for line, series_uid in zip(task["lines"], series, strict=False):
            rows.append(
                [
                    line,
                    task["patient_id"],
                    task["study_uid"],
                    series_uid,
                    task["pseudonym"],
                    CheckResult(task["check_result"]).label if task["check_result"] else "",
                    task["source_patient_id"],
                    task["study_date"],
                    ", ".join(task["modalities"]),
                    _instances(task),
                    status,
                    task["message"] or task["check_message"],
                    task["pseudonymized_study_uid"],
                ]
            )
    rows.sort(key=lambda row: row[0])
    yield from rows


def _instances(task: dict) -> str:
    if task["progress_total"] is not None or task["progress_done"]:
        total = task["progress_total"]
        return (
            f"{task['progress_done']} of {total}"
            if total is not None
            else str(task["progress_done"])
        )
    if task["checked_instances"] is not None:
        return f"{task['checked_instances']} at the source"
    return ""
