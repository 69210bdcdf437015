"""A batch transfer job against real Orthancs: the check before the transfer (found, not
found, patient mismatch; nothing asked twice), then the transfers of the studies found, with
pseudonyms stable within the project."""

from __future__ import annotations

import pytest
from pydicom.uid import generate_uid

from adit.batch_transfer import checking
from adit.batch_transfer.batch_file import read_batch_file
from adit.batch_transfer.models import BatchTransferJob, CheckResult, Phase
from adit.core.jobs.models import ActionNotAllowed
from adit.core.jobs.statuses import JobStatus, TaskStatus
from adit.core.models import Project
from adit.core.transfer.forms import TransferChoices

from .conftest import check_job, csv_bytes, run_pending_tasks

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def _studies(*rows):
    batch = read_batch_file(
        csv_bytes(*rows), "studies.csv", max_lines=None, pseudonym_required=False
    )
    assert batch.problems == []
    return batch


def _job(owner, source, destination, *rows, check_first=True, project=None):
    batch = _studies(*rows)
    return BatchTransferJob.create_with_tasks(
        owner=owner,
        source=source,
        studies=batch.studies,
        options=TransferChoices(destination=destination, project=project),
        check_first=check_first,
    )


@pytest.fixture
def counted_finds(monkeypatch) -> list[str]:
    """The study UIDs the check asks the source for, in order (the real query runs)."""
    asked: list[str] = []
    real = checking.find_study

    def counting(operator, selection, **kwargs):
        asked.append(selection.study_uid)
        return real(operator, selection, **kwargs)

    monkeypatch.setattr(checking, "find_study", counting)
    return asked


def test_the_check_tells_found_not_found_and_patient_mismatch_per_study(
    researcher,
    source_server,
    destination_server,
    orthanc1_studies,
    counted_finds,
    django_capture_on_commit_callbacks,
):
    first, second, third = orthanc1_studies[0], orthanc1_studies[1], orthanc1_studies[3]
    ct_series = next(s for s in second.series if s.modality == "CT")
    missing_uid = generate_uid(prefix="2.25.")
    with django_capture_on_commit_callbacks(execute=False):  # no queue: the test checks here
        job = _job(
            researcher,
            source_server,
            destination_server,
            (first.patient_id, first.study_instance_uid, "", "SUBJ-1"),
            (second.patient_id, second.study_instance_uid, ct_series.series_instance_uid, "SUBJ-2"),
            ("99999999", third.study_instance_uid, "", "SUBJ-3"),  # another patient's study
            (first.patient_id, missing_uid, "", "SUBJ-1"),
        )
    assert job.phase == Phase.CHECKING and job.status == JobStatus.UNVERIFIED
    assert not job.tasks.exclude(queued_job_id=None).exists(), "nothing moves before the start"

    assert check_job(job) == 4
    assert job.phase == Phase.CHECKED
    found, series, mismatch, missing = job.tasks.order_by("pk")

    assert found.check_result == CheckResult.FOUND
    # PR and SR stay behind when pseudonymizing: the count is what the transfer would send.
    ct_count = sum(s.instance_count for s in first.series if s.modality == "CT")
    assert found.checked_instances == ct_count
    assert found.source_patient_id == first.patient_id
    assert found.study_date is not None
    assert found.study_date.strftime("%Y%m%d") == first.study_date
    assert found.modalities == ["CT"]
    assert (
        found.check_message == f"Found at {source_server.name}: {ct_count} instance(s) to transfer."
    )

    assert series.check_result == CheckResult.FOUND
    assert series.checked_instances == ct_series.instance_count

    assert mismatch.check_result == CheckResult.MISMATCH
    assert mismatch.source_patient_id == third.patient_id
    assert mismatch.check_message.startswith(
        f"{source_server.name} has the study under patient ID {third.patient_id}, not 99999999"
    )

    assert missing.check_result == CheckResult.NOT_FOUND
    assert missing.check_message == (
        f"No study found with Study Instance UID {missing_uid}. ({source_server.name})"
    )
    assert job.check_counts() == {
        "not_checked": 0, "found": 2, "not_found": 1, "mismatch": 1, "error": 0, "total": 4
    }  # fmt: skip
    assert len(counted_finds) == 4


def test_a_corrected_file_asks_only_for_what_was_not_checked_before(
    researcher,
    source_server,
    destination_server,
    orthanc1_studies,
    counted_finds,
    django_capture_on_commit_callbacks,
):
    first, second = orthanc1_studies[0], orthanc1_studies[1]
    with django_capture_on_commit_callbacks(execute=False):
        job = _job(
            researcher,
            source_server,
            destination_server,
            (first.patient_id, first.study_instance_uid, "", "SUBJ-1"),
            ("99999999", second.study_instance_uid, "", "SUBJ-2"),
        )
    check_job(job)
    before = {task.study_uid: task.checked for task in job.tasks.all()}
    counted_finds.clear()

    corrected = _studies(
        (first.patient_id, first.study_instance_uid, "", "SUBJ-1"),
        (second.patient_id, second.study_instance_uid, "", "SUBJ-2"),  # the patient corrected
    )
    with django_capture_on_commit_callbacks(execute=False):
        assert job.replace_studies(corrected.studies, corrected.skipped_lines) == 1
    assert job.phase == Phase.CHECKING
    check_job(job)

    assert counted_finds == [second.study_instance_uid]
    tasks = {task.study_uid: task for task in job.tasks.all()}
    assert tasks[first.study_instance_uid].checked == before[first.study_instance_uid]
    assert tasks[first.study_instance_uid].check_result == CheckResult.FOUND
    assert tasks[second.study_instance_uid].check_result == CheckResult.FOUND
    assert job.phase == Phase.CHECKED


def test_an_older_round_stops_when_a_corrected_file_came(
    researcher,
    source_server,
    destination_server,
    orthanc1_studies,
    django_capture_on_commit_callbacks,
):
    first = orthanc1_studies[0]
    with django_capture_on_commit_callbacks(execute=False):
        job = _job(
            researcher, source_server, destination_server,
            (first.patient_id, first.study_instance_uid, "", "SUBJ-1"),
        )  # fmt: skip
        batch = _studies((first.patient_id, first.study_instance_uid, "", "SUBJ-1"))
        job.replace_studies(batch.studies, [])
    assert checking.check_studies(job.pk, check_round=0) == 0  # the first round's queue entry
    job.refresh_from_db()
    assert job.phase == Phase.CHECKING and job.check_round == 1


def test_the_start_transfers_the_found_studies_and_fails_the_others_with_the_reason(
    researcher,
    source_server,
    destination_server,
    orthanc1_studies,
    empty_orthanc2,
    django_capture_on_commit_callbacks,
):
    first = orthanc1_studies[0]
    missing_uid = generate_uid(prefix="2.25.")
    with django_capture_on_commit_callbacks(execute=False):
        job = _job(
            researcher,
            source_server,
            destination_server,
            (first.patient_id, first.study_instance_uid, "", "SUBJ-1"),
            (first.patient_id, missing_uid, "", "SUBJ-1"),
        )
    check_job(job)

    assert job.start_transfers() == 1
    assert job.phase == Phase.STARTED
    found, missing = job.tasks.order_by("pk")
    assert found.status == TaskStatus.PENDING and found.queued_job_id is not None
    assert missing.status == TaskStatus.FAILURE
    assert missing.message == (
        f"Not transferred: No study found with Study Instance UID {missing_uid}. "
        f"({source_server.name})"
    )
    with pytest.raises(ActionNotAllowed, match="was started already"):
        job.start_transfers()

    run_pending_tasks(job)
    found.refresh_from_db()
    assert found.status == TaskStatus.SUCCESS, found.message
    assert (job.status, job.message) == (JobStatus.FAILURE, "Some tasks failed.")
    ct_count = sum(s.instance_count for s in first.series if s.modality == "CT")
    assert empty_orthanc2.count_instances() == ct_count
    patients = empty_orthanc2.rest("GET", "/patients?expand")
    assert [p["MainDicomTags"]["PatientID"] for p in patients] == ["SUBJ-1"]


def test_a_job_none_of_whose_studies_was_found_cannot_start(
    researcher, source_server, destination_server, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        job = _job(
            researcher, source_server, destination_server,
            ("0001", generate_uid(prefix="2.25."), "", "SUBJ-1"),
        )  # fmt: skip
    check_job(job)
    with pytest.raises(ActionNotAllowed, match="found none of its studies"):
        job.start_transfers()
    assert job.tasks.get().status == TaskStatus.PENDING


def test_a_corrected_sheet_in_the_same_project_gives_the_same_uids_and_no_doubles(
    researcher, source_server, destination_server, orthanc1_studies, empty_orthanc2
):
    """Run a sheet, then a later one with one more study: the study sent twice keeps its
    pseudonymized UIDs, so the destination holds each instance once."""
    project = Project.objects.create(name="Trial 7")
    first, second = orthanc1_studies[1], orthanc1_studies[2]  # one patient, two studies
    assert first.patient_id == second.patient_id
    row_1 = (first.patient_id, first.study_instance_uid, "", "TRIAL7-001")
    row_2 = (second.patient_id, second.study_instance_uid, "", "TRIAL7-001")

    job = _job(
        researcher, source_server, destination_server, row_1, check_first=False, project=project
    )
    run_pending_tasks(job)
    assert job.status == JobStatus.SUCCESS, job.message
    uid_once = job.tasks.get().pseudonymized_study_uid
    count_once = empty_orthanc2.count_instances()

    again = _job(
        researcher,
        source_server,
        destination_server,
        row_1,
        row_2,
        check_first=False,
        project=project,
    )
    run_pending_tasks(again)
    assert again.status == JobStatus.SUCCESS, again.message
    tasks = list(again.tasks.order_by("pk"))
    assert tasks[0].pseudonymized_study_uid == uid_once
    ct_of_second = sum(s.instance_count for s in second.series if s.modality not in ("PR", "SR"))
    # CI once found one instance more than this (not reproduced): say where it is if it recurs.
    held = {
        uid: empty_orthanc2.study_instance_uids(uid) for uid in empty_orthanc2.list_study_uids()
    }
    assert empty_orthanc2.count_instances() == count_once + ct_of_second, (
        f"the destination holds, per study: {held}; the tasks' pseudonymized studies: "
        f"{[t.pseudonymized_study_uid for t in tasks]}"
    )
    assert sorted(empty_orthanc2.list_study_uids()) == sorted(
        t.pseudonymized_study_uid for t in tasks
    )


def test_rows_the_check_held_back_are_not_sent_by_a_retry_a_reset_or_a_restart(
    researcher, staff_user, source_server, destination_server, orthanc1_studies,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    first, other = orthanc1_studies[0], orthanc1_studies[3]
    with django_capture_on_commit_callbacks(execute=False):
        job = _job(
            researcher,
            source_server,
            destination_server,
            (first.patient_id, first.study_instance_uid, "", "SUBJ-1"),
            ("99999999", other.study_instance_uid, "", "SUBJ-2"),  # a patient mismatch
        )
    check_job(job)
    job.start_transfers()
    run_pending_tasks(job)
    found, mismatch = job.tasks.order_by("pk")
    assert (job.status, found.status, mismatch.status) == (
        JobStatus.FAILURE,
        TaskStatus.SUCCESS,
        TaskStatus.FAILURE,
    )
    assert not job.is_retriable, "the only failure is a row the check held back"
    assert not mismatch.is_resettable
    with pytest.raises(ActionNotAllowed):
        mismatch.reset()

    job.restart()
    assert dict(job.tasks.values_list("pk", "status")) == {
        found.pk: TaskStatus.PENDING,
        mismatch.pk: TaskStatus.FAILURE,
    }


def test_an_answer_no_rule_foresaw_is_an_error_of_its_study_only(
    researcher, source_server, destination_server, orthanc1_studies, monkeypatch,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    first, second = orthanc1_studies[0], orthanc1_studies[3]
    real = checking.find_study

    def failing_for_the_first(operator, selection, **kwargs):
        if selection.study_uid == first.study_instance_uid:
            raise ValueError("invalid literal for int() with base 10: 'many'")
        return real(operator, selection, **kwargs)

    monkeypatch.setattr(checking, "find_study", failing_for_the_first)
    with django_capture_on_commit_callbacks(execute=False):
        job = _job(
            researcher,
            source_server,
            destination_server,
            (first.patient_id, first.study_instance_uid, "", "SUBJ-1"),
            (second.patient_id, second.study_instance_uid, "", "SUBJ-2"),
        )
    check_job(job)
    failed, found = job.tasks.order_by("pk")
    assert job.phase == Phase.CHECKED
    assert failed.check_result == CheckResult.ERROR
    assert failed.check_message == (
        f"Could not be checked at {source_server.name}: invalid literal for int() with base "
        "10: 'many'"
    )
    assert found.check_result == CheckResult.FOUND

    # Once the PACS answers again, the study is checked again, and only it.
    monkeypatch.setattr(checking, "find_study", real)
    with django_capture_on_commit_callbacks(execute=False):
        assert job.recheck_errors() == 1
    assert check_job(job) == 1
    assert job.check_counts()["found"] == 2

    # A corrected file asks again for what could not be checked, too.
    job.tasks.filter(pk=found.pk).update(check_result=CheckResult.ERROR)
    batch = _studies(
        (first.patient_id, first.study_instance_uid, "", "SUBJ-1"),
        (second.patient_id, second.study_instance_uid, "", "SUBJ-2"),
    )
    with django_capture_on_commit_callbacks(execute=False):
        assert job.replace_studies(batch.studies, []) == 1


def test_staff_cannot_verify_a_job_before_its_owner_started_it(
    researcher, source_server, destination_server, orthanc1_studies,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    first = orthanc1_studies[0]
    with django_capture_on_commit_callbacks(execute=False):
        job = _job(
            researcher, source_server, destination_server,
            (first.patient_id, first.study_instance_uid, "", "SUBJ-1"),
        )  # fmt: skip
    assert not job.is_verifiable
    with pytest.raises(ActionNotAllowed, match="before its owner started"):
        job.verify()
    assert job.tasks.get().queued_job_id is None


def test_a_lost_check_is_queued_again(
    researcher, source_server, destination_server, orthanc1_studies,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    from adit.batch_transfer.tasks import resume_lost_checks

    first = orthanc1_studies[0]
    with django_capture_on_commit_callbacks(execute=False):  # its queue entry never written
        job = _job(
            researcher, source_server, destination_server,
            (first.patient_id, first.study_instance_uid, "", "SUBJ-1"),
        )  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        assert resume_lost_checks(timestamp=0) == [job.pk]
    assert resume_lost_checks(timestamp=0) == [], "a check in the queue is not lost"
