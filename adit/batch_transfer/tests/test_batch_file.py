"""What a batch transfer file may say: grouping by study, the whole-file checks with their
messages, and a batch query's export taken as it is."""

from __future__ import annotations

import pytest

from adit.batch_transfer.batch_file import read_batch_file
from adit.core.tests.factories import xlsx_bytes

STUDY_A = "1.2.826.0.1.3680043.8.498.1"
STUDY_B = "1.2.826.0.1.3680043.8.498.2"
SERIES_1 = "1.2.826.0.1.3680043.8.498.1.1"
SERIES_2 = "1.2.826.0.1.3680043.8.498.1.2"


def _read(*rows, pseudonym_required: bool = True, max_lines: int | None = 500):
    return read_batch_file(
        xlsx_bytes(*rows),
        "studies.xlsx",
        max_lines=max_lines,
        pseudonym_required=pseudonym_required,
    )


def _messages(batch) -> list[str]:
    return [str(problem) for problem in batch.problems]


def test_lines_of_one_study_become_one_request_with_their_series_merged():
    batch = _read(
        ["PatientID", "StudyInstanceUID", "SeriesInstanceUID", "Pseudonym"],
        ["0012345", STUDY_A, SERIES_1, "SUBJ-01"],
        ["0012345", STUDY_A, SERIES_2, "SUBJ-01"],
        ["0012345", STUDY_A, SERIES_1, "SUBJ-01"],  # a duplicate line: sent once
        ["0099", STUDY_B, "", "SUBJ-02"],
        ["0099", STUDY_B, SERIES_1, "SUBJ-02"],  # the whole study is asked for anyway
    )
    assert batch.problems == []
    requests = [
        (s.patient_id, s.study_uid, s.pseudonym, s.series_uids, s.lines) for s in batch.studies
    ]
    assert requests == [
        ("0012345", STUDY_A, "SUBJ-01", [SERIES_1, SERIES_2], [2, 3, 4]),
        ("0099", STUDY_B, "SUBJ-02", [], [5, 6]),
    ]


def test_every_line_problem_is_named_and_nothing_is_grouped():
    batch = _read(
        ["PatientID", "StudyInstanceUID", "SeriesInstanceUID", "Pseudonym"],
        ["", STUDY_A, "", "SUBJ-01"],
        ["0012345", "1.2.abc", "", "SUBJ-01"],
        ["0012345", STUDY_A, "1." + "2" * 70, "SUBJ-01"],
        ["0012345", STUDY_A, "", "SUBJ\\01"],
        ["0012345", STUDY_A, "", ""],
        ["0012345", STUDY_A, "", "SUBJ-01"],
    )
    messages = _messages(batch)
    assert [message.split(":")[0] for message in messages] == [
        "Line 2, column PatientID",
        "Line 3, column StudyInstanceUID",
        "Line 4, column SeriesInstanceUID",
        "Line 5, column Pseudonym",
        "Line 6, column Pseudonym",
    ]
    assert messages[0].endswith("This field is required.")
    assert messages[-1].endswith("You are only allowed to transfer pseudonymized.")
    assert batch.studies == []


def test_whole_file_checks_with_upstreams_messages_and_the_pseudonym_of_two_patients():
    batch = _read(
        ["PatientID", "StudyInstanceUID", "Pseudonym"],
        ["0012345", STUDY_A, "SUBJ-01"],
        ["0099", STUDY_A, "SUBJ-02"],
        ["0012345", STUDY_B, "SUBJ-03"],
        ["0777", STUDY_B.replace(".2", ".3"), "SUBJ-01"],
    )
    assert _messages(batch) == [
        f"Line 3, column PatientID: Same Study Instance UID {STUDY_A} can't belong to "
        "different Patient IDs (line 2 has 0012345).",
        "Line 4, column Pseudonym: Same Patient ID 0012345 can't have different pseudonyms "
        "(line 2 has SUBJ-01).",
        "Line 5, column Pseudonym: Same pseudonym SUBJ-01 can't belong to different Patient IDs "
        "(line 2 has 0012345).",
    ]
    assert batch.studies == []


def test_without_pseudonyms_when_allowed():
    batch = _read(["PatientID", "StudyInstanceUID"], ["0012345", STUDY_A], pseudonym_required=False)
    assert [(s.study_uid, s.pseudonym) for s in batch.studies] == [(STUDY_A, "")]


def test_a_batch_query_export_goes_in_unchanged_and_its_empty_lines_are_counted():
    header = [
        "Pseudonym", "PatientID", "PatientName", "BirthDate", "ModalitiesInStudy", "StudyDate",
        "StudyTime", "StudyDescription", "NumberOfStudyRelatedInstances", "AccessionNumber",
        "StudyInstanceUID", "Line", "Status", "Message",
    ]  # fmt: skip
    batch = _read(
        header,
        ["SUBJ-01", "0012345", "Doe, Jane", None, "CT", None, None, "CT Thorax", 120, "A1",
         STUDY_A, 2, "Success", "1 study found"],
        ["SUBJ-02", "0099", None, None, "CT", None, None, None, None, None, None, 3, "Failure",
         "No patient found with this PatientID."],
        ["SUBJ-03", "0777", None, None, "XA", None, None, None, None, None, None, 4, "Success",
         "0 studies found"],
    )  # fmt: skip
    assert batch.problems == []
    assert [(s.patient_id, s.study_uid, s.pseudonym) for s in batch.studies] == [
        ("0012345", STUDY_A, "SUBJ-01")
    ]
    # A line that found nothing names no study: it is skipped and counted, not refused.
    assert batch.skipped_lines == [3, 4]


@pytest.mark.parametrize(("limit", "ok"), [(3, True), (2, False)])
def test_the_line_limit_counts_lines_before_grouping(limit, ok):
    rows = [["PatientID", "StudyInstanceUID", "Pseudonym"]] + [["1", STUDY_A, "S"]] * 3
    batch = _read(*rows, max_lines=limit)
    assert (batch.problems == []) is ok
