"""What a line of a batch query file may say, and every problem named by line and column."""

from __future__ import annotations

import datetime

import pytest

from adit.batch_query.batch_file import read_batch_file
from adit.core.sheet_reader import SheetError
from adit.core.tests.factories import xlsx_bytes as xlsx

HEADER = [
    "PatientID", "PatientName", "PatientBirthDate", "AccessionNumber", "From", "Until",
    "Modality", "StudyDescription", "SeriesDescription", "SeriesNumber", "Pseudonym",
]  # fmt: skip


def _messages(batch) -> list[str]:
    return [str(problem) for problem in batch.problems]


def test_every_column_becomes_a_field_of_the_lines_task():
    data = xlsx(
        HEADER,
        ["0012345", "", "", "", datetime.datetime(2023, 1, 1), "2023-12-31", "ct, MR",
         "*Thorax*", "", "", "P-001"],
        [None] * 11,
        ["", "Doe, Jane", "03.04.1971", "A0001", "", "", "", "", "t1*", "1, 2", ""],
    )  # fmt: skip
    batch = read_batch_file(data, "patients.xlsx", max_lines=1000)
    assert batch.problems == []
    first, second = batch.tasks
    assert (first.line, first.patient_id, first.modalities, first.pseudonym) == (
        2, "0012345", ["CT", "MR"], "P-001",
    )  # fmt: skip
    assert (first.study_date_start, first.study_date_end) == (
        datetime.date(2023, 1, 1), datetime.date(2023, 12, 31),
    )  # fmt: skip
    assert (first.study_description, first.series_query) == ("*Thorax*", False)
    assert (second.line, second.patient_name, second.patient_birth_date) == (
        4, "Doe^Jane", datetime.date(1971, 4, 3),
    )  # fmt: skip
    assert (second.accession_number, second.modalities) == ("A0001", [])
    assert (second.series_description, second.series_numbers, second.series_query) == (
        "t1*", [1, 2], True,
    )  # fmt: skip


def test_a_csv_from_excel_reads_like_the_workbook():
    text = (
        "\ufeffPatientID;Modality;From;Until\r\n"
        "0012345;CT;20230101;31.12.2023\r\n"
        ";;;\r\n"
        "0099;MR;;\r\n"
    )
    batch = read_batch_file(text.encode(), "patients.csv", max_lines=1000)
    assert batch.problems == []
    assert [(task.line, task.patient_id, task.modalities) for task in batch.tasks] == [
        (2, "0012345", ["CT"]),
        (4, "0099", ["MR"]),
    ]


def test_the_rules_of_a_line_as_users_know_them():
    data = xlsx(
        ["PatientID", "PatientName", "PatientBirthDate", "Modality", "AccessionNumber"],
        ["", "", "", "CT", ""],  # nobody to look for
        ["0012345", "", "", "", ""],  # what kind of study?
        ["", "Doe, Jane", "", "CT", ""],  # a name alone is not enough
        ["0012345", "", "", "", "A1"],  # an accession number needs no modality
    )
    assert _messages(read_batch_file(data, "p.xlsx", max_lines=1000)) == [
        "Line 2: A patient must be identifiable by either PatientID or PatientName and "
        "PatientBirthDate.",
        "Line 3, column Modality: Missing Modality.",
        "Line 4: A patient must be identifiable by either PatientID or PatientName and "
        "PatientBirthDate.",
    ]


def test_every_problem_of_the_file_is_listed_with_line_and_column():
    data = xlsx(
        HEADER,
        [12345, "", "", "", "", "", "CT", "", "", "", ""],
        ["00*", "", "", "", "", "", "CT", "", "", "", ""],
        ["1", "", "1971-02-30", "", "", "", "C T", "", "", "", ""],
        ["2", "", "", "", "2024-02-01", "2024-01-01", "CT", "", "", "1;2", "P?"],
        ["3", "Doe\nJane", "", "", "", "", "CT", "x" * 65, "", "", ""],
    )
    assert _messages(read_batch_file(data, "p.xlsx", max_lines=1000)) == [
        "Line 2, column PatientID: Excel stored this ID as a number, which drops leading "
        "zeros, so it may not be the ID you meant. Format the column as text and type the IDs "
        "again.",
        "Line 3, column PatientID: Must not contain wildcards (* or ?): a patient ID names one "
        "patient.",
        "Line 4, column PatientBirthDate: Not a date: write it as 2024-01-31, 31.01.2024 or "
        "20240131 (1971-02-30).",
        "Line 4, column Modality: “C T” is not a modality: use codes like CT or MR, separated "
        "by commas.",
        "Line 5, column SeriesNumber: Must be whole numbers separated by commas (1, 2, 10).",
        "Line 5, column Pseudonym: A pseudonym must not contain * or ? (they are wildcards in "
        "DICOM searches).",
        "Line 5, column Until: Lies before From (2024-02-01).",
        "Line 6, column PatientName: Contains control characters (a line break or tab inside "
        "the cell).",
        "Line 6, column StudyDescription: Longer than 64 characters.",
    ]


def test_an_unknown_column_is_named():
    data = xlsx(["PatientID", "Modality", "Patient Birthday"], ["1", "CT", "x"])
    assert _messages(read_batch_file(data, "p.xlsx", max_lines=1000))[0].startswith(
        "Line 1, column Patient Birthday: Unknown column; the columns are: PatientID, "
    )


def test_the_line_limit_counts_lines_with_content_only():
    rows = [["PatientID", "Modality"], *[[f"{n:04d}", "CT"] for n in range(5)], [None, None]]
    assert read_batch_file(xlsx(*rows), "p.xlsx", max_lines=5).problems == []
    assert _messages(read_batch_file(xlsx(*rows), "p.xlsx", max_lines=4)) == [
        "Line 6: More than 4 rows; split the file."
    ]


def test_a_hundred_thousand_lines_stop_at_the_limit_with_a_message():
    text = "PatientID,Modality\n" + "".join(f"{n:06d},CT\n" for n in range(100_000))
    batch = read_batch_file(text.encode(), "p.csv", max_lines=1000)
    assert _messages(batch) == ["Line 1002: More than 1000 rows; split the file."]


@pytest.mark.parametrize(
    ("data", "filename", "message"),
    [
        (b"%PDF-1.4 not a table", "scan.pdf", r"Upload an Excel file \(\.xlsx\) or a CSV"),
        ("PatientID\nMüller\n".encode("latin-1"), "p.csv", "not in UTF-8"),
        (b"PK\x03\x04broken", "p.xlsx", "not a readable Excel workbook"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600), "p.xlsx", "password-protected"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff", "p.csv", "not in UTF-8"),
    ],
    ids=["pdf", "latin-1 csv", "corrupt xlsx", "encrypted xlsx", "binary csv"],
)
def test_a_file_that_is_no_table_says_why(data, filename, message):
    with pytest.raises(SheetError, match=message):
        read_batch_file(data, filename, max_lines=1000)


def test_a_file_with_a_header_only_has_no_lines():
    assert _messages(read_batch_file(b"PatientID,Modality\n", "p.csv", max_lines=10)) == [
        "Line 2: The file has no lines to query."
    ]
