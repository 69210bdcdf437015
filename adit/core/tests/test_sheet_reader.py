"""The batch file reader: every column kind in .xlsx and .csv, and every problem named by its
line and column."""

from __future__ import annotations

import datetime
import io

import pytest
from openpyxl import Workbook

from adit.core.sheet_reader import Column, SheetError, read_rows, read_sheet
from adit.core.spreadsheets import CsvWriter
from adit.core.tests.factories import xlsx_bytes as _xlsx

COLUMNS = [
    Column("PatientID", "id"),
    Column("PatientName", "text"),
    Column("From", "date"),
    Column("SeriesNumber", "integer"),
]


def _messages(sheet) -> list[str]:
    return [str(problem) for problem in sheet.problems]


def test_xlsx_cells_of_every_kind_with_their_lines():
    data = _xlsx(
        ["  patientid ", "PATIENTNAME", "from", "SeriesNumber"],
        ["00123", "Doe^Jane", datetime.datetime(2024, 1, 31), 3],
        [None, None, None, None],  # skipped, but counted in the line numbers
        ["0456", " Roe, Rick ", "31.01.2024", "4"],
        ["789", "", "20240131", None],
        ["790", "", 45322, None],  # a date cell that lost its date format
    )
    sheet = read_sheet(data, "patients.XLSX", COLUMNS)
    assert sheet.problems == []
    assert [(row.line, row.values) for row in sheet.rows] == [
        (2, {"PatientID": "00123", "PatientName": "Doe^Jane",
             "From": datetime.date(2024, 1, 31), "SeriesNumber": 3}),
        (4, {"PatientID": "0456", "PatientName": "Roe, Rick",
             "From": datetime.date(2024, 1, 31), "SeriesNumber": 4}),
        (5, {"PatientID": "789", "PatientName": None,
             "From": datetime.date(2024, 1, 31), "SeriesNumber": None}),
        (6, {"PatientID": "790", "PatientName": None,
             "From": datetime.date(2024, 1, 31), "SeriesNumber": None}),
    ]  # fmt: skip


def test_an_id_excel_stored_as_a_number_is_refused_not_changed():
    sheet = read_sheet(_xlsx(["PatientID"], [123], ["0123"]), "p.xlsx", COLUMNS)
    assert _messages(sheet) == [
        "Line 2, column PatientID: Excel stored this ID as a number, which drops leading "
        "zeros, so it may not be the ID you meant. Format the column as text and type the IDs "
        "again."
    ]
    assert sheet.rows[1].values["PatientID"] == "0123"


def test_values_adit_exported_with_a_protecting_apostrophe_read_back_as_they_were():
    exported = io.StringIO()
    writer = CsvWriter(exported)
    writer.writerow(["PatientID", "PatientName"])
    writer.writerow(["-0012", "=Doe^Jane"])
    writer.writerow(["'quoted", "@home"])
    sheet = read_sheet(exported.getvalue().encode(), "export.csv", COLUMNS)
    assert sheet.problems == []
    assert [(row.values["PatientID"], row.values["PatientName"]) for row in sheet.rows] == [
        ("-0012", "=Doe^Jane"),
        ("'quoted", "@home"),  # an apostrophe before anything else is the value's own
    ]


def test_every_problem_is_listed_with_line_and_column():
    data = _xlsx(
        ["PatientID", "Colour", "From", "SeriesNumber"],
        ["1", "red", "2024-02-30", "three"],
        ["x" * 65, "blue", "yesterday", 2.5],
        ["a\tb", None, None, None],
    )
    sheet = read_sheet(data, "p.xlsx", COLUMNS)
    assert _messages(sheet) == [
        "Line 1, column Colour: Unknown column; the columns are: PatientID, PatientName, From, "
        "SeriesNumber.",
        "Line 2, column From: Not a date: write it as 2024-01-31, 31.01.2024 or 20240131 "
        "(2024-02-30).",
        "Line 2, column SeriesNumber: Must be a whole number from 0 to 2147483647.",
        "Line 3, column PatientID: Longer than 64 characters.",
        "Line 3, column From: Not a date: write it as 2024-01-31, 31.01.2024 or 20240131 "
        "(yesterday).",
        "Line 3, column SeriesNumber: Must be a whole number from 0 to 2147483647.",
        "Line 4, column PatientID: Contains control characters (a line break or tab inside "
        "the cell).",
    ]
    ignoring = read_sheet(data, "p.xlsx", COLUMNS, ignore_other_columns=True)
    assert not any(problem.column == "Colour" for problem in ignoring.problems)


@pytest.mark.parametrize(
    "text",
    [
        "\ufeffPatientID;PatientName\r\n00123;Müller, Hans\r\n;\r\n0456;Doe\r\n",
        'PatientID,PatientName\n00123,"Müller, Hans"\n,\n0456,Doe\n',
    ],
    ids=["excel csv utf-8 with semicolons", "plain csv with commas"],
)
def test_csv_in_utf_8_with_either_delimiter(text):
    sheet = read_sheet(text.encode(), "patients.csv", COLUMNS)
    assert sheet.problems == []
    assert [
        (row.line, row.values["PatientID"], row.values["PatientName"]) for row in sheet.rows
    ] == [
        (2, "00123", "Müller, Hans"),
        (4, "0456", "Doe"),
    ]


def test_rows_beyond_the_limit_are_a_problem_counted_without_empty_lines():
    rows = [["PatientID"], *[[str(number)] for number in range(3)], [None], [None], ["3"]]
    assert read_sheet(_xlsx(*rows), "p.xlsx", COLUMNS, max_rows=4).problems == []
    assert _messages(read_sheet(_xlsx(*rows), "p.xlsx", COLUMNS, max_rows=3)) == [
        "Line 7: More than 3 rows; split the file."
    ]


@pytest.mark.parametrize(
    ("data", "filename", "message"),
    [
        ("PatientID\nMüller\n".encode("latin-1"), "p.csv", "not in UTF-8"),
        (b"PK\x03\x04 not really a zip", "p.xlsx", "not a readable Excel workbook"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600), "p.xlsx", "password-protected"),
        (b"PatientID\n1\n", "p.txt", r"Upload an Excel file \(\.xlsx\) or a CSV file"),
        (b"", "p.csv", "The file is empty"),
        (b"x" * (5 * 2**20 + 1), "p.csv", "larger than 5 MB"),
    ],
    ids=["latin-1 csv", "broken xlsx", "encrypted xlsx (OLE)", "text file", "empty", "too big"],
)
def test_a_file_that_is_no_readable_table_says_why(data, filename, message):
    with pytest.raises(SheetError, match=message):
        read_sheet(data, filename, COLUMNS)


def test_a_header_without_any_expected_column_is_a_problem():
    sheet = read_sheet(b"Name;Date\nx;y\n", "p.csv", COLUMNS, ignore_other_columns=True)
    assert _messages(sheet) == ["Line 1: None of the expected columns is in the first line."]


def test_a_formula_is_a_problem_not_a_guess():
    # openpyxl saves no computed value, as some programs do not: the cell would read empty.
    data = _xlsx(["PatientID", "PatientName"], ["00123", '=CONCAT("Doe", "^Jane")'])
    assert _messages(read_sheet(data, "p.xlsx", COLUMNS)) == [
        'Line 2, column PatientName: The cell holds a formula (=CONCAT("Doe", "^Jane")); a '
        "batch file must hold values: copy the column and paste it as values only."
    ]


def test_merged_cells_of_a_read_column_are_a_problem():
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    for row in (["PatientID", "Remark"], ["00123", "x"], [None, None], ["0456", "y"]):
        sheet.append(row)
    sheet.merge_cells("A2:A3")
    sheet.merge_cells("B3:B4")  # not a column the app reads
    buffer = io.BytesIO()
    workbook.save(buffer)
    result = read_sheet(buffer.getvalue(), "p.xlsx", COLUMNS, ignore_other_columns=True)
    assert _messages(result) == [
        "Line 2, column PatientID: The cells A2:A3 are merged; unmerge them and write the value "
        "into each line."
    ]


def test_a_wrong_sheet_size_written_by_another_program_loses_no_line():
    import zipfile

    data = _xlsx(["PatientID"], ["001"], ["002"], ["003"])
    broken = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(broken, "w") as target:
        for item in source.infolist():
            content = source.read(item.filename)
            if item.filename.startswith("xl/worksheets/"):
                content = content.replace(b'<dimension ref="A1:A4" />', b'<dimension ref="A1" />')
                assert b'<dimension ref="A1" />' in content
            target.writestr(item, content)
    result = read_sheet(broken.getvalue(), "p.xlsx", COLUMNS)
    assert [row.values["PatientID"] for row in result.rows] == ["001", "002", "003"]


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("1, 2,10", (1, 2, 10)),
        (3, (3,)),
        (4.0, (4,)),
        ("7,7", (7,)),
        ("1;2", None),
        (-1, None),
        ("999999999999", None),
        (1e300, None),
        ("²", None),
    ],  # fmt: skip
)
def test_whole_numbers_separated_by_commas(cell, expected):
    result = read_sheet(
        _xlsx(["PatientID", "SeriesNumber"], ["1", cell]), "p.xlsx",
        [Column("PatientID", "text"), Column("SeriesNumber", "integers")],
    )  # fmt: skip
    assert result.rows[0].values["SeriesNumber"] == expected
    if expected is None:
        assert _messages(result) == [
            "Line 2, column SeriesNumber: Must be whole numbers separated by commas (1, 2, 10)."
        ]


def _with_sheet_xml(data: bytes, change) -> bytes:
    import zipfile

    changed = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(changed, "w") as target:
        for item in source.infolist():
            content = source.read(item.filename)
            if item.filename.startswith("xl/worksheets/"):
                content = change(content)
            target.writestr(item, content)
    return changed.getvalue()


def test_a_crafted_merged_range_or_a_line_numbered_in_billions_is_no_crash():
    data = _xlsx(["PatientID"], ["001"])
    merged_row_zero = _with_sheet_xml(
        data,
        lambda xml: xml.replace(
            b"</sheetData>",
            b'</sheetData><mergeCells count="1"><mergeCell ref="A0:A3"/></mergeCells>',
        ),
    )
    with pytest.raises(SheetError, match="damaged"):  # a message, never a server error
        read_sheet(merged_row_zero, "p.xlsx", COLUMNS)
    far_away = _with_sheet_xml(
        data,
        lambda xml: xml.replace(b'<row r="2">', b'<row r="1000000000">').replace(
            b'r="A2"', b'r="A1000000000"'
        ),
    )
    with pytest.raises(SheetError, match="lines beyond line 1048576"):
        read_sheet(far_away, "p.xlsx", COLUMNS)


def test_merged_cells_in_read_columns_are_found_among_many_elsewhere():
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(["PatientID", "Remark"])
    for number in range(300):
        sheet.append([f"{number:04d}", "note"])
    for line in range(2, 300, 2):  # 149 merged notes beside the table
        sheet.merge_cells(f"B{line}:B{line + 1}")
    sheet.merge_cells("A290:A291")
    buffer = io.BytesIO()
    workbook.save(buffer)
    result = read_sheet(buffer.getvalue(), "p.xlsx", COLUMNS, ignore_other_columns=True)
    assert [(problem.line, problem.column) for problem in result.problems] == [(290, "PatientID")]


@pytest.mark.parametrize(("cell", "message"), [(1980, "Not a date"), ("0099-01-01", "plausible")])
def test_a_year_or_an_ancient_date_is_not_taken_for_a_date(cell, message):
    result = read_sheet(_xlsx(["PatientID", "From"], ["1", cell]), "p.xlsx", COLUMNS)
    assert result.rows[0].values["From"] is None
    assert message in _messages(result)[0]


def test_json_rows_are_read_as_the_lines_of_a_file_under_its_header():
    columns = [*COLUMNS, Column("SeriesNumbers", "integers")]
    rows = [
        {" patientid": "00123", "From": "31.01.2024", "SeriesNumber": 3, "SeriesNumbers": [1, 2]},
        {"PatientID": "", "PatientName": None},  # skipped, as an empty line
        {"PatientID": "0456", "PatientName": "Doe^Jane", "From": "20240131", "SeriesNumber": "4"},
    ]
    sheet = read_rows(rows, columns)
    assert sheet.problems == []
    assert [(row.line, row.values) for row in sheet.rows] == [
        (2, {"PatientID": "00123", "PatientName": None, "From": datetime.date(2024, 1, 31),
             "SeriesNumber": 3, "SeriesNumbers": (1, 2)}),
        (4, {"PatientID": "0456", "PatientName": "Doe^Jane", "From": datetime.date(2024, 1, 31),
             "SeriesNumber": 4, "SeriesNumbers": None}),
    ]  # fmt: skip


def test_json_values_no_cell_can_hold_are_problems_of_their_row_and_key():
    rows = [
        {"PatientID": 123, "From": 45322, "SeriesNumber": True},
        {"PatientID": "1", "PatientName": {"family": "Doe"}, "Colour": "red", "patientid": "2"},
    ]
    assert _messages(read_rows(rows, COLUMNS)) == [
        "Line 2, column PatientID: Must be a string: an ID sent as a number may have lost its "
        "leading zeros, so it may not be the ID you meant.",
        "Line 2, column SeriesNumber: Must be a string or a number.",
        "Line 2, column From: Not a date: write it as 2024-01-31, 31.01.2024 or 20240131 (45322).",
        "Line 3, column Colour: Unknown column; the columns are: PatientID, PatientName, From, "
        "SeriesNumber.",
        "Line 3, column PatientID: The column appears twice.",
        "Line 3, column PatientName: Must be a string or a number.",
    ]
    ignoring = read_rows([{"Colour": "red", "PatientID": "1"}], COLUMNS, ignore_other_columns=True)
    assert (ignoring.problems, ignoring.rows[0].values["PatientID"]) == ([], "1")
    with pytest.raises(SheetError, match="The rows must be a list of objects"):
        read_rows({"PatientID": "1"}, COLUMNS)
    with pytest.raises(SheetError, match="The rows must be a list of objects"):
        read_rows(["PatientID"], COLUMNS)


def test_json_rows_beyond_the_limit_are_a_problem():
    rows = [{"PatientID": str(number)} for number in range(4)]
    assert _messages(read_rows(rows, COLUMNS, max_rows=3)) == [
        "Line 5: More than 3 rows; split the file."
    ]
