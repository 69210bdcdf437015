"""The one way ADIT reads the spreadsheets users upload (batch query, batch transfer, the job
API): ``.xlsx`` or ``.csv``, checked cell by cell against the columns an app expects. Lines a
script sends as JSON rows instead of a file (``read_rows``) go through the same checks.

Everything in such a file is untrusted and often hand-made, so the reader never guesses: a
problem becomes a ``SheetProblem`` naming its line and column, all problems of a file are
collected (not only the first), and a caller creates nothing while any remains. Two mistakes
spreadsheet programs make silently get their own message: an ID that Excel stored as a number
(its leading zeros are gone, so it may name another patient) and a CSV saved in a legacy
encoding.
"""

from __future__ import annotations

import csv
import datetime
import io
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from adit.core.spreadsheets import FORMULA_STARTS

MAX_FILE_BYTES = 5 * 2**20
MAX_CELL_LENGTH = 200  # longer text is reported, never cut
MAX_INTEGER = 2**31 - 1  # what a database integer column holds
MAX_MERGED_REPORTED = 100
FIRST_YEAR = 1850  # DICOM writes years with four digits; an earlier one is a typo
MAX_LINES = 1_048_576  # Excel's own limit; a file claiming more lines is not a real sheet
MAX_SHEET_XML_BYTES = 256 * 2**20  # a sheet unpacking to more is a zip bomb, not a batch file
# Day numbers of an Excel date cell that lost its format: 1910-01-01 to 9999-12-31. A small
# number is more likely a year or a typo than a date in 1900.
EXCEL_DAYS = range(3654, 2_958_466)
EXCEL_EPOCH = datetime.date(1899, 12, 30)

CellKind = Literal["id", "text", "date", "integer", "integers"]
Value = str | datetime.date | int | tuple[int, ...] | None

_DATE_FORMATS = (
    (re.compile(r"\d{4}-\d{2}-\d{2}"), "%Y-%m-%d"),
    (re.compile(r"\d{2}\.\d{2}\.\d{4}"), "%d.%m.%Y"),
    (re.compile(r"\d{8}"), "%Y%m%d"),
)


class SheetError(ValueError):
    """The file as a whole cannot be read (not a spreadsheet, too large, no header)."""


@dataclass(frozen=True)
class Column:
    """A column an app expects: its header (matched ignoring case and surrounding spaces)
    and what its cells hold.

    Kinds: "id" (text that must stay as typed: leading zeros, no number conversion), "text",
    "date" (an Excel date, or text as 2024-01-31, 31.01.2024 or 20240131), "integer",
    "integers" (whole numbers separated by commas, as a tuple).
    """

    name: str
    kind: CellKind = "text"
    max_length: int = 64


@dataclass(frozen=True)
class SheetProblem:
    line: int  # as the spreadsheet program numbers it; 1 is the header
    column: str  # "" for the line as a whole
    message: str

    def __str__(self) -> str:
        where = f"Line {self.line}" + (f", column {self.column}" if self.column else "")
        return f"{where}: {self.message}"


@dataclass
class SheetRow:
    line: int
    values: dict[str, Value]  # by the expected column's name; None for an empty cell


@dataclass
class Sheet:
    rows: list[SheetRow] = field(default_factory=list)
    problems: list[SheetProblem] = field(default_factory=list)


def read_sheet(
    data: bytes,
    filename: str,
    columns: Sequence[Column],
    *,
    ignore_other_columns: bool = False,
    max_rows: int | None = None,
) -> Sheet:
    """Reads an uploaded ``.xlsx`` or ``.csv`` file.

    Args:
        ignore_other_columns: Columns the app does not know are ignored (a batch transfer
            takes a batch query's export); otherwise each is a problem naming it.
        max_rows: More rows than this (empty ones not counted) is a problem.

    Raises:
        SheetError: The file cannot be read as a table at all.
    """
    if len(data) > MAX_FILE_BYTES:
        raise SheetError(
            f"The file is larger than {MAX_FILE_BYTES // 2**20} MB; split it into smaller ones."
        )
    suffix = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    merged: list[str] = []
    if suffix == "xlsx":
        lines, merged = _xlsx_lines(data)
    elif suffix == "csv":
        lines = _csv_lines(data)
    else:
        raise SheetError("Upload an Excel file (.xlsx) or a CSV file (.csv).")

    sheet = Sheet()
    header = next(lines, None)
    if header is None:
        raise SheetError("The file is empty: its first line must name the columns.")
    positions = _match_header(header[1], columns, ignore_other_columns, sheet.problems)
    _report_merged_cells(merged, positions, sheet.problems)

    def cells_by_column() -> Iterator[tuple[int, dict[str, object]]]:
        for line, cells in lines:
            if not all(_is_blank(cell) for cell in cells):
                yield (
                    line,
                    {
                        name: cells[position] if position < len(cells) else None
                        for name, position in positions.items()
                    },
                )

    _read_lines(sheet, cells_by_column(), columns, max_rows)
    return sheet


def read_rows(
    rows: object,
    columns: Sequence[Column],
    *,
    ignore_other_columns: bool = False,
    max_rows: int | None = None,
) -> Sheet:
    """Reads lines sent as data instead of a file (the REST API's JSON): a list of objects
    whose keys are the columns' names, each checked as a line of a file is, with the same
    messages. The rows are numbered as the lines of a file under its header: the first is
    line 2, so a problem's line and a task's line name a row alike.

    Raises:
        SheetError: ``rows`` is not a list of objects.
    """
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise SheetError(
            "The rows must be a list of objects, one per line, with the column names as keys."
        )
    if len(rows) > MAX_LINES:
        raise SheetError(f"More than {MAX_LINES} rows: no batch can be this long.")
    sheet = Sheet()
    by_name = {column.name: column for column in columns}

    def cells_by_column() -> Iterator[tuple[int, dict[str, object]]]:
        for line, row in enumerate(rows, start=2):
            if all(_is_blank(value) for value in row.values()):
                continue
            positions = _match_header(
                list(row), columns, ignore_other_columns, sheet.problems, line=line
            )
            values = list(row.values())
            yield (
                line,
                {
                    name: _json_value(values[position], by_name[name], line, sheet.problems)
                    for name, position in positions.items()
                },
            )

    _read_lines(sheet, cells_by_column(), columns, max_rows)
    return sheet


def _is_blank(cell: object) -> bool:
    return cell is None or (isinstance(cell, str) and not cell.strip())


def _read_lines(
    sheet: Sheet,
    lines: Iterator[tuple[int, dict[str, object]]],
    columns: Sequence[Column],
    max_rows: int | None,
) -> None:
    """Checks the cells of each line that is not blank (raw values by column name)."""
    counted = 0
    for line, cells in lines:
        counted += 1
        if max_rows is not None and counted > max_rows:
            sheet.problems.append(
                SheetProblem(line, "", f"More than {max_rows} rows; split the file.")
            )
            break
        values: dict[str, Value] = {
            column.name: _cell(cells.get(column.name), column, line, sheet.problems)
            for column in columns
        }
        sheet.rows.append(SheetRow(line, values))


def _json_value(value: object, column: Column, line: int, problems: list[SheetProblem]) -> object:
    """A value of a JSON row as a cell of a file would hold it. JSON has types a spreadsheet
    has not (and a script may send an ID as a number that lost its leading zeros): what
    cannot stand for a cell is refused here, everything else is checked as a cell is."""

    def refuse(message: str) -> None:
        problems.append(SheetProblem(line, column.name, message))

    if value is None or isinstance(value, str):
        return value
    if column.kind == "integers" and isinstance(value, list):
        if all(isinstance(item, int) and not isinstance(item, bool) for item in value):
            return ", ".join(str(item) for item in value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if column.kind == "id":
            refuse(
                "Must be a string: an ID sent as a number may have lost its leading zeros, so "
                "it may not be the ID you meant."
            )
            return None
        # A date is written as text; a number is no Excel day number here.
        return str(value) if column.kind in ("date", "text") else value
    refuse("Must be a string" + (" or a number." if column.kind != "id" else "."))
    return None


def _report_merged_cells(
    merged: list[str], positions: dict[str, int], problems: list[SheetProblem]
) -> None:
    """Merged cells of a read column hold their value in the first line only, so the other
    lines would seem empty: the user unmerges them and fills in each line."""
    from openpyxl.utils.cell import range_boundaries

    names = {position: name for name, position in positions.items()}
    reported = 0
    for cell_range in dict.fromkeys(merged):  # a range read twice at a chunk's end counts once
        first_column, first_line, last_column, last_line = range_boundaries(cell_range)
        if not (first_column and first_line and last_column and last_line):
            continue
        if first_line == last_line and first_column == last_column:
            continue  # a single cell "merged" with itself hides nothing
        read = [
            names[position]
            for position in range(first_column - 1, last_column)
            if position in names
        ]
        if not read:
            continue  # a title or a note beside the table
        problems.append(
            SheetProblem(
                first_line,
                read[0],
                f"The cells {cell_range} are merged; unmerge them and write the value "
                "into each line.",
            )
        )
        reported += 1
        if reported >= MAX_MERGED_REPORTED:
            break


def _match_header(
    header: list[object],
    columns: Sequence[Column],
    ignore_other_columns: bool,
    problems: list[SheetProblem],
    line: int = 1,
) -> dict[str, int]:
    """The position of each expected column in the header (or a JSON row's keys, ``line``
    then naming the row)."""
    expected = {column.name.lower(): column.name for column in columns}
    positions: dict[str, int] = {}
    for position, cell in enumerate(header):
        title = "" if cell is None else str(cell).strip()
        if not title:
            continue
        name = expected.get(title.lower())
        if name is None:
            if not ignore_other_columns:
                known = ", ".join(column.name for column in columns)
                problems.append(
                    SheetProblem(line, title[:64], f"Unknown column; the columns are: {known}.")
                )
        elif name in positions:
            problems.append(SheetProblem(line, name, "The column appears twice."))
        else:
            positions[name] = position
    if not positions and line == 1:
        problems.append(SheetProblem(1, "", "None of the expected columns is in the first line."))
    return positions


def _cell(raw: object, column: Column, line: int, problems: list[SheetProblem]) -> Value:
    def problem(message: str) -> None:
        problems.append(SheetProblem(line, column.name, message))

    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if isinstance(raw, _Formula):
        problem(
            f"The cell holds a formula ({raw.text[:40]}); a batch file must hold values: copy "
            "the column and paste it as values only."
        )
        return None
    if column.kind == "date":
        return _date(raw, problem)
    if column.kind == "integers":
        return _integers(raw, problem)
    if column.kind == "integer":
        if isinstance(raw, bool):
            problem("Must be a whole number.")
            return None
        if isinstance(raw, int) or (isinstance(raw, float) and raw.is_integer()):
            number = int(raw)
        elif isinstance(raw, str) and _is_digits(raw.strip()):
            number = int(raw.strip())
        else:
            number = None
        if number is not None and 0 <= number <= MAX_INTEGER:
            return number
        problem(f"Must be a whole number from 0 to {MAX_INTEGER}.")
        return None
    if column.kind == "id" and isinstance(raw, int | float) and not isinstance(raw, bool):
        problem(
            "Excel stored this ID as a number, which drops leading zeros, so it may not be the "
            "ID you meant. Format the column as text and type the IDs again."
        )
        return None
    if isinstance(raw, datetime.datetime | datetime.date):
        problem("Must be text, not a date.")
        return None
    text = str(raw).strip()
    # ADIT's own exports put an apostrophe before a value a spreadsheet would take for a
    # formula (see spreadsheets.neutralize); a file read back gets the value as it was.
    if text.startswith("'") and text[1:].startswith(FORMULA_STARTS):
        text = text[1:]
    if any(unicodedata.category(character) == "Cc" for character in text):
        problem("Contains control characters (a line break or tab inside the cell).")
        return None
    if len(text) > column.max_length:
        problem(f"Longer than {column.max_length} characters.")
        return None
    return text


def _is_digits(text: str) -> bool:
    # str.isdigit() takes "²" and other digits int() refuses.
    return 0 < len(text) <= 10 and text.isascii() and text.isdigit()


def _integers(raw: object, problem) -> tuple[int, ...] | None:
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        if float(raw).is_integer() and 0 <= raw <= MAX_INTEGER:
            return (int(raw),)
    elif isinstance(raw, str):
        parts = [part.strip() for part in raw.split(",")]
        if all(_is_digits(part) and int(part) <= MAX_INTEGER for part in parts):
            return tuple(dict.fromkeys(int(part) for part in parts))
    problem("Must be whole numbers separated by commas (1, 2, 10).")
    return None


def _date(raw: object, problem) -> datetime.date | None:
    value = _date_value(raw, problem)
    if value is not None and value.year < FIRST_YEAR:
        problem(f"{value.isoformat()} is not a plausible date (before {FIRST_YEAR}).")
        return None
    return value


def _date_value(raw: object, problem) -> datetime.date | None:
    if isinstance(raw, datetime.datetime):
        return raw.date()
    if isinstance(raw, datetime.date):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    if isinstance(raw, int) and not isinstance(raw, bool) and raw in EXCEL_DAYS:
        # A date cell that lost its date format shows Excel's day number.
        return EXCEL_EPOCH + datetime.timedelta(days=raw)
    text = str(raw).strip()
    for pattern, date_format in _DATE_FORMATS:
        if pattern.fullmatch(text):
            try:
                return datetime.datetime.strptime(text, date_format).date()
            except ValueError:
                break
    problem(f"Not a date: write it as 2024-01-31, 31.01.2024 or 20240131 ({text[:20]!s}).")
    return None


@dataclass(frozen=True)
class _Formula:
    """A cell that holds a formula: its value is whatever the program last computed, if it
    saved one at all, so ADIT does not read it."""

    text: str

    def __str__(self) -> str:
        return self.text


_CELL = rb"[A-Z]{1,3}[1-9]\d{0,6}"
_MERGED_CELLS = re.compile(rb"<(?:\w+:)?mergeCell\s+ref=\"(" + _CELL + rb":" + _CELL + rb")\"")


def _xlsx_lines(data: bytes) -> tuple[Iterator[tuple[int, list[object]]], list[str]]:
    """The lines of the first sheet, and the ranges of its merged cells ("A2:A4")."""
    from openpyxl import load_workbook

    if data.startswith(b"\xd0\xcf\x11\xe0"):  # an OLE container, not a zip
        raise SheetError(
            "The file is password-protected or in the old Excel format (.xls): remove the "
            "password or save it as an Excel workbook (.xlsx), then upload it again."
        )
    try:
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=False)
    except Exception as err:  # openpyxl and zipfile raise many kinds for a file that is no workbook
        raise SheetError(
            "The file is not a readable Excel workbook (.xlsx): it may be damaged, "
            "password-protected or another format renamed to .xlsx."
        ) from err
    worksheet = workbook.worksheets[0] if workbook.worksheets else None
    if worksheet is None:
        raise SheetError("The workbook has no sheet.")
    # Programs other than Excel often write a wrong size into the sheet, which would make
    # openpyxl stop early or start late: read what is there instead.
    member = workbook._archive.getinfo(worksheet._worksheet_path)  # pyright: ignore[reportAttributeAccessIssue]
    if member.file_size > MAX_SHEET_XML_BYTES:
        workbook.close()
        raise SheetError(
            "The workbook's sheet unpacks to more than "
            f"{MAX_SHEET_XML_BYTES // 2**20} MB: it is no batch file ADIT can read."
        )
    worksheet.reset_dimensions()  # pyright: ignore[reportAttributeAccessIssue]
    merged = _merged_ranges(workbook, worksheet)
    return _numbered(worksheet.iter_rows(), workbook), merged


def _merged_ranges(workbook, worksheet) -> list[str]:
    """Read-only worksheets do not parse merged cells, so they are found in the sheet's XML."""
    try:
        with workbook._archive.open(worksheet._worksheet_path) as source:
            ranges: list[str] = []
            tail = b""
            while chunk := source.read(2**20):
                text = tail + chunk
                ranges += [match.decode() for match in _MERGED_CELLS.findall(text)]
                # A tag cut in two at the chunk's end is found in the next round.
                cut = text.rfind(b"<")
                tail = text[cut:] if cut >= 0 and b">" not in text[cut:] else b""
            return ranges
    except Exception as err:  # a damaged archive member
        raise SheetError("The workbook is damaged: its sheet cannot be read.") from err


def _numbered(rows, workbook) -> Iterator[tuple[int, list[object]]]:
    line = 0
    try:
        for line, row in enumerate(rows, start=1):
            if line > MAX_LINES:
                # openpyxl makes up the empty lines before a line numbered a billion.
                raise SheetError(f"The workbook has lines beyond line {MAX_LINES}: it is damaged.")
            yield (
                line,
                [
                    _Formula(str(cell.value)) if cell.data_type == "f" else cell.value
                    for cell in row
                ],
            )
    except SheetError:
        raise
    except Exception as err:  # a damaged part of the workbook, found while reading on
        raise SheetError(f"The workbook cannot be read beyond line {line}: it is damaged.") from err
    finally:
        workbook.close()


def _csv_lines(data: bytes) -> Iterator[tuple[int, list[object]]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise SheetError(
            "The CSV file is not in UTF-8 (Excel's 'CSV UTF-8' format); save it as such and "
            "upload it again."
        ) from err
    first_line = text.split("\n", 1)[0]
    delimiter = ";" if first_line.count(";") > first_line.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)

    def lines() -> Iterator[tuple[int, list[object]]]:
        try:
            for row in reader:
                yield reader.line_num, list(row)
        except csv.Error as err:
            raise SheetError(f"Line {reader.line_num} of the CSV file is broken: {err}.") from err

    return lines()
