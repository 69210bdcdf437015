"""What a line of a batch query file means: its columns, their rules and the task it becomes.

The file itself is read by the core's sheet reader, which batch transfer shares; the REST API's
JSON rows are read by it too and checked here as the lines of a file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError

from adit.core import validators
from adit.core.sheet_reader import Column, Sheet, SheetProblem, SheetRow, read_rows, read_sheet

from .models import BatchQueryTask

MAX_LINES_FOR_NON_STAFF = 1000

COLUMNS = (
    Column("PatientID", "id", max_length=64),
    Column("PatientName", "text", max_length=324),
    Column("PatientBirthDate", "date"),
    Column("AccessionNumber", "id", max_length=32),
    Column("From", "date"),
    Column("Until", "date"),
    Column("Modality", "text"),
    Column("StudyDescription", "text"),
    Column("SeriesDescription", "text"),
    Column("SeriesNumber", "integers"),
    Column("Pseudonym", "text"),
)

# Modality is a DICOM code string: capitals, digits, underscore (CT, MR, RTSTRUCT, OT).
_MODALITY = re.compile(r"[A-Z0-9_]{1,16}")


@dataclass
class BatchFile:
    """The tasks a batch file asks for, or the problems that keep it from being used."""

    tasks: list[BatchQueryTask] = field(default_factory=list)
    problems: list[SheetProblem] = field(default_factory=list)


def max_lines_for(user) -> int | None:
    """How many lines a batch of the user may have: staff have no limit."""
    return None if user.is_staff else MAX_LINES_FOR_NON_STAFF


def read_batch_file(data: bytes, filename: str, *, max_lines: int | None) -> BatchFile:
    """Reads and checks every line; the tasks are unsaved and have no job or source yet.

    Raises:
        SheetError: The file cannot be read as a table at all.
    """
    return _checked(read_sheet(data, filename, COLUMNS, max_rows=max_lines))


def read_batch_rows(rows: object, *, max_lines: int | None) -> BatchFile:
    """The lines sent as data (objects with the file's column names as keys), checked as the
    lines of a file.

    Raises:
        SheetError: ``rows`` is not a list of objects.
    """
    return _checked(read_rows(rows, COLUMNS, max_rows=max_lines))


def _checked(sheet: Sheet) -> BatchFile:
    result = BatchFile(problems=list(sheet.problems))
    refused: dict[int, set[str]] = {}  # line -> the columns whose cells the reader refused
    for problem in sheet.problems:
        refused.setdefault(problem.line, set()).add(problem.column)
    for row in sheet.rows:
        task = _task(row, refused.get(row.line), result.problems)
        if task is not None:
            result.tasks.append(task)
    if not sheet.rows and not result.problems:
        result.problems.append(SheetProblem(2, "", "The file has no lines to query."))
    result.problems.sort(key=lambda problem: problem.line)  # stable: columns stay in order
    return result


def person_name(text: str) -> str:
    """A name as people write it ("Doe, Jane") as DICOM writes it ("Doe^Jane")."""
    if "^" in text:
        return text
    return "^".join(part.strip() for part in text.split(","))


def _task(
    row: SheetRow, refused: set[str] | None, problems: list[SheetProblem]
) -> BatchQueryTask | None:
    values = row.values
    found: list[SheetProblem] = []
    refused = refused or set()

    def has_problem(*columns: str) -> bool:
        return bool(refused.intersection(columns)) or any(p.column in columns for p in found)

    def problem(column: str, message: str) -> None:
        found.append(SheetProblem(row.line, column, message))

    def text(column: str) -> str:
        value = values[column]
        if value is None:
            return ""
        assert isinstance(value, str)
        try:
            validators.validate_query_value(value)
        except ValidationError as err:
            problem(column, " ".join(err.messages))
            return ""
        return value

    patient_id = text("PatientID")
    if "*" in patient_id or "?" in patient_id:
        problem("PatientID", "Must not contain wildcards (* or ?): a patient ID names one patient.")
    accession_number = text("AccessionNumber")
    if "*" in accession_number or "?" in accession_number:
        problem("AccessionNumber", "Must not contain wildcards (* or ?).")
    patient_name = person_name(text("PatientName"))
    modalities: list[str] = []
    for item in text("Modality").split(","):
        modality = item.strip().upper()
        if not modality:
            continue
        if not _MODALITY.fullmatch(modality):
            problem(
                "Modality",
                f"{validators.shown(item.strip())} is not a modality: use codes like CT or MR, "
                "separated by commas.",
            )
        elif modality not in modalities:
            modalities.append(modality)
    study_description = text("StudyDescription")
    series_description = text("SeriesDescription")
    pseudonym = text("Pseudonym")
    if pseudonym:
        try:
            validators.validate_pseudonym(pseudonym)
        except ValidationError as err:
            problem("Pseudonym", " ".join(err.messages))
    start, end = values["From"], values["Until"]
    if start and end and start > end:  # pyright: ignore[reportOperatorIssue]
        problem("Until", f"Lies before From ({start}).")

    # The rules of a line as a whole, as users know them.
    birth_date = values["PatientBirthDate"]
    if not patient_id and not (patient_name and birth_date):
        if not has_problem("PatientID", "PatientName", "PatientBirthDate"):
            problem(
                "",
                "A patient must be identifiable by either PatientID or PatientName and "
                "PatientBirthDate.",
            )
    if not accession_number and not modalities and not has_problem("Modality", "AccessionNumber"):
        problem("Modality", "Missing Modality.")

    # A cell the reader refused already has its problem; the line is not used either way.
    if found or refused:
        problems.extend(found)
        return None
    series_numbers = values["SeriesNumber"] or ()
    return BatchQueryTask(
        line=row.line,
        patient_id=patient_id,
        patient_name=patient_name,
        patient_birth_date=birth_date,
        accession_number=accession_number,
        study_date_start=start,
        study_date_end=end,
        modalities=modalities,
        study_description=study_description,
        series_description=series_description,
        series_numbers=list(series_numbers),  # pyright: ignore[reportArgumentType]
        series_query=bool(series_description or series_numbers),
        pseudonym=pseudonym,
    )
