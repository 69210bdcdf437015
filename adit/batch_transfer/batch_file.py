"""What a batch transfer file asks for: studies (or some of their series) of patients, each
with the pseudonym it gets, grouped by study, with every problem named by its line.

The file is read by the core's sheet reader (the one batch query uses), so the export of a
batch query goes in unchanged: its other columns are ignored, and its lines that found nothing
(a Status, but no StudyInstanceUID) are skipped and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.core.exceptions import ValidationError

from adit.core import validators
from adit.core.sheet_reader import Column, Sheet, SheetProblem, SheetRow, read_rows, read_sheet

MAX_LINES_FOR_NON_STAFF = 500

COLUMNS = (
    Column("PatientID", "id", max_length=64),
    Column("StudyInstanceUID", "text", max_length=64),
    Column("SeriesInstanceUID", "text", max_length=64),
    Column("Pseudonym", "text", max_length=64),
    # Written by a batch query's export: a line of it that found nothing is no study to send.
    Column("Status", "text"),
)


@dataclass
class StudyRequest:
    """One study to transfer: the whole study, or the listed series of it."""

    patient_id: str
    study_uid: str
    pseudonym: str
    series_uids: list[str] = field(default_factory=list)  # empty: the whole study
    lines: list[int] = field(default_factory=list)
    line_series_uids: list[str] = field(default_factory=list)  # of each line, "" for none


@dataclass
class BatchFile:
    studies: list[StudyRequest] = field(default_factory=list)
    problems: list[SheetProblem] = field(default_factory=list)
    # Lines of a batch query export without a study (they found nothing or failed).
    skipped_lines: list[int] = field(default_factory=list)


def max_lines_for(user) -> int | None:
    """How many lines a batch of the user may have: staff have no limit."""
    return None if user.is_staff else MAX_LINES_FOR_NON_STAFF


def read_batch_file(
    data: bytes, filename: str, *, max_lines: int | None, pseudonym_required: bool
) -> BatchFile:
    """Reads, checks and groups every line; the result has problems or studies, not both.

    Raises:
        SheetError: The file cannot be read as a table at all.
    """
    sheet = read_sheet(data, filename, COLUMNS, ignore_other_columns=True, max_rows=max_lines)
    return _checked(sheet, pseudonym_required)


def read_batch_rows(rows: object, *, max_lines: int | None, pseudonym_required: bool) -> BatchFile:
    """The lines sent as data (objects with the file's column names as keys; other keys are
    ignored, as other columns of a file are), checked and grouped as the lines of a file.

    Raises:
        SheetError: ``rows`` is not a list of objects.
    """
    sheet = read_rows(rows, COLUMNS, ignore_other_columns=True, max_rows=max_lines)
    return _checked(sheet, pseudonym_required)


def _checked(sheet: Sheet, pseudonym_required: bool) -> BatchFile:
    result = BatchFile(problems=list(sheet.problems))
    # A cell the reader refused (too long, say) reads as empty: it has its problem already.
    refused: dict[int, set[str]] = {}
    for problem in sheet.problems:
        refused.setdefault(problem.line, set()).add(problem.column)
    usable: list[SheetRow] = []
    for row in sheet.rows:
        if _found_nothing(row):
            result.skipped_lines.append(row.line)
            continue
        found = _line_problems(row, pseudonym_required)
        result.problems += [p for p in found if p.column not in refused.get(row.line, ())]
        if not found and row.line not in refused:
            usable.append(row)
    if not result.problems:
        _check_whole_file(usable, result.problems)
    if not result.problems:
        result.studies = _grouped(usable)
        if not result.studies:
            result.problems.append(SheetProblem(2, "", "The file names no study to transfer."))
    result.problems.sort(key=lambda problem: problem.line)
    if result.problems:
        result.studies = []
    return result


def _text(row: SheetRow, column: str) -> str:
    value = row.values[column]
    assert value is None or isinstance(value, str)
    return value or ""


def _found_nothing(row: SheetRow) -> bool:
    """A line of a batch query's export for a line that found no study (or failed)."""
    return bool(_text(row, "Status")) and not _text(row, "StudyInstanceUID")


def _line_problems(row: SheetRow, pseudonym_required: bool) -> list[SheetProblem]:
    """The problems of one line."""
    found: list[SheetProblem] = []

    def problem(column: str, message: str) -> None:
        found.append(SheetProblem(row.line, column, message))

    patient_id = _text(row, "PatientID")
    if not patient_id:
        problem("PatientID", "This field is required.")
    else:
        _check(patient_id, validators.validate_query_value, "PatientID", problem)
        if "*" in patient_id or "?" in patient_id:
            problem("PatientID", "Must not contain wildcards (* or ?): it names one patient.")
    study_uid = _text(row, "StudyInstanceUID")
    if not study_uid:
        problem("StudyInstanceUID", "This field is required.")
    else:
        _check(study_uid, validators.validate_uid, "StudyInstanceUID", problem)
    series_uid = _text(row, "SeriesInstanceUID")
    if series_uid:
        _check(series_uid, validators.validate_uid, "SeriesInstanceUID", problem)
    pseudonym = _text(row, "Pseudonym")
    if pseudonym:
        _check(pseudonym, validators.validate_pseudonym, "Pseudonym", problem)
    elif pseudonym_required:
        problem("Pseudonym", "You are only allowed to transfer pseudonymized.")
    return found


def _check(value: str, validate, column: str, problem) -> None:
    try:
        validate(value)
    except ValidationError as err:
        problem(column, " ".join(err.messages))


def _check_whole_file(rows: list[SheetRow], problems: list[SheetProblem]) -> None:
    """Upstream's checks of the file as a whole, plus one pseudonym for two patients, which
    would merge two people into one. Each rule: a key, the value it must keep, the column
    that is wrong otherwise, and the message (with the key and the first line's value)."""
    rules = (
        ("StudyInstanceUID", "PatientID", "PatientID",
         "Same Study Instance UID {key} can't belong to different Patient IDs"),
        ("PatientID", "Pseudonym", "Pseudonym",
         "Same Patient ID {key} can't have different pseudonyms"),
        ("Pseudonym", "PatientID", "Pseudonym",
         "Same pseudonym {key} can't belong to different Patient IDs"),
    )  # fmt: skip
    for key_column, value_column, column, message in rules:
        first: dict[str, tuple[str, int]] = {}
        for row in rows:
            key, value = _text(row, key_column), _text(row, value_column)
            if not key:  # no pseudonym: nothing to merge
                continue
            first_value, first_line = first.setdefault(key, (value, row.line))
            if first_value != value:
                text = message.format(key=key)
                where = f"line {first_line} has {first_value or 'none'}"
                problems.append(SheetProblem(row.line, column, f"{text} ({where})."))


def _grouped(rows: list[SheetRow]) -> list[StudyRequest]:
    """One request per study, in the order of first appearance: a line without a series asks
    for the whole study; the series of the others are merged without repetition."""
    studies: dict[str, StudyRequest] = {}
    whole: set[str] = set()
    for row in rows:
        study_uid = _text(row, "StudyInstanceUID")
        request = studies.setdefault(
            study_uid,
            StudyRequest(_text(row, "PatientID"), study_uid, _text(row, "Pseudonym")),
        )
        request.lines.append(row.line)
        series_uid = _text(row, "SeriesInstanceUID")
        request.line_series_uids.append(series_uid)
        if not series_uid:
            whole.add(study_uid)
        elif series_uid not in request.series_uids:
            request.series_uids.append(series_uid)
    for study_uid in whole:
        studies[study_uid].series_uids = []
    return list(studies.values())
